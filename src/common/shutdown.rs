//! One shutdown tree for each process.
//!
//! SIGTERM and SIGINT cancel a root [`CancellationToken`]; every loop selects
//! on it (or on a child of it), and every task a side spawns is spawned
//! through its [`Shutdown`], so it is tracked. Stopping is then two steps:
//! cancel, and [`Shutdown::drain`] the tracked tasks under a grace timeout,
//! which logs when it expires. Work that must be allowed to finish (a push
//! in flight) watches a token of its own that its owner cancels only after
//! the grace period.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cancellation token and the tasks that must end before the process
/// does.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every tracked task finished.
    Finished,
    /// The grace period expired with this many tasks still running.
    Expired { running: usize },
}

impl Shutdown {
    /// A new root.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown tied to `token` (cancelled when it is), with tasks of its
    /// own to drain.
    pub fn with_token(token: CancellationToken) -> Self {
        Self {
            token,
            tracker: TaskTracker::new(),
        }
    }

    /// The token every loop selects on.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Asks everything to stop.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Whether stopping has been asked for.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once stopping has been asked for.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// A branch: cancelled with this one (or on its own), its tasks tracked
    /// apart, so an owner can drain them on its own schedule.
    pub fn branch(&self) -> Self {
        Self::with_token(self.token.child_token())
    }

    /// Spawns `task`, tracked, so [`Shutdown::drain`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// How many tracked tasks are running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits, however long it takes, for every tracked task. Tasks spawned
    /// afterwards are not waited for.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Waits for every tracked task, at most `grace`; logs, naming `what`,
    /// if the grace period expires first. Tasks spawned afterwards are not
    /// waited for, so call it once stopping has begun.
    pub async fn drain(&self, grace: Duration, what: &str) -> Drained {
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(()) => Drained::Finished,
            Err(_) => {
                let running = self.tracker.len();
                tracing::warn!(
                    running,
                    grace_secs = grace.as_secs_f64(),
                    "{what}: the shutdown grace period expired with tasks still running; \
                     stopping without them"
                );
                Drained::Expired { running }
            }
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, saying so on standard
/// error. The watching task is tracked and ends when `shutdown` is
/// cancelled by any other means too.
pub fn cancel_on_signals(shutdown: &Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let root = shutdown.clone();
    shutdown.spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = root.cancelled() => return,
        };
        tracing::info!(signal = name, "shutdown requested");
        crate::common::stderr_line(&format!("{name}: shutting down"));
        root.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_watch_the_token() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        shutdown.spawn(async move { watcher.cancelled().await });
        assert_eq!(shutdown.running(), 1);
        shutdown.cancel();
        assert_eq!(
            shutdown.drain(Duration::from_secs(5), "test").await,
            Drained::Finished
        );
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        shutdown.cancel();
        assert_eq!(
            shutdown.drain(Duration::from_millis(20), "test").await,
            Drained::Expired { running: 1 }
        );
    }

    #[tokio::test]
    async fn a_branch_is_cancelled_with_its_root() {
        let root = Shutdown::new();
        let branch = root.branch();
        root.cancel();
        assert!(branch.is_cancelled());
        let other = Shutdown::new();
        let leaf = other.branch();
        leaf.cancel();
        assert!(!other.is_cancelled());
    }
}
