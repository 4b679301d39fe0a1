//! How the endpoint watches itself: the health it reports over
//! `grpc.health.v1.Health` (`NOT_SERVING` while draining, or when the
//! inbox, the partial files or the database cannot be written), the bytes
//! in partial files for its metrics, and the expiry of its own certificate
//! and of the providers' it has seen, logged once a day within 30 days.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;

use super::metrics::EndpointMetrics;
use super::service::{ExchangeService, Shared};
use crate::common::expiry::{self, DailyWarnings, Expiring, What};
use crate::common::health;
use crate::common::shutdown::Shutdown;
use crate::tls::{Identity, TlsConnection};
use crate::wire::v1::exchange_server::ExchangeServer;

/// The providers' certificates seen on accepted connections: identity →
/// `notAfter` of the latest.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProvidersSeen(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl ProvidersSeen {
    /// Notes the certificate of an accepted connection (in `metrics` too).
    pub(crate) fn saw(&self, connection: &TlsConnection, metrics: Option<&EndpointMetrics>) {
        let Some(ends) = connection
            .peer_certificate()
            .and_then(|c| expiry::certificate_not_after(c.as_ref()))
        else {
            return;
        };
        let identity = &connection.peer().identity;
        if let Some(m) = metrics {
            m.certificate("provider", identity, ends);
        }
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get(identity) != Some(&ends) {
            tracing::info!(provider = %identity, not_after = %crate::common::time::timestamp(ends),
                "a provider's certificate");
            seen.insert(identity.clone(), ends);
        }
    }

    fn expiring(&self) -> Vec<Expiring> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .map(|(identity, ends)| Expiring {
                what: What::Certificate,
                role: "provider".into(),
                subject: identity.clone(),
                ends: *ends,
            })
            .collect()
    }
}

/// Starts the health probe for `Exchange` on `reporter` (a task of
/// `tasks`); on the same beat, refreshes the partial-bytes gauge and logs
/// what expires soon, once a day each.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    reporter: HealthReporter,
    seen: ProvidersSeen,
    metrics: Option<Arc<EndpointMetrics>>,
    tasks: &Shutdown,
) {
    let warnings = Mutex::new(DailyWarnings::default());
    let shared = shared.clone();
    let probe: health::Probe = Arc::new(move || {
        // Read on every beat: a reload may have replaced it.
        let own = own_certificate(shared.live.load().identity());
        if let (Some(m), Some(own)) = (&metrics, &own) {
            m.certificate("authority", &own.subject, own.ends);
        }
        let mut items = seen.expiring();
        items.extend(own);
        let now = Utc::now();
        for (item, urgency) in warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(&items, now)
        {
            tracing::warn!(role = %item.role, subject = %item.subject, "{}", item.describe(urgency));
        }
        if let Some(m) = &metrics {
            let held = shared
                .inbox
                .partial_files()
                .map(|files| {
                    files
                        .iter()
                        .filter_map(|f| std::fs::metadata(f).ok())
                        .map(|m| m.len())
                        .sum::<u64>()
                })
                .unwrap_or_default();
            m.set_partial_bytes(held);
        }
        health::probe_dir(shared.inbox.dir())?;
        health::probe_dir(shared.inbox.partial_dir())?;
        shared
            .state
            .probe_write()
            .map_err(|e| format!("cannot write the endpoint's database: {e}"))
    });
    health::watch(
        reporter,
        &[<ExchangeServer<ExchangeService> as NamedService>::NAME],
        probe,
        "Exchange",
        tasks,
    );
}

/// The endpoint's own certificate, as an expiring item.
pub(crate) fn own_certificate(identity: &Identity) -> Option<Expiring> {
    expiry::own_certificate(identity, "authority")
}
