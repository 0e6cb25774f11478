//! Who may see presence, and who a stream is present as.

use super::PresentUser;
use crate::Error;
use crate::access::refusal;
use crate::filter::{Expr, FilterError};
use crate::identity::Caller;
use crate::rules::{Access, parse_rule};

/// Who may see presence (`GET /api/v1/presence`, `user.*` events): the
/// `--presence-rule`, parsed once at start.
#[derive(Debug, Clone)]
pub struct PresenceRule {
    /// `None`: admins only (the rule `null`).
    rule: Option<Expr>,
}

impl PresenceRule {
    /// `null` (any case) for admins only, `true` for everyone, or a filter
    /// over `{user_id, user_name, connections, last_seen}`.
    pub fn parse(text: &str) -> Result<PresenceRule, FilterError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("null") {
            return Ok(PresenceRule { rule: None });
        }
        Ok(PresenceRule {
            rule: Some(parse_rule(text)?),
        })
    }

    /// What `caller` may see of presence: 401/403 if nothing.
    pub fn access(&self, caller: &Caller) -> Result<Access, Error> {
        match Access::of_parsed(self.rule.as_ref(), caller) {
            Access::Nothing => Err(refusal(caller, "see who is online")),
            access => Ok(access),
        }
    }
}

/// Who a stream is present as: its token's user, or the `user_id` and
/// `user_name` it asks for where that is allowed (admins, and anonymous
/// callers when `anonymous_allowed`); `None` for an anonymous stream that
/// names no one.
pub fn present_as(
    caller: &Caller,
    user_id: Option<&str>,
    user_name: Option<&str>,
    anonymous_allowed: bool,
) -> Result<Option<PresentUser>, Error> {
    let asked = user_id.map(str::trim).filter(|id| !id.is_empty());
    if asked.is_some() || user_name.is_some() {
        let allowed = match caller {
            Some(identity) => identity.admin,
            None => anonymous_allowed,
        };
        if !allowed {
            return Err(Error::Refused(
                "`user_id` and `user_name` are for admins (and anonymous clients, with --anonymous-presence)".into(),
            ));
        }
        if asked.is_some_and(|id| id.len() > 256) || user_name.is_some_and(|name| name.len() > 256)
        {
            return Err(Error::invalid(
                "invalid_query",
                "`user_id` and `user_name` are at most 256 bytes",
            ));
        }
    }
    let user_name = user_name.map(str::to_owned);
    Ok(match asked {
        Some(user_id) => Some(PresentUser {
            user_id: user_id.to_owned(),
            user_name,
        }),
        None => caller.as_ref().map(|identity| PresentUser {
            user_id: identity.user_id.clone(),
            user_name: user_name.or_else(|| identity.name.clone()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_null_is_admins_only_and_bad_rules_are_refused() {
        let admins = PresenceRule::parse(" NULL ").unwrap();
        assert!(admins.access(&None).is_err());
        let everyone = PresenceRule::parse("true").unwrap();
        assert!(matches!(everyone.access(&None), Ok(Access::All)));
        assert!(PresenceRule::parse("user_id = ").is_err());
    }

    #[test]
    fn only_admins_and_allowed_anonymous_callers_choose_who_they_are() {
        assert!(present_as(&None, Some("ann"), None, false).is_err());
        let ann = present_as(&None, Some(" ann "), Some("Ann"), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (ann.user_id.as_str(), ann.user_name.as_deref()),
            ("ann", Some("Ann"))
        );
        assert!(present_as(&None, None, None, false).unwrap().is_none());
        let long = "x".repeat(257);
        assert!(present_as(&None, Some(&long), None, true).is_err());
    }
}
