//! Group commit: single record creates and channel messages that arrive
//! while another commit is under way wait for it, then go to the database
//! together: one transaction per collection (`Store::create_records`), one
//! for the messages (`Store::write_messages`) and one for the ephemeral
//! messages relayed to other nodes (`Store::write_relay_rows`), each write answered
//! with its own result. A lone write goes at once: nothing waits for a
//! window, so the latency of a quiet node is unchanged, and under load each
//! commit carries every write that queued behind the one before.

use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, oneshot};

use super::{BatchError, Store, StoreError};
use crate::collection::{CollectionName, RecordKey};

/// The most writes one commit takes. SurrealDB's cost per inserted row
/// grows with the rows its transaction already wrote (see
/// `routes::batches`), so a commit is kept to a few hundred.
const MOST_PER_COMMIT: usize = 256;
/// Writes queued for the committer before callers wait to queue.
const QUEUE: usize = 4096;

/// One write waiting for its commit.
enum Pending {
    Create {
        collection: CollectionName,
        key: RecordKey,
        data: Map<String, Json>,
        answer: oneshot::Sender<Result<Json, StoreError>>,
    },
    /// A channel message: its row's key and the row.
    Message {
        key: RecordKey,
        row: Json,
        answer: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A message of an ephemeral channel for the other nodes: its relay
    /// row.
    Relay {
        row: Json,
        answer: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The queue of creates and the task that commits them. Cloning is
/// shallow.
#[derive(Clone)]
pub(super) struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts the committing task for `store` (which must not route its
    /// creates back through this committer).
    pub(super) fn start(store: Store) -> Committer {
        let (queue, mut pending) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while pending.recv_many(&mut batch, MOST_PER_COMMIT).await > 0 {
                commit(&store, std::mem::take(&mut batch)).await;
            }
        });
        Committer { queue }
    }

    /// Creates one record with the next commit.
    pub(super) async fn create(
        &self,
        collection: &CollectionName,
        key: &RecordKey,
        data: Map<String, Json>,
    ) -> Result<Json, StoreError> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending::Create {
            collection: collection.clone(),
            key: key.clone(),
            data,
            answer,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(StoreError::Unavailable);
        }
        answered.await.unwrap_or(Err(StoreError::Unavailable))
    }

    /// Writes one relay row with the next commit.
    pub(super) async fn relay(&self, row: Json) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        if self
            .queue
            .send(Pending::Relay { row, answer })
            .await
            .is_err()
        {
            return Err(StoreError::Unavailable);
        }
        answered.await.unwrap_or(Err(StoreError::Unavailable))
    }

    /// Writes one channel message's row (keyed `key`) with the next
    /// commit.
    pub(super) async fn publish(&self, key: RecordKey, row: Json) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending::Message { key, row, answer };
        if self.queue.send(pending).await.is_err() {
            return Err(StoreError::Unavailable);
        }
        answered.await.unwrap_or(Err(StoreError::Unavailable))
    }
}

/// Commits `batch`: one transaction per collection in it (in the order
/// their first create came), then one for its channel messages; answers
/// each write.
async fn commit(store: &Store, batch: Vec<Pending>) {
    let mut groups: Vec<(CollectionName, Vec<_>)> = Vec::new();
    let mut messages = Vec::new();
    let mut relays = Vec::new();
    for pending in batch {
        match pending {
            Pending::Create {
                collection,
                key,
                data,
                answer,
            } => match groups.iter_mut().find(|(name, _)| *name == collection) {
                Some((_, group)) => group.push(((key, data), answer)),
                None => groups.push((collection, vec![((key, data), answer)])),
            },
            Pending::Message { key, row, answer } => messages.push(((key, row), answer)),
            Pending::Relay { row, answer } => relays.push((row, answer)),
        }
    }
    for (collection, group) in groups {
        let (items, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        match store.create_records(&collection, items, false).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    // The caller may have gone; the record stands either way.
                    let _ = answer.send(result);
                }
            }
            Err(error) => {
                let error = match error {
                    BatchError::Store(error) => error,
                    BatchError::Item { error, .. } => error,
                };
                for answer in answers {
                    let _ = answer.send(Err(error.duplicate()));
                }
            }
        }
    }
    if !messages.is_empty() {
        let (rows, answers): (Vec<_>, Vec<_>) = messages.into_iter().unzip();
        answer_all(answers, store.write_messages(rows).await);
    }
    if !relays.is_empty() {
        let (rows, answers): (Vec<_>, Vec<_>) = relays.into_iter().unzip();
        answer_all(answers, store.write_relay_rows(rows).await);
    }
}

/// Answers every write of one transaction with its result.
fn answer_all(
    answers: Vec<oneshot::Sender<Result<(), StoreError>>>,
    result: Result<(), StoreError>,
) {
    for answer in answers {
        // The caller may have gone; the write stands either way.
        let _ = answer.send(match &result {
            Ok(()) => Ok(()),
            Err(error) => Err(error.duplicate()),
        });
    }
}

impl StoreError {
    /// The same failure, for each of several callers.
    fn duplicate(&self) -> StoreError {
        match self {
            StoreError::NoCollection(name) => StoreError::NoCollection(name.clone()),
            StoreError::NoRecord { collection, key } => StoreError::NoRecord {
                collection: collection.clone(),
                key: key.clone(),
            },
            StoreError::CollectionExists(name) => StoreError::CollectionExists(name.clone()),
            StoreError::RecordExists { collection, key } => StoreError::RecordExists {
                collection: collection.clone(),
                key: key.clone(),
            },
            StoreError::Refused { collection, key } => StoreError::Refused {
                collection: collection.clone(),
                key: key.clone(),
            },
            StoreError::Conflict => StoreError::Conflict,
            StoreError::Overloaded {
                events,
                bytes,
                max_events,
                max_bytes,
            } => StoreError::Overloaded {
                events: *events,
                bytes: *bytes,
                max_events: *max_events,
                max_bytes: *max_bytes,
            },
            StoreError::Unavailable => StoreError::Unavailable,
            StoreError::Database(error) => StoreError::Unexpected(error.to_string()),
            StoreError::Unexpected(message) => StoreError::Unexpected(message.clone()),
        }
    }
}
