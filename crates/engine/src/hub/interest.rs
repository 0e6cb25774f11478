//! What a subscription wants, and how one event reaches it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use smallvec::{SmallVec, smallvec};

use crate::collection::CollectionMeta;
use crate::event::{Audience, Delivery, Event, EventKind, Source};
use crate::filter::{FieldPath, Filter, IndexKey};
use crate::identity::Caller;
use crate::rulebook::RuleBook;
use crate::rules::{Access, Action};

/// What a subscription wants to receive: one or more topics (collections
/// or channels, with their filters) on one connection, and presence.
#[derive(Clone)]
pub struct Interest {
    /// Non-empty. Events of different topics never overlap, except that
    /// an all-collections topic must not be combined with one collection.
    /// Most streams have one, kept inline: dispatch visits every group of
    /// a scope, and a topic in an allocation of its own cost a cache miss
    /// per group.
    pub(crate) topics: Topics,
    /// Whose read rules apply, per collection, to an all-collections topic:
    /// set for a caller who is not an admin. `None`: no rules beyond the
    /// topics' filters (a collection's or channel's rule is folded into its
    /// topic's filter).
    pub(crate) reader: Option<Arc<Reader>>,
    /// Whether `user.*` events are wanted, and which of them the presence
    /// rule lets this caller see (`None`: none wanted).
    pub(crate) presence: Option<Access>,
}

/// An interest's topics.
pub type Topics = SmallVec<[Topic; 1]>;

/// Which events a topic covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every collection's.
    AllCollections,
    /// One collection's.
    Collection(Arc<str>),
    /// One channel's.
    Channel(Arc<str>),
}

impl Scope {
    /// The scopes an event of `source` is filed under.
    #[inline]
    pub(super) fn of(source: &Source) -> [Option<Scope>; 2] {
        match source {
            Source::Collection(name) => [
                Some(Scope::AllCollections),
                Some(Scope::Collection(name.clone())),
            ],
            Source::Channel(name) => [Some(Scope::Channel(name.clone())), None],
            Source::Service => [None, None],
        }
    }
}

/// One source of events and its filter.
#[derive(Clone)]
pub struct Topic {
    pub(crate) scope: Scope,
    /// Record events (and channel messages) must match it; `None` matches
    /// every one.
    pub(crate) filter: Option<Arc<Filter>>,
}

impl Topic {
    /// Whether `event` is of this topic.
    #[inline]
    fn covers(&self, event: &Event) -> bool {
        match (&self.scope, &event.source) {
            (Scope::AllCollections, Source::Collection(_)) => true,
            (Scope::Collection(scope), Source::Collection(name))
            | (Scope::Channel(scope), Source::Channel(name)) => scope == name,
            _ => false,
        }
    }

    /// The `field = value` terms its filter requires (the hub's index).
    #[inline]
    pub(super) fn terms(&self) -> &[(FieldPath, IndexKey)] {
        self.filter
            .as_ref()
            .map_or(&[], |filter| filter.index_terms())
    }
}

/// A caller whose read rules are applied per collection at dispatch, from
/// the rules the hub holds (kept in event order, so each live event is
/// judged by the rules in force when it was committed).
pub struct Reader {
    caller: Caller,
    /// Equal for callers with equal claims, who can share a group.
    key: String,
    /// Each collection's read rule bound to this caller.
    bound: Mutex<HashMap<Arc<str>, Bound>>,
}

/// A read rule bound to a reader, with the collection it was bound from (a
/// rule change replaces the `Arc`, which invalidates it).
type Bound = (Arc<CollectionMeta>, Access);

impl Reader {
    pub fn new(caller: Caller) -> Reader {
        let key = match &caller {
            Some(identity) => identity.claims.to_string(),
            None => String::new(),
        };
        Reader {
            caller,
            key,
            bound: Mutex::new(HashMap::new()),
        }
    }

    /// What this caller may read of `collection`, as `meta` says.
    #[inline]
    fn access(&self, collection: &Arc<str>, meta: &Arc<CollectionMeta>) -> Access {
        let mut bound = self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match bound.get(collection) {
            Some((from, access)) if Arc::ptr_eq(from, meta) => access.clone(),
            _ => {
                let access = meta.rules.access(Action::Read, &self.caller);
                bound.insert(collection.clone(), (meta.clone(), access.clone()));
                access
            }
        }
    }

    /// What this caller may read of the collection `event` is about, as the
    /// book says (nothing of a collection it does not know).
    #[inline]
    fn record_access(&self, event: &Event, rules: &RuleBook) -> Access {
        let Some(name) = event.collection() else {
            return Access::Nothing;
        };
        match rules.get(name) {
            Some(meta) => self.access(name, meta),
            None => Access::Nothing,
        }
    }

    /// Whether this caller may see a collection event: the collection's
    /// rules as the event carries them (after it; before it, for a delete)
    /// must allow it, and in a replay, the collection's rules of now too.
    fn sees_collection_event(&self, event: &Event, rules: &RuleBook) -> bool {
        let refused_now = event
            .collection()
            .and_then(|name| Some((name, rules.get(name)?)))
            .is_some_and(|(name, meta)| self.access(name, meta).is_nothing());
        !refused_now
            && !event
                .collection_rules()
                .access(Action::Read, &self.caller)
                .is_nothing()
    }
}

impl Interest {
    /// One topic, no reader, no presence.
    pub fn topic(scope: Scope, filter: Option<Arc<Filter>>) -> Interest {
        Interest {
            topics: smallvec![Topic { scope, filter }],
            reader: None,
            presence: None,
        }
    }

    /// How `event` reaches this interest, if at all, given the collections'
    /// current `rules`. Live dispatch and replay both decide with this.
    ///
    /// Collection events ignore the filter, but not the read rule. A record
    /// event matches when its record does; an update whose record matched
    /// before but not after is delivered as [`Delivery::Left`], so that a
    /// client building a view from events ends with exactly the records that
    /// match.
    #[inline]
    pub(crate) fn delivery(&self, event: &Event, rules: &RuleBook) -> Option<Delivery> {
        match event.kind.audience() {
            // The stream decides what a sign-out means for it.
            Audience::Everyone => Some(Delivery::Match),
            Audience::Presence => self
                .presence
                .as_ref()
                .filter(|access| access.allows(&event.data))
                .map(|_| Delivery::Match),
            Audience::Channel => {
                let topic = self.topics.iter().find(|topic| topic.covers(event))?;
                let matches = topic
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(&event.data));
                matches.then_some(Delivery::Match)
            }
            Audience::Collection => {
                let topic = self.topics.iter().find(|topic| topic.covers(event))?;
                match self.reader_of(topic) {
                    Some(reader) if !reader.sees_collection_event(event, rules) => None,
                    _ => Some(Delivery::Match),
                }
            }
            Audience::Record => {
                let visible = self.record_view(event, rules)?;
                if visible(&event.data) {
                    Some(Delivery::Match)
                } else if event.kind == EventKind::RecordUpdated
                    && event.before.as_ref().is_some_and(visible)
                {
                    Some(Delivery::Left)
                } else {
                    None
                }
            }
        }
    }

    /// Whether this interest saw a record event's record before the change
    /// (its before-image passed the rule and the filter): a `diff=true`
    /// stream then sends a patch. `false` when there is no before-image.
    pub(crate) fn saw_before(&self, event: &Event, rules: &RuleBook) -> bool {
        match (self.record_view(event, rules), &event.before) {
            (Some(visible), Some(before)) => visible(before),
            _ => false,
        }
    }

    /// The reader that judges `topic`'s events: a reader's rules apply to
    /// the all-collections topic only (a named collection's rule is in its
    /// topic's filter).
    #[inline]
    fn reader_of(&self, topic: &Topic) -> Option<&Reader> {
        match &self.reader {
            Some(reader) if matches!(topic.scope, Scope::AllCollections) => Some(reader),
            _ => None,
        }
    }

    /// For a record event: which images of its record this interest sees
    /// (the topic's rule, then its filter), or `None` if the event is not
    /// for it at all.
    #[inline]
    fn record_view<'a>(
        &'a self,
        event: &'a Event,
        rules: &'a RuleBook,
    ) -> Option<impl Fn(&serde_json::Value) -> bool + 'a> {
        let topic = self.topics.iter().find(|topic| topic.covers(event))?;
        let access = match self.reader_of(topic) {
            Some(reader) => reader.record_access(event, rules),
            None => Access::All,
        };
        if access.is_nothing() {
            return None;
        }
        // The rule first: a caller's filter never runs on a record the
        // caller may not read.
        Some(move |record: &serde_json::Value| {
            access.allows(record)
                && topic
                    .filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(record))
        })
    }

    pub(super) fn group_key(&self) -> GroupKey {
        (
            self.topics
                .iter()
                .map(|topic| {
                    (
                        topic.scope.clone(),
                        topic
                            .filter
                            .as_ref()
                            .map(|filter| filter.canonical().to_owned()),
                    )
                })
                .collect(),
            self.reader.as_ref().map(|reader| reader.key.clone()),
            self.presence.as_ref().map(|access| match access {
                Access::All => "all".to_owned(),
                Access::Nothing => "none".to_owned(),
                Access::Matching(filter) => filter.canonical().to_owned(),
            }),
        )
    }

    /// Whether one event can reach the group through more than one index
    /// entry (several topics, or a topic filed under several terms).
    pub(super) fn reachable_twice(&self) -> bool {
        self.topics.len() > 1 || self.topics.iter().any(|topic| topic.terms().len() > 1)
    }
}

/// Subscriptions with equal topics (scopes and canonical filters), reader
/// and presence share a group.
pub(super) type GroupKey = (Vec<(Scope, Option<String>)>, Option<String>, Option<String>);
