//! Access decisions in HTTP terms: who gets a 401, a 403 or a 404.
//!
//! `rules` binds a rule to a caller; this module says what a refusal
//! answers, so every route and stream words it the same way.

use crate::Error;
use crate::identity::Caller;
use crate::rules::{Access, Action, Rules};

/// What `caller` may do with `action` in the collection `name`, whose rules
/// are `rules` (`None`: there is no such collection): 404 for a missing
/// collection, 401/403 if the rule refuses every record.
///
/// A missing collection is judged by the default rules first, so a caller
/// they refuse (anyone anonymous) gets the same answer for a collection
/// that does not exist as for one it may not use, and cannot probe which
/// names exist.
pub fn collection_access(
    rules: Option<&Rules>,
    name: &str,
    caller: &Caller,
    action: Action,
) -> Result<Access, Error> {
    let Some(rules) = rules else {
        if Rules::default().access(action, caller).is_nothing() {
            return Err(refused(caller, action, name));
        }
        return Err(Error::no_collection(name));
    };
    let access = rules.access(action, caller);
    if access.is_nothing() {
        return Err(refused(caller, action, name));
    }
    Ok(access)
}

/// The error for a caller whom a rule refuses outright: 401 for an
/// anonymous caller (signing in may help), 403 for a signed-in one.
pub(crate) fn refused(caller: &Caller, action: Action, collection: &str) -> Error {
    refusal(
        caller,
        &format!("{} records of `{collection}`", action.as_str()),
    )
}

/// 401 "sign in to `what`" for an anonymous caller (signing in may help),
/// 403 "you may not `what`" for a signed-in one: every rule's refusal.
pub fn refusal(caller: &Caller, what: &str) -> Error {
    match caller {
        None => Error::SignInRequired(format!("sign in to {what}")),
        Some(_) => Error::Refused(format!("you may not {what}")),
    }
}

/// Lets admins through: 401 for an anonymous caller, 403 for anyone else,
/// saying that only admins may `what` ("manage collections").
pub fn require_admin(caller: &Caller, what: &str) -> Result<(), Error> {
    match caller {
        Some(identity) if identity.admin => Ok(()),
        Some(_) => Err(Error::Refused(format!("only admins {what}"))),
        None => Err(Error::SignInRequired(format!(
            "only admins {what}: send an admin token"
        ))),
    }
}
