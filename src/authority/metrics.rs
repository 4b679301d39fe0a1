//! The endpoint's Prometheus metrics (`[metrics] listen`): transfers and
//! bytes received per provider, bytes in partial files, refused
//! handshakes, and certificates' expiry (its own, and each provider's it
//! has seen). Counters are atomics; a push takes its provider's byte
//! counter once, so a chunk costs one atomic add. The partial-bytes gauge
//! is refreshed by the health probe's task.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tonic::Code;

use super::error::ExchangeError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    role: &'static str,
    subject: String,
}

/// The provider label of a push whose certificate named no provider this
/// endpoint serves (so the label set stays the allow-list's).
pub const UNKNOWN_PROVIDER: &str = "unknown";

/// The endpoint's series.
#[derive(Debug)]
pub struct EndpointMetrics {
    registry: Arc<Registry>,
    transfers: Family<TransferLabels, Counter>,
    received: Family<ProviderLabels, Counter>,
    partial_bytes: Gauge,
    handshake_refusals: Family<ReasonLabels, Counter>,
    certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl EndpointMetrics {
    /// Every series registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let transfers = Family::<TransferLabels, Counter>::default();
        let received = Family::<ProviderLabels, Counter>::default();
        let partial_bytes = Gauge::default();
        let handshake_refusals = Family::<ReasonLabels, Counter>::default();
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "mishare_transfers",
            "Pushes ended, by provider and outcome (accepted, or the gRPC code of the refusal)",
            transfers.clone(),
        );
        registry.register(
            "mishare_received_bytes",
            "Bytes of ciphertext received, by provider",
            received.clone(),
        );
        registry.register(
            "mishare_partial_bytes",
            "Bytes held in partial files (transfers in flight or waiting to resume)",
            partial_bytes.clone(),
        );
        registry.register(
            "mishare_handshake_refusals",
            "TLS connections refused before any request, by reason",
            handshake_refusals.clone(),
        );
        registry.register(
            "mishare_certificate_expiry_timestamp_seconds",
            "A certificate's notAfter (Unix time): the endpoint's own (role authority) and each \
             provider's it has seen (role provider)",
            certificate_expiry.clone(),
        );
        Arc::new(Self {
            registry: Arc::new(registry),
            transfers,
            received,
            partial_bytes,
            handshake_refusals,
            certificate_expiry,
        })
    }

    /// The registry to serve.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A push from `provider` ended: accepted, or refused with `error`.
    pub fn transfer(&self, provider: &str, error: Option<&ExchangeError>) {
        self.transfers
            .get_or_create(&TransferLabels {
                provider: provider.to_string(),
                outcome: error.map_or("accepted", |e| code_name(e.code())),
            })
            .inc();
    }

    /// The byte counter of `provider`, taken once per push.
    pub fn received(&self, provider: &str) -> Counter {
        self.received.get_or_create_owned(&ProviderLabels {
            provider: provider.to_string(),
        })
    }

    /// What the partial files hold now.
    pub fn set_partial_bytes(&self, bytes: u64) {
        self.partial_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A handshake refused, for `reason` as the TLS layer gave it.
    pub fn handshake_refused(&self, reason: &str) {
        self.handshake_refusals
            .get_or_create(&ReasonLabels {
                reason: refusal_kind(reason),
            })
            .inc();
    }

    /// A certificate's expiry: `authority` (its own) or `provider`.
    pub fn certificate(&self, role: &'static str, subject: &str, not_after: DateTime<Utc>) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels {
                role,
                subject: subject.to_string(),
            })
            .set(not_after.timestamp());
    }
}

/// A gRPC code as a label value.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::DataLoss => "data_loss",
        Code::FailedPrecondition => "failed_precondition",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Cancelled => "cancelled",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal",
        _ => "other",
    }
}

/// A refused handshake's reason (free text from rustls or the listener's
/// bounds) as one of a few label values, so the series stay few whatever a
/// peer sends.
pub fn refusal_kind(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("timed out") {
        "timeout"
    } else if r.contains("too many") || r.contains("pending") || r.contains("handshakes") {
        "over_limit"
    } else if r.contains("allow-list") || r.contains("allowed identity") {
        "not_allowed"
    } else if r.contains("revoked") {
        "revoked"
    } else if r.contains("expired") {
        "expired"
    } else if r.contains("unknownissuer") || r.contains("unknown issuer") {
        "unknown_issuer"
    } else if r.contains("certificate") {
        "bad_certificate"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_become_few_labels() {
        let cases = [
            ("handshake timed out", "timeout"),
            (
                "invalid peer certificate: Other(OtherError(the certificate names [\"x.test\"]: \
                 not exactly one identity on the allow-list))",
                "not_allowed",
            ),
            ("invalid peer certificate: Revoked", "revoked"),
            ("invalid peer certificate: Expired", "expired"),
            ("invalid peer certificate: UnknownIssuer", "unknown_issuer"),
            ("peer sent no certificates", "bad_certificate"),
            (
                "received corrupt message of type InvalidContentType",
                "other",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(refusal_kind(reason), want, "{reason}");
        }
    }
}
