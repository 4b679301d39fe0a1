//! What one provider may hold at the endpoint, so that one allow-listed
//! provider can neither starve the others nor fill the disk:
//!
//! - streams at once (`max_streams_per_provider`), apart from the
//!   endpoint's overall `max_streams`;
//! - bytes in partial files (`max_partial_bytes_per_provider`): the sizes
//!   of its unfinished transfers, each counted in full from its accepted
//!   Manifest, whether a stream is writing it or it waits (interrupted) for
//!   a resume. A partial file never grows beyond its Manifest's size, so
//!   this bounds what is on disk, and a push that would go over is refused
//!   before a byte of it is written;
//! - and, for everyone, the free-space floor (`min_free_bytes`) on the
//!   filesystem of the partial files and the inbox.
//!
//! How fast a stream must move is [`Progress`]: idleness is measured by
//! bytes that make progress, not by messages.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::error::ExchangeError;

/// How many bytes reset a stream's idle clock (or fewer, if a chunk is
/// capped lower, or fewer remain).
pub const PROGRESS_BYTES: u64 = 64 * 1024;

/// Per-provider counts: streams in progress and the transfers they write.
#[derive(Debug)]
pub(crate) struct ProviderLimits {
    max_streams: usize,
    max_partial_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, usize>,
    /// provider → transfer id → its Manifest's size, for transfers a stream
    /// is writing now.
    writing: HashMap<String, HashMap<String, u64>>,
}

/// One stream of a provider; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    limits: Arc<ProviderLimits>,
    provider: String,
}

/// A transfer being written, its size held against its provider's limit;
/// dropping it hands the holding back to the database (where an unfinished
/// transfer's row keeps counting) or to nobody (once it is complete or
/// discarded).
#[derive(Debug)]
pub(crate) struct Holding {
    limits: Arc<ProviderLimits>,
    provider: String,
    transfer_id: String,
}

impl ProviderLimits {
    pub(crate) fn new(max_streams: usize, max_partial_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            max_streams,
            max_partial_bytes,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Counts only: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `provider`, or the refusal.
    pub(crate) fn stream(self: &Arc<Self>, provider: &str) -> Result<StreamSlot, ExchangeError> {
        let mut state = self.state();
        let n = state.streams.entry(provider.to_string()).or_default();
        if *n >= self.max_streams {
            return Err(ExchangeError::OverLimit(format!(
                "{} pushes of this provider are already in progress, the most this endpoint \
                 allows one provider; try again when one has finished",
                self.max_streams
            )));
        }
        *n += 1;
        Ok(StreamSlot {
            limits: self.clone(),
            provider: provider.to_string(),
        })
    }

    /// Holds `size` bytes for `transfer_id` of `provider`, if with what the
    /// provider holds already it stays within the limit. `waiting` is the
    /// provider's unfinished transfers in the database (id and size); those
    /// a stream is writing are counted once, at their Manifest's size.
    /// Blocks only on a mutex; the caller queries the database first.
    pub(crate) fn hold(
        self: &Arc<Self>,
        provider: &str,
        transfer_id: &str,
        size: u64,
        waiting: impl FnOnce() -> Result<Vec<(String, u64)>, ExchangeError>,
    ) -> Result<Holding, ExchangeError> {
        // The database is read with the lock held, so two streams of one
        // provider cannot both fit in the same room.
        let mut state = self.state();
        let writing = state.writing.entry(provider.to_string()).or_default();
        let mut counted: HashSet<&str> = writing.keys().map(String::as_str).collect();
        counted.insert(transfer_id);
        let mut held: u64 = writing.values().sum();
        for (id, bytes) in waiting()? {
            if !counted.contains(id.as_str()) {
                held = held.saturating_add(bytes);
            }
        }
        if held.saturating_add(size) > self.max_partial_bytes {
            return Err(ExchangeError::OverLimit(format!(
                "this provider's unfinished transfers already hold {held} bytes here; with this \
                 file's {size} that is over the {} a provider may hold in partial files: finish \
                 or abandon some first",
                self.max_partial_bytes
            )));
        }
        writing.insert(transfer_id.to_string(), size);
        Ok(Holding {
            limits: self.clone(),
            provider: provider.to_string(),
            transfer_id: transfer_id.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut state = self.limits.state();
        if let Some(n) = state.streams.get_mut(&self.provider) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.streams.remove(&self.provider);
            }
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut state = self.limits.state();
        if let Some(writing) = state.writing.get_mut(&self.provider) {
            writing.remove(&self.transfer_id);
            if writing.is_empty() {
                state.writing.remove(&self.provider);
            }
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem that
/// holds `path`.
pub(crate) fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Refuses a push that would leave less than `floor` bytes free where the
/// partial files are (`free` of them, `to_write` still to come).
pub(crate) fn check_free_space(free: u64, to_write: u64, floor: u64) -> Result<(), ExchangeError> {
    if floor > 0 && free < floor.saturating_add(to_write) {
        tracing::warn!(
            free,
            to_write,
            floor,
            "refusing a push: the disk of the partial files and inbox is nearly full \
             (min_free_bytes)"
        );
        return Err(ExchangeError::OverLimit(
            "the endpoint is short of disk space; try again later".into(),
        ));
    }
    Ok(())
}

/// A stream's idle clock, measured by bytes that make progress: it is
/// restarted only once a useful amount has arrived since it last was
/// ([`PROGRESS_BYTES`], or the largest chunk allowed, or what remains of
/// the file, whichever is least), so a trickle of tiny messages cannot keep
/// a stream alive.
#[derive(Debug)]
pub(crate) struct Progress {
    idle: Duration,
    unit: u64,
    deadline: Instant,
    since: u64,
    need: u64,
}

impl Progress {
    /// A clock started now, for streams with chunks of at most
    /// `max_chunk_bytes`.
    pub(crate) fn new(idle: Duration, max_chunk_bytes: u64) -> Self {
        let unit = PROGRESS_BYTES.min(max_chunk_bytes).max(1);
        Self {
            idle,
            unit,
            deadline: Instant::now() + idle,
            since: 0,
            need: unit,
        }
    }

    /// When the stream is idle unless it has made progress.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How long the idle limit is.
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// What must arrive before the clock restarts.
    pub(crate) fn need(&self) -> u64 {
        self.need
    }

    /// Restarts the clock (the Manifest was accepted); `remaining` bytes of
    /// the file are still to come.
    pub(crate) fn restart(&mut self, remaining: u64) {
        self.deadline = Instant::now() + self.idle;
        self.since = 0;
        self.need = self.unit.min(remaining);
    }

    /// Counts `bytes` written; `remaining` are still to come after them.
    pub(crate) fn advanced(&mut self, bytes: u64, remaining: u64) {
        self.since = self.since.saturating_add(bytes);
        if self.since >= self.need {
            self.restart(remaining);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_counted_per_provider() {
        let limits = ProviderLimits::new(2, 100);
        let a1 = limits.stream("a").expect("a 1");
        let _a2 = limits.stream("a").expect("a 2");
        let refused = limits.stream("a").expect_err("a 3");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let _b1 = limits.stream("b").expect("b is not held up by a");
        drop(a1);
        limits.stream("a").expect("a place came free");
    }

    #[test]
    fn partial_bytes_count_streams_and_waiting_transfers_once() {
        let limits = ProviderLimits::new(8, 100);
        let none = || Ok(Vec::new());
        let t1 = limits.hold("a", "t1", 60, none).expect("60 of 100");
        // t1 is in the database too (it has synced): counted once.
        let waiting = || Ok(vec![("t1".to_string(), 60), ("t0".to_string(), 30)]);
        let refused = limits
            .hold("a", "t2", 20, waiting)
            .expect_err("60 + 30 + 20");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let waiting = || Ok(vec![("t1".to_string(), 60), ("t0".to_string(), 30)]);
        let _t2 = limits.hold("a", "t2", 10, waiting).expect("60 + 30 + 10");
        limits
            .hold("b", "t1", 100, none)
            .expect("b has its own room");
        // Resuming t0 counts it at its size, not twice.
        drop(t1);
        let waiting = || Ok(vec![("t0".to_string(), 30)]);
        limits.hold("a", "t0", 30, waiting).expect("30 + 10 + 30");
    }

    #[test]
    fn the_free_space_floor_counts_what_is_still_to_be_written() {
        check_free_space(10_000, 1_000, 9_000).expect("exactly at the floor after");
        let refused = check_free_space(10_000, 1_001, 9_000).expect_err("below after");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        check_free_space(0, 1 << 40, 0).expect("no floor");
        assert!(free_bytes(Path::new(".")).expect("statvfs") > 0);
    }

    #[test]
    fn only_progress_restarts_the_idle_clock() {
        let idle = Duration::from_secs(30);
        let mut p = Progress::new(idle, 1 << 20);
        p.restart(1 << 20);
        let first = p.deadline();
        // So that a restart would show in the deadline.
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..1000 {
            p.advanced(1, 1 << 20);
        }
        assert_eq!(p.deadline(), first, "1000 one-byte chunks are not progress");
        p.advanced(PROGRESS_BYTES, 1 << 19);
        assert!(p.deadline() > first, "64 KiB is");
        // Near the end, what remains is enough.
        p.restart(10);
        let before = p.deadline();
        std::thread::sleep(Duration::from_millis(2));
        p.advanced(10, 0);
        assert!(p.deadline() > before);
        assert_eq!(p.need(), 0);
    }
}
