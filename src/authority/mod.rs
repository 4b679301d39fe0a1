//! The authority endpoint: `mishare authority run --config authority.toml`.
//!
//! An LA runs one. It serves `Exchange` over mutual TLS to the providers on
//! its `[[provider]]` list, and nobody else:
//!
//! - [`service`]: `Push` and `QueryTransfer`; every manifest field checked
//!   before it touches a path or the database ([`manifest`]);
//! - [`inbox`]: partial files under `data_dir/partial/`, finished ones moved
//!   atomically into `inbox/<provider>/`;
//! - `limits`: what one provider may hold (streams, bytes in partial
//!   files), the free-space floor, and idleness measured by progress;
//! - [`store`]: transfers, receipts and the endpoint's own audit log in
//!   `data_dir/authority.db`, and the only place its SQL lives;
//! - [`error`]: the one place errors become gRPC statuses;
//! - [`open`]: for LA staff, a received file decrypted as a CSV Excel reads
//!   as UTF-8, or as an XLSX workbook with the label on every page;
//! - [`retention`]: received files past `[retention] inbox_days` deleted,
//!   each deletion audited with the file's digest;
//! - `reload`: certificates, key, revocation lists and the allow-list
//!   read again on SIGHUP, all or nothing; connections keep what they
//!   were accepted with.
//!
//! [`serve`] takes its listener and its shutdown as parameters, so tests run
//! the real endpoint on `127.0.0.1:0` and stop it when they choose, and the
//! command line binds the configured address and says where it listens.

mod claims;
pub mod error;
pub mod inbox;
mod limits;
pub mod manifest;
pub mod metrics;
mod observe;
pub mod open;
mod reload;
pub mod retention;
pub mod service;
pub mod store;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::Stream;

use crate::common::audit::Kind;
use crate::common::db::DbError;
use crate::common::notify::{Notifier, WatchdogTicks};
use crate::common::refusals;
use crate::common::reload::ReloadRequests;
use crate::common::shutdown::Shutdown;
use crate::common::time::now_ms;
use crate::config::AuthorityConfig;
use crate::receipt::{ReceiptError, ReceiptSigner};
use crate::tls::{self, ServerTls, SharedServerTls, TlsError};
use crate::wire::v1::Receipt;
use crate::wire::v1::exchange_server::ExchangeServer;

use self::claims::Claims;
use self::error::{ExchangeError, InternalError, blocking};
use self::inbox::{Inbox, hash_file};
use self::limits::ProviderLimits;
use self::service::{ExchangeService, Shared};
use self::store::Store;

/// Room for a chunk's framing on top of `max_chunk_bytes` in one message.
const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// How long pushes cancelled after the grace period have to wind down.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Why the endpoint could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The state database could not be opened.
    #[error("the endpoint's state: {0}")]
    State(#[from] DbError),
    /// The inbox or the partial folder could not be used, or reconciling
    /// them with the state at start failed.
    #[error("the endpoint's files: {0}")]
    Files(#[from] InternalError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The endpoint's key cannot sign receipts.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What [`serve_with`] does beyond serving: reloads asked for through
/// [`crate::common::reload::channel`] (SIGHUP in the binary), and systemd
/// notifications. The default: neither.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// Reload requests; `None`: the configuration is the one given, until
    /// a restart.
    pub reloads: Option<ReloadRequests>,
    /// `READY=1` once the listener serves, `RELOADING=1`/`READY=1` around a
    /// reload, `STOPPING=1`, and the watchdog fed by the serve loop.
    pub notify: Notifier,
    /// Where to serve Prometheus metrics (bound from `[metrics] listen`),
    /// for as long as the endpoint serves; `None`: no metrics.
    pub metrics: Option<TcpListener>,
}

impl From<ExchangeError> for AuthorityError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Internal(i) => AuthorityError::Files(i),
            other => AuthorityError::Files(InternalError::Inconsistent(other.to_string())),
        }
    }
}

/// Serves `Exchange` on `listener` until `shutdown` is cancelled, then stops
/// accepting connections, lets pushes in flight finish within
/// `shutdown_grace`, cancels any still running (they keep what is durable),
/// drains its other tasks and returns.
///
/// Before accepting anything it reconciles the state with the files: a file
/// already in the inbox whose transfer is not marked complete (the endpoint
/// stopped between the two) is completed if its size and digest match, and
/// partial files no transfer owns are removed.
pub async fn serve(
    config: AuthorityConfig,
    listener: TcpListener,
    shutdown: &Shutdown,
) -> Result<(), AuthorityError> {
    serve_with(config, listener, shutdown, ServeOptions::default()).await
}

/// [`serve`], reloading on the requests in `options`, notifying systemd
/// and serving Prometheus metrics as it says.
pub async fn serve_with(
    config: AuthorityConfig,
    listener: TcpListener,
    shutdown: &Shutdown,
    options: ServeOptions,
) -> Result<(), AuthorityError> {
    let ServeOptions {
        mut reloads,
        notify,
        metrics,
    } = options;
    // The identity the listener presents, and the signer for it: shared by
    // the start-up reconciliation and the live material.
    let identity = Arc::new(config.identity.clone());
    let signer = ReceiptSigner::new(&identity)?;
    let (state, inbox) = {
        let (data_dir, inbox_dir, code) = (
            config.data_dir.clone(),
            config.inbox.clone(),
            config.code.clone(),
        );
        let signer = signer.clone();
        blocking(move || {
            let state = Store::open(&data_dir, &code)?;
            let inbox = Inbox::open(&inbox_dir, &data_dir)?;
            reconcile(&state, &inbox, &signer)?;
            Ok((Arc::new(state), Arc::new(inbox)))
        })
        .await?
    };

    let server_tls = ServerTls::new(
        identity.clone(),
        &config.provider_anchors,
        config.allow_list(),
    )?;
    let live = reload::Live::new(&config, identity, signer);
    let server_tls = SharedServerTls::new(server_tls);

    // The endpoint's own tasks (the accept loop, the audit writer, the
    // sweep) stop with the shutdown; pushes in flight are tracked apart and
    // stopped only when their grace period is over.
    let tasks = shutdown.branch();
    let pushes = Shutdown::new();

    // Refused handshakes are counted as the TLS layer reports them and
    // audited by one writer task, coalesced per (source, reason), so a
    // flood of them cannot grow the disk without bound. The writer ends,
    // writing what is left, once the accept loop and handshakes are gone.
    let (refusals, writer) = refusals::coalesce(refusals::WINDOW);
    tasks.spawn(audit_refusals(state.clone(), writer));
    let observed = metrics.map(|listener| {
        let m = self::metrics::EndpointMetrics::new();
        // Before the first scrape can be answered; the health probe keeps
        // it current across reloads.
        if let Some(own) = observe::own_certificate(&config.identity) {
            m.certificate("authority", &own.subject, own.ends);
        }
        crate::common::metrics::serve(listener, m.registry(), &tasks);
        m
    });
    let counted = observed.clone();
    let connections =
        tls::incoming_reloadable(listener, server_tls.clone(), &tasks, move |addr, reason| {
            if let Some(m) = &counted {
                m.handshake_refused(&reason);
            }
            refusals.record(addr, &reason);
        });
    let providers_seen = observe::ProvidersSeen::default();
    let connections = {
        let (m, seen) = (observed.clone(), providers_seen.clone());
        tokio_stream::StreamExt::map(connections, move |connection| {
            if let Ok(c) = &connection {
                seen.saw(c, m.as_deref());
            }
            connection
        })
    };

    let shared = Arc::new(Shared {
        state: state.clone(),
        inbox,
        live: arc_swap::ArcSwap::from_pointee(live),
        streams: Arc::new(Semaphore::new(config.max_streams)),
        limits: ProviderLimits::new(
            config.max_streams_per_provider,
            config.max_partial_bytes_per_provider,
        ),
        claims: Claims::default(),
        committing: Claims::default(),
        pushes: pushes.clone(),
        metrics: observed.clone(),
        config,
    });
    tasks.spawn(sweeper(shared.clone(), tasks.clone()));

    let max_message = usize::try_from(shared.config.max_chunk_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(MESSAGE_OVERHEAD);
    let service = ExchangeServer::new(ExchangeService {
        shared: shared.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(MESSAGE_OVERHEAD);
    let (health, health_service) = tonic_health::server::health_reporter();
    observe::watch(&shared, health, providers_seen, observed, &tasks);

    let connections = UntilClosing {
        inner: Some(connections),
        closing: Box::pin(shutdown.token().clone().cancelled_owned()),
    };
    // Flow-control windows a little over a chunk, so a sender is not held
    // to 64 KiB in flight while this side writes and hashes; per connection
    // they bound what is buffered.
    let window = u32::try_from(shared.config.max_chunk_bytes.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(1 << 20);
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.saturating_mul(2))
        .max_frame_size(256 * 1024)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(connections, shutdown.token().clone().cancelled_owned());
    tokio::pin!(server);
    tracing::info!(code = %shared.config.code, "authority endpoint serving");
    // The listener is bound and its accept loop running: connections made
    // from now on are served.
    notify.ready();
    let mut watchdog = WatchdogTicks::new(&notify);

    let ended = loop {
        tokio::select! {
            served = &mut server => break Ended::Server(served.map_err(AuthorityError::from)),
            () = shutdown.cancelled() => break Ended::Shutdown,
            // Fed from this loop, so a serve task that stops being polled
            // stops feeding it.
            () = watchdog.tick() => notify.watchdog(),
            request = next_reload(&mut reloads) => match request {
                Some(request) => {
                    notify.reloading();
                    let outcome = reload::reload(&shared, &server_tls).await;
                    notify.ready();
                    request.answer(outcome);
                }
                None => reloads = None,
            },
        }
    };
    let served = match ended {
        Ended::Server(served) => served,
        Ended::Shutdown => {
            notify.stopping();
            let grace = shared.config.shutdown_grace;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: accepting no new connections; pushes in flight may finish"
            );
            let drained = async {
                let served = (&mut server).await;
                pushes.wait().await;
                served
            };
            match tokio::time::timeout(grace, drained).await {
                Ok(served) => {
                    tracing::info!("every push in flight finished within the grace period");
                    served.map_err(AuthorityError::from)
                }
                Err(_) => {
                    tracing::warn!(
                        running = pushes.running(),
                        "the shutdown grace period expired; cancelling the pushes still \
                         running (what they sent that is durable is kept for a resume)"
                    );
                    pushes.cancel();
                    let wound_down = tokio::time::timeout(ABORT_WAIT, async {
                        let _ = (&mut server).await;
                        pushes.wait().await;
                    })
                    .await;
                    if wound_down.is_err() {
                        tracing::warn!("pushes did not wind down in time; stopping anyway");
                    }
                    Ok(())
                }
            }
        }
    };

    tasks.cancel();
    tasks.drain(ABORT_WAIT, "authority endpoint").await;
    tracing::info!("authority endpoint stopped");
    served
}

/// Why the serve loop ended.
enum Ended {
    /// The server stopped by itself (with its result).
    Server(Result<(), AuthorityError>),
    /// Shutdown was asked for; the server is still draining.
    Shutdown,
}

/// The next reload request, or never if there are none to wait for.
async fn next_reload(
    reloads: &mut Option<ReloadRequests>,
) -> Option<crate::common::reload::ReloadRequest> {
    match reloads.as_mut() {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// The connection stream, ended (and the accept loop with it, so the
/// listening socket closes) as soon as shutdown begins, even while tonic
/// drains the connections it has.
struct UntilClosing<S> {
    inner: Option<S>,
    closing: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S: Stream + Unpin> Stream for UntilClosing<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.inner.is_some() && self.closing.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match self.inner.as_mut() {
            None => Poll::Ready(None),
            Some(inner) => Pin::new(inner).poll_next(cx),
        }
    }
}

/// Writes coalesced handshake refusals to the audit log, a row per key
/// and window ([`refusals`]).
async fn audit_refusals(state: Arc<Store>, writer: refusals::Writer) {
    writer
        .run(|rows| {
            let state = state.clone();
            async move {
                let written = blocking(move || {
                    for row in rows {
                        tracing::warn!(
                            source = %row.key.source,
                            reason = %row.key.reason,
                            count = row.count,
                            "TLS handshakes refused"
                        );
                        state.audit(Kind::HandshakeRefused, "unauthenticated", &row.detail())?;
                    }
                    Ok(())
                })
                .await;
                if let Err(e) = written {
                    tracing::error!(error = %e, "cannot audit refused handshakes");
                }
            }
        })
        .await;
}

/// Removes partial transfers with no progress for `partial_ttl`, and
/// received files past `[retention] inbox_days`.
async fn sweeper(shared: Arc<Shared>, stop: Shutdown) {
    let every =
        (shared.config.partial_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = sweep(&shared).await {
            tracing::error!(error = %e, "cannot remove idle partial transfers");
        }
        if let Some(days) = shared.config.inbox_days {
            let (state, inbox) = (shared.state.clone(), shared.config.inbox.clone());
            let purged = crate::common::blocking::blocking(move || {
                let why = format!("retention: inbox_days = {days}");
                retention::purge(&state, &inbox, days, &why, "endpoint", now_ms())
            })
            .await;
            match purged {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot delete received files past retention");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot delete received files past retention");
                }
            }
        }
    }
}

/// One pass of the idle sweep; how many partial transfers it removed.
pub(crate) async fn sweep(shared: &Shared) -> Result<usize, ExchangeError> {
    let ttl_ms = i64::try_from(shared.config.partial_ttl.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms().saturating_sub(ttl_ms);
    let state = shared.state.clone();
    let idle = blocking(move || Ok(state.idle_before(cutoff)?)).await?;
    let mut removed = 0;
    for t in idle {
        // A transfer a stream is writing is not idle, whatever its row says.
        let Some(claim) = shared.claims.try_claim(&t.provider, &t.transfer_id) else {
            continue;
        };
        let (state, inbox) = (shared.state.clone(), shared.inbox.clone());
        let gone = blocking(move || {
            let detail = json!({
                "provider": t.provider,
                "transfer_id": t.transfer_id,
                "committed": t.committed,
                "size": t.size,
                "idle_since_unix_ms": t.updated_ms,
            });
            let gone = state.remove_idle(&t.provider, &t.transfer_id, cutoff, &detail)?;
            if gone {
                inbox.discard(&t.provider, &t.transfer_id)?;
                tracing::info!(provider = %t.provider, transfer_id = %t.transfer_id, "removed an idle partial transfer");
            }
            Ok(gone)
        })
        .await;
        drop(claim);
        if gone? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Brings files and state into agreement at start (nothing else runs yet).
fn reconcile(state: &Store, inbox: &Inbox, signer: &ReceiptSigner) -> Result<(), ExchangeError> {
    let mut owned = HashSet::new();
    for t in state.incomplete()? {
        let sound = crate::common::names::is_provider_id(&t.provider)
            && crate::common::names::is_transfer_id(&t.transfer_id)
            && crate::common::names::is_report_name(&t.report)
            && crate::common::names::is_period(&t.period);
        if !sound {
            tracing::error!(provider = %t.provider, transfer_id = %t.transfer_id, "a transfer row holds names mishare never writes; left alone");
            continue;
        }
        let stored_as = t.stored_as();
        let target = inbox.final_path(&t.provider, &stored_as);
        if t.committed == t.size && target.exists() {
            let (len, digest) = hash_file(&target)?;
            if len == t.size && digest.as_slice() == t.sha256.as_slice() {
                let receipt = signer
                    .sign(Receipt {
                        transfer_id: t.transfer_id.clone(),
                        sha256: digest.to_vec(),
                        size: t.size,
                        stored_as: stored_as.clone(),
                        received_unix_ms: now_ms(),
                        provider: t.provider.clone(),
                        la_code: state.code().to_string(),
                        report: t.report.clone(),
                        period: t.period.clone(),
                        classification: store::wire_classification(&t.classification) as i32,
                        ..Receipt::default()
                    })
                    .map_err(InternalError::from)?;
                let detail = json!({
                    "transfer_id": t.transfer_id,
                    "report": t.report,
                    "period": t.period,
                    "size": t.size,
                    "sha256": crate::common::encoding::hex(&digest),
                    "stored_as": stored_as,
                    "received_unix_ms": receipt.received_unix_ms,
                });
                state.complete(&t.provider, &receipt, Kind::TransferRecovered, &detail)?;
                inbox.discard(&t.provider, &t.transfer_id)?;
                tracing::info!(provider = %t.provider, transfer_id = %t.transfer_id, "recorded a file stored before the endpoint stopped");
                continue;
            }
            tracing::error!(
                path = %target.display(),
                "an inbox file has the name of an incomplete transfer but other contents; it is \
                 never overwritten, so that transfer cannot complete until it is moved aside"
            );
        }
        owned.insert(inbox.partial_path(&t.provider, &t.transfer_id));
    }
    for path in inbox.partial_files()? {
        if !owned.contains(&path) {
            tracing::info!(path = %path.display(), "removing a partial file no transfer owns");
            std::fs::remove_file(&path).map_err(|source| InternalError::Io {
                what: "cannot remove",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}
