//! Who is online.
//!
//! Each node counts the open streams of each present user and keeps one
//! entry per user in SurrealDB (`_lh_presence`), with an expiry it keeps
//! pushing forward, so a node that dies leaves no ghosts: any node sweeps
//! expired entries. A user joins when its first stream on any node opens
//! and leaves when its last one closes and a grace period passes with none
//! reopened (a page reload does not flap). Joins and leaves are written to
//! a changefeed table (`_lh_presence_log`), so `user.joined` and
//! `user.left` are events like any other: durable ids, every node, replay.
//!
//! All presence writes of a node go through one task, in order, so a
//! disconnect can never overtake the connect before it. Who may see
//! presence, and who a stream is present as, is decided in `access`.

mod access;

pub use access::{PresenceRule, present_as};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{PresenceEntry, Store};

/// A present user's identity.
#[derive(Debug, Clone)]
pub struct PresentUser {
    pub(crate) user_id: String,
    pub(crate) user_name: Option<String>,
}

/// Most commands applied in one batch.
const MAX_BATCH: usize = 4096;

enum Command {
    Connect(PresentUser),
    Disconnect(String),
    /// The grace period of a user's last disconnect is over.
    GraceOver {
        user_id: String,
        generation: u64,
    },
}

/// A handle to the node's presence task. Cloning is shallow.
#[derive(Clone)]
pub struct Presence {
    commands: mpsc::UnboundedSender<Command>,
}

/// Held by a stream for its life: dropping it disconnects.
pub struct PresenceGuard {
    presence: Presence,
    user_id: String,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let _ = self
            .presence
            .commands
            .send(Command::Disconnect(std::mem::take(&mut self.user_id)));
    }
}

/// What the task knows of a user on this node.
struct Local {
    user_name: Option<String>,
    connections: u32,
    /// Set anew by every change, so a grace timer knows it is stale.
    generation: u64,
}

impl Presence {
    /// Starts the node's presence task; it runs until `shutdown`, then
    /// signs out the users present here.
    pub(crate) fn start(
        store: Store,
        grace: Duration,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> (Presence, tokio::task::JoinHandle<()>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let presence = Presence {
            commands: commands.clone(),
        };
        let node = crate::collection::RecordKey::generate().to_string();
        let task = tokio::spawn(run(
            Task {
                store,
                node,
                grace,
                ttl,
                users: HashMap::new(),
                commands,
                generations: 0,
            },
            receiver,
            shutdown,
        ));
        (presence, task)
    }

    /// Counts a stream of `user` until the guard is dropped.
    pub fn connect(&self, user: PresentUser) -> PresenceGuard {
        let user_id = user.user_id.clone();
        let _ = self.commands.send(Command::Connect(user));
        PresenceGuard {
            presence: self.clone(),
            user_id,
        }
    }
}

struct Task {
    store: Store,
    node: String,
    grace: Duration,
    ttl: Duration,
    users: HashMap<String, Local>,
    commands: mpsc::UnboundedSender<Command>,
    /// The last generation handed out: one counter for every user, so a
    /// timer of a user's earlier life here never matches a later one.
    generations: u64,
}

async fn run(
    mut task: Task,
    mut receiver: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    // Refresh well within the TTL, so one slow round does not expire us.
    let mut maintain = tokio::time::interval((task.ttl / 3).max(Duration::from_millis(100)));
    maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            command = receiver.recv() => match command {
                Some(command) => {
                    // Streams open and close in bursts: take what is queued
                    // and write each user's count once.
                    let mut batch = vec![command];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    task.handle(batch).await;
                }
                None => break,
            },
            _ = maintain.tick() => {
                if let Err(error) = task.store.presence_maintain(&task.node, task.ttl).await {
                    tracing::warn!(%error, "presence maintenance failed; retrying next round");
                }
            }
        }
    }
    // This node's users leave after the grace period, not at the TTL, and
    // not at once: its streams are reconnecting to the other nodes (a
    // deploy), and a user back within the grace period never leaves.
    if let Err(error) = task.store.presence_hand_over(&task.node, task.grace).await {
        tracing::warn!(%error, "could not hand this node's present users over; they leave at the TTL");
    }
}

impl Task {
    /// Applies a batch of commands to the local counts, then writes each
    /// user's new count once.
    async fn handle(&mut self, batch: Vec<Command>) {
        let mut touched: Vec<String> = Vec::new();
        let mut new_here: HashSet<String> = HashSet::new();
        for command in batch {
            match command {
                Command::Connect(user) => {
                    let local = self.users.entry(user.user_id.clone()).or_insert_with(|| {
                        new_here.insert(user.user_id.clone());
                        Local {
                            user_name: None,
                            connections: 0,
                            generation: 0,
                        }
                    });
                    local.connections += 1;
                    self.generations += 1;
                    local.generation = self.generations;
                    if user.user_name.is_some() {
                        local.user_name = user.user_name;
                    }
                    touched.push(user.user_id);
                }
                Command::Disconnect(user_id) => {
                    let Some(local) = self.users.get_mut(&user_id) else {
                        continue;
                    };
                    local.connections = local.connections.saturating_sub(1);
                    self.generations += 1;
                    local.generation = self.generations;
                    if local.connections == 0 {
                        let (generation, commands, grace) =
                            (local.generation, self.commands.clone(), self.grace);
                        let user = user_id.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            let _ = commands.send(Command::GraceOver {
                                user_id: user,
                                generation,
                            });
                        });
                    }
                    touched.push(user_id);
                }
                Command::GraceOver {
                    user_id,
                    generation,
                } => {
                    let over = self.users.get(&user_id).is_some_and(|local| {
                        local.generation == generation && local.connections == 0
                    });
                    if over {
                        self.write_leave(&user_id).await;
                    }
                }
            }
        }
        let mut written = HashSet::new();
        for user_id in touched {
            if !written.insert(user_id.clone()) {
                continue;
            }
            let Some(local) = self.users.get(&user_id) else {
                continue;
            };
            if new_here.contains(&user_id) && local.connections == 0 {
                // Opened and closed within one batch: never announced.
                self.users.remove(&user_id);
                continue;
            }
            // Creates the entry if need be, and joins if the user was not
            // present.
            log_failure(self.store.presence_set(&self.entry(&user_id)).await);
        }
    }

    /// Writes a user's leaving; if that fails, the user stays here and the
    /// leave is tried again after another grace period.
    async fn write_leave(&mut self, user_id: &str) {
        match self.store.presence_leave(&self.entry(user_id)).await {
            Ok(()) => {
                self.users.remove(user_id);
            }
            Err(error) => {
                tracing::warn!(%error, "a presence leave failed; trying again");
                if let Some(local) = self.users.get(user_id) {
                    let (generation, commands, grace) =
                        (local.generation, self.commands.clone(), self.grace);
                    let user_id = user_id.to_owned();
                    tokio::spawn(async move {
                        tokio::time::sleep(grace.max(Duration::from_secs(1))).await;
                        let _ = commands.send(Command::GraceOver {
                            user_id,
                            generation,
                        });
                    });
                }
            }
        }
    }

    fn entry<'a>(&'a self, user_id: &'a str) -> PresenceEntry<'a> {
        let local = self.users.get(user_id);
        PresenceEntry {
            node: &self.node,
            user_id,
            user_name: local.and_then(|local| local.user_name.as_deref()),
            connections: local.map_or(0, |local| local.connections),
            ttl: self.ttl,
        }
    }
}

fn log_failure(result: Result<(), crate::store::StoreError>) {
    if let Err(error) = result {
        tracing::warn!(%error, "a presence write failed; the user's next change writes it again");
    }
}
