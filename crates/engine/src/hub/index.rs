//! The hub's dispatch index: per scope, the groups an event can match.
//!
//! Groups whose filter requires `field = value` are filed under that pair,
//! so an event only visits the groups it can match plus the unindexed ones.

use std::collections::HashMap;

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
            self.unindexed.remove(id);
        }
        for (path, key) in terms {
            if let Some(values) = self.indexed.get_mut(path) {
                if let Some(ids) = values.get_mut(key) {
                    ids.remove(id);
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
        self.unindexed.ids.iter().copied().for_each(&mut visit);
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
                    list.ids.iter().copied().for_each(&mut visit);
                }
            }
        }
    }

    /// Every group of the scope, indexed or not: a collection event ignores
    /// filters.
    pub(super) fn every_group(&self, mut visit: impl FnMut(GroupId)) {
        self.unindexed.ids.iter().copied().for_each(&mut visit);
        for values in self.indexed.values() {
            values
                .values()
                .flat_map(|list| &list.ids)
                .copied()
                .for_each(&mut visit);
        }
    }
}

/// Groups in a dense list (dispatch walks it) that leave in O(1): a scope
/// can hold a hundred thousand unindexed groups (and an indexed value as
/// many, `public = true` of an owner-or-public rule), and a list that had to
/// be searched made all of them leaving (every stream of a node closing at
/// once) quadratic, seconds of work under the hub's lock.
#[derive(Default)]
struct GroupList {
    ids: Vec<GroupId>,
    /// Where each group is in `ids`, once there are more than
    /// [`SEARCHED_UP_TO`] (most lists hold one group: they pay nothing).
    positions: Option<HashMap<GroupId, usize>>,
}

/// Lists up to this long are searched; longer ones keep positions.
const SEARCHED_UP_TO: usize = 32;

impl GroupList {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn insert(&mut self, id: GroupId) {
        if self.position(id).is_some() {
            return;
        }
        if let Some(positions) = &mut self.positions {
            positions.insert(id, self.ids.len());
        }
        self.ids.push(id);
        if self.positions.is_none() && self.ids.len() > SEARCHED_UP_TO {
            let positions = self.ids.iter().enumerate().map(|(at, id)| (*id, at));
            self.positions = Some(positions.collect());
        }
    }

    fn remove(&mut self, id: GroupId) {
        let Some(position) = self.position(id) else {
            return;
        };
        self.ids.swap_remove(position);
        if let Some(positions) = &mut self.positions {
            positions.remove(&id);
            if let Some(moved) = self.ids.get(position) {
                positions.insert(*moved, position);
            }
        }
    }

    fn position(&self, id: GroupId) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&id).copied(),
            None => self.ids.iter().position(|other| *other == id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_list_keeps_each_group_once_and_finds_it_to_remove() {
        // Short lists are searched, long ones keep positions.
        for size in [10, 100] {
            let mut list = GroupList::default();
            for id in 0..size {
                list.insert(id);
            }
            list.insert(3);
            assert_eq!(list.ids.len(), size as usize);
            assert_eq!(list.positions.is_some(), size as usize > SEARCHED_UP_TO);
            for id in [0, size - 1, 4, 4, 420] {
                list.remove(id);
            }
            let mut left = list.ids.clone();
            left.sort_unstable();
            let expected: Vec<GroupId> = (1..size - 1).filter(|id| *id != 4).collect();
            assert_eq!(left, expected);
            for (position, id) in list.ids.iter().enumerate() {
                assert_eq!(list.position(*id), Some(position));
            }
            for id in left {
                list.remove(id);
            }
            assert!(list.is_empty());
            assert!(list.positions.as_ref().is_none_or(HashMap::is_empty));
        }
    }
}
