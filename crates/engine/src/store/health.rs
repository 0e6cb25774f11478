//! Whether the database server answers, checked in the background, so that
//! writes fail at once with a 503 while it is away instead of waiting for
//! the connection to come back (the SurrealDB client queues requests while
//! it reconnects).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Store;

/// How often the server is asked, and how long it has to answer.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl Store {
    /// Whether the last health check was answered.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Checks the database every [`CHECK_INTERVAL`] until `shutdown`.
    pub(crate) async fn watch_health(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let answered = matches!(
                tokio::time::timeout(CHECK_TIMEOUT, self.ping()).await,
                Ok(Ok(()))
            );
            let was = self.available.swap(answered, Ordering::Relaxed);
            match (was, answered) {
                (true, false) => tracing::warn!(
                    "the database does not answer; writes fail with 503 until it does"
                ),
                (false, true) => tracing::info!("the database answers again"),
                _ => {}
            }
        }
    }
}
