//! The provider daemon's Prometheus metrics (`[metrics] listen`), and the
//! observer task that keeps the gauges read from the database up to date
//! and logs expiry warnings once a day.
//!
//! Counters and the push histogram are bumped where things happen, a
//! handful of atomics per delivery (never per chunk). Gauges that come
//! from the database (the outbox, dead deliveries, each report's last
//! success, agreements' and peers' certificates' expiry) are refreshed by
//! the observer every [`OBSERVE_EVERY`] on a connection of its own, so a
//! scrape only encodes what is in memory and never waits for the store.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::common::blocking::blocking;
use crate::common::expiry::{self, DailyWarnings, Expiring};
use crate::common::shutdown::Shutdown;
use crate::config::provider::ProviderConfig;
use crate::provider::expiry as provider_expiry;
use crate::provider::gate::Reason;
use crate::provider::store::{OutboxSummary, PeerCertificate, SharedStore, Store, StoreError};

/// How often the observer reads the database.
pub const OBSERVE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    la: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    report: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaLabels {
    la: String,
}

/// `{role, subject}` of a certificate's expiry.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    role: String,
    subject: String,
}

/// How a delivery ended, as `mishare_deliveries_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint stored it and its receipt is kept.
    Delivered,
    /// The gate refused it.
    Refused,
    /// This attempt failed; it will be tried again.
    Failed,
    /// It failed for good.
    Dead,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
        }
    }
}

/// The provider's series.
#[derive(Debug)]
pub struct ProviderMetrics {
    registry: Arc<Registry>,
    deliveries: Family<DeliveryLabels, Counter>,
    gate_refusals: Family<ReasonLabels, Counter>,
    outbox_undelivered: Gauge,
    outbox_oldest: Gauge,
    dead: Gauge,
    push_duration: Histogram,
    report_last_success: Family<ReportLabels, Gauge>,
    agreement_expiry: Family<LaLabels, Gauge>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The LAs whose agreement expiry series are set, so the observer can
    /// remove those that went away.
    shown: Mutex<HashSet<String>>,
}

impl ProviderMetrics {
    /// Every series registered, none set.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let gate_refusals = Family::<ReasonLabels, Counter>::default();
        let outbox_undelivered = Gauge::default();
        let outbox_oldest = Gauge::default();
        let dead = Gauge::default();
        // 10 ms to about 40 minutes.
        let push_duration = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        let report_last_success = Family::<ReportLabels, Gauge>::default();
        let agreement_expiry = Family::<LaLabels, Gauge>::default();
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "mishare_deliveries",
            "Deliveries ended, by LA and outcome (delivered, refused, failed: to be retried, dead)",
            deliveries.clone(),
        );
        registry.register(
            "mishare_gate_refusals",
            "Files the gate refused, by reason code",
            gate_refusals.clone(),
        );
        registry.register(
            "mishare_outbox_undelivered",
            "Deliveries queued, sending or waiting to retry",
            outbox_undelivered.clone(),
        );
        registry.register(
            "mishare_outbox_oldest_undelivered_seconds",
            "Age of the oldest undelivered delivery, in seconds (0 when there is none)",
            outbox_oldest.clone(),
        );
        registry.register(
            "mishare_dead_deliveries",
            "Dead deliveries, waiting for mishare retry",
            dead.clone(),
        );
        registry.register(
            "mishare_push_duration_seconds",
            "Time to push one delivery, from its first connection to its outcome",
            push_duration.clone(),
        );
        registry.register(
            "mishare_report_last_success_timestamp_seconds",
            "When the receipt of a report's latest delivered file was stored (Unix time)",
            report_last_success.clone(),
        );
        registry.register(
            "mishare_agreement_expiry_timestamp_seconds",
            "When an LA's current agreement stops covering (Unix time; the start of the London \
             day after its last day)",
            agreement_expiry.clone(),
        );
        registry.register(
            "mishare_certificate_expiry_timestamp_seconds",
            "A certificate's notAfter (Unix time): this provider's own (role provider) and each \
             endpoint's it has seen (role endpoint)",
            certificate_expiry.clone(),
        );
        Arc::new(Self {
            registry: Arc::new(registry),
            deliveries,
            gate_refusals,
            outbox_undelivered,
            outbox_oldest,
            dead,
            push_duration,
            report_last_success,
            agreement_expiry,
            certificate_expiry,
            shown: Mutex::default(),
        })
    }

    /// The registry to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A delivery to `la` ended with `outcome`.
    pub fn delivery(&self, la: &str, outcome: Outcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                la: la.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// The gate refused a file, for `reason`.
    pub fn gate_refusal(&self, reason: Reason) {
        self.gate_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// One push took `took`.
    pub fn push_took(&self, took: Duration) {
        self.push_duration.observe(took.as_secs_f64());
    }

    /// A certificate's expiry.
    pub fn certificate(&self, role: &str, subject: &str, not_after: DateTime<Utc>) {
        let labels = CertificateLabels {
            role: role.to_string(),
            subject: subject.to_string(),
        };
        self.certificate_expiry
            .get_or_create(&labels)
            .set(not_after.timestamp());
    }

    /// Sets the gauges read from the database.
    pub fn refresh(&self, observed: &Observed, now: DateTime<Utc>) {
        self.outbox_undelivered.set(observed.outbox.undelivered);
        self.dead.set(observed.outbox.dead);
        self.outbox_oldest.set(
            observed
                .outbox
                .oldest
                .map_or(0, |t| (now - t).num_seconds().max(0)),
        );
        for (report, at) in &observed.last_success {
            self.report_last_success
                .get_or_create(&ReportLabels {
                    report: report.clone(),
                })
                .set(at.timestamp());
        }
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        let las: HashSet<String> = observed
            .agreements
            .iter()
            .map(|a| a.subject.clone())
            .collect();
        for a in &observed.agreements {
            self.agreement_expiry
                .get_or_create(&LaLabels {
                    la: a.subject.clone(),
                })
                .set(a.ends.timestamp());
        }
        for gone in shown.difference(&las) {
            self.agreement_expiry.remove(&LaLabels { la: gone.clone() });
        }
        *shown = las;
        drop(shown);
        for peer in &observed.peers {
            self.certificate(&peer.role, &peer.subject, peer.not_after);
        }
    }
}

/// What the observer reads from the database each time.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub outbox: OutboxSummary,
    pub last_success: Vec<(String, DateTime<Utc>)>,
    /// Each LA's current agreement (not revoked, with an expiry): its
    /// subject is the LA code.
    pub agreements: Vec<Expiring>,
    pub peers: Vec<PeerCertificate>,
}

impl Observed {
    /// Reads it.
    pub fn read(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            outbox: store.outbox_summary()?,
            last_success: store.last_success_per_report()?,
            agreements: store
                .agreement_expiries()?
                .into_iter()
                .map(|(la, last_day)| provider_expiry::agreement(la, last_day))
                .collect(),
            peers: store.peer_certificates()?,
        })
    }

    /// What expires, for warnings: agreements and peers' certificates.
    pub fn expiring(&self) -> Vec<Expiring> {
        let peers = self.peers.iter().map(provider_expiry::peer);
        self.agreements.iter().cloned().chain(peers).collect()
    }
}

/// The provider's own certificate as an expiring thing: its first DNS name
/// and its `notAfter`.
pub fn own_certificate(config: &ProviderConfig) -> Option<Expiring> {
    expiry::own_certificate(&config.tls.identity, "provider")
}

/// The provider's own certificate in use: set from the configuration the
/// daemon opened with and again by each reload, and read by the observer
/// at each look, so its warnings describe the certificate in use now.
#[derive(Debug, Clone, Default)]
pub struct OwnCertificate(Arc<ArcSwapOption<Expiring>>);

impl OwnCertificate {
    /// `config`'s.
    pub fn of(config: &ProviderConfig) -> Self {
        let own = Self::default();
        own.set(config);
        own
    }

    /// From now on `config`'s; returns it.
    pub fn set(&self, config: &ProviderConfig) -> Option<Expiring> {
        let own = own_certificate(config);
        self.0.store(own.clone().map(Arc::new));
        own
    }

    /// The one in use now.
    pub fn get(&self) -> Option<Expiring> {
        self.0.load_full().map(|own| (*own).clone())
    }
}

/// The observer: every [`OBSERVE_EVERY`] until `shutdown`, reads the
/// database under `data_dir` on a connection of its own, refreshes
/// `metrics` (if served) and logs what expires within 30 days (the
/// provider's own certificate as `own` has it then), once a day each.
pub fn observe(
    data_dir: &Path,
    own: OwnCertificate,
    metrics: Option<Arc<ProviderMetrics>>,
    shutdown: &Shutdown,
) {
    let data_dir = data_dir.to_path_buf();
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let store = match blocking(move || SharedStore::open(&data_dir)).await {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the observer cannot open the state; no metrics \
                    from the database and no expiry warnings");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the observer cannot open the state");
                return;
            }
        };
        let mut warnings = DailyWarnings::default();
        loop {
            let observed = store.run(|store| Observed::read(store)).await;
            let now = Utc::now();
            match observed {
                Ok(Ok(observed)) => {
                    if let Some(m) = &metrics {
                        m.refresh(&observed, now);
                    }
                    let mut items = observed.expiring();
                    items.extend(own.get());
                    for (item, urgency) in warnings.due(&items, now) {
                        tracing::warn!(
                            what = ?item.what,
                            role = %item.role,
                            subject = %item.subject,
                            ends = %crate::common::time::timestamp(item.ends),
                            "{}",
                            item.describe(urgency)
                        );
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "the observer cannot read the state"),
                Err(e) => tracing::error!(error = %e, "the observer cannot read the state"),
            }
            tokio::select! {
                () = tokio::time::sleep(OBSERVE_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}
