//! DWP's channel: the `Directive` service a provider daemon serves when
//! `[directive]` is configured.
//!
//! Only DWP connects: mutual TLS 1.3 with client certificates chaining to
//! `[directive] ca` and naming one of `regulators` (checked during the
//! handshake, so anyone else never gets as far as a request). The DWP
//! identity comes from the certificate and is the actor of every audit
//! entry; refused handshakes are audited too, coalesced per source and
//! reason ([`refusals`]). `Suspend` and `Lift` are the only way a DWP
//! suspension is made or lifted; a provider suspension cannot be lifted
//! here.
//!
//! Every request field is validated before it reaches the store. Errors
//! become a [`Status`] in one place ([`DirectiveError::status`]); internal
//! causes are logged, never sent.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::common::audit::Kind;
use crate::common::names::is_la_code;
use crate::common::refusals;
use crate::common::shutdown::Shutdown;
use crate::config::provider::ProviderConfig;
use crate::provider::store::{Scope, SharedStore, Store, StoreError, Suspension};
use crate::tls::{self, AllowList, Peer, ServerTls, SharedServerTls, TlsError};
use crate::wire::v1;
use crate::wire::v1::directive_server::{Directive, DirectiveServer};

/// The longest `reason` DWP may give, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// The longest `reference` DWP may give, in characters.
pub const MAX_REFERENCE_CHARS: usize = 200;

/// Why a directive was not carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectiveError {
    /// A request field is missing or malformed.
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// The store refused the change (already suspended, unknown id, a
    /// provider's suspension, …).
    #[error(transparent)]
    Refused(StoreError),
    /// The connection carries no DWP identity (cannot happen behind
    /// [`tls::incoming`]; refused all the same).
    #[error("no DWP identity on the connection")]
    NoIdentity,
    /// The state database failed.
    #[error("internal: {0}")]
    Store(#[source] StoreError),
    /// A blocking task failed.
    #[error("internal: {0}")]
    Task(#[from] crate::common::blocking::TaskFailed),
}

impl DirectiveError {
    /// The gRPC status DWP sees: the problem with its request in words, or
    /// for an internal failure only that it happened.
    pub fn status(&self) -> Status {
        match self {
            DirectiveError::Invalid { .. } => Status::invalid_argument(self.to_string()),
            DirectiveError::NoIdentity => Status::unauthenticated(self.to_string()),
            DirectiveError::Refused(e) => match e {
                StoreError::AlreadySuspended { .. } => Status::already_exists(e.to_string()),
                StoreError::UnknownSuspension { .. } => Status::not_found(e.to_string()),
                StoreError::AlreadyLifted { .. } => Status::failed_precondition(e.to_string()),
                StoreError::OnlyProviderCanLift { id } => Status::permission_denied(format!(
                    "suspension {id} was made by the provider; only the provider's operator \
                     can lift it"
                )),
                StoreError::NoReason => Status::invalid_argument(e.to_string()),
                other => {
                    tracing::error!(error = %other, "directive failed in the store");
                    Status::internal("the provider could not carry out the directive")
                }
            },
            DirectiveError::Store(cause) => {
                tracing::error!(%cause, "directive failed");
                Status::internal("the provider could not carry out the directive")
            }
            DirectiveError::Task(cause) => {
                tracing::error!(%cause, "directive failed");
                Status::internal("the provider could not carry out the directive")
            }
        }
    }
}

/// Checks free text from DWP: non-empty (unless `optional`), bounded, and
/// without control characters (it is shown to operators).
fn text(
    field: &'static str,
    value: &str,
    max: usize,
    optional: bool,
) -> Result<Option<String>, DirectiveError> {
    let invalid = |problem: String| DirectiveError::Invalid { field, problem };
    let value = value.trim();
    if value.is_empty() {
        return if optional {
            Ok(None)
        } else {
            Err(invalid("must not be empty".into()))
        };
    }
    if value.chars().count() > max {
        return Err(invalid(format!("is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters".into()));
    }
    Ok(Some(value.to_string()))
}

/// A validated `SuspendRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspendDirective {
    pub scope: Scope,
    pub reason: String,
    pub reference: Option<String>,
}

impl SuspendDirective {
    /// Validates every field: exactly one of an LA code or `all`.
    pub fn parse(request: &v1::SuspendRequest) -> Result<Self, DirectiveError> {
        let scope = match (request.la_code.as_str(), request.all) {
            ("", true) => Scope::All,
            ("", false) => {
                return Err(DirectiveError::Invalid {
                    field: "la_code",
                    problem: "name an LA code, or set all for every LA".into(),
                });
            }
            (_, true) => {
                return Err(DirectiveError::Invalid {
                    field: "la_code",
                    problem: "must be empty when all is set".into(),
                });
            }
            (code, false) if is_la_code(code) => Scope::La(code.to_string()),
            (_, false) => {
                return Err(DirectiveError::Invalid {
                    field: "la_code",
                    problem: "is not an LA code (1 to 16 ASCII letters and digits)".into(),
                });
            }
        };
        let reason = text("reason", &request.reason, MAX_REASON_CHARS, false)?
            .expect("a required field is present");
        let reference = text("reference", &request.reference, MAX_REFERENCE_CHARS, true)?;
        Ok(Self {
            scope,
            reason,
            reference,
        })
    }
}

/// A validated `LiftRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiftDirective {
    pub id: i64,
    pub reason: String,
}

impl LiftDirective {
    pub fn parse(request: &v1::LiftRequest) -> Result<Self, DirectiveError> {
        let id = i64::try_from(request.suspension_id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| DirectiveError::Invalid {
                field: "suspension_id",
                problem: "is not a suspension id".into(),
            })?;
        let reason = text("reason", &request.reason, MAX_REASON_CHARS, false)?
            .expect("a required field is present");
        Ok(Self { id, reason })
    }
}

/// A suspension as the wire carries it.
pub fn to_wire(s: &Suspension) -> v1::Suspension {
    v1::Suspension {
        id: u64::try_from(s.id).unwrap_or_default(),
        la_code: s.scope.la().unwrap_or_default().to_string(),
        all: s.scope.la().is_none(),
        made_by: s.made_by.as_str().to_string(),
        reason: s.reason.clone(),
        reference: s.reference.clone().unwrap_or_default(),
        made_unix_ms: s.made_at.timestamp_millis(),
        lifted_unix_ms: s.lifted_at.map_or(0, |t| t.timestamp_millis()),
    }
}

/// The `Directive` service over the provider's state.
#[derive(Debug, Clone)]
pub struct DirectiveService {
    config: Arc<ProviderConfig>,
    store: SharedStore,
}

impl DirectiveService {
    /// A service acting on the daemon's store, with its configuration's
    /// reference data to check LA codes against.
    pub fn new(config: Arc<ProviderConfig>, store: SharedStore) -> Self {
        Self { config, store }
    }

    /// The suspension's scope as the gate will match it: an LA code is
    /// the reference data's own (case is normalised), and one the
    /// reference data does not list is refused, so DWP is never told it
    /// suspended what the gate would not match.
    fn resolve(&self, d: SuspendDirective) -> Result<SuspendDirective, DirectiveError> {
        let Scope::La(code) = &d.scope else {
            return Ok(d);
        };
        match self.config.reference.resolve(code) {
            Some(la) => Ok(SuspendDirective {
                scope: Scope::La(la.code.clone()),
                ..d
            }),
            None => Err(DirectiveError::Invalid {
                field: "la_code",
                problem: format!(
                    "{code} is not an LA in the provider's reference data, so nothing would \
                     be suspended; check the code"
                ),
            }),
        }
    }

    /// Runs `f` on the store, off the reactor, and records the call in the
    /// audit log with its outcome.
    async fn call<T: Send + 'static>(
        &self,
        identity: String,
        method: &'static str,
        request: serde_json::Value,
        f: impl FnOnce(&mut Store, &str) -> Result<T, DirectiveError> + Send + 'static,
    ) -> Result<T, DirectiveError> {
        self.store
            .run(move |store| {
                let result = f(store, &identity);
                let outcome = match &result {
                    Ok(_) => json!({ "ok": true }),
                    Err(e) => json!({ "ok": false, "error": e.to_string() }),
                };
                let actor = format!("dwp:{identity}");
                let mut detail = json!({ "method": method, "request": request });
                detail["outcome"] = outcome;
                if let Err(e) = store.audit(Kind::DirectiveCall, &actor, None, &detail, Utc::now())
                {
                    tracing::error!(error = %e, %method, "cannot audit a directive call");
                    // A change already committed stands; a read is refused
                    // if it cannot be recorded.
                    if result.is_ok() && method == "List" {
                        return Err(DirectiveError::Store(e));
                    }
                }
                result
            })
            .await?
    }
}

fn identity<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Peer>()
        .map(|p| p.identity.clone())
        .ok_or_else(|| DirectiveError::NoIdentity.status())
}

#[tonic::async_trait]
impl Directive for DirectiveService {
    async fn suspend(
        &self,
        request: Request<v1::SuspendRequest>,
    ) -> Result<Response<v1::Suspension>, Status> {
        let who = identity(&request)?;
        let raw = request.into_inner();
        let logged = json!({
            "la_code": raw.la_code.chars().take(32).collect::<String>(),
            "all": raw.all,
        });
        let parsed = SuspendDirective::parse(&raw).and_then(|d| self.resolve(d));
        self.call(who, "Suspend", logged, move |store, identity| {
            let d = parsed?;
            store
                .suspend_by_dwp(
                    d.scope,
                    &d.reason,
                    d.reference.as_deref(),
                    identity,
                    Utc::now(),
                )
                .map_err(DirectiveError::Refused)
        })
        .await
        .map(|s| {
            tracing::warn!(suspension = s.id, scope = %s.scope, "DWP suspended sharing");
            Response::new(to_wire(&s))
        })
        .map_err(|e| e.status())
    }

    async fn lift(
        &self,
        request: Request<v1::LiftRequest>,
    ) -> Result<Response<v1::Suspension>, Status> {
        let who = identity(&request)?;
        let raw = request.into_inner();
        let parsed = LiftDirective::parse(&raw);
        let logged = json!({
            "suspension_id": raw.suspension_id,
            "reason": parsed.as_ref().map(|d| d.reason.clone()).ok(),
        });
        self.call(who, "Lift", logged, move |store, identity| {
            let d = parsed?;
            store
                .lift_by_dwp(d.id, identity, Utc::now())
                .map_err(DirectiveError::Refused)
        })
        .await
        .map(|s| {
            tracing::warn!(suspension = s.id, scope = %s.scope, "DWP lifted a suspension");
            Response::new(to_wire(&s))
        })
        .map_err(|e| e.status())
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::SuspensionList>, Status> {
        let who = identity(&request)?;
        let include_lifted = request.into_inner().include_lifted;
        let logged = json!({ "include_lifted": include_lifted });
        self.call(who, "List", logged, move |store, _| {
            store
                .suspensions(!include_lifted)
                .map_err(DirectiveError::Store)
        })
        .await
        .map(|list| {
            Response::new(v1::SuspensionList {
                suspensions: list.iter().map(to_wire).collect(),
            })
        })
        .map_err(|e| e.status())
    }
}

/// Writes coalesced handshake refusals to the audit log, a row per key and
/// window ([`refusals`]); ends, writing what is left, once the listener is
/// gone.
async fn audit_refusals(store: SharedStore, writer: refusals::Writer) {
    writer
        .run(|rows| {
            let store = store.clone();
            async move {
                let written = store
                    .run(move |store| {
                        for row in rows {
                            tracing::warn!(
                                source = %row.key.source,
                                reason = %row.key.reason,
                                count = row.count,
                                "Directive connections refused"
                            );
                            let mut detail = row.detail();
                            detail["service"] = json!("Directive");
                            store.audit(
                                Kind::HandshakeRefused,
                                "unauthenticated",
                                None,
                                &detail,
                                Utc::now(),
                            )?;
                        }
                        Ok::<_, StoreError>(())
                    })
                    .await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot audit refused handshakes"),
                    Err(e) => tracing::error!(error = %e, "cannot audit refused handshakes"),
                }
            }
        })
        .await;
}

/// Why the `Directive` service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} for the Directive service: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("the Directive service stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The `Directive` listener's TLS: the provider's `[tls]` certificate,
/// clients DWP identities from `directive.regulators` under
/// `directive.ca` (and its revocation lists). `None` without
/// `[directive]`.
pub fn server_tls(config: &ProviderConfig) -> Result<Option<ServerTls>, TlsError> {
    config
        .directive
        .as_ref()
        .map(|d| {
            ServerTls::new(
                Arc::new(config.tls.identity.clone()),
                &d.anchors,
                AllowList::new(d.regulators.iter().cloned()),
            )
        })
        .transpose()
}

/// Serves `Directive` on `listener` until `shutdown` is cancelled. The
/// server presents the provider's `[tls]` certificate; clients must be DWP
/// identities from `directive.regulators` under `directive.ca`. Does
/// nothing when `[directive]` is not configured.
pub async fn serve(
    config: Arc<ProviderConfig>,
    store: SharedStore,
    listener: TcpListener,
    shutdown: &Shutdown,
) -> Result<(), ServeError> {
    let Some(server) = server_tls(&config)? else {
        return Ok(());
    };
    serve_reloadable(
        config,
        store,
        listener,
        SharedServerTls::new(server),
        shutdown,
    )
    .await
}

/// [`serve`], taking each connection's TLS from `tls`, which a reload
/// replaces: new connections get the new certificate and anchors,
/// connections already open keep theirs.
pub async fn serve_reloadable(
    config: Arc<ProviderConfig>,
    store: SharedStore,
    listener: TcpListener,
    tls: SharedServerTls,
    shutdown: &Shutdown,
) -> Result<(), ServeError> {
    let Some(directive) = &config.directive else {
        return Ok(());
    };
    let local = listener.local_addr().ok();
    // Refused handshakes are counted as the TLS layer reports them and
    // audited by one task, coalesced per (source, reason), so a flood of
    // them can neither hold up the listener nor grow the disk without bound.
    let (refusals, writer) = refusals::coalesce(refusals::WINDOW);
    let incoming = tls::incoming_reloadable(listener, tls, shutdown, move |addr, why| {
        refusals.record(addr, &why);
    });
    shutdown.spawn(audit_refusals(store.clone(), writer));
    tracing::info!(listen = ?local, regulators = ?directive.regulators, "serving Directive to DWP");
    let (health, health_service) = tonic_health::server::health_reporter();
    let probed = store.clone();
    let probe: crate::common::health::Probe = Arc::new(move || {
        crate::common::health::probe_dir(probed.data_dir())?;
        probed
            .lock()
            .probe_write()
            .map_err(|e| format!("cannot write the provider's database: {e}"))
    });
    crate::common::health::watch(
        health,
        &[<DirectiveServer<DirectiveService> as tonic::server::NamedService>::NAME],
        probe,
        "Directive",
        shutdown,
    );
    let stop = shutdown.clone();
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(DirectiveServer::new(DirectiveService::new(
            config.clone(),
            store,
        )))
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspend(la: &str, all: bool, reason: &str) -> v1::SuspendRequest {
        v1::SuspendRequest {
            la_code: la.into(),
            all,
            reason: reason.into(),
            reference: String::new(),
        }
    }

    #[test]
    fn suspend_requests_are_validated() {
        let ok = SuspendDirective::parse(&suspend("E09000002", false, " audit ")).expect("ok");
        assert_eq!(ok.scope, Scope::La("E09000002".into()));
        assert_eq!(ok.reason, "audit");
        assert_eq!(
            SuspendDirective::parse(&suspend("", true, "x"))
                .expect("all")
                .scope,
            Scope::All
        );
        let long = "x".repeat(MAX_REASON_CHARS + 1);
        let cases: &[(v1::SuspendRequest, &str)] = &[
            (suspend("", false, "x"), "la_code"),
            (suspend("E09000002", true, "x"), "la_code"),
            (suspend("../etc", false, "x"), "la_code"),
            (suspend("E09000002", false, "  "), "reason"),
            (suspend("E09000002", false, &long), "reason"),
            (suspend("E09000002", false, "a\u{1b}[2J"), "reason"),
        ];
        for (request, field) in cases {
            match SuspendDirective::parse(request) {
                Err(DirectiveError::Invalid { field: f, .. }) => assert_eq!(f, *field),
                other => panic!("{request:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn lift_requests_are_validated() {
        let lift = |id, reason: &str| v1::LiftRequest {
            suspension_id: id,
            reason: reason.into(),
        };
        assert_eq!(LiftDirective::parse(&lift(3, "done")).expect("ok").id, 3);
        assert!(LiftDirective::parse(&lift(0, "done")).is_err());
        assert!(LiftDirective::parse(&lift(u64::MAX, "done")).is_err());
        assert!(LiftDirective::parse(&lift(3, "")).is_err());
    }

    #[test]
    fn internal_causes_are_not_sent() {
        let status = DirectiveError::Store(StoreError::NoAgreement {
            la: "/var/secret".into(),
        })
        .status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = DirectiveError::Refused(StoreError::OnlyProviderCanLift { id: 4 }).status();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }
}
