//! The open streams of this node that their clients may change: each
//! stream's connection id, who owns it, and how to reach it.
//!
//! A change asked of the node that holds the stream is applied there and
//! answered with its outcome. One asked of another node sharing the
//! database travels as a notice through the changefeed, which every node
//! reads: the node holding the stream applies it and tells the outcome on
//! the stream itself. So the call works on whichever node it reaches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::identity::Caller;

/// Changes a stream has not taken yet, at most.
const QUEUED_CHANGES: usize = 16;

/// A subscription to add to an open stream: exactly one of a collection
/// (with its filter, fields, diff and snapshot options), a channel, or
/// presence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) collection: Option<String>,
    /// A named view of the collection, beside its own subscription and
    /// any others (`collection:<name>.<view>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) view: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) presence: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fields: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) diff: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot_sort: Option<String>,
}

impl NewSubscription {
    /// The id the subscription will have on the stream.
    pub fn id(&self) -> Result<SubscriptionId, Error> {
        match (&self.collection, &self.channel, self.presence) {
            (Some(name), None, None) => Ok(SubscriptionId::Collection(match &self.view {
                Some(view) => format!("{name}.{view}"),
                None => name.clone(),
            })),
            (None, Some(name), None) => Ok(SubscriptionId::Channel(name.clone())),
            (None, None, Some(true)) => Ok(SubscriptionId::Presence),
            _ => Err(Error::invalid(
                "invalid_body",
                "name exactly one of `collection`, `channel` or `presence: true`",
            )),
        }
    }
}

/// One subscription of a stream, as clients name it: `collections` (every
/// collection), `collection:<name>` (or `collection:<name>.<view>`, a
/// view), `channel:<name>` or `presence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionId {
    AllCollections,
    /// Its key: `posts`, or `posts.recent` for a view.
    Collection(String),
    Channel(String),
    Presence,
}

impl std::fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscriptionId::AllCollections => f.write_str("collections"),
            SubscriptionId::Collection(name) => write!(f, "collection:{name}"),
            SubscriptionId::Channel(name) => write!(f, "channel:{name}"),
            SubscriptionId::Presence => f.write_str("presence"),
        }
    }
}

impl SubscriptionId {
    /// The id a client sent; `None` if it names no kind of subscription.
    pub fn parse(text: &str) -> Option<SubscriptionId> {
        if let Some(name) = text.strip_prefix("collection:") {
            return Some(SubscriptionId::Collection(name.to_owned()));
        }
        if let Some(name) = text.strip_prefix("channel:") {
            return Some(SubscriptionId::Channel(name.to_owned()));
        }
        match text {
            "collections" => Some(SubscriptionId::AllCollections),
            "presence" => Some(SubscriptionId::Presence),
            _ => None,
        }
    }
}

impl serde::Serialize for SubscriptionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a client asks of its stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Add(NewSubscription),
    Remove { id: String },
}

/// Who may change a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Owner {
    /// The signed-in user who opened it.
    User(String),
    /// An anonymous caller who holds the secret its `connected` event gave.
    Anonymous(String),
}

impl Owner {
    /// The owner of a stream opened by `caller`.
    pub fn of(caller: &Caller) -> Owner {
        match caller {
            Some(identity) => Owner::User(identity.user_id.clone()),
            None => Owner::Anonymous(format!("{:032x}", rand::random::<u128>())),
        }
    }

    /// Whether the caller of a request, with the secret it sent (if any),
    /// is this owner.
    pub(crate) fn admits(&self, requester: &Requester) -> bool {
        match (self, requester) {
            (Owner::User(owner), Requester::User(user)) => owner == user,
            (Owner::Anonymous(secret), Requester::Secret(sent)) => {
                // Compared in full, whatever differs first.
                secret.len() == sent.len()
                    && secret
                        .bytes()
                        .zip(sent.bytes())
                        .fold(0, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            _ => false,
        }
    }

    /// The secret an anonymous owner proves itself with.
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Owner::Anonymous(secret) => Some(secret),
            Owner::User(_) => None,
        }
    }
}

/// Who asks for a change: a signed-in user, or whoever sent a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    User(String),
    Secret(String),
    Nobody,
}

impl Requester {
    pub fn of(caller: &Caller, secret: Option<&str>) -> Requester {
        match (caller, secret) {
            (Some(identity), _) => Requester::User(identity.user_id.clone()),
            (None, Some(secret)) => Requester::Secret(secret.to_owned()),
            (None, None) => Requester::Nobody,
        }
    }
}

/// A change on its way to a stream of this node, with where its outcome
/// goes. Sent boxed: a queue allocates room for 32 of what it carries at
/// once, and a stream rarely gets one at all.
pub struct Command {
    pub change: Change,
    pub reply: oneshot::Sender<Result<Json, Error>>,
}

/// The changeable streams of this node.
#[derive(Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    owner: Owner,
    commands: mpsc::Sender<Box<Command>>,
}

/// A stream's place among the connections; dropped with the stream.
pub(crate) struct Registration {
    connections: Connections,
    pub(crate) id: String,
    pub(crate) owner: Owner,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

/// Where a change asked of this node goes.
pub enum Route {
    /// The stream is here: its owner checked, the way to it.
    Here(mpsc::Sender<Box<Command>>),
    /// Not here: perhaps on another node.
    Elsewhere,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a new stream of `caller`: its id (unguessable), its owner,
    /// and the queue its changes arrive in.
    pub(crate) fn register(&self, caller: &Caller) -> (Registration, mpsc::Receiver<Box<Command>>) {
        let id = format!("{:032x}", rand::random::<u128>());
        let owner = Owner::of(caller);
        let (commands, receiver) = mpsc::channel(QUEUED_CHANGES);
        self.lock().insert(
            id.clone(),
            Entry {
                owner: owner.clone(),
                commands,
            },
        );
        let registration = Registration {
            connections: self.clone(),
            id,
            owner,
        };
        (registration, receiver)
    }

    /// Where a change of stream `id` asked by `requester` goes; a stream of
    /// this node owned by someone else is refused (as if it did not exist,
    /// so ids cannot be probed).
    pub fn route(&self, id: &str, requester: &Requester) -> Result<Route, Error> {
        match self.lock().get(id) {
            Some(entry) if entry.owner.admits(requester) => Ok(Route::Here(entry.commands.clone())),
            Some(_) => Err(not_yours(id)),
            None => Ok(Route::Elsewhere),
        }
    }

    /// How many streams are open here.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The answer for a stream that does not exist or is not the caller's.
pub fn not_yours(id: &str) -> Error {
    Error::NotFound(format!("no open stream `{id}` of yours"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_may_change_a_stream() {
        let connections = Connections::default();
        let (anonymous, _queue) = connections.register(&None);
        let secret = anonymous.owner.secret().unwrap().to_owned();
        let here = |id: &str, requester: Requester| {
            matches!(connections.route(id, &requester), Ok(Route::Here(_)))
        };
        assert!(here(&anonymous.id, Requester::Secret(secret.clone())));
        assert!(!here(&anonymous.id, Requester::Secret("0".repeat(32))));
        assert!(!here(&anonymous.id, Requester::Nobody));
        assert!(!here(&anonymous.id, Requester::User("ann".into())));
        let id = anonymous.id.clone();
        drop(anonymous);
        assert!(matches!(
            connections.route(&id, &Requester::Secret(secret)),
            Ok(Route::Elsewhere)
        ));
        assert_eq!(connections.len(), 0);
    }
}
