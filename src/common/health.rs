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
        loop {
            let checked = {
                let probe = probe.clone();
                tokio::select! {
                    checked = blocking(move || probe()) => checked.unwrap_or_else(|e| Err(e.to_string())),
                    () = stop.cancelled() => break,
                }
            };
            if stop.is_cancelled() {
                break;
            }
            let healthy = checked.is_ok();
            if last != Some(healthy) {
                match &checked {
                    Ok(()) => tracing::info!(service = what, "health: SERVING"),
                    Err(why) => tracing::error!(service = what, reason = %why, "health: NOT_SERVING"),
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
    });
}

/// Whether a file can be made and removed in `dir` (what writing there
/// needs); `Err` names the folder and the reason.
pub fn probe_dir(dir: &std::path::Path) -> Result<(), String> {
    tempfile::Builder::new()
        .prefix(".mishare-health-")
        .tempfile_in(dir)
        .and_then(tempfile::NamedTempFile::close)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}
