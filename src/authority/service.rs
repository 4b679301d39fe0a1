//! `Exchange`: the receive service. The provider is whoever its certificate
//! proved ([`tls::Peer`]); nothing a request says changes that.
//!
//! A push runs in its own task, so that if the provider goes away mid-stream
//! the bytes it did send are still fsynced and recorded for a resume.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use crate::common::audit::Kind;
use crate::config::AuthorityConfig;
use crate::receipt::ReceiptSigner;
use crate::tls;
use crate::wire::v1::exchange_server::Exchange;
use crate::wire::v1::push_request::Body;
use crate::wire::v1::{Chunk, PushRequest, QueryTransferRequest, Receipt, TransferStatus};

use super::claims::Claims;
use super::error::{ExchangeError, InternalError, blocking};
use super::inbox::{Inbox, PartialFile};
use super::limits::{self, Holding, Progress, ProviderLimits};
use super::manifest::{self, AGE_MAGIC, Manifest, shown};
use super::store::{self, Store};
use crate::common::shutdown::Shutdown;
use crate::common::time::now_ms;

/// What every push and query shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: AuthorityConfig,
    pub state: Arc<Store>,
    pub inbox: Arc<Inbox>,
    /// The allow-list and the receipt signer in use now, replaced whole on
    /// a reload ([`super::reload`]).
    pub live: arc_swap::ArcSwap<super::reload::Live>,
    /// One permit per push in progress.
    pub streams: Arc<Semaphore>,
    /// What each provider holds: streams, bytes in partial files.
    pub limits: Arc<ProviderLimits>,
    pub claims: Claims,
    /// Transfers being committed now (a subset of those claimed), so
    /// `QueryTransfer` can wait for a commit to end.
    pub committing: Claims,
    /// Pushes in progress, each a task of its own; cancelled when the
    /// shutdown grace has expired, and then pushes stop at once.
    pub pushes: Shutdown,
    /// Its metrics, when `[metrics]` serves them.
    pub metrics: Option<Arc<super::metrics::EndpointMetrics>>,
}

/// The `Exchange` service of an authority endpoint.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn push(
        &self,
        request: Request<Streaming<PushRequest>>,
    ) -> Result<Response<Receipt>, Status> {
        let shared = self.shared.clone();
        let addr = peer_addr(&request);
        let caller = match shared.caller(&request) {
            Ok(p) => p,
            Err(e) => {
                shared
                    .refused(super::metrics::UNKNOWN_PROVIDER, addr.as_deref(), None, &e)
                    .await;
                return Err(e.into());
            }
        };
        let provider = caller.provider.clone();
        // Taken here so that a push over a limit never starts a task: the
        // provider's own limit first, so one provider never takes a place
        // it may not use.
        let slot = match shared.limits.stream(&provider) {
            Ok(slot) => slot,
            Err(e) => {
                shared.refused(&provider, addr.as_deref(), None, &e).await;
                return Err(e.into());
            }
        };
        let permit = match shared.streams.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let e = ExchangeError::OverLimit(format!(
                    "{} pushes are already in progress; try again later",
                    shared.config.max_streams
                ));
                shared.refused(&provider, addr.as_deref(), None, &e).await;
                return Err(e.into());
            }
        };
        let stream = request.into_inner();
        let pushes = shared.pushes.clone();
        let task = pushes.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            match shared.push(&caller, stream).await {
                Ok(receipt) => {
                    if let Some(metrics) = &shared.metrics {
                        metrics.transfer(&provider, None);
                    }
                    Ok(receipt)
                }
                Err((e, m)) => {
                    shared
                        .refused(&provider, addr.as_deref(), m.as_ref(), &e)
                        .await;
                    Err(e)
                }
            }
        });
        match task.await {
            Ok(Ok(receipt)) => Ok(Response::new(receipt)),
            Ok(Err(e)) => Err(e.into()),
            Err(join) => Err(ExchangeError::Internal(InternalError::Task(join.into())).into()),
        }
    }

    async fn query_transfer(
        &self,
        request: Request<QueryTransferRequest>,
    ) -> Result<Response<TransferStatus>, Status> {
        let provider = self.shared.provider(&request)?.identity.clone();
        let transfer_id = request.into_inner().transfer_id;
        if !crate::common::names::is_transfer_id(&transfer_id) {
            return Err(ExchangeError::Invalid(format!(
                "transfer_id {} is not 8 to 64 ASCII letters, digits and '-'",
                shown(&transfer_id)
            ))
            .into());
        }
        // A push of this transfer may be committing right now: answer once
        // that commit has ended, so the answer is never "incomplete" for a
        // file about to appear in the inbox. (A push that is only sending
        // chunks is not waited for: its progress is what a resume needs.)
        let Some(committing) = self
            .shared
            .committing
            .claim(&provider, &transfer_id, self.shared.config.stream_idle)
            .await
        else {
            return Err(ExchangeError::WrongOffset(format!(
                "transfer {} is being committed; ask again later",
                shown(&transfer_id)
            ))
            .into());
        };
        let state = self.shared.state.clone();
        let id = transfer_id.clone();
        let found = blocking(move || Ok(state.get(&provider, &id)?)).await;
        drop(committing);
        let found = found?;
        let status = match found {
            None => TransferStatus {
                transfer_id,
                committed: 0,
                complete: false,
                receipt: None,
            },
            Some(t) => TransferStatus {
                transfer_id,
                committed: t.committed,
                complete: t.receipt.is_some(),
                receipt: t.receipt,
            },
        };
        Ok(Response::new(status))
    }
}

fn peer_addr<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<tls::Peer>()
        .and_then(|p| p.addr)
        .map(|a| a.to_string())
}

/// A refusal, with the manifest if it got that far (for the audit log).
type Refused = (ExchangeError, Option<Manifest>);

/// One push's transfer once its manifest is accepted.
struct Session {
    provider: String,
    /// Signs its receipt: the key of the certificate this connection
    /// presented, which is what the provider checks the receipt against.
    signer: ReceiptSigner,
    /// The SHA-256 of the provider's certificate on this connection.
    client_certificate: String,
    manifest: Manifest,
    /// `None` while it is with a blocking task, and after commit or discard.
    file: Option<PartialFile>,
    /// Its size, held against the provider's limit while the push runs.
    _holding: Holding,
    /// Its provider's received-bytes counter, when metrics are served.
    received: Option<prometheus_client::metrics::counter::Counter>,
}

/// The messages of one push, each within the idle limit, which only
/// progress (bytes written) restarts.
struct Messages {
    stream: Streaming<PushRequest>,
    progress: Progress,
    abort: Shutdown,
}

impl Messages {
    async fn next(&mut self) -> Result<Option<Body>, ExchangeError> {
        if self.abort.is_cancelled() {
            return Err(ExchangeError::ShuttingDown);
        }
        let (deadline, idle, need) = (
            self.progress.deadline(),
            self.progress.idle(),
            self.progress.need(),
        );
        tokio::select! {
            received = tokio::time::timeout_at(deadline, self.stream.message()) => match received {
                Err(_) => Err(ExchangeError::Idle(format!(
                    "no progress for {} s (fewer than {need} bytes arrived); the push was \
                     cancelled: resume it from its committed offset",
                    idle.as_secs()
                ))),
                Ok(Err(status)) => Err(match status.code() {
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                        ExchangeError::OverLimit(status.message().to_string())
                    }
                    tonic::Code::Internal => ExchangeError::Invalid(format!(
                        "a message could not be decoded: {}",
                        status.message()
                    )),
                    _ => ExchangeError::Disconnected(status.message().to_string()),
                }),
                Ok(Ok(None)) => Ok(None),
                Ok(Ok(Some(PushRequest { body: Some(body) }))) => Ok(Some(body)),
                Ok(Ok(Some(PushRequest { body: None }))) => {
                    Err(ExchangeError::Invalid("a PushRequest with no body".into()))
                }
            },
            () = self.abort.cancelled() => Err(ExchangeError::ShuttingDown),
        }
    }
}

/// What the database says when a push begins.
enum Begin {
    /// Complete already: the original receipt.
    Done(Receipt),
    /// Write from here, the file's size held against the provider's limit.
    Write(PartialFile, Holding),
}

/// Who is calling, as the connection proved it, and what this side signs
/// with for it.
pub(crate) struct Caller {
    provider: String,
    signer: ReceiptSigner,
    client_certificate: String,
}

impl Shared {
    /// The provider identity the connection's certificate proved, checked
    /// against the allow-list in use now (a provider removed by a reload is
    /// refused here even on a connection it opened before), and the signer
    /// for the certificate this side presented on that connection.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, ExchangeError> {
        let peer = self.provider(request)?;
        Ok(Caller {
            provider: peer.identity.clone(),
            signer: self.live.load().signer_for(peer.presented.as_ref())?,
            client_certificate: peer.certificate_sha256.clone(),
        })
    }

    /// The verified peer of `request`, if it is a provider on the
    /// allow-list in use now.
    fn provider<'r, T>(&self, request: &'r Request<T>) -> Result<&'r tls::Peer, ExchangeError> {
        let peer = request
            .extensions()
            .get::<tls::Peer>()
            .ok_or_else(|| ExchangeError::NotPermitted("no verified client certificate".into()))?;
        if !self.live.load().serves(&peer.identity) {
            return Err(ExchangeError::NotPermitted(format!(
                "{} is not a provider this endpoint serves",
                peer.identity
            )));
        }
        Ok(peer)
    }

    async fn push(
        self: &Arc<Self>,
        caller: &Caller,
        stream: Streaming<PushRequest>,
    ) -> Result<Receipt, Refused> {
        let provider = caller.provider.as_str();
        let mut messages = Messages {
            stream,
            progress: Progress::new(self.config.stream_idle, self.config.max_chunk_bytes),
            abort: self.pushes.clone(),
        };
        let wire = match messages.next().await.map_err(|e| (e, None))? {
            Some(Body::Manifest(m)) => m,
            Some(_) => {
                return Err((
                    ExchangeError::Invalid("the first message must be a Manifest".into()),
                    None,
                ));
            }
            None => {
                return Err((
                    ExchangeError::Invalid("the stream ended before its Manifest".into()),
                    None,
                ));
            }
        };
        let m = manifest::validate(wire, &self.config.code, self.config.max_file_bytes)
            .map_err(|e| (e, None))?;
        let with_m = |e: ExchangeError| (e, Some(m.clone()));

        // One stream per transfer at a time. A provider that reconnects
        // before this endpoint has noticed its old stream is gone waits for
        // it rather than failing.
        let _claim = self
            .claims
            .claim(provider, &m.transfer_id, self.config.stream_idle)
            .await
            .ok_or_else(|| {
                with_m(ExchangeError::WrongOffset(format!(
                    "another stream is pushing transfer {}; wait for it to end, then ask \
                     QueryTransfer where to resume",
                    m.transfer_id
                )))
            })?;

        let begin = {
            let (state, inbox, limits) =
                (self.state.clone(), self.inbox.clone(), self.limits.clone());
            let (provider, m) = (provider.to_string(), m.clone());
            let floor = self.config.min_free_bytes;
            blocking(move || begin(&state, &inbox, &limits, floor, &provider, &m))
                .await
                .map_err(with_m)?
        };
        let (file, holding) = match begin {
            Begin::Done(receipt) => {
                self.audit_repeat(provider, &m, &receipt).await;
                return Ok(receipt);
            }
            Begin::Write(file, holding) => (file, holding),
        };
        messages.progress.restart(m.size - file.len());
        let mut session = Session {
            provider: provider.to_string(),
            signer: caller.signer.clone(),
            client_certificate: caller.client_certificate.clone(),
            manifest: m.clone(),
            file: Some(file),
            _holding: holding,
            received: self.metrics.as_ref().map(|m| m.received(provider)),
        };
        let result = self.receive(&mut session, &mut messages).await;
        if result.is_err() {
            // Keep what arrived: it is fsynced and recorded so the push can
            // resume from it.
            if let Err(e) = self.save_progress(&mut session).await {
                tracing::error!(
                    provider,
                    transfer_id = %m.transfer_id,
                    error = %e,
                    "cannot record the progress of an interrupted push"
                );
            }
        }
        result.map_err(with_m)
    }

    async fn receive(
        &self,
        session: &mut Session,
        messages: &mut Messages,
    ) -> Result<Receipt, ExchangeError> {
        loop {
            match messages.next().await? {
                None => {
                    return Err(ExchangeError::Disconnected(
                        "the stream ended without a Commit".into(),
                    ));
                }
                Some(Body::Manifest(_)) => {
                    return Err(ExchangeError::Invalid(
                        "a second Manifest in one stream".into(),
                    ));
                }
                Some(Body::Chunk(chunk)) => {
                    let len = chunk.data.len() as u64;
                    self.chunk(session, chunk).await?;
                    let written = session.file.as_ref().map_or(0, PartialFile::len);
                    messages
                        .progress
                        .advanced(len, session.manifest.size.saturating_sub(written));
                }
                Some(Body::Commit(_)) => {
                    // Never contended: this stream holds the transfer's claim.
                    let _committing = self
                        .committing
                        .try_claim(&session.provider, &session.manifest.transfer_id);
                    return self.commit(session).await;
                }
            }
        }
    }

    async fn chunk(&self, session: &mut Session, chunk: Chunk) -> Result<(), ExchangeError> {
        let m = &session.manifest;
        if chunk.data.is_empty() {
            // It makes no progress; a stream of them would only keep the
            // push open.
            return Err(ExchangeError::Invalid(
                "an empty chunk: every chunk must carry at least one byte".into(),
            ));
        }
        let have = session.file.as_ref().map_or(0, PartialFile::len);
        if chunk.offset != have {
            return Err(ExchangeError::WrongOffset(format!(
                "a chunk at offset {}, but the endpoint has {have} bytes of transfer {}; the \
                 next chunk must be at offset {have}",
                chunk.offset, m.transfer_id
            )));
        }
        let len = chunk.data.len() as u64;
        if len > self.config.max_chunk_bytes {
            return Err(ExchangeError::OverLimit(format!(
                "a chunk of {len} bytes; this endpoint accepts at most {}",
                self.config.max_chunk_bytes
            )));
        }
        if have + len > m.size {
            return Err(ExchangeError::Invalid(format!(
                "a chunk ending at {} goes beyond the manifest's size {}",
                have + len,
                m.size
            )));
        }
        if have < AGE_MAGIC.len() as u64 {
            let start = have as usize;
            let n = (AGE_MAGIC.len() - start).min(chunk.data.len());
            if chunk.data[..n] != AGE_MAGIC[start..start + n] {
                return Err(ExchangeError::Invalid(
                    "not an age v1 file: it does not begin with age-encryption.org/v1".into(),
                ));
            }
        }
        let mut file = session
            .file
            .take()
            .ok_or_else(|| InternalError::Inconsistent("the partial file was lost".into()))?;
        let (state, m, provider) = (self.state.clone(), m.clone(), session.provider.clone());
        let sync_every = self.config.sync_every_bytes;
        let file = blocking(move || {
            file.write(&chunk.data)?;
            if file.unsynced() >= sync_every {
                let durable = file.sync()?;
                state
                    .record_committed(&provider, &m, durable, now_ms())
                    .map_err(InternalError::from)?;
            }
            Ok(file)
        })
        .await?;
        session.file = Some(file);
        if let Some(received) = &session.received {
            received.inc_by(len);
        }
        Ok(())
    }

    /// Verifies the whole file, moves it into the inbox, then signs and
    /// records the receipt: in that order, so a receipt always means a
    /// durable, visible, verified file.
    async fn commit(&self, session: &mut Session) -> Result<Receipt, ExchangeError> {
        let mut file = session
            .file
            .take()
            .ok_or_else(|| InternalError::Inconsistent("the partial file was lost".into()))?;
        let (state, inbox, signer) = (
            self.state.clone(),
            self.inbox.clone(),
            session.signer.clone(),
        );
        let (provider, m) = (session.provider.clone(), session.manifest.clone());
        let client_certificate = session.client_certificate.clone();
        blocking(move || {
            let durable = file.sync()?;
            let discard = |file: PartialFile, why: String| -> Result<Receipt, ExchangeError> {
                file.discard()?;
                state.forget(&provider, &m.transfer_id)?;
                Err(ExchangeError::DataLoss(format!(
                    "{why}; the partial transfer was discarded: push it again from offset 0"
                )))
            };
            if file.len() != m.size {
                let why = format!(
                    "Commit after {} bytes, but the manifest's size is {}",
                    file.len(),
                    m.size
                );
                return discard(file, why);
            }
            if file.digest() != m.sha256 {
                return discard(
                    file,
                    "the SHA-256 of the bytes received does not match the manifest's".into(),
                );
            }
            state.record_committed(&provider, &m, durable, now_ms())?;
            if let Err(why) = file.check_age_header()? {
                file.discard()?;
                state.forget(&provider, &m.transfer_id)?;
                return Err(ExchangeError::Invalid(format!(
                    "not an age v1 file: {why}; the partial transfer was discarded"
                )));
            }
            drop(file);
            let stored_as = m.stored_as();
            crate::common::fault::dangerous_pause_point(
                crate::common::fault::CrashPoint::EndpointBeforePublish,
            );
            crate::common::fault::dangerous_crash_point(
                crate::common::fault::CrashPoint::EndpointBeforePublish,
            );
            inbox.publish(&provider, &m.transfer_id, &stored_as, m.size, &m.sha256)?;
            crate::common::fault::dangerous_crash_point(
                crate::common::fault::CrashPoint::EndpointAfterPublish,
            );
            let receipt = signer
                .sign(Receipt {
                    transfer_id: m.transfer_id.clone(),
                    sha256: m.sha256.to_vec(),
                    size: m.size,
                    stored_as: stored_as.clone(),
                    received_unix_ms: now_ms(),
                    provider: provider.clone(),
                    la_code: state.code().to_string(),
                    report: m.report.clone(),
                    period: m.period.clone(),
                    classification: store::wire_classification(m.classification) as i32,
                    ..Receipt::default()
                })
                .map_err(InternalError::from)?;
            state.complete(
                &provider,
                &receipt,
                Kind::TransferAccepted,
                &accepted_detail(&m, &receipt, &client_certificate),
            )?;
            tracing::info!(
                provider,
                transfer_id = %m.transfer_id,
                size = m.size,
                stored_as,
                "file received"
            );
            Ok(receipt)
        })
        .await
    }

    /// After an interrupted push: fsync and record what arrived, or remove
    /// the partial file if nothing of it was ever recorded.
    async fn save_progress(&self, session: &mut Session) -> Result<(), ExchangeError> {
        let Some(mut file) = session.file.take() else {
            return Ok(());
        };
        let (state, inbox) = (self.state.clone(), self.inbox.clone());
        let (provider, m) = (session.provider.clone(), session.manifest.clone());
        blocking(move || {
            if file.is_empty() {
                let recorded = state.get(&provider, &m.transfer_id)?.is_some();
                drop(file);
                if !recorded {
                    inbox.discard(&provider, &m.transfer_id)?;
                }
                return Ok(());
            }
            let durable = file.sync()?;
            state.record_committed(&provider, &m, durable, now_ms())?;
            Ok(())
        })
        .await
    }

    async fn audit_repeat(&self, provider: &str, m: &Manifest, receipt: &Receipt) {
        let detail = json!({
            "transfer_id": m.transfer_id,
            "stored_as": receipt.stored_as,
            "size": receipt.size,
            "sha256": crate::common::encoding::hex(&receipt.sha256),
        });
        self.audit(Kind::TransferRepeated, &store::actor(provider), detail)
            .await;
    }

    /// Records a refused push: counted in the metrics (by provider and
    /// gRPC code) and audited with the peer, the code and what it was told.
    /// Every refusal of a push passes here.
    pub(crate) async fn refused(
        &self,
        provider: &str,
        addr: Option<&str>,
        m: Option<&Manifest>,
        e: &ExchangeError,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.transfer(provider, Some(e));
        }
        let mut detail = json!({
            "code": format!("{:?}", e.code()),
            "reason": e.public_message(),
            "peer_addr": addr,
        });
        if let Some(m) = m {
            detail["transfer_id"] = json!(m.transfer_id);
            detail["report"] = json!(m.report);
            detail["period"] = json!(m.period);
            detail["size"] = json!(m.size);
        }
        tracing::info!(provider, code = ?e.code(), reason = %e.public_message(), "push refused");
        self.audit(Kind::TransferRefused, &store::actor(provider), detail)
            .await;
    }

    /// Appends one audit entry off the async runtime; a failure is logged.
    pub(crate) async fn audit(&self, kind: Kind, actor: &str, detail: serde_json::Value) {
        let state = self.state.clone();
        let actor = actor.to_string();
        let written = blocking(move || Ok(state.audit(kind, &actor, &detail)?)).await;
        if let Err(e) = written {
            tracing::error!(%kind, error = %e, "cannot write to the audit log");
        }
    }
}

/// Looks the transfer up, checks the provider's room and the disk's, and
/// opens its partial file at the durable offset (nothing is written before
/// both checks pass).
fn begin(
    state: &Store,
    inbox: &Inbox,
    limits: &Arc<ProviderLimits>,
    min_free_bytes: u64,
    provider: &str,
    m: &Manifest,
) -> Result<Begin, ExchangeError> {
    let mut committed = 0;
    match state.get(provider, &m.transfer_id)? {
        Some(t) if t.receipt.is_some() => {
            return if t.size == m.size && t.sha256 == m.sha256 {
                Ok(Begin::Done(t.receipt.expect("checked above")))
            } else {
                Err(ExchangeError::Invalid(format!(
                    "transfer {} is already complete with another size or SHA-256; a new file \
                     needs a new transfer id",
                    m.transfer_id
                )))
            };
        }
        Some(t) if !t.same_as(m) => {
            return Err(ExchangeError::Invalid(format!(
                "transfer {} is in progress with another manifest (report, period, \
                 classification, size or SHA-256 differ); a new file needs a new transfer id",
                m.transfer_id
            )));
        }
        Some(t) => committed = t.committed,
        None => {}
    }
    let holding = limits.hold(provider, &m.transfer_id, m.size, || {
        Ok(state.unfinished_of(provider)?)
    })?;
    let free = limits::free_bytes(inbox.partial_dir()).map_err(|source| InternalError::Io {
        what: "cannot tell the free space of",
        path: inbox.partial_dir().to_path_buf(),
        source,
    })?;
    limits::check_free_space(free, m.size - committed, min_free_bytes)?;
    let file = match inbox.open_partial(provider, &m.transfer_id, committed)? {
        Some(file) => file,
        None => {
            tracing::warn!(
                provider,
                transfer_id = %m.transfer_id,
                committed,
                "the partial file is shorter than its committed size (changed outside \
                 mishare); the transfer starts again from 0"
            );
            state.forget(provider, &m.transfer_id)?;
            inbox.discard(provider, &m.transfer_id)?;
            committed = 0;
            inbox
                .open_partial(provider, &m.transfer_id, 0)?
                .ok_or_else(|| InternalError::Inconsistent("an empty file is short".into()))?
        }
    };
    if m.offset != committed {
        if committed == 0 {
            drop(file);
            inbox.discard(provider, &m.transfer_id)?;
        }
        return Err(ExchangeError::WrongOffset(format!(
            "the manifest starts at offset {}, but the endpoint has committed {committed} bytes \
             of transfer {}; start at offset {committed}",
            m.offset, m.transfer_id
        )));
    }
    Ok(Begin::Write(file, holding))
}

fn accepted_detail(m: &Manifest, receipt: &Receipt, client_certificate: &str) -> serde_json::Value {
    json!({
        "client_certificate_sha256": client_certificate,
        "transfer_id": m.transfer_id,
        "report": m.report,
        "period": m.period,
        "classification": m.classification,
        "size": m.size,
        "sha256": crate::common::encoding::hex(&m.sha256),
        "stored_as": receipt.stored_as,
        "received_unix_ms": receipt.received_unix_ms,
    })
}
