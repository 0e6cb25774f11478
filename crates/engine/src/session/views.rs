//! Several subscriptions of one collection on one stream.
//!
//! A stream may hold a collection's own subscription (`collection:posts`)
//! and any number of its named views (`collection:posts.recent`), each with
//! its own filter, fields, diff and snapshot. The hub sees one topic per
//! collection, whose filter is the union of its subscriptions' (so a
//! stream's queue holds each event once, and fan-out is unchanged); the
//! stream then judges each event against each subscription of its
//! collection on its own, and sends one frame per subscription it reaches:
//! a `Left` for a view the record left, a match for one it is in. A view's
//! frames carry `"subscription": "collection:posts.recent"`; the
//! collection's own carry none, as on a stream without views, and keep the
//! frame shared by every stream.
//!
//! Both live events and replays pass through [`Views::split`], so the
//! seam rules of a stream hold for every view alike.

use std::collections::HashMap;
use std::sync::Arc;

use crate::Error;
use crate::collection::CollectionName;
use bytes::Bytes;

use crate::event::{Audience, Delivery, Event, EventKind, Payload};
use crate::filter::{Expr, Filter};
use crate::frame::shaped;
use crate::shape::Shape;

/// Longest view name.
const MAX_VIEW_LEN: usize = 32;

/// One subscription of a collection, as a stream's plan holds it.
#[derive(Clone, Debug)]
pub struct CollectionSub {
    pub name: CollectionName,
    /// `None`: the collection's own subscription.
    pub view: Option<Arc<str>>,
    pub filter: Option<Expr>,
}

impl CollectionSub {
    /// The collection's own subscription.
    pub fn own(name: CollectionName, filter: Option<Expr>) -> CollectionSub {
        CollectionSub {
            name,
            view: None,
            filter,
        }
    }

    /// How the stream's parameters and subscription ids name it: `posts`,
    /// or `posts.recent` for a view.
    pub fn key(&self) -> String {
        match &self.view {
            None => self.name.to_string(),
            Some(view) => format!("{}.{view}", self.name),
        }
    }

    /// Reads a key (`posts` or `posts.recent`) into a collection and a view.
    pub fn parse_key(key: &str) -> Result<(CollectionName, Option<Arc<str>>), Error> {
        match key.split_once('.') {
            None => Ok((CollectionName::new(key)?, None)),
            Some((name, view)) => Ok((CollectionName::new(name)?, Some(view_name(view)?))),
        }
    }
}

/// Checks a view's name: 1 to 32 letters, digits, `_` or `-`.
pub fn view_name(text: &str) -> Result<Arc<str>, Error> {
    let valid = !text.is_empty()
        && text.len() <= MAX_VIEW_LEN
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        let shown: String = text.chars().take(40).collect();
        return Err(Error::invalid(
            "invalid_query",
            format!(
                "view name {shown:?}: 1 to {MAX_VIEW_LEN} letters, digits, `_` or `-` (as in `posts.recent`)"
            ),
        ));
    }
    Ok(Arc::from(text))
}

/// One collection subscription with the condition it was bound with: the
/// caller's read rule, then its filter.
#[derive(Clone)]
pub struct BoundSub {
    pub(crate) sub: CollectionSub,
    /// `None`: every record.
    pub(crate) condition: Option<Arc<Filter>>,
    /// The key of its shape and parameters (`posts`, `posts.recent`).
    pub(crate) key: Arc<str>,
    /// Its subscription id, for a view (`collection:posts.recent`); `None`
    /// for the collection's own, whose frames carry no id.
    pub(crate) tag: Option<Arc<str>>,
}

impl BoundSub {
    pub(crate) fn new(sub: CollectionSub, condition: Option<Arc<Filter>>) -> BoundSub {
        let key: Arc<str> = Arc::from(sub.key());
        let tag = sub
            .view
            .as_ref()
            .map(|_| Arc::from(format!("collection:{key}")));
        BoundSub {
            sub,
            condition,
            key,
            tag,
        }
    }

    /// Whether `record` is in this subscription's view.
    pub(crate) fn sees(&self, record: &serde_json::Value) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|filter| filter.matches(record))
    }

    /// The frame of a record event for this subscription, as `delivery`
    /// (its own): tagged with its id for a view; for the collection's own,
    /// as on a stream without views.
    pub(crate) fn frame(&self, shape: &Shape, event: &Event, delivery: Delivery) -> Bytes {
        let saw_before = || {
            event
                .before
                .as_ref()
                .is_some_and(|before| self.sees(before))
        };
        let Some(tag) = self.tag.as_deref() else {
            if shape.is_whole() || delivery == Delivery::Left {
                return event.frame(delivery);
            }
            return shaped(shape, event, saw_before, |payload| {
                event.frame_with(payload)
            });
        };
        if delivery == Delivery::Left {
            return event.view_frame(delivery, Payload::Data(&event.data), tag);
        }
        shaped(shape, event, saw_before, |payload| {
            event.view_frame(delivery, payload, tag)
        })
    }

    /// How a record event reaches this subscription, judged on its own:
    /// as for a stream with one subscription of the collection.
    pub(crate) fn delivery(&self, event: &Event) -> Option<Delivery> {
        if self.sees(&event.data) {
            Some(Delivery::Match)
        } else if event.kind == EventKind::RecordUpdated
            && event
                .before
                .as_ref()
                .is_some_and(|before| self.sees(before))
        {
            Some(Delivery::Left)
        } else {
            None
        }
    }
}

/// A stream's collection subscriptions, bound, and which collections have
/// more than their own (whose events are split).
#[derive(Clone, Default)]
pub struct Views {
    subs: Vec<BoundSub>,
    /// For each collection with a view: the indexes in `subs` of all its
    /// subscriptions.
    split: HashMap<Arc<str>, Vec<usize>>,
}

impl Views {
    pub(crate) fn new(subs: Vec<BoundSub>) -> Views {
        let mut split: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (index, bound) in subs.iter().enumerate() {
            split
                .entry(bound.sub.name.shared())
                .or_default()
                .push(index);
        }
        split.retain(|_, indexes| indexes.iter().any(|&i| subs[i].sub.view.is_some()));
        Views { subs, split }
    }

    /// The subscriptions a record event must be judged by one at a time:
    /// `None` when its collection has only its own (the hub's delivery
    /// stands), or the event is not a record's.
    pub(crate) fn split(&self, event: &Event) -> Option<impl Iterator<Item = &BoundSub>> {
        // Most streams have no views: no hashing per event for them.
        if self.split.is_empty() || event.kind.audience() != Audience::Record {
            return None;
        }
        let indexes = self.split.get(event.collection()?)?;
        Some(indexes.iter().map(|&index| &self.subs[index]))
    }

    /// Every subscription, in the plan's order.
    pub fn all(&self) -> &[BoundSub] {
        &self.subs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_collection_and_perhaps_a_view() {
        let (name, view) = CollectionSub::parse_key("posts.recent").unwrap();
        assert_eq!((name.as_str(), view.as_deref()), ("posts", Some("recent")));
        let (name, view) = CollectionSub::parse_key("posts").unwrap();
        assert_eq!((name.as_str(), view), ("posts", None));
        for bad in [
            "posts.",
            "posts.a.b",
            "posts.no space",
            ".recent",
            "1posts.x",
        ] {
            assert!(CollectionSub::parse_key(bad).is_err(), "{bad}");
        }
        let long = format!("posts.{}", "v".repeat(MAX_VIEW_LEN + 1));
        assert!(CollectionSub::parse_key(&long).is_err());
        let sub = CollectionSub {
            name: CollectionName::new("posts").unwrap(),
            view: Some(Arc::from("recent")),
            filter: None,
        };
        assert_eq!(sub.key(), "posts.recent");
        assert_eq!(
            BoundSub::new(sub, None).tag.as_deref(),
            Some("collection:posts.recent")
        );
    }
}
