//! Events and their Server-Sent Events encoding.
//!
//! An [`Event`] is built once by the feed and shared by every subscriber as an
//! `Arc<Event>`; its SSE frame is encoded once, at construction, into
//! [`Bytes`], so fan-out to thousands of streams copies nothing.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value as Json;
use time::OffsetDateTime;

use crate::clock::{Stamp, format_time};
use crate::collection::CollectionMeta;
use crate::revocations::SignOut;
use crate::rules::Rules;

/// The durable position of an event in SurrealDB's changefeed.
///
/// `stamp` is the changefeed versionstamp of the commit and `index` the
/// position of the change inside that commit, so ids are unique, ordered like
/// the feed, and global to the database: a client can resume on any node.
///
/// The text form is 24 lowercase hex digits (16 for the stamp, 8 for the
/// index). It is fixed-width, so ids also sort correctly as strings, and it is
/// a string because stamps are larger than 2^53 and would lose precision as
/// JSON numbers in a browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub stamp: Stamp,
    pub index: u32,
}

impl EventId {
    /// The position just before every event of commit `stamp`: resuming from
    /// it replays commit `stamp` and everything after.
    pub fn before_stamp(stamp: Stamp) -> Self {
        match stamp.0.checked_sub(1) {
            Some(previous) => EventId {
                stamp: Stamp(previous),
                index: u32::MAX,
            },
            None => EventId {
                stamp: Stamp(0),
                index: 0,
            },
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:08x}", self.stamp.0, self.index)
    }
}

/// Why a string is not an [`EventId`].
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an event id: expected the 24 hex digits of an id this server sent")]
pub struct InvalidEventId(String);

impl FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidEventId(text.chars().take(64).collect());
        if text.len() != 24 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let stamp = u64::from_str_radix(&text[..16], 16).map_err(|_| invalid())?;
        let index = u32::from_str_radix(&text[16..], 16).map_err(|_| invalid())?;
        Ok(EventId {
            stamp: Stamp(stamp),
            index,
        })
    }
}

/// The type of an event, sent as the SSE `event:` field (named by
/// [`EventKind::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    RecordCreated,
    RecordUpdated,
    RecordDeleted,
    CollectionCreated,
    CollectionUpdated,
    CollectionDeleted,
    /// A message published to a channel.
    ChannelMessage,
    /// A user's first stream opened (on any node).
    UserJoined,
    /// A user's last stream closed (and the grace period passed).
    UserLeft,
    /// An admin's message to every stream.
    SystemAnnouncement,
    /// An admin signed a user out: that user's streams end.
    ForcedLogout,
    /// A change to one open stream's subscriptions, asked of another node:
    /// taken by that stream, never sent (see `connections`).
    SubscriptionChange,
}

impl EventKind {
    /// The SSE event name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RecordCreated => "record.created",
            EventKind::RecordUpdated => "record.updated",
            EventKind::RecordDeleted => "record.deleted",
            EventKind::CollectionCreated => "collection.created",
            EventKind::CollectionUpdated => "collection.updated",
            EventKind::CollectionDeleted => "collection.deleted",
            EventKind::ChannelMessage => "channel.message",
            EventKind::UserJoined => "user.joined",
            EventKind::UserLeft => "user.left",
            EventKind::SystemAnnouncement => "system.announcement",
            EventKind::ForcedLogout => "forced_logout",
            EventKind::SubscriptionChange => "subscription.change",
        }
    }

    /// Who may receive events of this kind: every place that routes or
    /// judges an event matches on this, so a new kind must be placed.
    #[inline]
    pub(crate) fn audience(self) -> Audience {
        match self {
            EventKind::RecordCreated | EventKind::RecordUpdated | EventKind::RecordDeleted => {
                Audience::Record
            }
            EventKind::CollectionCreated
            | EventKind::CollectionUpdated
            | EventKind::CollectionDeleted => Audience::Collection,
            EventKind::ChannelMessage => Audience::Channel,
            EventKind::UserJoined | EventKind::UserLeft => Audience::Presence,
            EventKind::SystemAnnouncement
            | EventKind::ForcedLogout
            | EventKind::SubscriptionChange => Audience::Everyone,
        }
    }
}

/// Who an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Admins' notices: every stream (each decides what a sign-out means
    /// for it).
    Everyone,
    /// `user.*`: streams that asked for presence, as the presence rule
    /// lets them see it.
    Presence,
    /// A channel message: streams of that channel, as its rule allows.
    Channel,
    /// A change to a collection itself: streams of that collection (or of
    /// every collection) whose caller may read it; filters do not apply.
    Collection,
    /// A change to a record: streams of its collection (or of every
    /// collection) whose caller's rule and filter match it.
    Record,
}

/// Where an event comes from: the topics it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A collection (one of its records, or the collection itself).
    Collection(Arc<str>),
    /// A channel.
    Channel(Arc<str>),
    /// livehub itself: presence and admins' notices.
    Service,
}

/// What the feed decoded from a change of livehub's own tables, for the
/// parts that act on it (the hub's rule book, revocations, sessions). Not
/// sent as such: clients see `data`.
#[derive(Debug, Clone)]
pub(crate) enum Detail {
    None,
    /// A collection event: the collection's metadata after the change
    /// (before it, for a delete).
    Collection(Arc<CollectionMeta>),
    /// A `forced_logout`: who was signed out, and which tokens that
    /// refuses.
    SignOut(SignOut),
    /// A `channel.message`: its row's key (not sent), by which the feed
    /// finds the write that made it.
    Message {
        key: String,
    },
    /// A `channel.message` of an ephemeral channel: delivered once, live,
    /// from the hub; it has no place in the feed, so its frame carries no
    /// `id:` and no stream resumes from it.
    Ephemeral,
}

/// One change, ready to send.
#[derive(Debug)]
pub struct Event {
    pub(crate) id: EventId,
    pub(crate) kind: EventKind,
    /// The collection or channel the event belongs to.
    pub(crate) source: Source,
    /// The bare record id (`"abc123"`); `None` for collection events.
    pub(crate) record_id: Option<String>,
    /// The record after the change; for a delete, the record as it was.
    pub(crate) data: Json,
    /// For an update, the record before it: filters use it to tell a record
    /// that leaves a subscriber's view. Not sent.
    pub(crate) before: Option<Json>,
    /// What the feed decoded from it, for those that act on it.
    pub(crate) detail: Detail,
    /// When the change was committed (from the versionstamp).
    pub(crate) timestamp: OffsetDateTime,
    /// The complete SSE frame, encoded once.
    frame: Bytes,
    /// The frame for subscribers whose filter the record left, encoded the
    /// first time one needs it.
    left_frame: OnceLock<Bytes>,
    /// The acknowledgement number of the write through this node that made
    /// it, if the feed could tell (see `store::WriteTracker`): a stream
    /// opened after that write was answered does not send it.
    acknowledged: OnceLock<u64>,
}

/// How an event reaches one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The event matches the subscriber's filter.
    Match,
    /// An update after which the record no longer matches the subscriber's
    /// filter (it did before): sent with `"left": true` and only the record's
    /// id as `data`, so the client drops the record from its view.
    Left,
}

/// The JSON body of an event, as clients receive it in `data:`.
#[derive(Serialize)]
struct EventBody<'a> {
    /// `null` for a `record.snapshot`, which has no place in the feed.
    id: Option<String>,
    #[serde(rename = "type")]
    kind: &'a str,
    /// `null` for an event of no collection (a notice, presence, a channel
    /// message).
    collection: Option<&'a str>,
    /// The channel of a `channel.message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    record_id: Option<&'a str>,
    /// Absent when `patch` is sent instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Json>,
    /// An RFC 7396 merge patch from the record the client holds to the new
    /// one (`diff=true` streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<&'a Json>,
    timestamp: String,
    /// Present (and true) only on [`Delivery::Left`] frames.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    left: bool,
    /// The view this frame is for (`collection:posts.recent`); absent for
    /// a collection's own subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
}

/// What a record event carries for one subscriber, when it is not the
/// record as stored (`fields=` and `diff=true` streams).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Payload<'a> {
    /// The record, projected.
    Data(&'a Json),
    /// A merge patch to the record the subscriber holds.
    Patch(&'a Json),
}

/// The frame of one record of a snapshot: the envelope of a
/// `record.created`, with type `record.snapshot` and neither an SSE `id:`
/// nor a JSON `id` (it has no place in the feed, so resuming never points
/// into a snapshot).
pub(crate) fn snapshot_frame(
    collection: &str,
    record_id: Option<&str>,
    data: &Json,
    read_at: OffsetDateTime,
    subscription: Option<&str>,
) -> Bytes {
    let body = EventBody {
        id: None,
        kind: "record.snapshot",
        collection: Some(collection),
        channel: None,
        record_id,
        data: Some(data),
        patch: None,
        timestamp: format_time(read_at),
        left: false,
        subscription,
    };
    sse_frame(None, body.kind, &body)
}

impl Event {
    pub fn new(
        id: EventId,
        kind: EventKind,
        source: Source,
        record_id: Option<String>,
        data: Json,
        before: Option<Json>,
    ) -> Self {
        Event::with_detail(id, kind, source, record_id, data, before, Detail::None)
    }

    /// An event with what the feed decoded of it.
    pub(crate) fn with_detail(
        id: EventId,
        kind: EventKind,
        source: Source,
        record_id: Option<String>,
        data: Json,
        before: Option<Json>,
        detail: Detail,
    ) -> Self {
        let mut event = Event {
            id,
            kind,
            source,
            record_id,
            data,
            before,
            detail,
            timestamp: id.stamp.time(),
            frame: Bytes::new(),
            left_frame: OnceLock::new(),
            acknowledged: OnceLock::new(),
        };
        event.frame = event.encode(false);
        event
    }

    /// A message to an ephemeral channel, published at `at` (its
    /// timestamp, to the millisecond): `envelope` as
    /// [`crate::channels::envelope`] made it. Its id is never sent.
    pub fn ephemeral_message(channel: Arc<str>, envelope: Json, at: SystemTime) -> Self {
        let id = EventId {
            stamp: Stamp::at(at),
            index: 0,
        };
        let source = Source::Channel(channel);
        let kind = EventKind::ChannelMessage;
        Event::with_detail(id, kind, source, None, envelope, None, Detail::Ephemeral)
    }

    /// Whether the event is delivered once, live, and never replayed (see
    /// [`Detail::Ephemeral`]).
    #[inline]
    pub(crate) fn is_ephemeral(&self) -> bool {
        matches!(self.detail, Detail::Ephemeral)
    }

    fn encode(&self, left: bool) -> Bytes {
        if left {
            return self.encode_left(None);
        }
        self.encode_with(Payload::Data(&self.data), false, None)
    }

    /// A record that left a subscriber's view may have left what its read
    /// rule allows: the frame carries its id only, never its new content.
    fn encode_left(&self, subscription: Option<&str>) -> Bytes {
        let id_only = serde_json::json!({ "id": self.record_id });
        self.encode_with(Payload::Data(&id_only), true, subscription)
    }

    fn encode_with(&self, payload: Payload<'_>, left: bool, subscription: Option<&str>) -> Bytes {
        let (data, patch) = match payload {
            Payload::Data(data) => (Some(data), None),
            Payload::Patch(patch) => (None, Some(patch)),
        };
        let id = (!self.is_ephemeral()).then(|| self.id.to_string());
        let body = EventBody {
            id,
            kind: self.kind.as_str(),
            collection: self.collection().map(|name| &**name),
            channel: match &self.source {
                Source::Channel(channel) => Some(&**channel),
                Source::Collection(_) | Source::Service => None,
            },
            record_id: self.record_id.as_deref(),
            data,
            patch,
            timestamp: format_time(self.timestamp),
            left,
            subscription,
        };
        sse_frame(body.id.as_deref(), self.kind.as_str(), &body)
    }

    /// The collection the event belongs to, if any.
    #[inline]
    pub(crate) fn collection(&self) -> Option<&Arc<str>> {
        match &self.source {
            Source::Collection(name) => Some(name),
            Source::Channel(_) | Source::Service => None,
        }
    }

    /// The collection's metadata a collection event carries.
    #[inline]
    pub(crate) fn collection_meta(&self) -> Option<&Arc<CollectionMeta>> {
        match &self.detail {
            Detail::Collection(meta) => Some(meta),
            Detail::None | Detail::SignOut(_) | Detail::Message { .. } | Detail::Ephemeral => None,
        }
    }

    /// The rules a collection event carries: the collection's after the
    /// change (before it, for a delete). Admins only for any other event,
    /// or for metadata that could not be read: never open by mistake.
    pub(crate) fn collection_rules(&self) -> &Rules {
        static ADMINS_ONLY: Rules = Rules::ADMINS_ONLY;
        self.collection_meta()
            .map_or(&ADMINS_ONLY, |meta| &meta.rules)
    }

    /// Notes that the write answered as number `number` made this event.
    pub(crate) fn set_acknowledged(&self, number: u64) {
        let _ = self.acknowledged.set(number);
    }

    /// Whether the write that made this event was answered before `count`
    /// writes had been (so before a stream that began then).
    #[inline]
    pub(crate) fn answered_before(&self, count: u64) -> bool {
        self.acknowledged
            .get()
            .is_some_and(|number| *number < count)
    }

    /// The sign-out a `forced_logout` event carries.
    #[inline]
    pub fn sign_out(&self) -> Option<&SignOut> {
        match &self.detail {
            Detail::SignOut(sign_out) => Some(sign_out),
            Detail::None | Detail::Collection(_) | Detail::Message { .. } | Detail::Ephemeral => {
                None
            }
        }
    }

    /// What this event counts for in a subscriber's queue: the bytes it
    /// keeps alive (its frame, and about as much again for the decoded
    /// record and before-image).
    #[inline]
    pub(crate) fn queued_size(&self) -> usize {
        self.frame.len() * 2
    }

    /// The frame of a record event matching a subscriber that gets `payload`
    /// rather than the record as stored (encoded for it alone).
    pub(crate) fn frame_with(&self, payload: Payload<'_>) -> Bytes {
        self.encode_with(payload, false, None)
    }

    /// The frame for one view of the event's collection, tagged with the
    /// view's subscription id.
    pub(crate) fn view_frame(&self, delivery: Delivery, payload: Payload<'_>, view: &str) -> Bytes {
        match delivery {
            Delivery::Match => self.encode_with(payload, false, Some(view)),
            Delivery::Left => self.encode_left(Some(view)),
        }
    }

    /// The encoded SSE message (`id:`, `event:`, `data:` and the blank line)
    /// for a subscriber that gets it as `delivery`.
    #[inline]
    pub(crate) fn frame(&self, delivery: Delivery) -> Bytes {
        match delivery {
            Delivery::Match => self.frame.clone(),
            Delivery::Left => self.left_frame.get_or_init(|| self.encode(true)).clone(),
        }
    }
}

/// The JSON body of a frame [`sse_frame`] encoded: what follows its
/// `data: `, without the blank line. Change pages send events as this JSON,
/// sliced from the frame each event already holds rather than encoded again.
pub(crate) fn frame_data(frame: &Bytes) -> Bytes {
    let start = memchr::memmem::find(frame, b"data: ").map_or(0, |at| at + b"data: ".len());
    let end = frame.len().saturating_sub(2).max(start);
    frame.slice(start..end)
}

/// Encodes one SSE message.
///
/// `id` and `event` must be values this server made (they are never record
/// data). `data` is serialized as compact JSON, which escapes every CR and LF
/// inside strings, so no record content can end the `data:` line and forge a
/// field or an event.
pub(crate) fn sse_frame(id: Option<&str>, event: &str, data: &impl Serialize) -> Bytes {
    debug_assert!(!event.contains(['\r', '\n']));
    // Serializing plain data types to a Vec cannot fail; a failure here would be
    // a bug in a Serialize impl, so fall back to `null` rather than panic.
    let json = serde_json::to_vec(data).unwrap_or_else(|_| b"null".to_vec());
    let mut frame = Vec::with_capacity(json.len() + 64);
    if let Some(id) = id {
        debug_assert!(!id.contains(['\r', '\n']));
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id.as_bytes());
        frame.push(b'\n');
    }
    frame.extend_from_slice(b"event: ");
    frame.extend_from_slice(event.as_bytes());
    frame.extend_from_slice(b"\ndata: ");
    frame.extend_from_slice(&json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_ids_round_trip_and_sort_as_strings() {
        let a = EventId {
            stamp: Stamp(0x0199_aabb_ccdd_0001),
            index: 2,
        };
        let b = EventId {
            stamp: Stamp(0x0199_aabb_ccdd_0001),
            index: 10,
        };
        assert_eq!(a.to_string(), "0199aabbccdd000100000002");
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn malformed_event_ids_are_rejected() {
        for text in [
            "",
            "abc",
            "0199aabbccdd00010000000g",
            "0199aabbccdd0001000000021",
            "+199aabbccdd000100000002",
        ] {
            assert!(text.parse::<EventId>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn before_stamp_precedes_every_event_of_the_stamp() {
        let position = EventId::before_stamp(Stamp(100));
        assert!(
            position
                < EventId {
                    stamp: Stamp(100),
                    index: 0
                }
        );
        assert!(
            position
                > EventId {
                    stamp: Stamp(99),
                    index: 7
                }
        );
    }

    #[test]
    fn record_content_cannot_forge_sse_fields() {
        let data = json!({"title": "x\n\nevent: forged\ndata: {}\r\rid: 1", "cr": "\r"});
        let event = Event::new(
            EventId {
                stamp: Stamp(1 << 16),
                index: 0,
            },
            EventKind::RecordCreated,
            Source::Collection(Arc::from("posts")),
            Some("abc".into()),
            data.clone(),
            None,
        );
        let frame = String::from_utf8(event.frame(Delivery::Match).to_vec()).unwrap();
        // Exactly three lines and the terminating blank line.
        let lines: Vec<&str> = frame.split(['\n', '\r']).collect();
        assert_eq!(lines.len(), 5, "{frame:?}");
        assert!(lines[0].starts_with("id: "));
        assert_eq!(lines[1], "event: record.created");
        assert!(lines[2].starts_with("data: "));
        let body: Json = serde_json::from_str(&lines[2]["data: ".len()..]).unwrap();
        assert_eq!(body["data"], data);
        assert_eq!(body["record_id"], "abc");
        assert_eq!(body["type"], "record.created");
        assert!(body.get("left").is_none());
        let left = event.frame(Delivery::Left);
        let left: Json = serde_json::from_slice(
            &left[left.iter().position(|b| *b == b'{').unwrap()..left.len() - 2],
        )
        .unwrap();
        assert_eq!(left["left"], true);
        assert_eq!(left["data"], serde_json::json!({"id": "abc"}), "no content");
    }

    #[test]
    fn a_collection_event_carries_its_rules_and_nothing_else_opens_one() {
        let id = EventId {
            stamp: Stamp(1 << 16),
            index: 0,
        };
        let source = || Source::Collection(Arc::from("posts"));
        let meta = crate::collection::CollectionMeta::decode(
            &json!({"rules": {"read": "true", "create": null, "update": null, "delete": null}}),
            "posts",
        )
        .unwrap();
        let event = Event::with_detail(
            id,
            EventKind::CollectionUpdated,
            source(),
            None,
            json!({}),
            None,
            Detail::Collection(Arc::new(meta)),
        );
        assert_eq!(event.collection_rules().read.as_deref(), Some("true"));
        // Metadata that could not be read opens nothing.
        let unread = Event::new(
            id,
            EventKind::CollectionUpdated,
            source(),
            None,
            json!(7),
            None,
        );
        assert_eq!(*unread.collection_rules(), Rules::ADMINS_ONLY);
    }
}
