//! The push: one spooled delivery streamed to its LA's endpoint over gRPC
//! with mutual TLS, asking the gate as it goes. One concept in one file: the
//! provider's wire edge, the only place a delivery becomes a `Manifest`,
//! chunks and a `Commit`, and an endpoint's answer becomes an outcome.
//!
//! One attempt of [`deliver`]:
//!
//! 1. connect to the LA's endpoint, requiring its certificate to name the
//!    configured `server_name` (and keeping that certificate, to check the
//!    receipt's signature against);
//! 2. `QueryTransfer`: what the endpoint has committed already, so an
//!    interrupted transfer resumes from there with the same spooled bytes
//!    (or, if it is complete, its receipt is taken as it stands);
//! 3. the gate at [`Stage::TransferStart`]: its permit puts the `Manifest`
//!    on the request stream at that very moment, or nothing is sent;
//! 4. the chunks, read from the spool;
//! 5. the gate at [`Stage::BeforeCommit`]: its permit puts the `Commit` on
//!    the stream, or the stream is dropped and the endpoint never commits;
//! 6. the receipt: checked against the delivery and its signature verified,
//!    then stored; the spool is emptied.
//!
//! While a push is in flight it listens to the [`StateWatch`]: whenever
//! suspensions or agreements change it asks the gate again and, if the
//! answer is now no, drops the stream at once (within the watch interval,
//! 200 ms by default), so a suspension cuts off a transfer within a second.
//! It also listens to its courier's abort token, which the owner cancels
//! when a shutdown's grace period is over: the delivery is then recorded as
//! failed, to resume later.
//!
//! A dropped connection is tried again a few times with growing pauses, each
//! time resuming from the endpoint's committed offset. A refusal from the
//! endpoint that another attempt cannot change (a bad manifest, a wrong LA,
//! a digest mismatch) makes the delivery dead.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::common::audit::Kind;
use crate::common::blocking::TaskFailed;
use crate::common::encoding::hex;
use crate::common::fault::{CrashPoint, dangerous_crash_point};
use crate::common::time::timestamp;
use crate::config::provider::{LaEndpoint, ProviderConfig};
use crate::provider::gate::{Decision, Gate, Permit, Reason, Refusal, Stage};
use crate::provider::metrics::ProviderMetrics;
use crate::provider::outbox::{self, OutboxError};
use crate::provider::spool::{self, SpoolError};
use crate::provider::store::{Delivery, SharedStore, Suspension};
use crate::provider::watch::StateWatch;
use crate::receipt::{self, ReceiptError};
use crate::sanitiser::Classification;
use crate::tls::{self, TlsError};
use crate::wire::v1::exchange_client::ExchangeClient;
use crate::wire::v1::{
    self, Chunk, Commit, PushRequest, QueryTransferRequest, Receipt, push_request::Body,
};

/// How pushes behave. The defaults suit production; tests shrink them.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Bytes of ciphertext per `Chunk`.
    pub chunk_bytes: usize,
    /// Attempts per delivery when the connection drops.
    pub attempts: u32,
    /// The pause before the second attempt; it doubles each time.
    pub backoff: Duration,
    /// How often the [`StateWatch`] looks for changed suspensions and
    /// agreements.
    pub watch_interval: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: 256 * 1024,
            attempts: 4,
            backoff: Duration::from_millis(250),
            watch_interval: Duration::from_millis(200),
        }
    }
}

/// The largest chunk a push sends (the endpoint bounds what it takes).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// How many messages may wait on a request stream: enough to keep the
/// connection busy, few enough that a cancelled push has little queued.
const STREAM_QUEUE: usize = 4;

/// Why a push did not deliver. Each says whether another attempt could
/// change it ([`PushFailure::is_dead`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushFailure {
    /// The LA has no `[[authority]]` section any more.
    #[error("{la} has no [[authority]] section any more")]
    NoEndpoint { la: String },
    /// The connection could not be made.
    #[error(transparent)]
    Connect(#[from] TlsError),
    /// The endpoint answered with an error.
    #[error("{}", status_text(.0))]
    Endpoint(tonic::Status),
    /// The endpoint says the transfer is complete but sent no receipt.
    #[error("the endpoint says complete but gave no receipt")]
    NoReceipt,
    /// The endpoint has more bytes committed than the file has.
    #[error("the endpoint has {committed} bytes committed of a {size}-byte file")]
    BeyondSize { committed: u64, size: u64 },
    /// The request stream closed before the push could begin.
    #[error("the request stream closed")]
    StreamClosed,
    /// The spooled ciphertext could not be read.
    #[error("cannot read the spooled ciphertext: {0}")]
    Spool(#[from] SpoolError),
    /// The spooled ciphertext could not be read part way.
    #[error("cannot read the spooled ciphertext: {0}")]
    SpoolRead(std::io::Error),
    /// The receipt names another transfer, file, provider, LA, report,
    /// period or classification than the delivery sent.
    #[error(
        "the endpoint's receipt is not for the delivery sent: its {field} is {receipt}, the \
         delivery's {sent}"
    )]
    ReceiptMismatch {
        field: &'static str,
        receipt: String,
        sent: String,
    },
    /// The receipt is of a version that does not bind who sent what to
    /// whom.
    #[error(
        "the endpoint's receipt is version 1, which does not name the provider, LA, report, \
         period or classification it is for; upgrade the endpoint to one that signs version \
         2 receipts"
    )]
    ReceiptVersion,
    /// There is no endpoint certificate to check the receipt against.
    #[error("no endpoint certificate to check the receipt against")]
    NoServerCertificate,
    /// The receipt's signature is not the endpoint's.
    #[error("the receipt's signature is not valid: {0}")]
    ReceiptSignature(#[from] ReceiptError),
    /// The file was delivered but its receipt could not be stored.
    #[error("delivered, but the receipt could not be stored: {0}")]
    ReceiptNotStored(OutboxError),
    /// The state database could not be reached.
    #[error("the state database: {0}")]
    Outbox(#[from] OutboxError),
    /// A blocking task failed.
    #[error(transparent)]
    Task(#[from] TaskFailed),
    /// Every attempt was interrupted; the last reason.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<PushFailure>,
    },
    /// The process is shutting down and the push's grace period is over.
    #[error("interrupted: the push was stopped by a shutdown; it resumes later")]
    Interrupted,
    /// A suspension covered the LA at some time after the delivery was
    /// queued (it may have been made and lifted while no daemon ran). It is
    /// never sent by itself.
    #[error(
        "withheld: {} covered {la} after this delivery was queued ({queued}); nothing withheld \
         is sent by itself: check, then `mishare retry {delivery}` sends it after asking the gate",
        describe_suspensions(suspensions)
    )]
    SuspendedSinceQueued {
        delivery: i64,
        la: String,
        queued: String,
        suspensions: Vec<Suspension>,
    },
}

fn describe_suspensions(suspensions: &[Suspension]) -> String {
    suspensions
        .iter()
        .map(|s| {
            format!(
                "suspension {} by {} (made {}, lifted {})",
                s.id,
                s.made_by,
                timestamp(s.made_at),
                s.lifted_at.map(timestamp).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl PushFailure {
    /// Whether no later attempt can change it: the delivery is dead.
    pub fn is_dead(&self) -> bool {
        match self {
            PushFailure::NoEndpoint { .. }
            | PushFailure::BeyondSize { .. }
            | PushFailure::ReceiptMismatch { .. }
            | PushFailure::ReceiptVersion
            | PushFailure::ReceiptSignature(_)
            | PushFailure::SuspendedSinceQueued { .. } => true,
            PushFailure::Endpoint(status) => !retryable(status.code()),
            _ => false,
        }
    }

    /// Whether another attempt now, on a new connection, could succeed.
    fn is_transient(&self) -> bool {
        match self {
            PushFailure::Connect(_)
            | PushFailure::NoReceipt
            | PushFailure::StreamClosed
            | PushFailure::NoServerCertificate => true,
            PushFailure::Endpoint(status) => retryable(status.code()),
            _ => false,
        }
    }
}

/// How a delivery ended. The outbox has recorded it already.
#[derive(Debug)]
pub enum Delivered {
    /// The endpoint stored the file; the receipt is kept.
    Delivered {
        stored_as: String,
        sha256: String,
        /// How the receipt's signature was checked.
        verification: String,
    },
    /// The gate refused, at a check or in flight; nothing was committed.
    Refused {
        reason: Reason,
        detail: String,
        stage: String,
    },
    /// It could not be delivered (dead if [`PushFailure::is_dead`]).
    Failed(PushFailure),
}

/// What is shared by every push of a process.
#[derive(Debug, Clone)]
pub struct Courier {
    config: Arc<ProviderConfig>,
    tls: Arc<rustls::ClientConfig>,
    store: SharedStore,
    watch: StateWatch,
    actor: String,
    options: PushOptions,
    abort: CancellationToken,
    /// The DNS names in the provider's certificate: a receipt must name
    /// one as the provider that sent the file.
    identities: Arc<[String]>,
    /// The daemon's metrics, when it serves them.
    metrics: Option<Arc<ProviderMetrics>>,
    /// The SHA-256 of each endpoint's certificate last recorded (by server
    /// name), so the store is written only when one changes.
    seen: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl Courier {
    /// A courier over `store`, connecting with the provider's `[tls]`
    /// identity and recording its actions as `actor`. Pushes end (recorded
    /// as failed, to resume) when `abort` is cancelled.
    pub fn new(
        config: Arc<ProviderConfig>,
        store: SharedStore,
        watch: StateWatch,
        actor: impl Into<String>,
        mut options: PushOptions,
        abort: CancellationToken,
    ) -> Result<Self, TlsError> {
        let tls = tls::client_config(&config.tls.identity, &config.tls.anchors)?;
        let identities = config.tls.identity.names()?.into();
        options.chunk_bytes = options.chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
        options.attempts = options.attempts.max(1);
        Ok(Self {
            config,
            tls,
            store,
            watch,
            actor: actor.into(),
            options,
            abort,
            identities,
            metrics: None,
            seen: Arc::default(),
        })
    }

    /// The same courier, counting into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ProviderMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// This courier with `config`'s `[tls]` (a reload): pushes started
    /// from it connect with the new certificate and anchors, while pushes
    /// already running keep the courier they started with.
    pub fn reconfigured(&self, config: Arc<ProviderConfig>) -> Result<Self, TlsError> {
        let tls = tls::client_config(&config.tls.identity, &config.tls.anchors)?;
        let identities = config.tls.identity.names()?.into();
        Ok(Self {
            config,
            tls,
            identities,
            ..self.clone()
        })
    }
}

/// Records the certificate `authority`'s endpoint showed (it was verified
/// for its `server_name` in the handshake) when it is not the one last
/// recorded: in the store, for `status` and its expiry warnings, and in
/// the metrics. A failure is logged; it never stops a push.
async fn note_peer_certificate(
    courier: &Courier,
    authority: &LaEndpoint,
    server_cert: &tls::ServerCertificate,
) {
    let Some(cert) = server_cert
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    else {
        return;
    };
    let digest = tls::certificate_sha256(&cert);
    {
        let mut seen = courier.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.get(&authority.server_name) == Some(&digest) {
            return;
        }
        seen.insert(authority.server_name.clone(), digest.clone());
    }
    let Some(not_after) = crate::common::expiry::certificate_not_after(cert.as_ref()) else {
        tracing::warn!(la = %authority.code, "cannot read the endpoint certificate's expiry");
        return;
    };
    if let Some(m) = &courier.metrics {
        m.certificate("endpoint", &authority.server_name, not_after);
    }
    let (subject, la) = (authority.server_name.clone(), authority.code.clone());
    let recorded = courier
        .store
        .run(move |store| {
            store.record_peer_certificate(&subject, &la, not_after, &digest, Utc::now())
        })
        .await;
    let failed = match recorded {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(la = %authority.code, error = %failed, "cannot record the endpoint's certificate");
    // Try again on the next push.
    courier
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&authority.server_name);
}

/// Pushes `delivery` to its LA, resuming and retrying as needed, and records
/// the outcome in the outbox. Never panics on a peer's behaviour; every way
/// it can end is a [`Delivered`].
pub async fn deliver(courier: &Courier, delivery: &Delivery) -> Delivered {
    let outcome = attempts(courier, delivery).await;
    let (id, actor) = (delivery.id, courier.actor.clone());
    let record = match &outcome {
        // Stored with the receipt, in `finish`.
        Delivered::Delivered { .. } => return outcome,
        Delivered::Refused {
            reason,
            detail,
            stage,
        } => {
            let (reason, detail, stage) = (*reason, detail.clone(), stage.clone());
            courier
                .store
                .run(move |store| {
                    outbox::refused(store, id, reason, &detail, &stage, &actor, Utc::now())
                })
                .await
        }
        Delivered::Failed(failure) => {
            let (error, dead) = (failure.to_string(), failure.is_dead());
            courier
                .store
                .run(move |store| outbox::failed(store, id, &error, dead, &actor, Utc::now()))
                .await
        }
    };
    match record {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(la = %delivery.la, error = %e, "cannot record a delivery's outcome");
        }
        Err(e) => {
            tracing::error!(la = %delivery.la, error = %e, "cannot record a delivery's outcome");
        }
    }
    outcome
}

async fn attempts(courier: &Courier, delivery: &Delivery) -> Delivered {
    let Some(authority) = courier.config.authority(&delivery.la).cloned() else {
        return Delivered::Failed(PushFailure::NoEndpoint {
            la: delivery.la.clone(),
        });
    };
    let mut pause = courier.options.backoff;
    let mut last = PushFailure::Interrupted;
    for attempt in 1..=courier.options.attempts {
        if courier.abort.is_cancelled() {
            return Delivered::Failed(PushFailure::Interrupted);
        }
        if let Some(withheld) = suspended_since_queued(courier, delivery).await {
            return Delivered::Failed(withheld);
        }
        let id = delivery.id;
        let marked = courier
            .store
            .run(move |store| store.mark_sending(id, Utc::now()))
            .await;
        match marked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Delivered::Failed(OutboxError::from(e).into()),
            Err(e) => return Delivered::Failed(e.into()),
        }
        let attempted = tokio::select! {
            attempted = attempt_once(courier, delivery, &authority) => attempted,
            () = courier.abort.cancelled() => Err(PushFailure::Interrupted),
        };
        match attempted {
            Ok(outcome) => return outcome,
            Err(failure) if failure.is_transient() => {
                tracing::info!(la = %delivery.la, attempt, error = %failure, "push interrupted");
                last = failure;
            }
            Err(failure) => return Delivered::Failed(failure),
        }
        if attempt < courier.options.attempts {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = courier.abort.cancelled() => return Delivered::Failed(PushFailure::Interrupted),
            }
            pause = pause.saturating_mul(2);
        }
    }
    Delivered::Failed(PushFailure::GaveUp {
        attempts: courier.options.attempts,
        last: Box::new(last),
    })
}

/// A suspension that covered the delivery's LA at some time since it was
/// queued (or requeued by `mishare retry`) and has since been lifted: the
/// delivery is withheld (the gate sees suspensions still in force).
async fn suspended_since_queued(courier: &Courier, delivery: &Delivery) -> Option<PushFailure> {
    let (la, since) = (delivery.la.clone(), delivery.age_from);
    let lifted = courier
        .store
        .run(move |store| store.lifted_suspensions_since(&la, since))
        .await;
    let suspensions = match lifted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Some(OutboxError::from(e).into()),
        Err(e) => return Some(e.into()),
    };
    (!suspensions.is_empty()).then(|| PushFailure::SuspendedSinceQueued {
        delivery: delivery.id,
        la: delivery.la.clone(),
        queued: timestamp(delivery.age_from),
        suspensions,
    })
}

/// The manifest opening a stream of `delivery` that starts at `offset`.
pub fn manifest(delivery: &Delivery, offset: u64) -> v1::Manifest {
    v1::Manifest {
        transfer_id: delivery.transfer_id.clone(),
        report: delivery.report.clone(),
        period: delivery.period.clone(),
        classification: wire_classification(delivery.classification) as i32,
        la_code: delivery.la.clone(),
        size: delivery.size,
        sha256: delivery.sha256.to_vec(),
        offset,
    }
}

/// A delivery's classification as the wire says it.
fn wire_classification(classification: Classification) -> v1::Classification {
    match classification {
        Classification::Internal => v1::Classification::Internal,
        Classification::Published => v1::Classification::Published,
    }
}

/// The gate at `stage` for `delivery`; on a permit, its message goes on the
/// stream under it. `sent`, if given, is set just before the message goes
/// on the stream: a Commit on the stream is the point of no return.
async fn ask_gate(
    courier: &Courier,
    delivery: &Delivery,
    stage: Stage,
    slot: mpsc::OwnedPermit<PushRequest>,
    body: Body,
    sent: Option<Arc<AtomicBool>>,
) -> Result<(), Refusal> {
    let (config, la, report, actor) = (
        courier.config.clone(),
        delivery.la.clone(),
        delivery.report.clone(),
        courier.actor.clone(),
    );
    let asked = courier
        .store
        .run(move |store| {
            Gate::new(&config, store, actor).authorise(&la, &report, Utc::now(), stage, |permit| {
                if let Some(sent) = &sent {
                    sent.store(true, Ordering::SeqCst);
                }
                send_under(permit, slot, body);
            })
        })
        .await;
    match asked {
        Ok(answer) => answer,
        Err(error) => Err(Refusal::gate_error(
            &delivery.la,
            &delivery.report,
            stage,
            error.to_string(),
        )),
    }
}

/// Puts `body` on the request stream: only with a permit, in the slot
/// reserved for it, at the moment the permit is given.
fn send_under(permit: Permit<'_>, slot: mpsc::OwnedPermit<PushRequest>, body: Body) {
    tracing::debug!(la = permit.la(), stage = %permit.stage(), audit = permit.audit_seq(), "gate permit");
    let _sender = slot.send(PushRequest { body: Some(body) });
}

fn refused(refusal: &Refusal) -> Delivered {
    Delivered::Refused {
        reason: refusal.reason,
        detail: refusal.detail(),
        stage: refusal.stage.as_str().to_string(),
    }
}

/// Whether another attempt could succeed after the endpoint answered `code`.
/// `RESOURCE_EXHAUSTED` is one: an endpoint over its stream limit, or short
/// of space, takes the file later; a delivery becomes dead only at
/// `[delivery]`'s limits.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Internal
            | Code::FailedPrecondition
            | Code::ResourceExhausted
    )
}

fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("the endpoint answered {:?}", status.code())
    } else {
        format!(
            "the endpoint answered {:?}: {}",
            status.code(),
            status.message()
        )
    }
}

/// One attempt: `Ok` with how the delivery ended, or `Err` with why this
/// attempt failed (the caller decides whether to try again).
async fn attempt_once(
    courier: &Courier,
    delivery: &Delivery,
    authority: &LaEndpoint,
) -> Result<Delivered, PushFailure> {
    let (channel, server_cert) = tls::connect_recording(
        &authority.endpoint,
        &authority.server_name,
        courier.tls.clone(),
    )
    .await?;
    note_peer_certificate(courier, authority, &server_cert).await;
    let mut client = ExchangeClient::new(channel);

    let status = match client
        .query_transfer(QueryTransferRequest {
            transfer_id: delivery.transfer_id.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::NotFound => Default::default(),
        Err(s) => return Err(PushFailure::Endpoint(s)),
    };
    if status.complete {
        let receipt = status.receipt.ok_or(PushFailure::NoReceipt)?;
        return finish(courier, delivery, receipt, &server_cert).await;
    }
    let offset = status.committed;
    if offset > delivery.size {
        return Err(PushFailure::BeyondSize {
            committed: offset,
            size: delivery.size,
        });
    }

    let (tx, rx) = mpsc::channel::<PushRequest>(STREAM_QUEUE);
    let slot = tx
        .clone()
        .reserve_owned()
        .await
        .map_err(|_| PushFailure::StreamClosed)?;
    // Watching starts before the gate is asked at the transfer's start, so
    // a change committed while it decides is never missed.
    let mut changes = courier.watch.subscribe();
    let manifest = Body::Manifest(manifest(delivery, offset));
    if let Err(refusal) = ask_gate(
        courier,
        delivery,
        Stage::TransferStart,
        slot,
        manifest,
        None,
    )
    .await
    {
        return Ok(refused(&refusal));
    }

    let call = client.push(ReceiverStream::new(rx));
    tokio::pin!(call);
    let committed = Arc::new(AtomicBool::new(false));
    let feed = feed(courier, delivery, offset, tx, committed.clone());
    tokio::pin!(feed);
    let mut fed = false;
    let mut watching = true;
    loop {
        tokio::select! {
            biased;
            changed = changes.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                if committed.load(Ordering::SeqCst) {
                    // The Commit is on the stream: what happens now is the
                    // endpoint's to say (its answer, or QueryTransfer on
                    // the next attempt), never a guess that nothing was
                    // committed.
                    watching = false;
                    continue;
                }
                if let Some(cut_off) = still_allowed(courier, delivery).await {
                    // No Commit was put on the stream; returning drops the
                    // call and the stream, so the endpoint keeps nothing.
                    return Ok(cut_off);
                }
            }
            done = &mut feed, if !fed => match done {
                Ok(None) => fed = true,
                Ok(Some(refusal)) => return Ok(refused(&refusal)),
                Err(failure) => return Err(failure),
            },
            answer = &mut call => return match answer {
                Ok(receipt) => {
                    dangerous_crash_point(CrashPoint::AfterCommitSent);
                    finish(courier, delivery, receipt.into_inner(), &server_cert).await
                }
                Err(s) => Err(PushFailure::Endpoint(s)),
            },
        }
    }
}

/// A delivered file whose LA the gate refuses now was committed before the
/// refusal came (its Commit needs a permit): the LA has it, and the audit
/// log says so, so nobody reads the suspension as having stopped it.
async fn note_a_later_refusal(courier: &Courier, delivery: &Delivery, stored_as: &str) {
    let (config, la, actor) = (
        courier.config.clone(),
        delivery.la.clone(),
        courier.actor.clone(),
    );
    let detail = serde_json::json!({
        "delivery": delivery.id,
        "transfer_id": delivery.transfer_id,
        "stored_as": stored_as,
    });
    let noted = courier
        .store
        .run(move |store| {
            let now = Utc::now();
            let decision = Gate::new(&config, store, "").evaluate(&la, now);
            if decision.is_permit() {
                return Ok(None);
            }
            let mut detail = detail;
            detail["gate_now"] = decision.to_json();
            detail["why"] = serde_json::json!(
                "the Commit was on the wire before the refusal; the endpoint committed the \
                 file, so the LA has it"
            );
            store
                .audit(
                    Kind::DeliveryCommittedBeforeRefusal,
                    &actor,
                    Some(&la),
                    &detail,
                    now,
                )
                .map(|_| decision.reason())
        })
        .await;
    match noted {
        Ok(Ok(Some(reason))) => tracing::warn!(
            la = %delivery.la, %reason,
            "delivered: the refusal came after the Commit was on the wire"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::error!(la = %delivery.la, error = %e, "cannot audit a delivery"),
        Err(e) => tracing::error!(la = %delivery.la, error = %e, "cannot audit a delivery"),
    }
}

/// Asks the rules again after a change; `Some` ends the push.
async fn still_allowed(courier: &Courier, delivery: &Delivery) -> Option<Delivered> {
    let (config, la) = (courier.config.clone(), delivery.la.clone());
    let decision = courier
        .store
        .run(move |store| Gate::new(&config, store, "").evaluate(&la, Utc::now()))
        .await;
    match decision {
        Ok(Decision::Permit) => None,
        Ok(refusal @ Decision::Refuse(_)) => {
            let reason = refusal.reason().unwrap_or(Reason::GateError);
            tracing::warn!(la = %delivery.la, %reason, "push cut off in flight");
            Some(Delivered::Refused {
                reason,
                detail: format!("cut off in flight: {}", refusal.detail()),
                stage: "in_flight".into(),
            })
        }
        Err(error) => Some(Delivered::Refused {
            reason: Reason::GateError,
            detail: error.to_string(),
            stage: "in_flight".into(),
        }),
    }
}

/// Streams the spooled ciphertext from `offset`, then asks the gate before
/// the commit: `Ok(None)` once the Commit is on the stream, `Ok(Some)` if
/// the gate refused it.
async fn feed(
    courier: &Courier,
    delivery: &Delivery,
    offset: u64,
    tx: mpsc::Sender<PushRequest>,
    committed: Arc<AtomicBool>,
) -> Result<Option<Refusal>, PushFailure> {
    let file = spool::open(delivery.spool_path.as_deref())?;
    let mut file = tokio::fs::File::from_std(file);
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(PushFailure::SpoolRead)?;
    let mut at = offset;
    let mut buf = vec![0u8; courier.options.chunk_bytes];
    while at < delivery.size {
        let want = usize::try_from(delivery.size - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact(&mut buf[..want])
            .await
            .map_err(PushFailure::SpoolRead)?;
        let chunk = Body::Chunk(Chunk {
            offset: at,
            data: prost::bytes::Bytes::copy_from_slice(&buf[..want]),
        });
        if tx.send(PushRequest { body: Some(chunk) }).await.is_err() {
            // The call ended; its answer says why.
            return std::future::pending().await;
        }
        at += want as u64;
        if at > offset && at - (want as u64) == offset {
            dangerous_crash_point(CrashPoint::MidStream);
        }
    }
    let Ok(slot) = tx.reserve_owned().await else {
        return std::future::pending().await;
    };
    Ok(ask_gate(
        courier,
        delivery,
        Stage::BeforeCommit,
        slot,
        Body::Commit(Commit {}),
        Some(committed),
    )
    .await
    .err())
}

/// Whether `receipt` is the endpoint's (`cert`), in version 2, and for what
/// `delivery` sent: its transfer and file, from one of `identities` (the
/// provider's certificate's names), to its LA, of its report, period and
/// classification. A receipt for anything else proves nothing about this
/// delivery.
fn check_receipt(
    delivery: &Delivery,
    identities: &[String],
    receipt: &Receipt,
    cert: &rustls_pki_types::CertificateDer<'_>,
) -> Result<(), PushFailure> {
    let mismatch = |field, receipt: &dyn std::fmt::Debug, sent: &dyn std::fmt::Debug| {
        Err(PushFailure::ReceiptMismatch {
            field,
            receipt: format!("{receipt:?}"),
            sent: format!("{sent:?}"),
        })
    };
    if receipt.transfer_id != delivery.transfer_id {
        return mismatch("transfer_id", &receipt.transfer_id, &delivery.transfer_id);
    }
    if receipt.sha256 != delivery.sha256 {
        return mismatch("sha256", &hex(&receipt.sha256), &delivery.sha256_hex());
    }
    if receipt.size != delivery.size {
        return mismatch("size", &receipt.size, &delivery.size);
    }
    if receipt::verify(receipt, cert)? != receipt::Version::V2 {
        return Err(PushFailure::ReceiptVersion);
    }
    if !identities.contains(&receipt.provider) {
        return mismatch("provider", &receipt.provider, &identities);
    }
    if receipt.la_code != delivery.la {
        return mismatch("la_code", &receipt.la_code, &delivery.la);
    }
    if receipt.report != delivery.report {
        return mismatch("report", &receipt.report, &delivery.report);
    }
    if receipt.period != delivery.period {
        return mismatch("period", &receipt.period, &delivery.period);
    }
    let sent = wire_classification(delivery.classification);
    if receipt.classification != sent as i32 {
        let named = v1::Classification::try_from(receipt.classification).map_or_else(
            |_| receipt.classification.to_string(),
            |c| c.as_str_name().into(),
        );
        return mismatch("classification", &named, &sent.as_str_name());
    }
    Ok(())
}

/// Checks a receipt against the delivery and the endpoint's certificate and
/// stores it.
async fn finish(
    courier: &Courier,
    delivery: &Delivery,
    receipt: Receipt,
    server_cert: &tls::ServerCertificate,
) -> Result<Delivered, PushFailure> {
    let cert = server_cert
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or(PushFailure::NoServerCertificate)?;
    check_receipt(delivery, &courier.identities, &receipt, &cert)?;
    let verification = format!(
        "verified ({}) against the endpoint's TLS certificate",
        receipt::scheme_name(&receipt).unwrap_or_else(|| "unknown scheme".into())
    );
    let (id, actor, stored) = (delivery.id, courier.actor.clone(), receipt.clone());
    let v = verification.clone();
    let recorded = courier
        .store
        .run(move |store| outbox::delivered(store, id, &stored, &v, &actor, Utc::now()))
        .await;
    match recorded {
        Ok(Ok(())) => {
            note_a_later_refusal(courier, delivery, &receipt.stored_as).await;
            Ok(Delivered::Delivered {
                stored_as: receipt.stored_as,
                sha256: hex(&receipt.sha256),
                verification,
            })
        }
        Ok(Err(e)) => Err(PushFailure::ReceiptNotStored(e)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{DevCa, Issued, Usage, Validity};
    use crate::provider::store::DeliveryState;
    use crate::receipt::ReceiptSigner;

    fn delivery() -> Delivery {
        let now = Utc::now();
        Delivery {
            id: 1,
            run_id: 1,
            la: "E09000002".into(),
            transfer_id: "5f0c0000000000000000000000000001".into(),
            report: "referrals-monthly".into(),
            period: "2012-10".into(),
            classification: Classification::Internal,
            state: DeliveryState::Sending,
            size: 1234,
            sha256: [7; 32],
            spool_path: None,
            attempts: 1,
            reason: None,
            last_error: None,
            created_at: now,
            next_attempt_at: None,
            age_from: now,
        }
    }

    /// The receipt an honest endpoint signs for `delivery()`.
    fn honest() -> Receipt {
        let d = delivery();
        Receipt {
            transfer_id: d.transfer_id.clone(),
            sha256: d.sha256.to_vec(),
            size: d.size,
            stored_as: format!("{}_{}_{}.age", d.period, d.report, d.transfer_id),
            received_unix_ms: 1_700_000_000_000,
            provider: "provider.test".into(),
            la_code: d.la.clone(),
            report: d.report.clone(),
            period: d.period.clone(),
            classification: v1::Classification::Internal as i32,
            ..Receipt::default()
        }
    }

    fn endpoint() -> Issued {
        DevCa::new("ca")
            .expect("ca")
            .issue("la-e09000002.test", Usage::Server, Validity::Current)
            .expect("la")
    }

    /// Every field a receipt binds must be what the delivery sent: a
    /// receipt the endpoint really signed, for another provider, LA,
    /// report, period, classification or file, is refused for good.
    #[test]
    fn a_receipt_for_what_was_not_sent_is_refused() {
        let la = endpoint();
        let signer = ReceiptSigner::new(&la.identity()).expect("signer");
        let identities = ["provider.test".to_string()];
        let check = |receipt: Receipt| {
            let signed = signer.sign(receipt).expect("sign");
            check_receipt(&delivery(), &identities, &signed, &la.cert_der)
        };
        check(honest()).expect("the honest receipt");

        type Change = fn(&mut Receipt);
        let changes: &[(&str, Change)] = &[
            ("transfer_id", |r| {
                r.transfer_id = "another-transfer-01".into()
            }),
            ("sha256", |r| r.sha256 = vec![8; 32]),
            ("size", |r| r.size += 1),
            ("provider", |r| r.provider = "other.test".into()),
            ("la_code", |r| r.la_code = "E09000030".into()),
            ("report", |r| r.report = "referrals-quarterly".into()),
            ("period", |r| r.period = "2012-11".into()),
            ("classification", |r| {
                r.classification = v1::Classification::Published as i32;
            }),
        ];
        for (field, change) in changes {
            let mut receipt = honest();
            change(&mut receipt);
            let refused = check(receipt).expect_err(field);
            assert!(
                matches!(refused, PushFailure::ReceiptMismatch { field: f, .. } if f == *field),
                "{field}: {refused}"
            );
            assert!(refused.is_dead(), "{field}");
            assert!(refused.to_string().contains(field), "{refused}");
        }
    }

    /// A version 1 receipt, valid as it stands, binds none of that: the
    /// provider takes none from an endpoint.
    #[test]
    fn a_version_1_receipt_is_refused() {
        let la = endpoint();
        let old = receipt::signed_as_v1(&la.identity(), honest());
        assert_eq!(
            receipt::verify(&old, &la.cert_der).expect("valid as version 1"),
            receipt::Version::V1
        );
        let refused = check_receipt(&delivery(), &["provider.test".into()], &old, &la.cert_der)
            .expect_err("version 1");
        assert!(matches!(refused, PushFailure::ReceiptVersion), "{refused}");
        assert!(refused.is_dead());
    }

    #[test]
    fn only_transient_answers_are_retried() {
        for code in [
            Code::Unavailable,
            Code::FailedPrecondition,
            Code::Cancelled,
            Code::ResourceExhausted,
        ] {
            assert!(retryable(code), "{code:?}");
            assert!(!PushFailure::Endpoint(tonic::Status::new(code, "")).is_dead());
        }
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::DataLoss,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(code), "{code:?}");
            assert!(PushFailure::Endpoint(tonic::Status::new(code, "")).is_dead());
        }
    }
}
