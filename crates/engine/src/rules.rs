//! Access rules: who may read and write a collection's records.
//!
//! Each collection has four rules, `read`, `create`, `update` and `delete`,
//! written in the filter language. A rule is:
//!
//! * `null`: admins only;
//! * `"true"`: everyone, anonymous clients included;
//! * any filter: the records it matches, with `$auth.<claim>` standing for
//!   the caller's claims (an anonymous caller has none, and a comparison with
//!   a missing claim is false), e.g.
//!   `owner = $auth.sub || public = true`, or `$auth.sub != null` for
//!   "any signed-in user".
//!
//! Admins (`role: admin`) pass every rule. A rule is bound to one caller's
//! claims and folded to an [`Access`]: everything, nothing, or the records a
//! filter matches. REST handlers turn it into a SurrealQL condition; streams
//! fold it into their subscription's filter. What a refusal answers over
//! HTTP is decided in `access`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::filter::{Expr, Filter, FilterError, parse};
use crate::identity::{Caller, claims_of};

/// The rule new collections get for `read`: any signed-in user.
pub const DEFAULT_READ_RULE: &str = "$auth.sub != null";

/// The rules of one collection, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    pub read: Option<String>,
    pub create: Option<String>,
    pub update: Option<String>,
    pub delete: Option<String>,
}

impl Default for Rules {
    /// Read: any signed-in user; writes: admins.
    fn default() -> Self {
        Rules {
            read: Some(DEFAULT_READ_RULE.to_owned()),
            create: None,
            update: None,
            delete: None,
        }
    }
}

/// What a caller asks to do with records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl Rules {
    /// Every rule `null`.
    pub(crate) const ADMINS_ONLY: Rules = Rules {
        read: None,
        create: None,
        update: None,
        delete: None,
    };

    pub(crate) fn rule(&self, action: Action) -> Option<&str> {
        match action {
            Action::Read => self.read.as_deref(),
            Action::Create => self.create.as_deref(),
            Action::Update => self.update.as_deref(),
            Action::Delete => self.delete.as_deref(),
        }
    }

    /// What `caller` may do with `action`.
    pub fn access(&self, action: Action, caller: &Caller) -> Access {
        Access::of(self.rule(action), caller)
    }
}

/// Parses a rule: `true` (any case) or a filter.
pub fn parse_rule(text: &str) -> Result<Expr, FilterError> {
    if text.trim().eq_ignore_ascii_case("true") {
        return Ok(Expr::True);
    }
    parse(text)
}

/// A rule bound to one caller.
#[derive(Debug, Clone)]
pub enum Access {
    /// Every record.
    All,
    /// No record.
    Nothing,
    /// The records this filter (claims bound) matches.
    Matching(Arc<Filter>),
}

impl Access {
    /// `rule` bound to `caller`'s claims and folded.
    pub fn of(rule: Option<&str>, caller: &Caller) -> Access {
        if caller.as_ref().is_some_and(|identity| identity.admin) {
            return Access::All;
        }
        let Some(text) = rule else {
            return Access::Nothing;
        };
        let Ok(expr) = parse_rule(text) else {
            // Stored rules were checked when they were set; a rule that no
            // longer parses grants nothing.
            tracing::warn!(rule = text, "a stored rule does not parse; denying");
            return Access::Nothing;
        };
        Access::of_parsed(Some(&expr), caller)
    }

    /// A parsed rule (`None`: admins only) bound to `caller`'s claims and
    /// folded.
    pub(crate) fn of_parsed(rule: Option<&Expr>, caller: &Caller) -> Access {
        if caller.as_ref().is_some_and(|identity| identity.admin) {
            return Access::All;
        }
        let Some(expr) = rule else {
            return Access::Nothing;
        };
        let bound = expr.bind(claims_of(caller)).simplify();
        match bound.as_constant() {
            Some(true) => Access::All,
            Some(false) => Access::Nothing,
            None => Access::Matching(Arc::new(Filter::new(bound))),
        }
    }

    /// Whether `record` passes.
    pub fn allows(&self, record: &Json) -> bool {
        match self {
            Access::All => true,
            Access::Nothing => false,
            Access::Matching(filter) => filter.matches(record),
        }
    }

    pub fn is_nothing(&self) -> bool {
        matches!(self, Access::Nothing)
    }

    /// The condition as an expression (`None` for every record).
    pub fn condition(&self) -> Option<Expr> {
        match self {
            Access::All => None,
            Access::Nothing => Some(Expr::constant(false)),
            Access::Matching(filter) => Some(filter.expr().clone()),
        }
    }
}

/// `a AND b`, either of which may be absent.
pub fn both(a: Option<Expr>, b: Option<Expr>) -> Option<Expr> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Expr::And(vec![a, b]).simplify()),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use serde_json::json;

    fn user(sub: &str, role: Option<&str>) -> Caller {
        let mut claims = json!({"sub": sub});
        if let Some(role) = role {
            claims["role"] = json!(role);
        }
        Some(Arc::new(Identity {
            user_id: sub.into(),
            name: None,
            admin: role == Some("admin"),
            claims,
            expires_at: None,
            issued_at: None,
        }))
    }

    #[test]
    fn rules_bind_to_callers() {
        let owner_or_public = Some("owner = $auth.sub || public = true");
        let mine = json!({"owner": "ann", "public": false});
        let public = json!({"owner": "bob", "public": true});
        let ann = user("ann", None);
        let access = Access::of(owner_or_public, &ann);
        assert!(access.allows(&mine) && access.allows(&public));
        let anonymous = Access::of(owner_or_public, &None);
        assert!(!anonymous.allows(&mine) && anonymous.allows(&public));

        assert!(Access::of(None, &ann).is_nothing());
        assert!(matches!(
            Access::of(None, &user("x", Some("admin"))),
            Access::All
        ));
        assert!(matches!(Access::of(Some("TRUE"), &None), Access::All));
        assert!(matches!(
            Access::of(Some(DEFAULT_READ_RULE), &ann),
            Access::All
        ));
        assert!(Access::of(Some(DEFAULT_READ_RULE), &None).is_nothing());
        assert!(Access::of(Some("$auth.role = editor"), &ann).is_nothing());
        assert!(matches!(
            Access::of(Some("$auth.role = editor"), &user("e", Some("editor"))),
            Access::All
        ));
    }
}
