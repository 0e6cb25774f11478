//! Channels: publish/subscribe for messages that are not database changes.
//!
//! A message published to a channel is written to a changefeed table, so it
//! reaches every node's subscribers as a `channel.message` event with a
//! durable id, and is replayed on resume like any event. A channel pattern
//! may be ephemeral instead (`"durable": false`): its messages go from the
//! hub to the streams open at that moment, with no id, and are never
//! replayed.
//!
//! Who may read and publish is set per channel pattern (`--channel-rules`):
//! an exact name, or a prefix ending in `*` (`room.*`); the longest pattern
//! that matches wins. Rules are in the filter language, over the message
//! `{"channel", "sender": {"user_id", "user_name"}, "message"}`, with `$auth`
//! as in collection rules. Channels no pattern matches: any signed-in user
//! reads and publishes. `user:{id}` is that user's private channel: only
//! that user and admins read it, whatever the patterns say, and by default
//! only admins publish to it.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::Error;
use crate::fields::present;
use crate::identity::Caller;
use crate::rules::{Access, DEFAULT_READ_RULE, parse_rule};

/// Longest channel name.
pub(crate) const MAX_CHANNEL_LEN: usize = 128;
/// The prefix of private channels.
const PRIVATE_PREFIX: &str = "user:";

/// Checks a channel name: a letter or digit, then letters, digits and
/// `_ . : @ -`.
pub fn validate_channel(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.:@-".contains(c))
        && name.len() <= MAX_CHANNEL_LEN;
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_channel",
            format!(
                "a channel name is a letter or digit, then up to {} letters, digits or `_ . : @ -`",
                MAX_CHANNEL_LEN - 1
            ),
        ))
    }
}

/// The read and publish rules of a channel pattern: absent means the
/// default (any signed-in user), `null` admins only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternRules {
    #[serde(default, deserialize_with = "present")]
    read: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    publish: Option<Option<String>>,
    /// `false`: messages are not written to the database, only delivered
    /// live (see [`ChannelRules::durable`]). Absent means `true`.
    durable: Option<bool>,
}

/// The channel rules of the server.
#[derive(Debug, Default)]
pub struct ChannelRules {
    /// By pattern.
    patterns: BTreeMap<String, PatternRules>,
}

impl ChannelRules {
    /// Reads `--channel-rules`: `{"<pattern>": {"read": rule, "publish": rule}}`.
    pub fn parse(json: &str) -> anyhow::Result<ChannelRules> {
        let patterns: BTreeMap<String, PatternRules> = serde_json::from_str(json)
            .context("--channel-rules is not a JSON object of patterns")?;
        for (pattern, rules) in &patterns {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if !name.is_empty() {
                validate_channel(name)
                    .map_err(|error| anyhow::anyhow!("--channel-rules `{pattern}`: {error}"))?;
            }
            for rule in [&rules.read, &rules.publish]
                .into_iter()
                .flatten()
                .flatten()
            {
                parse_rule(rule)
                    .map_err(|error| anyhow::anyhow!("--channel-rules `{pattern}`: {error}"))?;
            }
        }
        Ok(ChannelRules { patterns })
    }

    /// The rules of the longest pattern matching `channel`. A private
    /// channel is matched only by patterns that name private channels
    /// (`user:…`), never by a broader one such as `*`.
    fn rules_for(&self, channel: &str) -> Option<&PatternRules> {
        let private = channel.starts_with(PRIVATE_PREFIX);
        self.patterns
            .iter()
            .filter(|(pattern, _)| !private || pattern.starts_with(PRIVATE_PREFIX))
            .filter(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => *pattern == channel,
            })
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, rules)| rules)
    }

    /// What `caller` may read of `channel`.
    pub fn read(&self, channel: &str, caller: &Caller) -> Access {
        if let Some(owner) = channel.strip_prefix(PRIVATE_PREFIX) {
            let allowed = caller
                .as_ref()
                .is_some_and(|identity| identity.admin || identity.user_id == owner);
            return if allowed {
                Access::All
            } else {
                Access::Nothing
            };
        }
        let rule = match self
            .rules_for(channel)
            .and_then(|rules| rules.read.as_ref())
        {
            Some(rule) => rule.as_deref(),
            None => Some(DEFAULT_READ_RULE),
        };
        Access::of(rule, caller)
    }

    /// Whether messages to `channel` are durable: written to the
    /// database, with an id, and replayed on resume. An ephemeral channel's
    /// messages (typing indicators, cursors, game ticks) go straight from
    /// the hub to the streams open at that moment, at most once, and are
    /// never replayed. Set by the longest matching pattern, like its rules.
    pub fn durable(&self, channel: &str) -> bool {
        self.rules_for(channel)
            .and_then(|rules| rules.durable)
            .unwrap_or(true)
    }

    /// What `caller` may publish to `channel`.
    pub fn publish(&self, channel: &str, caller: &Caller) -> Access {
        let default = if channel.starts_with(PRIVATE_PREFIX) {
            None
        } else {
            Some(DEFAULT_READ_RULE)
        };
        let rule = match self
            .rules_for(channel)
            .and_then(|rules| rules.publish.as_ref())
        {
            Some(rule) => rule.as_deref(),
            None => default,
        };
        Access::of(rule, caller)
    }
}

/// The message as subscribers receive it (and as rules see it).
pub fn envelope(channel: &str, caller: &Caller, message: Json) -> Json {
    let sender = caller
        .as_ref()
        .map(|identity| json!({"user_id": identity.user_id, "user_name": identity.name}));
    json!({"channel": channel, "sender": sender, "message": message})
}

/// How fast each publisher may publish: `--publish-rate` messages per
/// second with bursts of as many, per user (or per IP address for anonymous
/// publishers), on this node. Messages live in the database for the
/// retention period, so an unbounded publisher would grow it (and a
/// `mem://` node's memory) without end.
pub struct PublishRate {
    /// `None`: no limit.
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
}

/// Publishers remembered before idle ones are forgotten.
const PUBLISHERS_KEPT: usize = 10_000;

impl PublishRate {
    pub fn new(per_second: u32) -> PublishRate {
        PublishRate {
            limiter: std::num::NonZeroU32::new(per_second)
                .map(|rate| governor::RateLimiter::keyed(governor::Quota::per_second(rate))),
        }
    }

    /// Takes `count` messages from `publisher`'s allowance; a 429 (and
    /// none taken) if not that many are left.
    pub fn check(&self, publisher: String, count: usize) -> Result<(), Error> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > PUBLISHERS_KEPT {
            limiter.retain_recent();
        }
        let too_many = || {
            Error::RateLimited("too many channel messages: slow down (see --publish-rate)".into())
        };
        let count = u32::try_from(count)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(too_many)?;
        match limiter.check_key_n(&publisher, count) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(too_many()),
            Err(_) => Err(Error::RateLimited(format!(
                "a batch of {count} messages is more than --publish-rate allows at once"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Identity;

    fn user(sub: &str, admin: bool) -> Caller {
        Some(Arc::new(Identity {
            user_id: sub.into(),
            name: None,
            admin,
            claims: json!({"sub": sub, "role": if admin { "admin" } else { "member" }}),
            expires_at: None,
            issued_at: None,
        }))
    }

    #[test]
    fn publishers_get_their_rate_each() {
        let rate = PublishRate::new(3);
        for _ in 0..3 {
            assert!(rate.check("ann".into(), 1).is_ok());
        }
        assert!(matches!(
            rate.check("ann".into(), 1),
            Err(Error::RateLimited(_))
        ));
        assert!(
            rate.check("bob".into(), 1).is_ok(),
            "others are not held back"
        );
        let unlimited = PublishRate::new(0);
        for _ in 0..100 {
            assert!(unlimited.check("ann".into(), 1).is_ok());
        }
    }

    #[test]
    fn names_are_checked() {
        for good in [
            "room.1",
            "user:ann",
            "a",
            "team-7@site",
            &"x".repeat(MAX_CHANNEL_LEN),
        ] {
            assert!(validate_channel(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".room",
            "room 1",
            "room/1",
            "#x",
            &"x".repeat(MAX_CHANNEL_LEN + 1),
        ] {
            assert!(validate_channel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channels_are_durable_unless_their_pattern_says_not() {
        let rules = ChannelRules::parse(
            r#"{"cursor.*": {"durable": false}, "cursor.saved": {"read": "true"},
                "tick": {"durable": false}}"#,
        )
        .unwrap();
        assert!(!rules.durable("cursor.1"));
        assert!(!rules.durable("tick"));
        assert!(rules.durable("tick.1"), "an exact pattern is not a prefix");
        assert!(rules.durable("cursor.saved"), "the longest pattern decides");
        assert!(rules.durable("room"));
        assert!(ChannelRules::default().durable("anything"));
    }

    #[test]
    fn the_longest_pattern_wins_and_private_channels_stay_private() {
        let rules = ChannelRules::parse(
            r#"{"room.*": {"read": "true", "publish": null},
                "room.staff": {"read": "$auth.role = admin"},
                "user:*": {"read": "true", "publish": "$auth.sub != null"}}"#,
        )
        .unwrap();
        let (ann, root) = (user("ann", false), user("root", true));
        assert!(matches!(rules.read("room.1", &None), Access::All));
        assert!(
            rules.publish("room.1", &ann).is_nothing(),
            "null: admins only"
        );
        assert!(matches!(rules.publish("room.1", &root), Access::All));
        assert!(rules.read("room.staff", &ann).is_nothing());
        assert!(
            matches!(rules.read("lobby", &ann), Access::All),
            "default: signed in"
        );
        assert!(rules.read("lobby", &None).is_nothing());
        // `user:*` cannot open a private channel to others.
        assert!(matches!(rules.read("user:ann", &ann), Access::All));
        assert!(rules.read("user:ann", &user("bob", false)).is_nothing());
        assert!(matches!(rules.read("user:ann", &root), Access::All));
        assert!(matches!(
            rules.publish("user:ann", &user("bob", false)),
            Access::All
        ));
        assert!(
            ChannelRules::default()
                .publish("user:ann", &ann)
                .is_nothing()
        );
        assert!(ChannelRules::parse(r#"{"x": {"read": "a ="}}"#).is_err());
        assert!(ChannelRules::parse(r#"{"x": {"durable": "no"}}"#).is_err());
        assert!(ChannelRules::parse(r#"{"x": {"write": "true"}}"#).is_err());
    }
}
