//! The hub's dispatch index: per scope, the groups an event can match.
//!
//! Groups whose filter requires `field = value` are filed under that pair,
//! so an event only visits the groups it can match plus the unindexed ones.

use std::collections::HashMap;

use indexmap::IndexSet;

use super::GroupId;
use super::interest::Topic;
use crate::event::Event;
use crate::filter::{FieldPath, IndexKey};

/// The groups of one scope, indexed for dispatch.
#[derive(Default)]
pub(super) struct TopicIndex {
    /// Groups without an equality term: visited for every event.
    unindexed: GroupList,
    /// Groups with a `field = value` term, by field path and value.
    indexed: HashMap<FieldPath, HashMap<IndexKey, GroupList>>,
}

impl TopicIndex {
    pub(super) fn is_empty(&self) -> bool {
        self.unindexed.is_empty() && self.indexed.is_empty()
    }

    pub(super) fn add(&mut self, id: GroupId, topic: &Topic) {
        let terms = topic.terms();
        if terms.is_empty() {
            self.unindexed.insert(id);
        }
        for (path, key) in terms {
            self.indexed
                .entry(path.clone())
                .or_default()
                .entry(key.clone())
                .or_default()
                .insert(id);
        }
    }

    pub(super) fn remove(&mut self, id: GroupId, topic: &Topic) {
        let terms = topic.terms();
        if terms.is_empty() {
            self.unindexed.swap_remove(&id);
        }
        for (path, key) in terms {
            if let Some(values) = self.indexed.get_mut(path) {
                if let Some(ids) = values.get_mut(key) {
                    ids.swap_remove(&id);
                    if ids.is_empty() {
                        values.remove(key);
                    }
                }
                if values.is_empty() {
                    self.indexed.remove(path);
                }
            }
        }
    }

    /// Calls `visit` with every group that may match `event`, a record or a
    /// channel message: the unindexed, and those filed under its values (a
    /// group filed under several terms may be visited more than once).
    #[inline]
    pub(super) fn candidates(&self, event: &Event, mut visit: impl FnMut(GroupId)) {
        self.unindexed.iter().copied().for_each(&mut visit);
        for (path, values) in &self.indexed {
            let after = path.get(&event.data).and_then(IndexKey::from_json);
            let before = event
                .before
                .as_ref()
                .and_then(|before| path.get(before))
                .and_then(IndexKey::from_json);
            let keys = [
                after.as_ref(),
                before.as_ref().filter(|key| Some(*key) != after.as_ref()),
            ];
            for key in keys.into_iter().flatten() {
                if let Some(list) = values.get(key) {
                    list.iter().copied().for_each(&mut visit);
                }
            }
        }
    }

    /// Every group of the scope, indexed or not: a collection event ignores
    /// filters.
    pub(super) fn every_group(&self, mut visit: impl FnMut(GroupId)) {
        self.unindexed.iter().copied().for_each(&mut visit);
        for values in self.indexed.values() {
            values.values().flatten().copied().for_each(&mut visit);
        }
    }
}

/// Groups in a dense list (dispatch walks it) that leave in O(1): a scope
/// can hold a hundred thousand unindexed groups (and an indexed value as
/// many, `public = true` of an owner-or-public rule), and a list that had to
/// be searched made all of them leaving (every stream of a node closing at
/// once) quadratic, seconds of work under the hub's lock. `swap_remove`
/// keeps it dense; the order of groups is not part of dispatch.
type GroupList = IndexSet<GroupId>;
