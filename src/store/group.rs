//! Group commit: single record creates that arrive while another commit is
//! under way wait for it, then go to the database together, in one
//! transaction (`Store::create_records`), each answered with its own
//! result. A lone create goes at once: nothing waits for a window, so the
//! latency of a quiet node is unchanged, and under load each commit
//! carries every create that queued behind the one before.

use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, oneshot};

use super::{BatchError, Store, StoreError};
use crate::collection::{CollectionName, RecordKey};

/// The most creates one commit takes.
const MOST_PER_COMMIT: usize = 512;
/// Creates queued for the committer before callers wait to queue.
const QUEUE: usize = 4096;

/// One create waiting for its commit.
struct Pending {
    collection: CollectionName,
    key: RecordKey,
    data: Map<String, Json>,
    answer: oneshot::Sender<Result<Json, StoreError>>,
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
        let pending = Pending {
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
}

/// Commits `batch`, one transaction per collection in it (in the order
/// their first create came), and answers each create.
async fn commit(store: &Store, batch: Vec<Pending>) {
    let mut groups: Vec<(CollectionName, Vec<Pending>)> = Vec::new();
    for pending in batch {
        match groups
            .iter_mut()
            .find(|(collection, _)| *collection == pending.collection)
        {
            Some((_, group)) => group.push(pending),
            None => groups.push((pending.collection.clone(), vec![pending])),
        }
    }
    for (collection, group) in groups {
        let (items, answers): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|pending| ((pending.key, pending.data), pending.answer))
            .unzip();
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
