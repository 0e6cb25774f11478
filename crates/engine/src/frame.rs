//! What one subscriber is sent of an event: the frame encoded once for
//! everyone, or its own, projected to its fields or as a merge patch, or
//! tagged for one view of its collection.

use bytes::Bytes;

use crate::event::{Audience, Delivery, Event, EventKind, Payload};
use crate::hub::Interest;
use crate::rulebook::RuleBook;
use crate::session::BoundSub;
use crate::shape::{Shape, merge_patch};

/// The frame of `event` for a subscriber with `shape` and `interest`: as
/// encoded once for everyone, or projected to its fields, or as a merge
/// patch (`diff=true`) when the subscriber held the record before the
/// change.
pub(crate) fn frame_for(
    shape: &Shape,
    interest: &Interest,
    event: &Event,
    delivery: Delivery,
    rules: &RuleBook,
) -> Bytes {
    if shape.is_whole() || delivery == Delivery::Left || event.kind.audience() != Audience::Record {
        return event.frame(delivery);
    }
    shaped(
        shape,
        event,
        || interest.saw_before(event, rules),
        |payload| event.frame_with(payload),
    )
}

/// The frame of a record event for one subscription of a collection that
/// has views, judged by that subscription alone (`delivery` is its own).
pub(crate) fn view_frame(
    shape: &Shape,
    sub: &BoundSub,
    event: &Event,
    delivery: Delivery,
) -> Bytes {
    let Some(tag) = sub.tag.as_deref() else {
        // The collection's own: framed as on a stream without views.
        if shape.is_whole() || delivery == Delivery::Left {
            return event.frame(delivery);
        }
        let saw_before = || event.before.as_ref().is_some_and(|before| sub.sees(before));
        return shaped(shape, event, saw_before, |payload| {
            event.frame_with(payload)
        });
    };
    if delivery == Delivery::Left {
        return event.view_frame(delivery, Payload::Data(&event.data), tag);
    }
    let saw_before = || event.before.as_ref().is_some_and(|before| sub.sees(before));
    shaped(shape, event, saw_before, |payload| {
        event.view_frame(delivery, payload, tag)
    })
}

/// The record of `event` in `shape`: projected, or as a merge patch when
/// the shape asks for one and the subscriber held the record before.
fn shaped(
    shape: &Shape,
    event: &Event,
    saw_before: impl FnOnce() -> bool,
    frame: impl FnOnce(Payload<'_>) -> Bytes,
) -> Bytes {
    let data = shape.project(&event.data);
    if shape.diff
        && event.kind == EventKind::RecordUpdated
        && let Some(before) = &event.before
        && saw_before()
    {
        let patch = merge_patch(&shape.project(before), &data);
        return frame(Payload::Patch(&patch));
    }
    frame(Payload::Data(&data))
}
