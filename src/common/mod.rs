//! What both programs use: the database (open, WAL, migrations), the audit
//! chain, encodings, times, durable files, names, blocking work, shutdown,
//! reloads on SIGHUP, systemd notifications, the Prometheus endpoint, gRPC
//! health from a write probe, expiry warnings, refused handshakes coalesced
//! for the audit, and the test-only fault hook. Nothing here knows the
//! provider or the authority endpoint; both build on it.

pub mod audit;
pub mod blocking;
pub mod db;
pub mod encoding;
pub mod expiry;
pub mod fault;
pub mod files;
pub mod health;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod refusals;
pub mod reload;
pub mod shutdown;
pub mod time;

/// Writes `line` and a newline to standard error. A reader that went away
/// (`2>&1 | head`) is not an error and never a panic.
pub fn stderr_line(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
