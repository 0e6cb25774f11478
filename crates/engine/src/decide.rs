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
pub type WatchedRules = HashMap<Arc<str>, Rules>;

/// What a live event does to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the stream sends it.
    pub send: bool,
    /// Whether the stream ends after it: a sign-out of its user, or a
    /// change to a read rule it was bound with (reconnecting binds the new
    /// rules, and the client resumes after this event, losing nothing).
    pub end: bool,
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
pub fn judge(caller: &Caller, watched: &WatchedRules, event: &Event) -> Verdict {
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
pub fn replayable(caller: &Caller, rules: &RuleBook, event: &Event) -> bool {
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
pub fn ends_page(kind: EventKind) -> bool {
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
