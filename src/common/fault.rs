//! A test-only fault hook, for the crash-safety suite (`tests/faults.rs`).
//!
//! When the environment variable `MISHARE_DANGEROUS_CRASH_AT` names one of
//! the [`CrashPoint`]s (a provider's or an endpoint's), the process aborts (no unwinding, no destructors,
//! as `kill -9` would) the first time it reaches that point. It exists so
//! tests can show that a crash at each stage of a delivery loses and
//! duplicates nothing. **Never set it in production**: it makes the daemon
//! die on purpose.

use std::sync::OnceLock;

/// The environment variable naming the stage to abort at. Test-only.
pub const DANGEROUS_CRASH_AT_VAR: &str = "MISHARE_DANGEROUS_CRASH_AT";

/// The stages a test can abort the provider at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// A delivery's ciphertext is spooled and its row written, inside the
    /// transaction that is about to write its release to the ledger.
    BeforeLedger,
    /// A delivery's ciphertext is spooled and recorded; nothing sent.
    AfterSpool,
    /// The first chunk is on the stream; no `Commit` yet.
    MidStream,
    /// The endpoint has answered the `Commit` with a receipt, which is not
    /// stored yet.
    AfterCommitSent,
    /// The receipt is stored.
    AfterReceipt,
    /// On an authority endpoint: a `Commit` arrived and the file is fsynced
    /// and verified, but not yet in the inbox.
    EndpointBeforePublish,
    /// On an authority endpoint: the file is in the inbox (directories
    /// fsynced), but its receipt is neither signed nor recorded.
    EndpointAfterPublish,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::BeforeLedger => "before_ledger",
            CrashPoint::AfterSpool => "after_spool",
            CrashPoint::MidStream => "mid_stream",
            CrashPoint::AfterCommitSent => "after_commit_sent",
            CrashPoint::AfterReceipt => "after_receipt",
            CrashPoint::EndpointBeforePublish => "endpoint_before_publish",
            CrashPoint::EndpointAfterPublish => "endpoint_after_publish",
        }
    }
}

/// The environment variable naming a stage to pause at. Test-only.
pub const DANGEROUS_PAUSE_AT_VAR: &str = "MISHARE_DANGEROUS_PAUSE_AT";

/// How long a paused stage waits.
pub const DANGEROUS_PAUSE: std::time::Duration = std::time::Duration::from_secs(3);

/// Blocks the calling thread for [`DANGEROUS_PAUSE`] if the test-only hook
/// `MISHARE_DANGEROUS_PAUSE_AT` names `point` (a slowed endpoint, so a test
/// can act while, say, a commit is in progress). Does nothing otherwise.
/// Call it only on a blocking thread.
pub fn dangerous_pause_point(point: CrashPoint) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(DANGEROUS_PAUSE_AT_VAR).ok());
    if chosen.as_deref() == Some(point.name()) {
        std::thread::sleep(DANGEROUS_PAUSE);
    }
}

/// Aborts the process if the test-only hook names `point`. Does nothing
/// otherwise (the variable is read once).
pub fn dangerous_crash_point(point: CrashPoint) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(DANGEROUS_CRASH_AT_VAR).ok());
    if chosen.as_deref() == Some(point.name()) {
        eprintln!(
            "{DANGEROUS_CRASH_AT_VAR}={}: aborting on purpose",
            point.name()
        );
        std::process::abort();
    }
}
