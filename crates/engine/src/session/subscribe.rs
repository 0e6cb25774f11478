//! What a stream subscribes to (its [`Plan`], whose topics clients name by
//! [`SubscriptionId`]), and subscribing it to the hub with its caller's
//! read rules bound in.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Engine;
use crate::Error;
use crate::access::{collection_access, refusal};
use crate::channels::validate_channel;
use crate::collection::CollectionName;
use crate::connections::SubscriptionId;
use crate::decide::WatchedRules;
use crate::filter::{Expr, Filter};
use crate::hub::{Interest, QueueLimit, Reader, Scope, Subscription, Topic, Topics};
use crate::identity::{Caller, claims_of};
use crate::rules::{Access, Action, both};

use super::views::{BoundSub, CollectionSub, Views};

/// How often a stream re-reads its collections' rules when they change
/// while it subscribes.
const SUBSCRIBE_ATTEMPTS: usize = 3;

/// What a stream asked for.
#[derive(Clone)]
pub struct Plan {
    /// Every collection, with this filter (the stream of every collection
    /// when it names no collection or channel).
    pub all: Option<Option<Expr>>,
    /// Subscriptions of named collections, each with its filter: a
    /// collection's own, and its views (see `views`).
    pub collections: Vec<CollectionSub>,
    pub channels: Vec<String>,
}

/// Most collections and channels on one stream.
pub const MAX_TOPICS: usize = 32;

impl Plan {
    /// The stream of every collection, each record judged by `filter`.
    pub fn every_collection(filter: Option<Expr>) -> Plan {
        Plan {
            all: Some(filter),
            collections: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// A stream of named collections and channels, none yet.
    pub fn named() -> Plan {
        Plan {
            all: None,
            collections: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// Adds a subscription of a named collection (its own, or a view).
    /// Refused when the plan carries it, or every collection, or
    /// [`MAX_TOPICS`] subscriptions already.
    pub fn add_collection(&mut self, sub: CollectionSub) -> Result<(), Error> {
        if self.all.is_some() {
            return Err(Error::Conflict(
                "this stream carries every collection already".into(),
            ));
        }
        let key = sub.key();
        if self.collections.iter().any(|other| other.key() == key) {
            return Err(taken(&SubscriptionId::Collection(key)));
        }
        self.room_for_one()?;
        self.collections.push(sub);
        Ok(())
    }

    /// Adds a channel (its name checked). Refused when the plan carries it,
    /// or [`MAX_TOPICS`] topics already.
    pub fn add_channel(&mut self, channel: &str) -> Result<(), Error> {
        validate_channel(channel)?;
        if self.channels.iter().any(|other| other == channel) {
            return Err(taken(&SubscriptionId::Channel(channel.to_owned())));
        }
        self.room_for_one()?;
        self.channels.push(channel.to_owned());
        Ok(())
    }

    /// Removes the topic `id` names; false if the plan has no such topic.
    pub(crate) fn remove(&mut self, id: &SubscriptionId) -> bool {
        let before = self.collections.len() + self.channels.len();
        match id {
            SubscriptionId::Collection(key) => self.collections.retain(|sub| sub.key() != *key),
            SubscriptionId::Channel(name) => self.channels.retain(|other| other != name),
            SubscriptionId::AllCollections | SubscriptionId::Presence => {}
        }
        self.collections.len() + self.channels.len() < before
    }

    /// Whether the plan carries nothing (a stream keeps at least one topic).
    pub(crate) fn is_empty(&self) -> bool {
        self.all.is_none() && self.collections.is_empty() && self.channels.is_empty()
    }

    /// The ids of the plan's subscriptions, with `presence` if it has it.
    pub(crate) fn subscription_ids(&self, presence: bool) -> Vec<SubscriptionId> {
        let all = self.all.as_ref().map(|_| SubscriptionId::AllCollections);
        let collections = self
            .collections
            .iter()
            .map(|sub| SubscriptionId::Collection(sub.key()));
        let channels = self.channels.iter().cloned().map(SubscriptionId::Channel);
        let presence = presence.then_some(SubscriptionId::Presence);
        all.into_iter()
            .chain(collections)
            .chain(channels)
            .chain(presence)
            .collect()
    }

    /// Refuses a topic past [`MAX_TOPICS`]: the same answer whether the
    /// stream's URL names too many or a change would add one too many.
    fn room_for_one(&self) -> Result<(), Error> {
        if self.collections.len() + self.channels.len() >= MAX_TOPICS {
            return Err(Error::invalid(
                "too_many_topics",
                format!("at most {MAX_TOPICS} collections, views and channels on one stream"),
            ));
        }
        Ok(())
    }
}

/// The answer to adding a subscription the stream has.
pub(super) fn taken(id: &SubscriptionId) -> Error {
    Error::Conflict(format!("this stream has `{id}` already"))
}

/// What subscribing gave a stream.
pub struct Subscribed {
    pub interest: Interest,
    pub subscription: Subscription,
    pub watched: WatchedRules,
    /// Each collection subscription with the condition it was bound with.
    pub views: Views,
}

/// Subscribes to the plan's topics. A named collection's read rule, bound
/// to `caller`, is folded into its topic's filter (so equal callers share a
/// group and its index), and so is a channel's; every collection's rules
/// apply per event through a `Reader`. A collection with several
/// subscriptions (views) has one topic, the union of their filters. A rule
/// change committed after subscribing arrives as an event and ends the
/// stream; one committed while subscribing is caught by reading the rules
/// again, and the subscription is made anew.
pub async fn subscribe(
    state: &Engine,
    caller: &Caller,
    plan: &Plan,
    presence: Option<Access>,
) -> Result<Subscribed, Error> {
    let claims = claims_of(caller);
    let compiled = |expr: Option<Expr>| expr.map(|expr| Arc::new(Filter::new(expr)));
    let mut topics = Topics::new();
    if let Some(query) = &plan.all {
        topics.push(Topic {
            scope: Scope::AllCollections,
            filter: compiled(query.as_ref().map(|expr| expr.bind(claims))),
        });
    }
    for channel in &plan.channels {
        let read = state.channels.read(channel, caller);
        if read.is_nothing() {
            return Err(refusal(caller, &format!("read channel `{channel}`")));
        }
        topics.push(Topic {
            scope: Scope::Channel(Arc::from(channel.as_str())),
            filter: compiled(read.condition()),
        });
    }
    let reader = match caller {
        Some(identity) if identity.admin => None,
        _ if plan.all.is_some() => Some(Arc::new(Reader::new(caller.clone()))),
        _ => None,
    };
    // Each collection once, in the plan's order, with its subscriptions.
    let mut names: Vec<&CollectionName> = Vec::new();
    for sub in &plan.collections {
        if !names.contains(&&sub.name) {
            names.push(&sub.name);
        }
    }
    'attempt: for _ in 0..SUBSCRIBE_ATTEMPTS {
        // The hub's rules, as of its cursor: no database read for the
        // collections it knows. One it does not know yet (created a moment
        // ago) is read from the database.
        let book = state.hub.rules();
        let mut read_from_database = false;
        let mut interest = Interest {
            topics: topics.clone(),
            reader: reader.clone(),
            presence: presence.clone(),
        };
        let mut watched = HashMap::new();
        let mut bound = Vec::with_capacity(plan.collections.len());
        for &name in &names {
            let rules = match book.get(name.as_str()) {
                Some(meta) => Some(meta.rules.clone()),
                None => {
                    read_from_database = true;
                    let meta = state.store.get_collection(name).await?;
                    meta.map(|meta| meta.rules)
                }
            };
            let read = collection_access(rules.as_ref(), name.as_str(), caller, Action::Read)?;
            let subs: Vec<&CollectionSub> = plan
                .collections
                .iter()
                .filter(|sub| sub.name == *name)
                .collect();
            let filters: Option<Vec<Expr>> = subs
                .iter()
                .map(|sub| sub.filter.as_ref().map(|expr| expr.bind(claims)))
                .collect();
            // The rule first: the caller's filter never runs on a record
            // the caller may not read.
            let union = match filters {
                Some(mut filters) if filters.len() == 1 => filters.pop(),
                Some(filters) => Some(Expr::Or(filters)),
                // One subscription takes every record.
                None => None,
            };
            let topic_filter = compiled(both(read.condition(), union));
            if let [sub] = subs[..] {
                // Alone, it is judged by its topic's filter: compiled once.
                bound.push(BoundSub::new(sub.clone(), topic_filter.clone()));
            } else {
                for sub in subs {
                    let filter = sub.filter.as_ref().map(|expr| expr.bind(claims));
                    let condition = compiled(both(read.condition(), filter));
                    bound.push(BoundSub::new(sub.clone(), condition));
                }
            }
            interest.topics.push(Topic {
                scope: Scope::Collection(name.shared()),
                filter: topic_filter,
            });
            if let Some(rules) = rules {
                watched.insert(name.shared(), rules);
            }
        }
        let (subscription, book_at_start) = state.hub.subscribe(
            interest.clone(),
            QueueLimit {
                events: state.streams.buffer_events,
                bytes: state.streams.buffer_bytes,
            },
        );
        // The rules bound must be those in force at the subscription's
        // start: every change after it arrives as an event and ends the
        // stream. One committed while subscribing means binding again.
        for &name in &names {
            let bound = watched.get(name.as_str());
            let at_start = if read_from_database {
                state
                    .store
                    .get_collection(name)
                    .await?
                    .map(|meta| meta.rules)
            } else if Arc::ptr_eq(&book, &book_at_start) {
                continue;
            } else {
                book_at_start
                    .get(name.as_str())
                    .map(|meta| meta.rules.clone())
            };
            if at_start.as_ref() != bound {
                continue 'attempt;
            }
        }
        return Ok(Subscribed {
            interest,
            subscription,
            watched,
            views: Views::new(bound),
        });
    }
    Err(Error::Conflict(
        "a collection's rules kept changing while the stream opened; retry".into(),
    ))
}
