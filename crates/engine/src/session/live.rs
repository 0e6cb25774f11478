//! A live stream's events: taken from the hub's queue in chunks, judged
//! (see `decide`), framed for this subscriber, and written together.

use bytes::{Bytes, BytesMut};

use super::{Phase, Session, expired_frame};
use crate::decide::judge;
use crate::event::EventKind;
use crate::hub::Queued;
use crate::rulebook::RuleBook;

/// Live events are written in chunks of at most this many.
const EVENTS_PER_CHUNK: usize = 256;
/// Bytes past which a live chunk takes no more events (one large event
/// still goes whole).
const CHUNK_BYTES: usize = 256 * 1024;

impl Session {
    pub(super) async fn live_chunk(&mut self) -> Option<Bytes> {
        loop {
            // A change forwarded by another node, then the events of a
            // subscription a change replaced, come before anything new.
            if let Some((change, requester)) = self.forwarded.pop_front() {
                if let Some(frame) = Box::pin(self.apply_forwarded(change, &requester)).await {
                    return Some(frame);
                }
                continue;
            }
            if let Some(first) = self.pending.pop_front() {
                match self.take_chunk(first) {
                    Taken::Chunk(chunk) => return Some(chunk),
                    Taken::End => return None,
                    Taken::Nothing => continue,
                }
            }
            // Shutdown comes through the hub, which lets every subscriber
            // go (`Hub::close`): `recv` then ends the stream.
            tokio::select! {
                biased;
                _ = self.expiry.wait() => {
                    self.phase = Phase::Done;
                    return Some(expired_frame());
                }
                Some(command) = self.commands.recv() => {
                    let outcome = Box::pin(self.apply(command.change)).await;
                    let frame = outcome.as_ref().ok().map(|(_, frame)| frame.clone());
                    // The client may have gone; the change stands either way.
                    let _ = command.reply.send(outcome.map(|(answer, _)| answer));
                    if let Some(frame) = frame {
                        return Some(frame);
                    }
                }
                event = self.subscription.recv() => {
                    // `None`: the hub let every stream go (shutdown), or
                    // dropped this one because its queue overflowed; ending
                    // it makes the client resume.
                    let Some(event) = event else {
                        self.phase = Phase::Done;
                        return self.state.shutdown.is_cancelled().then(|| self.leaving_frame());
                    };
                    match self.take_chunk(event) {
                        Taken::Chunk(chunk) => return Some(chunk),
                        Taken::End => return None,
                        Taken::Nothing => {}
                    }
                }
                _ = self.heartbeat.tick() => {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }

    /// The next queued event: those a change left behind first.
    fn next_queued(&mut self) -> Option<Queued> {
        self.pending
            .pop_front()
            .or_else(|| self.subscription.try_recv())
    }

    /// Frames `first` and the events queued behind it into one chunk.
    fn take_chunk(&mut self, first: Queued) -> Taken {
        let mut chunk = Chunk::default();
        let mut next = Some(first);
        let mut count = 0;
        // One clock read per chunk: its events are sent together.
        let now = time::OffsetDateTime::now_utc();
        // Rules for diffs only, which judge the record before.
        let diffs = self.shapes.any_diff();
        let rules = diffs.then(|| self.state.hub.rules());
        let no_rules = RuleBook::new();
        while let Some((event, delivery)) = next {
            // Never send an id twice, even if the feed published it again
            // after a restart. An ephemeral message has no id to repeat.
            let ephemeral = event.is_ephemeral();
            if (ephemeral || self.after.is_none_or(|after| event.id > after))
                && !self
                    .answered
                    .is_some_and(|count| event.answered_before(count))
            {
                if event.kind == EventKind::SubscriptionChange {
                    self.after = Some(event.id);
                    if let Some(forwarded) = self.forwarded_to_me(&event) {
                        self.forwarded.push_back(forwarded);
                        break;
                    }
                    count += 1;
                    next = self.next_queued();
                    continue;
                }
                let verdict = judge(&self.caller, &self.watched_rules, &event);
                if verdict.send {
                    let rules = rules.as_deref().unwrap_or(&no_rules);
                    // Empty when the event reaches none of a collection's views.
                    let frame = self.frame_of(&event, delivery, rules);
                    if !frame.is_empty() {
                        chunk.push(frame);
                        let latency = (now - event.timestamp).as_seconds_f64();
                        self.state.metrics.commit_to_send.observe(latency.max(0.0));
                    }
                }
                if !ephemeral {
                    self.after = Some(event.id);
                }
                if verdict.end {
                    // A sign-out, or a rule change: reconnecting binds the
                    // new rules, and the client resumes after this event,
                    // losing nothing.
                    self.phase = Phase::Done;
                    break;
                }
            }
            count += 1;
            // Bounded in bytes too: a chunk is a copy, held until the
            // socket takes it.
            next = if count < EVENTS_PER_CHUNK && chunk.len() < CHUNK_BYTES {
                self.next_queued()
            } else {
                None
            };
        }
        if !chunk.is_empty() {
            return Taken::Chunk(chunk.freeze());
        }
        if matches!(self.phase, Phase::Done) {
            return Taken::End;
        }
        Taken::Nothing
    }
}

/// What one pass over queued events gave.
enum Taken {
    Chunk(Bytes),
    /// The stream ends.
    End,
    Nothing,
}

/// The frames of one live chunk. A lone frame goes out as it is, shared
/// with every other stream, not copied; several are copied into one buffer,
/// so the socket takes them in one write.
#[derive(Default)]
struct Chunk {
    first: Option<Bytes>,
    more: BytesMut,
}

impl Chunk {
    fn push(&mut self, frame: Bytes) {
        match self.first.take() {
            None if self.more.is_empty() => self.first = Some(frame),
            first => {
                if let Some(first) = first {
                    self.more.extend_from_slice(&first);
                }
                self.more.extend_from_slice(&frame);
            }
        }
    }

    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.more.len(), Bytes::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn freeze(self) -> Bytes {
        self.first.unwrap_or_else(|| self.more.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_frame_is_sent_as_it_is_and_several_are_joined() {
        let frame = Bytes::from_static(b"id: 1\n\n");
        let mut lone = Chunk::default();
        lone.push(frame.clone());
        assert_eq!(lone.len(), frame.len());
        assert_eq!(lone.freeze().as_ptr(), frame.as_ptr(), "not copied");
        let mut several = Chunk::default();
        assert!(several.is_empty());
        for text in ["a", "b", "c"] {
            several.push(Bytes::from(text));
        }
        assert_eq!(several.len(), 3);
        assert_eq!(several.freeze(), "abc");
    }
}
