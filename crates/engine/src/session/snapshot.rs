//! A stream's snapshot: the records that match its collections' filters
//! (and its caller's read rules) when it opens, sent page by page before
//! its live changes.
//!
//! # The seam
//!
//! The stream subscribes first, at the hub's cursor `C`, and reads the
//! snapshot after: every commit below `C` is visible to those reads (that
//! is what the cursor means), and every commit at or above `C` reaches the
//! stream as a live change after `snapshot.done`. A change can be both in
//! the snapshot and sent after it, but applying a change again is harmless
//! (a create or an update of a record the client holds sets it to the new
//! image; a delete of one it lacks removes nothing; merge patches applied in
//! order from an earlier image end at the last). So a client that applies
//! the snapshot, then every change, holds exactly the records that match.
//!
//! Pages are read in id order after the last id sent, so writes between
//! pages neither skip nor repeat a record; each page is read only when the
//! client has taken the last one, so memory per stream is one page.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value as Json;

use super::views::Views;
use crate::Engine;
use crate::Error;
use crate::collection::CollectionName;
use crate::event::snapshot_frame;
use crate::filter::Expr;
use crate::shape::Shape;
use crate::sort::parse_sort;
use crate::store::{PageCursor, SortOrder, Store, StoreError};

/// Records per page at most.
const MAX_PAGE: u32 = 1000;
/// Records in the first page, before any size is known.
const FIRST_PAGE: u32 = 100;
/// About how many bytes of records one page brings in.
const PAGE_BYTES: usize = 1024 * 1024;
/// Most records a first-N snapshot may ask for (one read).
pub(crate) const MAX_FIRST: u32 = 1000;

/// Only the first records by a sort (a chat's latest 50 messages), read at
/// once; what follows is then every matching change.
#[derive(Debug, Clone)]
pub struct First {
    pub(crate) sort: SortOrder,
    pub(crate) limit: u32,
}

impl First {
    /// `snapshot_limit` and `snapshot_sort`, if given: the first N records
    /// by a sort (not with `diff`).
    pub fn parse(
        limit: Option<u32>,
        sort: Option<&str>,
        diff: bool,
    ) -> Result<Option<First>, Error> {
        if limit.is_none() && sort.is_none() {
            return Ok(None);
        }
        let limit = match limit {
            Some(limit @ 1..=MAX_FIRST) => limit,
            None => {
                return Err(Error::invalid(
                    "invalid_query",
                    format!(
                        "`snapshot_sort` picks the first N records: give `snapshot_limit` too (1 to {MAX_FIRST})"
                    ),
                ));
            }
            Some(_) => {
                return Err(Error::invalid(
                    "invalid_query",
                    format!(
                        "`snapshot_limit` must be between 1 and {MAX_FIRST} (it picks the first N records by `snapshot_sort`)"
                    ),
                ));
            }
        };
        if diff {
            return Err(Error::invalid(
                "invalid_query",
                "`diff=true` patches records the client holds, and with `snapshot_limit` it holds only the first N: use one or the other",
            ));
        }
        let sort = parse_sort(sort.unwrap_or("-id"))?;
        Ok(Some(First { sort, limit }))
    }
}

/// One subscription's part of a snapshot: its collection, the condition
/// its topic was bound with (the caller's read rule and its filter), and
/// the id its records are tagged with, for a view.
#[derive(Clone)]
pub struct Part {
    collection: CollectionName,
    condition: Option<Expr>,
    key: Arc<str>,
    tag: Option<Arc<str>>,
}

/// The snapshot parts of the subscriptions `wanted` picks (by key).
pub fn snapshot_parts(views: &Views, wanted: impl Fn(&str) -> bool) -> Vec<Part> {
    views
        .all()
        .iter()
        .filter(|bound| wanted(&bound.key))
        .map(|bound| Part {
            collection: bound.sub.name.clone(),
            condition: bound.condition.as_ref().map(|filter| filter.expr().clone()),
            key: bound.key.clone(),
            tag: bound.tag.clone(),
        })
        .collect()
}

/// Refuses a snapshot of more records than `--max-snapshot`, before the
/// stream opens (a stream that failed midway would only be retried).
pub async fn check_snapshot_size(state: &Engine, parts: &[Part]) -> Result<(), Error> {
    let max = state.streams.max_snapshot;
    let mut total = 0;
    for part in parts {
        total += state
            .store
            .count_records(&part.collection, part.condition.as_ref())
            .await?;
        if total > max {
            return Err(Error::invalid(
                "snapshot_too_large",
                format!(
                    "more than {max} records match this snapshot (the server's --max-snapshot): narrow the filter, or take the first N with `snapshot_limit` and `snapshot_sort`"
                ),
            ));
        }
    }
    Ok(())
}

/// A snapshot being sent.
pub struct Snapshot {
    /// Each subscription's collection and condition, in turn.
    parts: Vec<Part>,
    first: Option<First>,
    /// The collection being read, and where its read has got to.
    part: usize,
    cursor: PageCursor,
    page: u32,
    /// Records sent so far, for `snapshot.done`.
    pub(crate) sent: u64,
}

impl Snapshot {
    pub fn new(parts: Vec<Part>, first: Option<First>) -> Snapshot {
        Snapshot {
            parts,
            first,
            part: 0,
            cursor: PageCursor::default(),
            page: FIRST_PAGE,
            sent: 0,
        }
    }

    /// The key of the subscription the next page is of (`posts`,
    /// `posts.recent`), whose shape its records take.
    pub(crate) fn key(&self) -> Option<&str> {
        self.parts.get(self.part).map(|part| &*part.key)
    }

    /// The frames of the next page (possibly none, for a collection with
    /// no match), or `None` once every collection is read.
    pub(crate) async fn next_page(
        &mut self,
        store: &Store,
        shape: &Shape,
    ) -> Result<Option<Bytes>, StoreError> {
        let Some(Part {
            collection,
            condition,
            tag,
            ..
        }) = self.parts.get(self.part)
        else {
            return Ok(None);
        };
        let (records, next) = match &self.first {
            Some(first) => {
                let records = store
                    .list_records(collection, condition.as_ref(), &first.sort, first.limit, 0)
                    .await?;
                (records, None)
            }
            None => {
                let (records, next) = store
                    .records_page(collection, condition.as_ref(), &self.cursor, self.page)
                    .await?;
                // A short page is the collection's last.
                let more = records.len() >= self.page as usize;
                (records, more.then_some(next))
            }
        };
        let read_at = time::OffsetDateTime::now_utc();
        let mut chunk = BytesMut::new();
        for record in &records {
            let record_id = record.get("id").and_then(Json::as_str);
            let data = shape.project(record);
            chunk.extend_from_slice(&snapshot_frame(
                collection.as_str(),
                record_id,
                &data,
                read_at,
                tag.as_deref(),
            ));
        }
        self.sent += records.len() as u64;
        self.resize(records.len(), chunk.len());
        match next {
            Some(cursor) => self.cursor = cursor,
            None => {
                self.part += 1;
                self.cursor = PageCursor::default();
            }
        }
        Ok(Some(chunk.freeze()))
    }

    /// Sizes the next page from the bytes of the last.
    fn resize(&mut self, records: usize, bytes: usize) {
        if records == 0 {
            return;
        }
        let per_record = (bytes / records).max(1);
        self.page = u32::try_from(PAGE_BYTES / per_record)
            .unwrap_or(MAX_PAGE)
            .clamp(1, MAX_PAGE);
    }
}
