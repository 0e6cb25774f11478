//! What one subscriber is sent of an event: the frame encoded once for
//! everyone, or its own, projected to its fields or as a merge patch (a
//! view's frames, tagged with its id, are `session::views`').

use bytes::Bytes;

use crate::event::{Audience, Delivery, Event, EventKind, Payload};
use crate::hub::Interest;
use crate::rulebook::RuleBook;
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

/// The record of `event` in `shape`: projected, or as a merge patch when
/// the shape asks for one and the subscriber held the record before.
pub(crate) fn shaped(
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
