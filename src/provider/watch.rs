//! The state watch: tells pushes in flight, and the daemon, that suspensions,
//! agreements or requeued deliveries changed, so they ask the gate again.
//!
//! The database is the channel between an operator's command (or DWP's
//! directive) and a running daemon: a tracked task reads a cheap fingerprint
//! of that state through the daemon's one [`SharedStore`] every interval and
//! bumps a generation when it changes. It stops when the process shuts down
//! or every receiver is gone.

use std::time::Duration;

use tokio::sync::watch;

use crate::common::blocking::TaskFailed;
use crate::common::shutdown::Shutdown;
use crate::provider::store::{SharedStore, StoreError};

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The first look at the state failed.
    #[error("cannot read suspensions and agreements: {0}")]
    Store(#[from] StoreError),
    /// The blocking task failed.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A receiver of state changes; clone one per push.
#[derive(Debug, Clone)]
pub struct StateWatch {
    changes: watch::Receiver<u64>,
}

impl StateWatch {
    /// Starts watching `store` every `interval`, as a task of `shutdown`.
    pub async fn start(
        store: SharedStore,
        interval: Duration,
        shutdown: &Shutdown,
    ) -> Result<Self, WatchError> {
        let first = store.run(|s| s.state_fingerprint()).await??;
        let (tx, rx) = watch::channel(0u64);
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            let mut last = first;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match store.run(|s| s.state_fingerprint()).await {
                    Ok(Ok(now)) if now != last => {
                        last = now;
                        tx.send_modify(|generation| *generation += 1);
                    }
                    Ok(Ok(_)) => {}
                    // Pushes still ask the gate before commit; keep
                    // watching rather than give up.
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot read suspensions and agreements");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read suspensions and agreements");
                    }
                }
            }
        });
        Ok(Self { changes: rx })
    }

    /// A receiver that has seen every change so far.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changes.clone();
        rx.borrow_and_update();
        rx
    }

    /// Completes at the next change this watch has not seen yet (at once if
    /// one came since it last looked); never, once the watcher has stopped.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
