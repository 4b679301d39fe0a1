//! Refused handshakes, counted rather than written one by one.
//!
//! Anyone who can reach a listener decides how often a handshake fails, and
//! an audit row is an fsynced transaction: written for each refusal, a
//! peer with no certificate could grow the disk without bound. So failures
//! are coalesced per key, (source, reason), where the source is the peer's
//! address as [`tls::Source`](crate::tls::Source) counts it (an IPv4
//! address, or an IPv6 /64):
//!
//! - the first refusal of a key is written at once (an operator sees an
//!   attack begin);
//! - later ones within [`WINDOW`] are counted, and written as one row with
//!   their count when the window ends; a key refused again in the next
//!   window gets one more row at its end, and so on; a window with none
//!   ends the key, so its next refusal is again written at once;
//! - whatever is counted when the listener stops is written then.
//!
//! So each key writes at most one row per window. The number of keys is
//! bounded too ([`MAX_KEYS`]): beyond it, refusals are counted under one
//! overflow key (source `*`). Reasons are cut to [`MAX_REASON_CHARS`].
//!
//! Recording is synchronous and cheap (a map update under a lock), so the
//! TLS layer never drops a refusal for want of queue space; one writer
//! task ([`Writer::run`]) does the writing, and ends, after writing what is
//! left, once every [`Recorder`] is gone (the listener has stopped).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::common::time::now_ms;
use crate::tls::Source;

/// How long a key's refusals are counted before they are written as one
/// row.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How many keys are counted apart at once.
pub const MAX_KEYS: usize = 1024;

/// The longest reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 300;

/// The source of the overflow key.
pub const OVERFLOW_SOURCE: &str = "*";

/// The reason of the overflow key.
pub const OVERFLOW_REASON: &str =
    "refusals from more sources or for more reasons than are counted apart";

/// What refusals are counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The source, as text (`192.0.2.7`, `2001:db8::/64`, or `*`).
    pub source: String,
    /// Why the handshake was refused.
    pub reason: String,
}

/// One audit row: `count` refusals of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Key,
    /// How many refusals this row stands for (at least 1).
    pub count: u64,
    /// When the first and last of them happened (Unix ms).
    pub first_unix_ms: i64,
    pub last_unix_ms: i64,
    /// The full address of the last of them.
    pub last_peer: SocketAddr,
}

impl Row {
    /// The row's audit detail.
    pub fn detail(&self) -> serde_json::Value {
        json!({
            "source": self.key.source,
            "reason": self.key.reason,
            "count": self.count,
            "first_unix_ms": self.first_unix_ms,
            "last_unix_ms": self.last_unix_ms,
            "peer_addr": self.last_peer.to_string(),
            "window_secs": WINDOW.as_secs(),
        })
    }
}

#[derive(Debug)]
struct Entry {
    /// When the current window began.
    window_start: Instant,
    /// Refusals counted and not yet written.
    pending: u64,
    /// The key is new: its first refusal is to be written at once.
    announce: bool,
    first_unix_ms: i64,
    last_unix_ms: i64,
    last_peer: SocketAddr,
}

/// The counts, with the time passed in, so the rules are tested without a
/// clock.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    max_keys: usize,
    entries: HashMap<Key, Entry>,
}

impl Ledger {
    /// Counts over `window`, at most `max_keys` keys apart.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
        }
    }

    /// Counts one refusal; `true` if its key is new (a row is due at once).
    pub fn record(&mut self, peer: SocketAddr, reason: &str, now: Instant, now_ms: i64) -> bool {
        let mut key = Key {
            source: Source::of(peer.ip()).to_string(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
        };
        // The overflow key has a place kept for it.
        if !self.entries.contains_key(&key) && self.entries.len() + 1 >= self.max_keys {
            key = Key {
                source: OVERFLOW_SOURCE.into(),
                reason: OVERFLOW_REASON.into(),
            };
        }
        match self.entries.get_mut(&key) {
            Some(entry) => {
                if entry.pending == 0 {
                    entry.first_unix_ms = now_ms;
                }
                entry.pending += 1;
                entry.last_unix_ms = now_ms;
                entry.last_peer = peer;
                false
            }
            None => {
                self.entries.insert(
                    key,
                    Entry {
                        window_start: now,
                        pending: 1,
                        announce: true,
                        first_unix_ms: now_ms,
                        last_unix_ms: now_ms,
                        last_peer: peer,
                    },
                );
                true
            }
        }
    }

    /// The rows due at `now`: new keys' first refusals, and the counts of
    /// windows that have ended. Keys whose window ended with nothing
    /// counted are forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<Row> {
        let window = self.window;
        let mut rows = Vec::new();
        self.entries.retain(|key, entry| {
            if entry.announce {
                entry.announce = false;
                rows.push(take(key, entry));
                return true;
            }
            if now.saturating_duration_since(entry.window_start) < window {
                return true;
            }
            if entry.pending == 0 {
                return false;
            }
            rows.push(take(key, entry));
            entry.window_start = now;
            true
        });
        rows
    }

    /// When [`Ledger::due`] next has something to do, if ever.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| {
                if e.announce {
                    e.window_start
                } else {
                    e.window_start + self.window
                }
            })
            .min()
    }

    /// Every count not yet written (at shutdown); the ledger is emptied.
    pub fn drain(&mut self) -> Vec<Row> {
        self.entries
            .drain()
            .filter(|(_, e)| e.pending > 0)
            .map(|(key, mut e)| take(&key, &mut e))
            .collect()
    }
}

fn take(key: &Key, entry: &mut Entry) -> Row {
    let row = Row {
        key: key.clone(),
        count: entry.pending,
        first_unix_ms: entry.first_unix_ms,
        last_unix_ms: entry.last_unix_ms,
        last_peer: entry.last_peer,
    };
    entry.pending = 0;
    row
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    // Counts only: a panic elsewhere leaves them usable.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the TLS layer reports refusals (cheap, never blocks, never drops
/// one). Clone it freely; the writer ends once every clone is gone.
#[derive(Debug, Clone)]
pub struct Recorder {
    ledger: Arc<Mutex<Ledger>>,
    wake: mpsc::Sender<()>,
}

impl Recorder {
    /// Counts a refusal of `peer` for `reason`.
    pub fn record(&self, peer: SocketAddr, reason: &str) {
        let new = lock(&self.ledger).record(peer, reason, Instant::now(), now_ms());
        if new {
            // A full queue means a wake-up is already due.
            let _ = self.wake.try_send(());
        }
    }
}

/// Writes the rows; see [`Writer::run`].
#[derive(Debug)]
pub struct Writer {
    ledger: Arc<Mutex<Ledger>>,
    wake: mpsc::Receiver<()>,
}

/// A recorder and its writer, counting over `window`.
pub fn coalesce(window: Duration) -> (Recorder, Writer) {
    let ledger = Arc::new(Mutex::new(Ledger::new(window, MAX_KEYS)));
    let (tx, rx) = mpsc::channel(1);
    (
        Recorder {
            ledger: ledger.clone(),
            wake: tx,
        },
        Writer { ledger, wake: rx },
    )
}

impl Writer {
    /// Hands rows to `write` as they fall due, until every [`Recorder`] is
    /// gone; then hands it what is left and returns.
    pub async fn run<F, Fut>(mut self, mut write: F)
    where
        F: FnMut(Vec<Row>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            let rows = lock(&self.ledger).due(Instant::now());
            if !rows.is_empty() {
                write(rows).await;
                continue;
            }
            let next = lock(&self.ledger).next_due();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                woken = self.wake.recv() => {
                    if woken.is_none() {
                        break;
                    }
                }
                () = sleep => {}
            }
        }
        let rows = lock(&self.ledger).drain();
        if !rows.is_empty() {
            write(rows).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_refusal_is_written_at_once_then_one_row_per_window() {
        let mut ledger = Ledger::new(W, 16);
        let t0 = Instant::now();
        assert!(ledger.record(peer("192.0.2.1:1000"), "eof", t0, 0));
        assert!(!ledger.record(peer("192.0.2.1:1001"), "eof", t0, 1));
        let rows = ledger.due(t0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 2, "what arrived before the writer ran");
        for i in 0..1000 {
            assert!(!ledger.record(
                peer("192.0.2.1:2000"),
                "eof",
                t0 + Duration::from_secs(1),
                i
            ));
        }
        assert!(
            ledger.due(t0 + Duration::from_secs(59)).is_empty(),
            "within the window"
        );
        assert_eq!(ledger.next_due(), Some(t0 + W));
        let rows = ledger.due(t0 + W);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].count, 1000);
        assert_eq!(rows[0].key.source, "192.0.2.1");
        assert_eq!(rows[0].last_peer, peer("192.0.2.1:2000"));
        // A window with nothing ends the key: the next refusal is new.
        assert!(ledger.due(t0 + 2 * W).is_empty());
        assert_eq!(ledger.next_due(), None);
        assert!(ledger.record(peer("192.0.2.1:3000"), "eof", t0 + 2 * W, 5));
    }

    #[test]
    fn keys_are_source_and_reason_and_ipv6_counts_by_slash_64() {
        let mut ledger = Ledger::new(W, 16);
        let t0 = Instant::now();
        assert!(ledger.record(peer("[2001:db8:0:1::1]:1"), "eof", t0, 0));
        assert!(!ledger.record(peer("[2001:db8:0:1::ffff]:2"), "eof", t0, 0));
        assert!(ledger.record(peer("[2001:db8:0:1::1]:1"), "timed out", t0, 0));
        assert!(ledger.record(peer("192.0.2.1:1"), "eof", t0, 0));
        let mut rows = ledger.due(t0);
        rows.sort_by(|a, b| (&a.key.source, &a.key.reason).cmp(&(&b.key.source, &b.key.reason)));
        let seen: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|r| (r.key.source.as_str(), r.key.reason.as_str(), r.count))
            .collect();
        assert_eq!(
            seen,
            [
                ("192.0.2.1", "eof", 1),
                ("2001:db8:0:1::/64", "eof", 2),
                ("2001:db8:0:1::/64", "timed out", 1)
            ]
        );
    }

    #[test]
    fn beyond_the_key_limit_refusals_are_counted_under_one_key() {
        let mut ledger = Ledger::new(W, 4);
        let t0 = Instant::now();
        for i in 0..100u32 {
            ledger.record(
                SocketAddr::from(([10, 0, (i / 256) as u8, i as u8], 1)),
                "eof",
                t0,
                0,
            );
        }
        let rows = ledger.due(t0);
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 100);
        let overflow = rows
            .iter()
            .find(|r| r.key.source == OVERFLOW_SOURCE)
            .expect("overflow row");
        assert_eq!(overflow.count, 97);
        assert!(
            !ledger.record(peer("10.9.9.9:1"), "eof", t0, 0),
            "counted as overflow"
        );
        assert_eq!(ledger.drain().iter().map(|r| r.count).sum::<u64>(), 1);
    }

    #[test]
    fn reasons_are_cut_short() {
        let mut ledger = Ledger::new(W, 16);
        ledger.record(peer("192.0.2.1:1"), &"é".repeat(1000), Instant::now(), 0);
        let rows = ledger.drain();
        assert_eq!(rows[0].key.reason.chars().count(), MAX_REASON_CHARS);
    }

    #[tokio::test]
    async fn the_writer_writes_what_is_left_when_the_recorders_are_gone() {
        let (recorder, writer) = coalesce(W);
        let written = Arc::new(Mutex::new(Vec::<Row>::new()));
        let sink = written.clone();
        let task = tokio::spawn(writer.run(move |rows| {
            sink.lock().expect("lock").extend(rows);
            std::future::ready(())
        }));
        for _ in 0..500 {
            recorder.record(peer("192.0.2.1:1"), "eof");
        }
        drop(recorder);
        task.await.expect("writer");
        let rows = written.lock().expect("lock").clone();
        assert!(rows.len() <= 2, "{rows:?}");
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 500);
    }
}
