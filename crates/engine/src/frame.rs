//! What one subscriber is sent of an event: the frame encoded once for
//! everyone, or its own, projected to its fields or as a merge patch.

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
    let data = shape.project(&event.data);
    if shape.diff
        && event.kind == EventKind::RecordUpdated
        && let Some(before) = &event.before
        && interest.saw_before(event, rules)
    {
        let patch = merge_patch(&shape.project(before), &data);
        return event.frame_with(Payload::Patch(&patch));
    }
    event.frame_with(Payload::Data(&data))
}
