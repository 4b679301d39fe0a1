//! Honest health for the gRPC listeners (`grpc.health.v1.Health`, from
//! `tonic-health`): `SERVING` only while the process is not draining and a
//! cheap probe of what it must be able to write (its database, its
//! folders) succeeds; `NOT_SERVING` otherwise. The status is set for `""`
//! (the whole server) and for each service name, and changes are logged.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::common::blocking::blocking;
use crate::common::shutdown::Shutdown;

/// How often the probe runs.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// A blocking check that the process can write what it must; `Err` says
/// what cannot be written and why.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Sets `services` (and `""`) on `reporter` from `probe`, every
/// [`PROBE_EVERY`], until `shutdown` is cancelled: then `NOT_SERVING`, at
/// once, for the drain. A task of `shutdown`.
pub fn watch(
    reporter: HealthReporter,
    services: &[&'static str],
    probe: Probe,
    what: &'static str,
    shutdown: &Shutdown,
) {
    let mut names = vec![""];
    names.extend_from_slice(services);
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let set = |status: ServingStatus| {
            let (reporter, names) = (reporter.clone(), names.clone());
            async move {
                for name in names {
                    reporter.set_service_status(name, status).await;
                }
            }
        };
        let mut last: Option<bool> = None;
        // A probe still running when stopping began.
        let mut unfinished = None;
        loop {
            let mut running = Box::pin({
                let probe = probe.clone();
                blocking(move || probe())
            });
            let checked = tokio::select! {
                checked = &mut running => checked.unwrap_or_else(|e| Err(e.to_string())),
                () = stop.cancelled() => {
                    unfinished = Some(running);
                    break;
                }
            };
            if stop.is_cancelled() {
                break;
            }
            let healthy = checked.is_ok();
            if last != Some(healthy) {
                match &checked {
                    Ok(()) => tracing::info!(service = what, "health: SERVING"),
                    Err(why) => {
                        tracing::error!(service = what, reason = %why, "health: NOT_SERVING")
                    }
                }
                set(if healthy {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                })
                .await;
                last = Some(healthy);
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                () = stop.cancelled() => break,
            }
        }
        tracing::info!(service = what, "health: NOT_SERVING (draining)");
        set(ServingStatus::NotServing).await;
        // The probe makes and removes files in folders the owner may read
        // (or remove) as soon as this task has ended: let it finish.
        if let Some(running) = unfinished {
            let _ = running.await;
        }
    });
}

/// How the names of [`probe_dir`]'s files begin. Such a file exists for
/// moments, every [`PROBE_EVERY`]; whoever lists a probed folder of a
/// running process may see one.
pub const PROBE_PREFIX: &str = ".mishare-health-";

/// Whether a file can be made and removed in `dir` (what writing there
/// needs); `Err` names the folder and the reason.
pub fn probe_dir(dir: &std::path::Path) -> Result<(), String> {
    tempfile::Builder::new()
        .prefix(PROBE_PREFIX)
        .tempfile_in(dir)
        .and_then(tempfile::NamedTempFile::close)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::common::shutdown::Drained;

    /// The probe is held inside its folder work until the test lets it go:
    /// while it is held, stopping cannot finish; once it is let go, it
    /// does, with the probe's work done.
    #[tokio::test]
    async fn stopping_waits_for_a_probe_that_is_running() {
        let (reporter, _service) = tonic_health::server::health_reporter();
        let started = Arc::new(tokio::sync::Notify::new());
        let finished = Arc::new(AtomicBool::new(false));
        let (release, held) = mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let probe: Probe = {
            let (started, finished) = (started.clone(), finished.clone());
            Arc::new(move || {
                started.notify_one();
                let _ = held.lock().expect("one probe at a time").recv();
                finished.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        let shutdown = Shutdown::new();
        watch(reporter, &["test.Service"], probe, "test", &shutdown);
        started.notified().await;
        shutdown.cancel();
        // Held: the task must still be running however long this waits.
        let drained = shutdown.drain(Duration::from_millis(500), "test").await;
        assert!(
            matches!(drained, Drained::Expired { running: 1 }),
            "stopping ended with the probe still in the folders: {drained:?}"
        );
        assert!(!finished.load(Ordering::SeqCst));
        release.send(()).expect("the probe waits");
        let drained = shutdown.drain(Duration::from_secs(60), "test").await;
        assert!(matches!(drained, Drained::Finished), "{drained:?}");
        assert!(finished.load(Ordering::SeqCst));
    }
}
