//! Running it for years (issue 12): Prometheus metrics from the real
//! daemon and the real endpoint, scraped over plain HTTP; the gRPC health
//! service of the endpoint and of the Directive listener, asked with the
//! health protocol's own client over mutual TLS; expiry warnings in
//! `status` and `plan`.

mod common;
#[path = "common/net.rs"]
mod net;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mishare::certs::{Usage, Validity, la_server_name};
use mishare::common::shutdown::Shutdown;
use mishare::config::AuthorityConfig;
use mishare::provider::agreement::{AgreementRequest, NewAgreement};
use mishare::provider::{Daemon, DaemonOptions};
use mishare::tls;
use net::{Net, PROVIDER_ID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a test waits for something the daemon does on its own beat
/// (it polls; nothing is asserted about time).
const PATIENCE: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request on a fresh connection: (status code, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("response");
    let text = String::from_utf8(raw).expect("utf-8");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `series` (name and labels exactly as written).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Scrapes until `series` has a value satisfying `ok`; panics with the last
/// scrape otherwise.
async fn wait_for(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body = scrape(addr).await;
        if let Some(v) = value(&body, series).filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never as expected:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An agreement with `la` signed a year ago whose last day is `days` from
/// today.
fn add_expiring_agreement(net: &Net, la: &str, days: i64) -> chrono::NaiveDate {
    let config = net.config();
    let today = Utc::now().date_naive();
    let signed = (today - chrono::Duration::days(365)).to_string();
    let expires = today + chrono::Duration::days(days);
    let expires_text = expires.to_string();
    let request = AgreementRequest {
        la,
        representative: "Jo Bloggs <jo.bloggs@example.gov.uk>",
        signed: &signed,
        expires: Some(&expires_text),
        document: &net.path("agreement.pdf"),
    };
    let new = NewAgreement::validate(&request, &config, today).expect("valid agreement");
    net.store()
        .add_agreement(&new, "provider:tester", Utc::now())
        .expect("agreement added");
    expires
}

/// Stops `code`'s endpoint and serves it again in this process with
/// `serve_with`: metrics on `metrics` if given. Returns its shutdown.
async fn observed_endpoint(net: &mut Net, code: &str, metrics: Option<TcpListener>) -> Shutdown {
    net.stop_endpoint(code, 1 << 30).await;
    let stem = format!("la-{}", code.to_ascii_lowercase());
    let path = net.path(&stem).join("authority.toml");
    let text = std::fs::read_to_string(&path).expect("authority.toml");
    let config = AuthorityConfig::from_toml(&path, &text).expect("authority config");
    let listener = TcpListener::bind(net.la(code).real).await.expect("bind");
    let stop = Shutdown::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        let options = mishare::authority::ServeOptions {
            metrics,
            ..Default::default()
        };
        mishare::authority::serve_with(config, listener, &serving, options)
            .await
            .expect("the endpoint serves");
    });
    stop
}

/// A client identity made from `net`'s CA for `name`.
fn client_tls(net: &Net, name: &str) -> Arc<rustls::ClientConfig> {
    let issued = net
        .ca
        .issue(name, Usage::Client, Validity::Current)
        .expect("issue");
    let (cert, key) = (net.path("certs/other.pem"), net.path("certs/other.key"));
    std::fs::write(&cert, &issued.cert_pem).expect("cert");
    common::write_private_key(&key, &issued.key_pem);
    let identity = tls::Identity::load(&cert, &key).expect("identity");
    let anchors = tls::TrustAnchors::load(&net.path("certs/ca.pem")).expect("anchors");
    tls::client_config(&identity, &anchors).expect("client config")
}

/// The provider's own client configuration.
fn provider_tls(net: &Net) -> Arc<rustls::ClientConfig> {
    let identity = tls::Identity::load(
        &net.path("certs/provider.pem"),
        &net.path("certs/provider.key"),
    )
    .expect("identity");
    let anchors = tls::TrustAnchors::load(&net.path("certs/ca.pem")).expect("anchors");
    tls::client_config(&identity, &anchors).expect("client config")
}

async fn health_client(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> HealthClient<tonic::transport::Channel> {
    let channel = tls::connect(&format!("https://{addr}"), server_name, config)
        .await
        .expect("connects over mutual TLS");
    HealthClient::new(channel)
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    let answer = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    ServingStatus::try_from(answer.status).expect("a status")
}

/// Asks until `service` reports `want`.
async fn wait_for_health(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = check(client, service).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service:?} stayed {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The real daemon loop with `[metrics]` served: one LA with an agreement
/// gets its file, one without is refused by the gate, and one whose
/// endpoint refuses connections is dead after its one attempt; the
/// counters, the push histogram, the certificates' expiry and the gauges
/// read from the database say so. Only GET /metrics is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_counts_deliveries_refusals_and_pushes_in_its_metrics() {
    let mut net = Net::start(&["E09000002", "E09000030", "E09000009"]).await;
    // E09000009's endpoint refuses connections, and one attempt is all a
    // delivery gets: it is dead after its first push.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    net.las[2].endpoint = closed.local_addr().expect("addr");
    drop(closed);
    net.write_config();
    net.append_config("[delivery]\nmax_attempts = 1\n");
    net.add_agreement("E09000009");
    let expires = add_expiring_agreement(&net, "E09000002", 20);
    // A run due now: the mark 40 days back, records for the latest run.
    let now = Utc::now();
    let mark = net.write_records_for_a_due_run();
    rusqlite::Connection::open(net.config().database_path())
        .expect("db")
        .execute(
            "INSERT INTO schedule_marks (report, handled_until) VALUES ('referrals-monthly', ?1)",
            [mishare::common::time::timestamp(mark)],
        )
        .expect("mark");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = Shutdown::new();
    let mut daemon = Daemon::open(Arc::new(net.config()), DaemonOptions::default(), &shutdown)
        .await
        .expect("daemon opens");
    daemon.serve_metrics(listener);

    // Served before the loop runs: the provider's own certificate, and no
    // delivery yet.
    let body = scrape(addr).await;
    assert_eq!(
        value(
            &body,
            "mishare_deliveries_total{la=\"E09000002\",outcome=\"delivered\"}"
        ),
        None,
        "{body}"
    );
    let own = mishare::common::expiry::certificate_not_after(
        tls::Identity::load(
            &net.path("certs/provider.pem"),
            &net.path("certs/provider.key"),
        )
        .expect("identity")
        .leaf(),
    )
    .expect("its expiry");
    assert_eq!(
        value(
            &body,
            "mishare_certificate_expiry_timestamp_seconds{role=\"provider\",subject=\"provider.test\"}"
        ),
        Some(own.timestamp() as f64),
        "{body}"
    );

    let running = tokio::spawn(daemon.run());
    wait_for(
        addr,
        "mishare_deliveries_total{la=\"E09000002\",outcome=\"delivered\"}",
        |v| v == 1.0,
    )
    .await;
    // Out of attempts, not merely failed.
    wait_for(
        addr,
        "mishare_deliveries_total{la=\"E09000009\",outcome=\"dead\"}",
        |v| v == 1.0,
    )
    .await;
    let body = scrape(addr).await;
    assert_eq!(
        value(
            &body,
            "mishare_deliveries_total{la=\"E09000009\",outcome=\"failed\"}"
        ),
        None,
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "mishare_gate_refusals_total{reason=\"NO_AGREEMENT\"}"
        ),
        Some(1.0),
        "the LA with no agreement: {body}"
    );
    assert_eq!(
        value(&body, "mishare_push_duration_seconds_count"),
        Some(2.0),
        "{body}"
    );
    assert!(
        value(
            &body,
            &format!(
                "mishare_certificate_expiry_timestamp_seconds{{role=\"endpoint\",subject=\"{}\"}}",
                la_server_name("E09000002")
            )
        )
        .is_some_and(|t| t > Utc::now().timestamp() as f64),
        "the endpoint's certificate, seen in the push: {body}"
    );
    // From the database, on the observer's beat.
    wait_for(
        addr,
        "mishare_report_last_success_timestamp_seconds{report=\"referrals-monthly\"}",
        |t| t >= now.timestamp() as f64 - 1.0,
    )
    .await;
    wait_for(addr, "mishare_dead_deliveries", |n| n == 1.0).await;
    let ends = mishare::common::expiry::agreement_ends(expires);
    let body = scrape(addr).await;
    assert_eq!(
        value(
            &body,
            "mishare_agreement_expiry_timestamp_seconds{la=\"E09000002\"}"
        ),
        Some(ends.timestamp() as f64),
        "{body}"
    );
    assert_eq!(
        value(&body, "mishare_outbox_undelivered"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "mishare_outbox_oldest_undelivered_seconds"),
        Some(0.0),
        "{body}"
    );

    // Nothing but GET /metrics.
    assert_eq!(http(addr, "GET", "/").await.0, 404);
    assert_eq!(http(addr, "GET", "/metrics/extra").await.0, 404);
    assert_eq!(http(addr, "POST", "/metrics").await.0, 405);
    assert_eq!(http(addr, "DELETE", "/metrics").await.0, 405);

    // The endpoint's certificate is kept in the state for `status`; the
    // agreement expiring in 20 days is shown, and `plan` names the first
    // run the gate will refuse.
    let status = net.run(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!(
            "expiring within 30 days:\n  warning: the agreement with E09000002 expires within 30 days (it covers up to {})",
            mishare::common::time::timestamp(ends)
        )),
        "{text}"
    );
    let json = net.run(&["status", "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(json["expiring"][0]["subject"], "E09000002", "{json}");
    assert_eq!(json["expiring"][0]["urgency"], "30_days", "{json}");
    let seen: i64 = rusqlite::Connection::open(net.config().database_path())
        .expect("db")
        .query_row(
            "SELECT count(*) FROM peer_certificates WHERE role = 'endpoint' AND la_code = 'E09000002'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(seen, 1);
    let schedule: mishare::cron::Schedule = "0 6 2 * *".parse().expect("the report's schedule");
    let first = mishare::provider::expiry::first_refused_run(&schedule, expires, Utc::now())
        .expect("a refused run");
    let plan = net.run(&["plan"]).await;
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains(&format!(
            "    agreement covers up to {expires}: the gate refuses from the run at {} ({})",
            mishare::common::time::london(first),
            mishare::common::time::timestamp(first)
        )),
        "{text}"
    );

    shutdown.cancel();
    running
        .await
        .expect("the daemon task")
        .expect("the daemon stops cleanly");
    // The metrics listener went with it.
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

/// An endpoint certificate within 7 days of its end is shown as urgent by
/// `status` once a push has seen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_an_endpoint_certificate_about_to_expire() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    // The endpoint's certificate now ends in 5 days.
    let stem = "la-e09000002";
    let issued = net
        .ca
        .issue(
            &la_server_name("E09000002"),
            Usage::Server,
            Validity::ExpiresInDays(5),
        )
        .expect("issue");
    std::fs::write(net.path(&format!("certs/{stem}.pem")), &issued.cert_pem).expect("cert");
    common::write_private_key(&net.path(&format!("certs/{stem}.key")), &issued.key_pem);
    let stop = observed_endpoint(&mut net, "E09000002", None).await;

    let out = net.run(&["send-now", "referrals-monthly"]).await;
    common::assert_status(&out, 0);
    let status = net.run(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    let ends = mishare::common::expiry::certificate_not_after(&issued.cert_der).expect("ends");
    assert!(
        text.contains(&format!(
            "  URGENT: the endpoint certificate of la-e09000002.test expires within 7 days (not after {})",
            mishare::common::time::timestamp(ends)
        )),
        "{text}"
    );
    stop.cancel();
}

/// The endpoint's metrics: an accepted push counts a transfer and its
/// bytes for the provider; a client certificate not on the allow-list
/// counts a refused handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_counts_transfers_bytes_and_refused_handshakes() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = observed_endpoint(&mut net, "E09000002", Some(listener)).await;

    let body = scrape(addr).await;
    let accepted =
        format!("mishare_transfers_total{{provider=\"{PROVIDER_ID}\",outcome=\"accepted\"}}");
    assert_eq!(value(&body, &accepted), None, "{body}");
    assert!(
        value(
            &body,
            &format!(
                "mishare_certificate_expiry_timestamp_seconds{{role=\"authority\",subject=\"{}\"}}",
                la_server_name("E09000002")
            )
        )
        .is_some(),
        "{body}"
    );

    let out = net.run(&["send-now", "referrals-monthly"]).await;
    common::assert_status(&out, 0);
    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    let size = std::fs::metadata(&files[0]).expect("file").len();

    let body = scrape(addr).await;
    assert_eq!(value(&body, &accepted), Some(1.0), "{body}");
    assert_eq!(
        value(
            &body,
            &format!("mishare_received_bytes_total{{provider=\"{PROVIDER_ID}\"}}")
        ),
        Some(size as f64),
        "{body}"
    );
    assert!(
        value(
            &body,
            &format!(
                "mishare_certificate_expiry_timestamp_seconds{{role=\"provider\",subject=\"{PROVIDER_ID}\"}}"
            )
        )
        .is_some(),
        "the provider's certificate, seen on its connection: {body}"
    );
    assert_eq!(value(&body, "mishare_partial_bytes"), Some(0.0), "{body}");
    let refused = "mishare_handshake_refusals_total{reason=\"not_allowed\"}";
    assert_eq!(value(&body, refused), None, "{body}");

    // A certificate from the same CA naming nobody on the allow-list.
    let stranger = client_tls(&net, "stranger.test");
    let endpoint = format!("https://{}", net.la("E09000002").real);
    if let Ok(channel) = tls::connect(&endpoint, &la_server_name("E09000002"), stranger).await {
        // TLS 1.3 may tell the client only at its first request.
        let mut client = HealthClient::new(channel);
        assert!(
            client
                .check(HealthCheckRequest {
                    service: String::new()
                })
                .await
                .is_err(),
            "a stranger was answered"
        );
    }
    // One refusal per connection the stranger made: the channel may
    // connect again for its request after the first was closed.
    wait_for(addr, refused, |v| (1.0..=2.0).contains(&v)).await;
    stop.cancel();
}

/// The endpoint's health, asked over mutual TLS with the health protocol's
/// client: SERVING; NOT_SERVING while its inbox cannot be written (the
/// folder replaced by a file, which stops root too), SERVING again once it
/// can; NOT_SERVING as soon as it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_is_serving_only_while_it_can_write_and_is_not_draining() {
    let mut net = Net::start(&["E09000002"]).await;
    let stop = observed_endpoint(&mut net, "E09000002", None).await;
    let real = net.la("E09000002").real;
    let mut client = health_client(real, &la_server_name("E09000002"), provider_tls(&net)).await;
    wait_for_health(&mut client, "", ServingStatus::Serving).await;
    assert_eq!(
        check(&mut client, "mishare.v1.Exchange").await,
        ServingStatus::Serving
    );
    let unknown = client
        .check(HealthCheckRequest {
            service: "mishare.v1.Nothing".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let inbox = net.path("la-e09000002/inbox");
    let away = net.path("la-e09000002/inbox.away");
    std::fs::rename(&inbox, &away).expect("move the inbox away");
    std::fs::write(&inbox, b"not a folder").expect("a file in its place");
    wait_for_health(&mut client, "", ServingStatus::NotServing).await;
    assert_eq!(
        check(&mut client, "mishare.v1.Exchange").await,
        ServingStatus::NotServing
    );
    std::fs::remove_file(&inbox).expect("remove the file");
    std::fs::rename(&away, &inbox).expect("the inbox back");
    wait_for_health(&mut client, "mishare.v1.Exchange", ServingStatus::Serving).await;

    // Draining: a watcher is told at once.
    assert_a_watcher_sees_the_drain(&mut client, "", &stop).await;
}

/// The Directive listener serves health to DWP too: SERVING for `""` and
/// `mishare.v1.Directive`, NOT_SERVING once the daemon drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_directive_listener_serves_health_and_drains_honestly() {
    let mut net = Net::start(&["E09000002"]).await;
    let listener = net.directive_listener().await;
    let config = Arc::new(net.config());
    let store = mishare::provider::store::SharedStore::open(&config.data_dir).expect("store");
    let stop = Shutdown::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        mishare::provider::directive::serve(config, store, listener, &serving)
            .await
            .expect("Directive serves");
    });
    let dwp = {
        let identity = tls::Identity::load(&net.path("certs/dwp.pem"), &net.path("certs/dwp.key"))
            .expect("identity");
        let anchors = tls::TrustAnchors::load(&net.path("certs/ca.pem")).expect("anchors");
        tls::client_config(&identity, &anchors).expect("client config")
    };
    let mut client = health_client(net.directive.expect("listening"), PROVIDER_ID, dwp).await;
    wait_for_health(&mut client, "", ServingStatus::Serving).await;
    assert_eq!(
        check(&mut client, "mishare.v1.Directive").await,
        ServingStatus::Serving
    );
    assert_a_watcher_sees_the_drain(&mut client, "mishare.v1.Directive", &stop).await;
}

/// A `Watch` of `service` sees SERVING, then NOT_SERVING as soon as `stop`
/// is cancelled (within [`PATIENCE`]).
async fn assert_a_watcher_sees_the_drain(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    stop: &Shutdown,
) {
    let mut watch = client
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    stop.cancel();
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("told while draining")
        .expect("watch")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
}

/// A `[metrics] listen` address already in use stops `provider run` before
/// it serves, naming the address and the file that asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_is_refused_naming_it_and_the_file() {
    let net = Net::start(&["E09000002"]).await;
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr");
    net.append_config(&format!("[metrics]\nlisten = \"{addr}\"\n"));
    let out = tokio::time::timeout(PATIENCE, net.run(&["provider", "run"]))
        .await
        .expect("provider run stops at once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (`metrics.listen` in "))
            && stderr.contains("provider.toml"),
        "{stderr}"
    );
}
