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
//! fold it into their subscription's filter.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::auth::{Caller, claims_of};
use crate::error::ApiError;
use crate::filter::{Expr, Filter, FilterError, parse};

/// The rule new collections get for `read`: any signed-in user.
pub const DEFAULT_READ_RULE: &str = "$auth.sub != null";

/// The rules of one collection, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Body field `rules` of the collection routes: rules present are set (an
/// explicit `null` means admins only), absent ones keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesPatch {
    #[serde(default, deserialize_with = "present")]
    read: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    create: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    update: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    delete: Option<Option<String>>,
}

/// Reads `T` from a JSON object only. serde reads a struct from an array
/// too, filling its fields in order (`[null, null]` would reset two rules),
/// which no client means.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let fields = serde_json::Map::<String, Json>::deserialize(deserializer)?;
    T::deserialize(Json::Object(fields)).map_err(serde::de::Error::custom)
}

/// [`object`], for an optional field: present, it must be an object
/// (`null` is refused rather than read as absent, as the contract says).
pub fn some_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    object(deserializer).map(Some)
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl RulesPatch {
    /// `rules` with this patch applied; every rule set must parse.
    pub fn apply(self, mut rules: Rules) -> Result<Rules, ApiError> {
        let fields = [
            ("read", self.read, &mut rules.read),
            ("create", self.create, &mut rules.create),
            ("update", self.update, &mut rules.update),
            ("delete", self.delete, &mut rules.delete),
        ];
        for (name, change, slot) in fields {
            let Some(change) = change else { continue };
            if let Some(text) = &change {
                parse_rule(text).map_err(|error| {
                    ApiError::bad_request("invalid_rule", format!("rule `{name}`: {error}"))
                })?;
            }
            *slot = change;
        }
        Ok(rules)
    }
}

impl Rules {
    /// The rules stored in a collection's metadata (`rules`), or the
    /// defaults for collections made before rules existed. Rules that do not
    /// read (written by another client) grant admins only: never open.
    pub fn of_collection(meta: &Json) -> Rules {
        match meta.get("rules") {
            None => Rules::default(),
            Some(rules) => serde_json::from_value(rules.clone()).unwrap_or(Rules::ADMINS_ONLY),
        }
    }

    /// Every rule `null`.
    pub const ADMINS_ONLY: Rules = Rules {
        read: None,
        create: None,
        update: None,
        delete: None,
    };

    pub fn rule(&self, action: Action) -> Option<&str> {
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

/// The error for a caller whom a rule refuses outright: 401 for an
/// anonymous caller (signing in may help), 403 for a signed-in one.
pub fn refused(caller: &Caller, action: Action, collection: &str) -> ApiError {
    refusal(
        caller,
        &format!("{} records of `{collection}`", action.as_str()),
    )
}

/// 401 "sign in to `what`" for an anonymous caller (signing in may help),
/// 403 "you may not `what`" for a signed-in one: every rule's refusal.
pub fn refusal(caller: &Caller, what: &str) -> ApiError {
    match caller {
        None => ApiError::Unauthorized(format!("sign in to {what}")),
        Some(_) => ApiError::Forbidden(format!("you may not {what}")),
    }
}

/// Lets admins through: 401 for an anonymous caller, 403 for anyone else,
/// saying that only admins may `what` ("manage collections").
pub fn require_admin(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller {
        Some(identity) if identity.admin => Ok(()),
        Some(_) => Err(ApiError::Forbidden(format!("only admins {what}"))),
        None => Err(ApiError::Unauthorized(format!(
            "only admins {what}: send an admin token"
        ))),
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
    use crate::auth::Identity;
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

    #[test]
    fn patches_set_rules_and_refuse_bad_ones() {
        let patch: RulesPatch =
            serde_json::from_value(json!({"read": "true", "delete": "owner = $auth.sub"})).unwrap();
        let rules = patch.apply(Rules::default()).unwrap();
        assert_eq!(rules.read.as_deref(), Some("true"));
        assert_eq!(rules.create, None);
        assert_eq!(rules.delete.as_deref(), Some("owner = $auth.sub"));
        let clear: RulesPatch = serde_json::from_value(json!({"read": null})).unwrap();
        assert_eq!(clear.apply(rules).unwrap().read, None);
        let bad: RulesPatch = serde_json::from_value(json!({"update": "owner = "})).unwrap();
        let error = bad.apply(Rules::default()).unwrap_err().to_string();
        assert!(
            error.starts_with("rule `update`: expected a value"),
            "{error}"
        );
        assert!(serde_json::from_value::<RulesPatch>(json!({"write": "true"})).is_err());
    }

    #[test]
    fn collections_without_rules_get_the_defaults() {
        assert_eq!(
            Rules::of_collection(&json!({"name": "x"})),
            Rules::default()
        );
        let meta =
            json!({"rules": {"read": null, "create": "true", "update": null, "delete": null}});
        assert_eq!(Rules::of_collection(&meta).read, None);
        let garbled = json!({"rules": {"read": 7}});
        assert_eq!(Rules::of_collection(&garbled), Rules::ADMINS_ONLY);
    }
}
