//! Reloading without a restart: SIGHUP (and `systemctl reload`, through the
//! units' `ExecReload=/bin/kill -HUP $MAINPID`) asks a running endpoint or
//! daemon to read its configuration again.
//!
//! A request travels on a bounded channel to the one task that owns the
//! running material (the endpoint's serve loop, the daemon's main loop),
//! which reads and checks everything anew and answers with what changed or
//! why nothing did. Reload is all or nothing: the new files are loaded and
//! checked in full (every certificate, key, revocation list, allow-list
//! and recipient) before any of it is used; a mistake anywhere leaves the
//! old material in use and names the file and the reason. Tests drive the
//! same path through a [`ReloadHandle`], without a signal.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::{mpsc, oneshot};

use crate::common::shutdown::Shutdown;
use crate::config::ConfigError;
use crate::tls::TlsError;

/// Why a reload was refused. The old material stays in use in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The configuration, or a file it names, cannot be used (the error
    /// names the file, the key and the reason).
    #[error("reload refused, the running configuration stays in use: {0}")]
    Config(#[from] ConfigError),
    /// The new certificates, keys or revocation lists do not make a usable
    /// TLS configuration.
    #[error("reload refused, the running configuration stays in use: {0}")]
    Tls(#[from] TlsError),
    /// The new configuration could not be read off the async runtime.
    #[error("reload refused, the running configuration stays in use: {0}")]
    Task(String),
    /// Nothing is running that could reload (it has stopped, or is
    /// stopping).
    #[error("nothing is running to reload")]
    NotRunning,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The reloadable parts that changed, by key (`tls.cert`, `provider`,
    /// `authority.E09000002.recipients`, …); empty if the files were as
    /// before.
    pub changed: Vec<String>,
    /// Keys that changed but apply only after a restart (`listen`,
    /// `data_dir`, …): the running values stay.
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    /// Compares the digests of what was loaded before and now, key by key.
    pub fn between(
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
        needs_restart: Vec<String>,
    ) -> Self {
        let mut changed: Vec<String> = after
            .iter()
            .filter(|(key, digest)| before.get(*key) != Some(digest))
            .map(|(key, _)| key.clone())
            .collect();
        changed.extend(
            before
                .keys()
                .filter(|key| !after.contains_key(*key))
                .cloned(),
        );
        changed.sort();
        Self {
            changed,
            needs_restart,
        }
    }
}

/// One request: answered with the outcome once the reload is done.
#[derive(Debug)]
pub struct ReloadRequest {
    reply: oneshot::Sender<Result<Reloaded, ReloadError>>,
}

impl ReloadRequest {
    /// Tells the requester how the reload ended.
    pub fn answer(self, outcome: Result<Reloaded, ReloadError>) {
        let _ = self.reply.send(outcome);
    }
}

/// Asks the owner of a running configuration to reload it.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
}

/// The requests, for the task that owns the running configuration.
#[derive(Debug)]
pub struct ReloadRequests {
    rx: mpsc::Receiver<ReloadRequest>,
}

/// A handle and the requests it sends. Requests queue (a few): a reload
/// asked for while one runs is done after it, with the files as they are
/// then.
pub fn channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadHandle { tx }, ReloadRequests { rx })
}

impl ReloadHandle {
    /// Reloads and waits for the outcome.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ReloadRequest { reply })
            .await
            .map_err(|_| ReloadError::NotRunning)?;
        answer.await.map_err(|_| ReloadError::NotRunning)?
    }
}

impl ReloadRequests {
    /// The next request; `None` once every handle is gone.
    pub async fn next(&mut self) -> Option<ReloadRequest> {
        self.rx.recv().await
    }
}

/// Reloads through `handle` on every SIGHUP until `shutdown` is cancelled.
/// The outcome is logged by whoever reloads; this says on standard error
/// that a reload was asked for and how it ended, for the operator at a
/// terminal.
pub fn reload_on_sighup(handle: ReloadHandle, shutdown: &Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                () = stop.cancelled() => return,
            }
            tracing::info!(signal = "SIGHUP", "reload requested");
            match handle.reload().await {
                Ok(done) => crate::common::stderr_line(&format!(
                    "SIGHUP: reloaded (changed: {}{})",
                    if done.changed.is_empty() {
                        "nothing".to_string()
                    } else {
                        done.changed.join(", ")
                    },
                    if done.needs_restart.is_empty() {
                        String::new()
                    } else {
                        format!("; restart to apply: {}", done.needs_restart.join(", "))
                    }
                )),
                Err(ReloadError::NotRunning) => return,
                Err(e) => crate::common::stderr_line(&format!("SIGHUP: {e}")),
            }
        }
    });
    Ok(())
}

/// The SHA-256 of a file's bytes, lower-case hex, or why it cannot be read
/// (for the audit record of a reload: what was in use).
pub fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    match std::fs::read(path) {
        Ok(bytes) => crate::common::encoding::hex(&sha2::Sha256::digest(&bytes)),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Logs the outcome of a reload: success at info (warning about keys that
/// need a restart), a refusal at error with the file and the reason.
pub fn log_outcome(what: &str, config: &Path, outcome: &Result<Reloaded, ReloadError>) {
    match outcome {
        Ok(done) => {
            tracing::info!(
                config = %config.display(),
                changed = ?done.changed,
                "{what}: configuration reloaded"
            );
            if !done.needs_restart.is_empty() {
                tracing::warn!(
                    config = %config.display(),
                    keys = ?done.needs_restart,
                    "{what}: these keys changed but apply only after a restart; the running \
                     values stay: restart to apply"
                );
            }
        }
        Err(e) => tracing::error!(
            config = %config.display(),
            error = %e,
            "{what}: reload refused; the old certificates, keys, lists and recipients stay in use"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_changed_is_every_key_whose_digest_differs_or_that_came_or_went() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let before = map(&[("tls.cert", "a"), ("tls.ca", "b"), ("tls.crls.1", "c")]);
        let after = map(&[("tls.cert", "a2"), ("tls.ca", "b"), ("provider", "d")]);
        let done = Reloaded::between(&before, &after, vec!["listen".into()]);
        assert_eq!(done.changed, ["provider", "tls.cert", "tls.crls.1"]);
        assert_eq!(done.needs_restart, ["listen"]);
        assert!(Reloaded::between(&after, &after, vec![]).changed.is_empty());
    }

    #[tokio::test]
    async fn a_handle_whose_owner_is_gone_says_nothing_is_running() {
        let (handle, requests) = channel();
        drop(requests);
        assert!(matches!(
            handle.reload().await,
            Err(ReloadError::NotRunning)
        ));
    }
}
