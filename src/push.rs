//! The push: one spooled delivery streamed to its LA's endpoint over gRPC
//! with mutual TLS, asking the gate as it goes.
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
//! While a push is in flight it listens to a [`StateWatch`]: whenever
//! suspensions or agreements change it asks the gate again and, if the
//! answer is now no, drops the stream at once (within the watch interval,
//! 200 ms by default), so a suspension cuts off a transfer within a second.
//!
//! A dropped connection is tried again a few times with growing pauses, each
//! time resuming from the endpoint's committed offset. A refusal from the
//! endpoint that another attempt cannot change (a bad manifest, a wrong LA,
//! a digest mismatch) makes the delivery dead.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::config::ProviderConfig;
use crate::gate::{Decision, Gate, Permit, Reason, Refusal, Stage};
use crate::outbox::{self, Delivery, OutboxError};
use crate::receipt;
use crate::store::{Store, hex};
use crate::tls::{self, TlsError};
use crate::wire::v1::exchange_client::ExchangeClient;
use crate::wire::v1::{
    Chunk, Commit, PushRequest, QueryTransferRequest, Receipt, push_request::Body,
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

/// Watches suspensions and agreements for changes, so that pushes in flight
/// ask the gate again. One thread per process polls a cheap fingerprint
/// query on its own connection; pushes hold receivers.
#[derive(Debug, Clone)]
pub struct StateWatch {
    changes: watch::Receiver<u64>,
}

impl StateWatch {
    /// Starts the watcher thread over the database in `data_dir`. It stops
    /// once every receiver (every clone of the returned watch) is dropped.
    pub fn start(data_dir: PathBuf, interval: Duration) -> Result<Self, PushError> {
        let store = Store::open(&data_dir).map_err(|e| PushError::Store(e.into()))?;
        let first = fingerprint(&store).map_err(|e| PushError::Store(e.into()))?;
        let (tx, rx) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("mishare-state-watch".into())
            .spawn(move || {
                let mut last = first;
                while !tx.is_closed() {
                    std::thread::sleep(interval);
                    match fingerprint(&store) {
                        Ok(now) if now != last => {
                            last = now;
                            tx.send_modify(|generation| *generation += 1);
                        }
                        Ok(_) => {}
                        // Pushes still ask the gate before commit; keep
                        // watching rather than give up.
                        Err(error) => {
                            tracing::warn!(%error, "cannot read suspensions and agreements");
                        }
                    }
                }
            })
            .map_err(|e| PushError::Local(format!("cannot start the state watcher: {e}")))?;
        Ok(Self { changes: rx })
    }

    /// Completes at the next change of suspensions, agreements or requeued
    /// deliveries this watch has not seen yet (at once if one came since it
    /// last looked); never, once the watcher has stopped.
    /// if a change came since this watch last saw one.
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Changes whenever a suspension is made or lifted, an agreement added,
/// replaced or revoked, or a dead delivery requeued by `mishare retry`.
fn fingerprint(store: &Store) -> Result<String, crate::store::StoreError> {
    Ok(store.conn().query_row(
        "SELECT (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(lifted_at)
                 FROM suspensions)
             || '/' ||
             (SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(revoked_at)
                 || ':' || count(replaced_at) FROM agreements)
             || '/' || (SELECT n FROM outbox_generation)",
        [],
        |r| r.get(0),
    )?)
}

/// Why pushing could not even begin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The outbox or state database failed.
    #[error(transparent)]
    Store(#[from] OutboxError),
    /// The provider's TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Something on this machine failed.
    #[error("{0}")]
    Local(String),
}

/// What is shared by every push of a process.
#[derive(Debug, Clone)]
pub struct Courier {
    config: Arc<ProviderConfig>,
    tls: Arc<rustls::ClientConfig>,
    store: Arc<Mutex<Store>>,
    watch: StateWatch,
    actor: String,
    options: PushOptions,
}

impl Courier {
    /// A courier over `store`, connecting with `tls` and recording its
    /// actions as `actor`.
    pub fn new(
        config: Arc<ProviderConfig>,
        tls: Arc<rustls::ClientConfig>,
        store: Arc<Mutex<Store>>,
        watch: StateWatch,
        actor: impl Into<String>,
        mut options: PushOptions,
    ) -> Self {
        options.chunk_bytes = options.chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
        options.attempts = options.attempts.max(1);
        Self {
            config,
            tls,
            store,
            watch,
            actor: actor.into(),
            options,
        }
    }

    /// The provider's client TLS configuration from `[tls]`.
    pub fn client_tls(config: &ProviderConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let identity = tls::Identity::load(&config.tls.cert, &config.tls.key)?;
        let anchors = tls::TrustAnchors::load(&config.tls.ca)?;
        tls::client_config(&identity, &anchors)
    }

    /// Runs `f` with the store, off the async reactor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ProviderConfig, &mut Store) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (config, store) = (self.config.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            f(&config, &mut store)
        })
        .await
        .map_err(|e| format!("a database task failed: {e}"))
    }
}

/// How a delivery ended. The outbox has recorded it already.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// It could not be delivered. `dead`: the endpoint refused it for good.
    Failed { error: String, dead: bool },
}

/// How one attempt ended.
enum Attempt {
    Done(Delivered),
    /// The connection failed or dropped: worth another attempt.
    Retry(String),
}

/// Pushes `delivery` to its LA, resuming and retrying as needed, and records
/// the outcome in the outbox. Never panics on a peer's behaviour; every way
/// it can end is a [`Delivered`].
pub async fn deliver(courier: &Courier, delivery: &Delivery) -> Delivered {
    let outcome = attempts(courier, delivery).await;
    let (id, actor) = (delivery.id, courier.actor.clone());
    let record = outcome.clone();
    let recorded = courier
        .blocking(move |_, store| {
            let now = Utc::now();
            match &record {
                // Stored with the receipt, in `finish`.
                Delivered::Delivered { .. } => Ok(()),
                Delivered::Refused {
                    reason,
                    detail,
                    stage,
                } => outbox::mark_refused(store, id, *reason, detail, stage, &actor, now),
                Delivered::Failed { error, dead } => {
                    outbox::mark_failed(store, id, error, *dead, &actor, now)
                }
            }
        })
        .await;
    match recorded {
        Ok(Ok(())) => outcome,
        Ok(Err(e)) => {
            tracing::error!(la = %delivery.la, error = %e, "cannot record a delivery's outcome");
            outcome
        }
        Err(e) => {
            tracing::error!(la = %delivery.la, error = %e, "cannot record a delivery's outcome");
            outcome
        }
    }
}

async fn attempts(courier: &Courier, delivery: &Delivery) -> Delivered {
    let Some(authority) = courier.config.authority(&delivery.la).cloned() else {
        return Delivered::Failed {
            error: format!("{} has no [[authority]] section any more", delivery.la),
            dead: true,
        };
    };
    let mut pause = courier.options.backoff;
    let mut last = String::new();
    for attempt in 1..=courier.options.attempts {
        let id = delivery.id;
        if let Err(e) = courier
            .blocking(move |_, store| outbox::mark_sending(store, id, Utc::now()))
            .await
            .map_err(PushError::Local)
            .and_then(|r| r.map_err(PushError::from))
        {
            return Delivered::Failed {
                error: e.to_string(),
                dead: false,
            };
        }
        match attempt_once(courier, delivery, &authority).await {
            Attempt::Done(outcome) => return outcome,
            Attempt::Retry(why) => {
                tracing::info!(la = %delivery.la, attempt, error = %why, "push interrupted");
                last = why;
            }
        }
        if attempt < courier.options.attempts {
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2);
        }
    }
    Delivered::Failed {
        error: format!(
            "gave up after {} attempts: {last}",
            courier.options.attempts
        ),
        dead: false,
    }
}

/// The gate at `stage` for `delivery`; on a permit, `send` puts its message
/// on the stream under it.
async fn ask_gate(
    courier: &Courier,
    delivery: &Delivery,
    stage: Stage,
    slot: mpsc::OwnedPermit<PushRequest>,
    body: Body,
) -> Result<(), Refusal> {
    let (la, report, actor) = (
        delivery.la.clone(),
        delivery.report.clone(),
        courier.actor.clone(),
    );
    let asked = courier
        .blocking(move |config, store| {
            Gate::new(config, store, actor).authorise(&la, &report, Utc::now(), stage, |permit| {
                send_under(permit, slot, body);
            })
        })
        .await;
    match asked {
        Ok(answer) => answer,
        Err(error) => Err(Refusal {
            la: delivery.la.clone(),
            report: delivery.report.clone(),
            stage,
            reason: Reason::GateError,
            findings: vec![crate::gate::Finding {
                reason: Reason::GateError,
                detail: error,
            }],
            audit_seq: None,
        }),
    }
}

/// Puts `body` on the request stream: only with a permit, in the slot
/// reserved for it, at the moment the permit is given.
fn send_under(permit: Permit<'_>, slot: mpsc::OwnedPermit<PushRequest>, body: Body) {
    tracing::debug!(la = permit.la(), stage = %permit.stage(), audit = permit.audit_seq(), "gate permit");
    let _sender = slot.send(PushRequest { body: Some(body) });
}

fn refused(refusal: &Refusal) -> Attempt {
    Attempt::Done(Delivered::Refused {
        reason: refusal.reason,
        detail: refusal.detail(),
        stage: refusal.stage.as_str().to_string(),
    })
}

fn failed(error: impl Into<String>, dead: bool) -> Attempt {
    Attempt::Done(Delivered::Failed {
        error: error.into(),
        dead,
    })
}

/// Whether another attempt could succeed after the endpoint answered `code`.
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

async fn attempt_once(
    courier: &Courier,
    delivery: &Delivery,
    authority: &crate::config::AuthorityConfig,
) -> Attempt {
    let (channel, server_cert) = match tls::connect_recording(
        &authority.endpoint,
        &authority.server_name,
        courier.tls.clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return Attempt::Retry(e.to_string()),
    };
    let mut client = ExchangeClient::new(channel);

    let status = match client
        .query_transfer(QueryTransferRequest {
            transfer_id: delivery.transfer_id.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::NotFound => Default::default(),
        Err(s) if retryable(s.code()) => return Attempt::Retry(status_text(&s)),
        Err(s) => return failed(status_text(&s), true),
    };
    if status.complete {
        let Some(receipt) = status.receipt else {
            return Attempt::Retry("the endpoint says complete but gave no receipt".into());
        };
        return finish(courier, delivery, receipt, &server_cert).await;
    }
    let offset = status.committed;
    if offset > delivery.size {
        return failed(
            format!(
                "the endpoint has {offset} bytes committed of a {}-byte file",
                delivery.size
            ),
            true,
        );
    }

    let (tx, rx) = mpsc::channel::<PushRequest>(STREAM_QUEUE);
    let Ok(slot) = tx.clone().reserve_owned().await else {
        return Attempt::Retry("the request stream closed".into());
    };
    let manifest = Body::Manifest(delivery.manifest(offset));
    if let Err(refusal) = ask_gate(courier, delivery, Stage::TransferStart, slot, manifest).await {
        return refused(&refusal);
    }

    let mut changes = courier.watch.changes.clone();
    changes.borrow_and_update();
    let call = client.push(ReceiverStream::new(rx));
    tokio::pin!(call);
    let feed = feed(courier, delivery, offset, tx);
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
                if let Some(attempt) = still_allowed(courier, delivery).await {
                    // Returning drops the call and the stream: no Commit
                    // is ever sent, so the endpoint keeps nothing.
                    return attempt;
                }
            }
            done = &mut feed, if !fed => match done {
                Ok(()) => fed = true,
                Err(attempt) => return attempt,
            },
            answer = &mut call => return match answer {
                Ok(receipt) => {
                    crate::fault::dangerous_crash_point(crate::fault::CrashPoint::AfterCommitSent);
                    finish(courier, delivery, receipt.into_inner(), &server_cert).await
                }
                Err(s) if retryable(s.code()) => Attempt::Retry(status_text(&s)),
                Err(s) => failed(status_text(&s), true),
            },
        }
    }
}

/// Asks the rules again after a change; `Some` ends the push.
async fn still_allowed(courier: &Courier, delivery: &Delivery) -> Option<Attempt> {
    let la = delivery.la.clone();
    let decision = courier
        .blocking(move |config, store| Gate::new(config, store, "").evaluate(&la, Utc::now()))
        .await;
    match decision {
        Ok(Decision::Permit) => None,
        Ok(refusal @ Decision::Refuse(_)) => {
            let reason = refusal.reason().unwrap_or(Reason::GateError);
            let detail = match &refusal {
                Decision::Refuse(findings) => findings
                    .iter()
                    .map(|f| f.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                Decision::Permit => String::new(),
            };
            tracing::warn!(la = %delivery.la, %reason, "push cut off in flight");
            Some(Attempt::Done(Delivered::Refused {
                reason,
                detail: format!("cut off in flight: {detail}"),
                stage: "in_flight".into(),
            }))
        }
        Err(error) => Some(Attempt::Done(Delivered::Refused {
            reason: Reason::GateError,
            detail: error,
            stage: "in_flight".into(),
        })),
    }
}

/// Streams the spooled ciphertext from `offset`, then asks the gate before
/// the commit.
async fn feed(
    courier: &Courier,
    delivery: &Delivery,
    offset: u64,
    tx: mpsc::Sender<PushRequest>,
) -> Result<(), Attempt> {
    let file = outbox::open_spooled(delivery).map_err(|e| failed(e.to_string(), false))?;
    let mut file = tokio::fs::File::from_std(file);
    let local =
        |e: std::io::Error| failed(format!("cannot read the spooled ciphertext: {e}"), false);
    file.seek(SeekFrom::Start(offset)).await.map_err(local)?;
    let mut at = offset;
    let mut buf = vec![0u8; courier.options.chunk_bytes];
    while at < delivery.size {
        let want = usize::try_from(delivery.size - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact(&mut buf[..want]).await.map_err(local)?;
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
            crate::fault::dangerous_crash_point(crate::fault::CrashPoint::MidStream);
        }
    }
    let Ok(slot) = tx.reserve_owned().await else {
        return std::future::pending().await;
    };
    ask_gate(
        courier,
        delivery,
        Stage::BeforeCommit,
        slot,
        Body::Commit(Commit {}),
    )
    .await
    .map_err(|r| refused(&r))
}

/// Checks a receipt against the delivery and the endpoint's certificate and
/// stores it.
async fn finish(
    courier: &Courier,
    delivery: &Delivery,
    receipt: Receipt,
    server_cert: &tls::ServerCertificate,
) -> Attempt {
    if receipt.transfer_id != delivery.transfer_id
        || receipt.sha256 != delivery.sha256
        || receipt.size != delivery.size
    {
        return failed(
            format!(
                "the endpoint's receipt does not match the file sent (transfer {}, {} bytes, \
                 sha256 {})",
                receipt.transfer_id,
                receipt.size,
                hex(&receipt.sha256)
            ),
            true,
        );
    }
    let cert = server_cert
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(cert) = cert else {
        return Attempt::Retry("no endpoint certificate to check the receipt against".into());
    };
    if let Err(e) = receipt::verify(&receipt, &cert) {
        return failed(format!("the receipt's signature is not valid: {e}"), true);
    }
    let verification = format!(
        "verified ({}) against the endpoint's TLS certificate",
        receipt::scheme_name(&receipt).unwrap_or_else(|| "unknown scheme".into())
    );
    let (id, actor, stored) = (delivery.id, courier.actor.clone(), receipt.clone());
    let v = verification.clone();
    let recorded = courier
        .blocking(move |_, store| {
            outbox::record_receipt(store, id, &stored, &v, &actor, Utc::now())
        })
        .await;
    match recorded {
        Ok(Ok(())) => Attempt::Done(Delivered::Delivered {
            stored_as: receipt.stored_as,
            sha256: hex(&receipt.sha256),
            verification,
        }),
        Ok(Err(e)) => failed(
            format!("delivered, but the receipt could not be stored: {e}"),
            false,
        ),
        Err(e) => failed(
            format!("delivered, but the receipt could not be stored: {e}"),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_answers_are_retried() {
        for code in [Code::Unavailable, Code::FailedPrecondition, Code::Cancelled] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::DataLoss,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }
}
