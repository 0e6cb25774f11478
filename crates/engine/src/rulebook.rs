//! The rule book: every collection's metadata, and so its rules, as of a
//! point in the feed.
//!
//! The hub keeps one as of its cursor, updated by each collection event just
//! before that event is dispatched, so every live event is judged by the
//! rules in force when it was committed. At start it is rebuilt as of where
//! the feed begins ([`RuleBook::at`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::clock::Stamp;
use crate::collection::CollectionMeta;
use crate::event::{Event, EventKind};
use crate::store::{CHANGES_PER_READ, Change, ChangeOp, Store, StoreError};

/// Every collection, by name. Cloning copies the map (the hub copies it on
/// write, so a replaying stream can hold one).
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    collections: HashMap<Arc<str>, Arc<CollectionMeta>>,
}

impl RuleBook {
    pub fn new() -> RuleBook {
        RuleBook::default()
    }

    /// What the book says of `collection`, if it exists.
    pub fn get(&self, collection: &str) -> Option<&Arc<CollectionMeta>> {
        self.collections.get(collection)
    }

    pub(crate) fn insert(&mut self, meta: CollectionMeta) {
        self.collections
            .insert(Arc::from(meta.name.as_str()), Arc::new(meta));
    }

    /// Takes in a collection event (other events change nothing).
    pub(crate) fn apply(&mut self, event: &Event) {
        let (Some(name), Some(meta)) = (event.collection(), event.collection_meta()) else {
            return;
        };
        match event.kind {
            EventKind::CollectionDeleted => {
                self.collections.remove(name);
            }
            EventKind::CollectionCreated | EventKind::CollectionUpdated => {
                self.collections.insert(name.clone(), meta.clone());
            }
            // Only collection events carry a collection's metadata.
            EventKind::RecordCreated
            | EventKind::RecordUpdated
            | EventKind::RecordDeleted
            | EventKind::ChannelMessage
            | EventKind::UserJoined
            | EventKind::UserLeft
            | EventKind::SystemAnnouncement
            | EventKind::ForcedLogout
            | EventKind::SubscriptionChange => {}
        }
    }

    /// Every collection as it was at `start`, where the feed begins: the
    /// collections of now, with the changes committed since `start` undone
    /// (the feed publishes those again, in order, and each updates the
    /// hub's book just before it is dispatched).
    pub async fn at(store: &Store, start: Stamp) -> Result<RuleBook, StoreError> {
        let mut book = RuleBook::new();
        for meta in store.list_collections().await? {
            book.insert(meta);
        }
        let mut undone = HashSet::new();
        let mut since = start;
        // The window is the settle window, so this is a page or two.
        for _ in 0..64 {
            let sets = store.read_changes(since, CHANGES_PER_READ).await?;
            let Some(last) = sets.last() else { break };
            since = last.stamp.next();
            for change in sets.into_iter().flat_map(|set| set.changes) {
                let Change::Collection {
                    name,
                    op,
                    meta,
                    before,
                    ..
                } = change
                else {
                    continue;
                };
                // The first change of a collection in the window says what
                // it was before.
                if !undone.insert(name.clone()) {
                    continue;
                }
                let was = match op {
                    ChangeOp::Create => Some(None),
                    // `None`: an update whose before-image could not be
                    // rebuilt; the present rules stand.
                    ChangeOp::Update => before.map(Some),
                    ChangeOp::Delete => meta.map(Some),
                };
                match was {
                    Some(Some(meta)) => {
                        book.collections.insert(name, meta);
                    }
                    Some(None) => {
                        book.collections.remove(&name);
                    }
                    None => {}
                }
            }
        }
        Ok(book)
    }
}
