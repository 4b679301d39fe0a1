//! The Prometheus endpoint both programs serve when `[metrics] listen` is
//! configured: `GET /metrics` in the text format, from a
//! [`prometheus_client`] registry, and nothing else (404 for another path,
//! 405 for another method on `/metrics`).
//!
//! It is plain HTTP/1.1 with no authentication, so configuration accepts
//! only a loopback address for it. Connections are bounded
//! ([`MAX_CONNECTIONS`]; more are closed at once), so are the time to read
//! a request's head ([`HEADER_TIMEOUT`]) and a connection's life
//! ([`CONNECTION_LIFETIME`]). The server belongs to the process's shutdown
//! tree: it stops accepting when the token is cancelled and ends its
//! connections gracefully.
//!
//! A scrape only encodes what is in memory: counters are atomics bumped
//! where things happen, and gauges that come from a database are refreshed
//! by the daemon's own task, never by a scrape.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::common::shutdown::Shutdown;

/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection is kept open.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// The content type of the text format `prometheus-client` writes
/// (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The path metrics are served at.
pub const PATH: &str = "/metrics";

/// The registry in the text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; an encoder error would be a bug in a
    // label, and is reported as an empty scrape rather than a panic.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
        text.clear();
    }
    text
}

/// The answer to one request.
fn answer(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != PATH {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(encode(registry))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// Serves `registry` on `listener` until `shutdown` is cancelled. The
/// accept loop and each connection are tasks of `shutdown`.
pub fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: &Shutdown) {
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, "serving Prometheus metrics at /metrics");
    let spawner = shutdown.clone();
    shutdown.spawn(async move {
        let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = spawner.cancelled() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics: too many connections; closed");
                continue;
            };
            let (registry, stop) = (registry.clone(), spawner.clone());
            spawner.spawn(async move {
                let _place = place;
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = answer(&registry, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(connection);
                let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
                tokio::pin!(lifetime);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = stop.cancelled() => {}
                    () = &mut lifetime => {}
                }
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
            });
        }
    });
}
