//! What each kind of event does to a stream and to a change page. Every
//! decision that depends on an event's kind is here, as a match over
//! [`EventKind`] with no catch-all arm: a new kind does not compile until
//! each decision is made for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Event, EventKind};
use crate::identity::Caller;
use crate::rulebook::RuleBook;
use crate::rules::{Action, Rules};

/// The read rules each named collection's topic was bound with.
pub(crate) type WatchedRules = HashMap<Arc<str>, Rules>;

/// What a live event does to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Whether the stream sends it.
    pub(crate) send: bool,
    /// Whether the stream ends after it: a sign-out of its user, or a
    /// change to a read rule it was bound with (reconnecting binds the new
    /// rules, and the client resumes after this event, losing nothing).
    pub(crate) end: bool,
}

const SEND: Verdict = Verdict {
    send: true,
    end: false,
};

const SEND_AND_END: Verdict = Verdict {
    send: true,
    end: true,
};

/// For a live event the hub delivered to a stream of `caller` bound with
/// `watched` rules: whether to send it, and whether the stream ends after it.
pub(crate) fn judge(caller: &Caller, watched: &WatchedRules, event: &Event) -> Verdict {
    let watched_rule = || event.collection().and_then(|name| watched.get(name));
    match event.kind {
        EventKind::RecordCreated
        | EventKind::RecordUpdated
        | EventKind::RecordDeleted
        | EventKind::ChannelMessage
        | EventKind::UserJoined
        | EventKind::UserLeft
        | EventKind::SystemAnnouncement
        | EventKind::CollectionCreated => SEND,
        // Taken by the stream it is for, before judging; never sent.
        EventKind::SubscriptionChange => Verdict {
            send: false,
            end: false,
        },
        // Only the signed-out user's streams show it, and end.
        EventKind::ForcedLogout => {
            let ours = event.sign_out().is_some_and(|sign_out| {
                caller
                    .as_ref()
                    .is_some_and(|identity| sign_out.refuses(&identity.user_id, identity.issued_at))
            });
            Verdict {
                send: ours,
                end: ours,
            }
        }
        EventKind::CollectionDeleted => match watched_rule() {
            Some(_) => SEND_AND_END,
            None => SEND,
        },
        EventKind::CollectionUpdated => match watched_rule() {
            Some(watched) if event.collection_rules().read != watched.read => {
                // A rule that now hides the collection hides the event too.
                let shown = readable(event.collection_rules(), caller);
                Verdict {
                    send: shown,
                    end: true,
                }
            }
            _ => SEND,
        },
    }
}

/// Whether a replayed event may reach a stream of `caller` (before its
/// interest decides), judged by the rules of now.
pub(crate) fn replayable(caller: &Caller, rules: &RuleBook, event: &Event) -> bool {
    if event.is_ephemeral() {
        // Delivered live, once: never in a replay or a page.
        return false;
    }
    // The history of a deleted collection is not replayed under the rules
    // of a new one with the same name (admins see it all).
    let of_this_collection = || {
        let admin = caller.as_ref().is_some_and(|identity| identity.admin);
        let predates = event
            .collection()
            .and_then(|name| rules.get(name))
            .is_some_and(|meta| meta.predates(event.id.stamp));
        admin || !predates
    };
    match event.kind {
        // A sign-out is news only while it happens: a stream resuming now
        // was opened with a token that passed it. So is a change to a
        // stream, which only its stream takes, live.
        EventKind::ForcedLogout | EventKind::SubscriptionChange => false,
        EventKind::SystemAnnouncement
        | EventKind::UserJoined
        | EventKind::UserLeft
        | EventKind::ChannelMessage => true,
        EventKind::RecordCreated | EventKind::RecordUpdated | EventKind::RecordDeleted => {
            of_this_collection()
        }
        // A collection event carries the collection's rules as they were
        // then: one from a time this caller could not read the collection
        // is not replayed to it (a named collection's topic holds its read
        // rule in its filter, which collection events skip).
        EventKind::CollectionCreated
        | EventKind::CollectionUpdated
        | EventKind::CollectionDeleted => {
            of_this_collection() && readable(event.collection_rules(), caller)
        }
    }
}

/// Whether a change page that waited for live events ends at this one: a
/// collection event or an admin's notice does (the next request binds the
/// rules anew); the others leave room for more.
pub(crate) fn ends_page(kind: EventKind) -> bool {
    match kind {
        EventKind::CollectionCreated
        | EventKind::CollectionUpdated
        | EventKind::CollectionDeleted
        | EventKind::SystemAnnouncement
        | EventKind::ForcedLogout
        | EventKind::SubscriptionChange => true,
        EventKind::RecordCreated
        | EventKind::RecordUpdated
        | EventKind::RecordDeleted
        | EventKind::ChannelMessage
        | EventKind::UserJoined
        | EventKind::UserLeft => false,
    }
}

fn readable(rules: &Rules, caller: &Caller) -> bool {
    !rules.access(Action::Read, caller).is_nothing()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::collection::CollectionMeta;
    use crate::event::{Detail, EventId, Source};
    use crate::identity::Identity;
    use crate::revocations::SignOut;
    use crate::rules::Rules;
    use serde_json::json;

    fn user(sub: &str, issued_at: Option<u64>, admin: bool) -> Caller {
        Some(Arc::new(Identity {
            user_id: sub.into(),
            name: None,
            admin,
            claims: json!({"sub": sub}),
            expires_at: None,
            issued_at,
        }))
    }

    fn id(millis: u64) -> EventId {
        EventId {
            stamp: Stamp::of_millis(millis),
            index: 0,
        }
    }

    fn meta(read: Option<&str>, created: Option<&str>) -> Arc<CollectionMeta> {
        Arc::new(CollectionMeta {
            created: created.map(str::to_owned),
            description: None,
            name: "posts".into(),
            rules: Rules {
                read: read.map(str::to_owned),
                ..Rules::ADMINS_ONLY
            },
            updated: None,
        })
    }

    fn collection_event(kind: EventKind, meta: Arc<CollectionMeta>) -> Event {
        Event::with_detail(
            id(2_000),
            kind,
            Source::Collection(Arc::from("posts")),
            None,
            json!({}),
            None,
            Detail::Collection(meta),
        )
    }

    fn sign_out_event(user_id: &str, revoked_before: u64) -> Event {
        let sign_out = SignOut {
            user_id: user_id.into(),
            revoked_before,
        };
        Event::with_detail(
            id(2_000),
            EventKind::ForcedLogout,
            Source::Service,
            None,
            json!({}),
            None,
            Detail::SignOut(sign_out),
        )
    }

    fn record_event(millis: u64) -> Event {
        Event::new(
            id(millis),
            EventKind::RecordCreated,
            Source::Collection(Arc::from("posts")),
            Some("r1".into()),
            json!({"id": "r1"}),
            None,
        )
    }

    #[test]
    fn a_sign_out_ends_only_the_streams_of_older_tokens_of_its_user() {
        let watched = WatchedRules::new();
        let event = sign_out_event("ann", 100);
        let verdict = |caller: &Caller| judge(caller, &watched, &event);
        let ends = Verdict {
            send: true,
            end: true,
        };
        let ignores = Verdict {
            send: false,
            end: false,
        };
        assert_eq!(verdict(&user("ann", Some(100), false)), ends);
        assert_eq!(verdict(&user("ann", None, false)), ends);
        assert_eq!(verdict(&user("ann", Some(101), false)), ignores);
        assert_eq!(verdict(&user("bob", Some(1), false)), ignores);
        assert_eq!(verdict(&None), ignores);
    }

    #[test]
    fn a_change_to_a_watched_read_rule_ends_the_stream() {
        let mut watched = WatchedRules::new();
        watched.insert(Arc::from("posts"), meta(Some("true"), None).rules.clone());
        let caller = user("ann", None, false);
        let same = collection_event(EventKind::CollectionUpdated, meta(Some("true"), None));
        assert_eq!(
            judge(&caller, &watched, &same),
            Verdict {
                send: true,
                end: false
            }
        );
        // Still readable: shown, then the stream ends to rebind.
        let narrower = collection_event(
            EventKind::CollectionUpdated,
            meta(Some("owner = $auth.sub"), None),
        );
        assert_eq!(
            judge(&caller, &watched, &narrower),
            Verdict {
                send: true,
                end: true
            }
        );
        // Now hidden: not shown, and the stream ends.
        let hidden = collection_event(EventKind::CollectionUpdated, meta(None, None));
        assert_eq!(
            judge(&caller, &watched, &hidden),
            Verdict {
                send: false,
                end: true
            }
        );
        let deleted = collection_event(EventKind::CollectionDeleted, meta(Some("true"), None));
        assert!(judge(&caller, &watched, &deleted).end);
        // A stream that watches no rules (of every collection) goes on.
        assert!(!judge(&caller, &WatchedRules::new(), &hidden).end);
        assert!(!judge(&caller, &watched, &record_event(2_000)).end);
    }

    #[test]
    fn replays_skip_sign_outs_older_collections_and_hidden_collection_events() {
        let ann = user("ann", None, false);
        let mut rules = RuleBook::new();
        // Created at 1_700_000_000_000 ms.
        rules.insert((*meta(Some("true"), Some("2023-11-14T22:13:20.000Z"))).clone());
        assert!(!replayable(&ann, &rules, &sign_out_event("ann", 1)));
        assert!(!replayable(&ann, &rules, &record_event(1_699_999_999_999)));
        assert!(replayable(&ann, &rules, &record_event(1_700_000_000_000)));
        // Admins see the history of a deleted collection too.
        let admin = user("root", None, true);
        assert!(replayable(&admin, &rules, &record_event(1_699_999_999_999)));
        // A collection event from a time the caller could not read it.
        let then_hidden = collection_event(EventKind::CollectionUpdated, meta(None, None));
        let mut rules_now = RuleBook::new();
        rules_now.insert((*meta(Some("true"), None)).clone());
        assert!(!replayable(&ann, &rules_now, &then_hidden));
        let then_open = collection_event(EventKind::CollectionUpdated, meta(Some("true"), None));
        assert!(replayable(&ann, &rules_now, &then_open));
    }
}
