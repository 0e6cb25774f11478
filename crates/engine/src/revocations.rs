//! Sign-outs by admins: whose tokens are refused, and up to when they were
//! issued.
//!
//! Kept apart from the hub's dispatch state, behind a lock of its own, so
//! that checking a token (on every authenticated request) never waits for
//! the fan-out of a batch of events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;

/// The users signed out by an admin. Cloning is shallow.
#[derive(Clone, Default)]
pub struct Revocations {
    /// User id -> tokens issued at or before this time (Unix seconds) are
    /// refused. A std mutex: every section is a map lookup or insert.
    revoked: Arc<Mutex<HashMap<String, u64>>>,
}

/// One sign-out by an admin, as a `forced_logout` event carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignOut {
    pub user_id: String,
    /// Tokens issued at or before this time (Unix seconds) are refused.
    pub revoked_before: u64,
}

impl SignOut {
    /// The sign-out a `forced_logout` notice's data describes; `None` if the
    /// data lacks the user or the time (such a notice revokes nothing).
    pub(crate) fn decode(data: &Json) -> Option<SignOut> {
        Some(SignOut {
            user_id: data.get("user_id")?.as_str()?.to_owned(),
            revoked_before: data.get("revoked_before")?.as_u64()?,
        })
    }

    /// Whether this sign-out refuses a token of `user_id` issued at
    /// `issued_at`.
    pub(crate) fn refuses(&self, user_id: &str, issued_at: Option<u64>) -> bool {
        self.user_id == user_id && refuses(self.revoked_before, issued_at)
    }
}

/// The one rule: a token issued at or before the sign-out is refused, and
/// so is a token that does not say when it was issued.
fn refuses(revoked_before: u64, issued_at: Option<u64>) -> bool {
    issued_at.is_none_or(|issued_at| issued_at <= revoked_before)
}

impl Revocations {
    /// Notes a sign-out (a later one only ever moves the time forward).
    pub fn note(&self, sign_out: &SignOut) {
        let mut revoked = self.lock();
        let before = revoked.entry(sign_out.user_id.clone()).or_default();
        *before = (*before).max(sign_out.revoked_before);
    }

    /// Whether a token of `user_id` issued at `issued_at` was revoked.
    pub fn is_revoked(&self, user_id: &str, issued_at: Option<u64>) -> bool {
        self.lock()
            .get(user_id)
            .is_some_and(|before| refuses(*before, issued_at))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Every section leaves the map consistent, so a poisoned lock is
        // still usable.
        self.revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_sign_out_refuses_older_and_undated_tokens_only() {
        let revocations = Revocations::default();
        let data = json!({"user_id": "u1", "revoked_before": 100});
        let revocation = SignOut::decode(&data).unwrap();
        revocations.note(&revocation);
        assert!(revocations.is_revoked("u1", Some(100)));
        assert!(revocations.is_revoked("u1", None));
        assert!(!revocations.is_revoked("u1", Some(101)));
        assert!(!revocations.is_revoked("u2", Some(1)));
        // The event and the book judge alike.
        assert!(revocation.refuses("u1", None));
        assert!(!revocation.refuses("u1", Some(101)));
        // An earlier sign-out does not move the time back.
        revocations.note(&SignOut {
            user_id: "u1".into(),
            revoked_before: 50,
        });
        assert!(revocations.is_revoked("u1", Some(100)));
        // Without a time, an event revokes nothing (as the hub always read it).
        assert_eq!(SignOut::decode(&json!({"user_id": "u1"})), None);
    }
}
