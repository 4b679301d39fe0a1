//! Delivery benchmarks (issue 4). Not tests: they print figures.
//!
//! ```text
//! cargo bench --bench delivery -- fanout [LAS] [RUNS] [ROWS]   one report to LAS endpoints (default 150, 5 runs, 1,000,000 records)
//! cargo bench --bench delivery -- large [MIB] [RUNS]           one MIB-MiB sealed file through one push, against scp (default 1024, 3 runs)
//! cargo bench --bench delivery -- scheduled [LAS] [ROWS] [IDLE_SECS]  the daemon: a scheduled run of four reports, then idle (default 150, 5,000,000, 60)
//! cargo bench --bench delivery -- reload [LAS] [RUNS] [ROWS] [RELOADS]  reload time, and fanout while every endpoint reloads every 100 ms (default 150, 5, 1,000,000, 100)
//! cargo bench --bench delivery -- metrics [LAS] [RUNS] [ROWS] [SCRAPES]  the daemon's push with [metrics] on and off, and scrape times (default 150, 5, 1,000,000, 200)
//! ```
//!
//! **reload** starts LAS endpoints as fanout does, each with a reload
//! handle. First it times RELOADS reloads of one endpoint, its certificate
//! replaced by another before each (so every reload swaps real material;
//! the reload reads authority.toml and every file, builds the TLS
//! configuration and signer, swaps them and writes the audit entry), and
//! prints the median, 99th percentile and maximum. Then it times RUNS
//! fanout runs (`mishare send-now`, as fanout) with no reloads, and RUNS
//! with every endpoint reloaded every 100 ms throughout (one after another,
//! then a 100 ms pause), and prints both medians, their ratio and how many
//! reloads ran.
//!
//! **metrics** starts two sets of LAS endpoints, one serving `[metrics]`
//! and one not, and in each of RUNS rounds (alternating which goes first)
//! runs the daemon (`mishare provider run`, its own process, a fresh
//! data_dir) with a run of one report due at start to one set: with
//! `[metrics]` to the set that serves them, without to the other. Each
//! trial is timed from the daemon's start to the last of LAS receipts
//! stored. After each trial with metrics, it scrapes the daemon's
//! `/metrics` SCRAPES times (a new connection each, as Prometheus does),
//! and one endpoint's too. Every agreement has an expiry, so every
//! per-LA series is there. Prints both medians, their ratio, and the
//! scrapes' median and 99th percentile.
//!
//! **scheduled** starts LAS endpoints as fanout does, configures four
//! reports over ROWS records, sets their schedule marks 40 days back so the
//! daemon (`mishare provider run`, the release binary, its own process) finds
//! a run of each due at start (missed = run-once), and times from the
//! daemon's start to the last of the 4 × LAS receipts stored (polling the
//! database), with the daemon's peak RSS (VmHWM). Then, with nothing left
//! to do, it measures the daemon's CPU time over IDLE_SECS (utime + stime
//! from /proc, at 100 ticks a second).
//!
//! **fanout** starts LAS authority endpoints on loopback (in this process,
//! each on its own port with its own certificate and age key), puts an
//! agreement on file for each, and times `mishare send-now` (the release
//! binary, a separate process) from start to exit, which is after the last
//! receipt is stored. It checks every LA's line says `delivered`.
//!
//! **cutoff** measures how fast a suspension stops a push in flight: a push
//! to one endpoint is held in flight by a proxy that stops forwarding after
//! 64 KiB; the LA is suspended from a connection of its own (as `mishare
//! suspend`, another process, would); the time from that commit to the
//! push's return (refused in flight or at the gate before the Commit) is one
//! trial. Then the
//! suspension is lifted and the stalled connection closed. Prints the median,
//! the 99th percentile (nearest rank) and the maximum.
//!
//! **large** runs `mishare authority run` as its own process, spools one
//! sealed file of MIB MiB in a provider process of its own (this benchmark
//! re-run as a child), and times the push alone: the push's wall time and
//! each side's peak RSS (VmHWM). In the same run it copies the same
//! ciphertext with `scp` over loopback SSH (a private `sshd` on a spare port,
//! needs Debian's openssh-server) and times that with GNU time. The endpoint
//! fsyncs what it receives; scp does not, so the comparison favours scp.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mishare::certs::{DevCa, Usage, Validity, la_server_name};
use mishare::common::shutdown::Shutdown;
use mishare::config::{AuthorityConfig, ProviderConfig};
use mishare::provider::agreement::{AgreementRequest, NewAgreement};
use mishare::provider::store::{SharedStore, Store};

const PROVIDER_ID: &str = "provider.test";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("fanout") => fanout(num(1, 150) as usize, num(2, 5) as usize, num(3, 1_000_000)),
        Some("large") => large(num(1, 1024), num(2, 3) as usize),
        Some("scheduled") => scheduled(num(1, 150) as usize, num(2, 5_000_000), num(3, 60)),
        Some("large-provider") => large_provider(Path::new(&args[1]), num(2, 1024)),
        Some("cutoff") => cutoff(num(1, 100) as usize),
        Some("reload") => reload(
            num(1, 150) as usize,
            num(2, 5) as usize,
            num(3, 1_000_000),
            num(4, 100) as usize,
        ),
        Some("metrics") => metrics(
            num(1, 150) as usize,
            num(2, 5) as usize,
            num(3, 1_000_000),
            num(4, 200) as usize,
        ),
        _ => {
            eprintln!(
                "usage: cargo bench --bench delivery -- fanout [LAS] [RUNS] [ROWS] | large [MIB] \
                 [RUNS] | scheduled [LAS] [ROWS] [IDLE_SECS] | cutoff [TRIALS] | reload [LAS] \
                 [RUNS] [ROWS] [RELOADS] | metrics [LAS] [RUNS] [ROWS] [SCRAPES]"
            );
            std::process::exit(2);
        }
    }
}

/// A provider directory: PKI, reference data, the provider's certificate.
struct Setup {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["reference", "certs", "data", "keys"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        std::fs::write(dir.path().join("agreement.pdf"), b"%PDF signed\n").expect("doc");
        let ca = DevCa::new("bench CA").expect("ca");
        std::fs::write(dir.path().join("certs/ca.pem"), ca.cert_pem()).expect("ca");
        let setup = Self { dir, ca };
        setup.pair("provider", PROVIDER_ID, Usage::ClientAndServer);
        setup
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pair(&self, stem: &str, name: &str, usage: Usage) {
        let issued = self
            .ca
            .issue(name, usage, Validity::Current)
            .expect("issue");
        std::fs::write(self.path(&format!("certs/{stem}.pem")), &issued.cert_pem).expect("cert");
        let key = self.path(&format!("certs/{stem}.key"));
        std::fs::write(&key, &issued.key_pem).expect("key");
        // Owner-only: a configuration naming an open key is refused.
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
    }

    /// An endpoint directory and authority.toml for `code`; returns the
    /// config path and the LA's age recipient.
    fn authority(&self, code: &str, listen: &str) -> (PathBuf, String) {
        let stem = format!("la-{}", code.to_ascii_lowercase());
        self.pair(&stem, &la_server_name(code), Usage::Server);
        let recipient =
            mishare::seal::generate(&self.path(&format!("keys/{code}.key"))).expect("age key");
        let dir = self.path(&stem);
        std::fs::create_dir(&dir).expect("mkdir");
        let path = dir.join("authority.toml");
        // For experiments: MISHARE_BENCH_AUTHORITY_EXTRA="sync_every_bytes = …".
        let extra = std::env::var("MISHARE_BENCH_AUTHORITY_EXTRA").unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "code = \"{code}\"\nlisten = \"{listen}\"\ninbox = \"inbox\"\ndata_dir = \"state\"\n\
                 max_file_bytes = 4294967296\n{extra}\n[tls]\ncert = \"../certs/{stem}.pem\"\n\
                 key = \"../certs/{stem}.key\"\nca = \"../certs/ca.pem\"\n\n\
                 [[provider]]\nid = \"{PROVIDER_ID}\"\nname = \"Bench Provider\"\n"
            ),
        )
        .expect("authority.toml");
        (path, recipient)
    }

    /// provider.toml with one `[[authority]]` per (code, address, recipient).
    fn provider_config(&self, las: &[(String, SocketAddr, String)]) -> PathBuf {
        let mut reference = String::from("la_code,la_name,cpa\n");
        let mut text = String::from(
            "provider = \"Bench Provider\"\ndata_dir = \"var/provider\"\n\
             contract_areas = [\"London East\"]\nreference = \"reference/las.csv\"\n\n\
             [tls]\ncert = \"certs/provider.pem\"\nkey = \"certs/provider.key\"\nca = \"certs/ca.pem\"\n\n",
        );
        for (code, addr, recipient) in las {
            reference.push_str(&format!("{code},Council {code},London East\n"));
            text.push_str(&format!(
                "[[authority]]\ncode = \"{code}\"\nendpoint = \"https://{addr}\"\n\
                 server_name = \"{}\"\nrecipients = [\"{recipient}\"]\n\n",
                la_server_name(code)
            ));
        }
        text.push_str(
            "[[report]]\nname = \"fanout\"\nsource = { records = \"data/participants.csv\" }\n\
             measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\ncols = \"period\"\n\
             period = \"month\"\nschedule = \"0 6 2 * *\"\nrecipients = \"all\"\n\
             split_by_recipient = true\nclassification = \"internal\"\nmissed = \"run-once\"\n",
        );
        std::fs::write(self.path("reference/las.csv"), reference).expect("las");
        let path = self.path("provider.toml");
        std::fs::write(&path, text).expect("provider.toml");
        path
    }

    fn add_agreements(&self, config: &ProviderConfig, codes: &[String]) {
        let mut store = Store::open(&config.data_dir).expect("store");
        let today = Utc::now().date_naive();
        let signed = (today - chrono::Duration::days(30)).to_string();
        let document = self.path("agreement.pdf");
        for code in codes {
            let request = AgreementRequest {
                la: code,
                representative: "Jo Bloggs <jo@example.gov.uk>",
                signed: &signed,
                expires: None,
                document: &document,
            };
            let new = NewAgreement::validate(&request, config, today).expect("valid");
            store
                .add_agreement(&new, "bench", Utc::now())
                .expect("added");
        }
    }
}

type Endpoints = (Vec<String>, Vec<(String, SocketAddr, String)>, Shutdown);

/// `n` authority endpoints in this process, each on its own port.
fn endpoints(runtime: &tokio::runtime::Runtime, setup: &Setup, n: usize) -> Endpoints {
    let codes: Vec<String> = (0..n).map(|i| format!("E{:08}", 9_100_000 + i)).collect();
    let mut las = Vec::new();
    let stops = Shutdown::new();
    for code in &codes {
        let (path, recipient) = setup.authority(code, "127.0.0.1:0");
        let config = AuthorityConfig::load(&path).expect("authority config");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = stops.clone();
        runtime.spawn(async move {
            mishare::authority::serve(config, listener, &stop)
                .await
                .expect("endpoint");
        });
        las.push((code.clone(), addr, recipient));
    }
    (codes, las, stops)
}

/// [`endpoints`], each served with a reload handle.
fn reloadable_endpoints(
    runtime: &tokio::runtime::Runtime,
    setup: &Setup,
    n: usize,
) -> (Endpoints, Vec<mishare::common::reload::ReloadHandle>) {
    let codes: Vec<String> = (0..n).map(|i| format!("E{:08}", 9_100_000 + i)).collect();
    let mut las = Vec::new();
    let mut handles = Vec::new();
    let stops = Shutdown::new();
    for code in &codes {
        let (path, recipient) = setup.authority(code, "127.0.0.1:0");
        let config = AuthorityConfig::load(&path).expect("authority config");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (handle, reloads) = mishare::common::reload::channel();
        let stop = stops.clone();
        runtime.spawn(async move {
            let options = mishare::authority::ServeOptions {
                reloads: Some(reloads),
                ..Default::default()
            };
            mishare::authority::serve_with(config, listener, &stop, options)
                .await
                .expect("endpoint");
        });
        las.push((code.clone(), addr, recipient));
        handles.push(handle);
    }
    ((codes, las, stops), handles)
}

/// `mishare send-now fanout` once; its wall time, checking every LA's file
/// was delivered.
fn send_fanout(config_path: &Path, n: usize) -> f64 {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["send-now", "fanout", "--config"])
        .arg(config_path)
        .env("USER", "bench")
        .output()
        .expect("send-now");
    let elapsed = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let delivered = stdout.lines().filter(|l| l.contains(" delivered ")).count();
    assert!(
        output.status.success() && delivered == n,
        "{delivered} of {n} delivered\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn reload(n: usize, runs: usize, rows: u64, reloads: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::new();
    let ((codes, las, stops), handles) = reloadable_endpoints(&runtime, &setup, n);
    write_records(&setup.path("data/participants.csv"), rows, &codes);
    let config_path = setup.provider_config(&las);
    let config = ProviderConfig::load(&config_path).expect("provider config");
    setup.add_agreements(&config, &codes);

    // Reload time: one endpoint, its certificate alternating between two.
    let stem = format!("la-{}", codes[0].to_ascii_lowercase());
    let cert = setup.path(&format!("certs/{stem}.pem"));
    let key = setup.path(&format!("certs/{stem}.key"));
    let first = (
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    let second = setup
        .ca
        .issue(&la_server_name(&codes[0]), Usage::Server, Validity::Current)
        .expect("issue");
    let second = (second.cert_pem.into_bytes(), second.key_pem.into_bytes());
    let mut times = Vec::new();
    for i in 0..reloads {
        let (c, k) = if i % 2 == 0 { &second } else { &first };
        std::fs::write(&cert, c).expect("cert");
        std::fs::write(&key, k).expect("key");
        let started = Instant::now();
        let done = runtime.block_on(handles[0].reload()).expect("reloads");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(done.changed, ["tls.cert"]);
    }
    let worst = max(&times);
    let median_ms = median(&mut times);
    let p99 = times[(times.len() * 99).div_ceil(100).saturating_sub(1)];
    println!(
        "reload: {reloads} reloads of one endpoint (certificate swapped each time): median \
         {median_ms:.2} ms, p99 {p99:.2} ms, max {worst:.2} ms"
    );

    println!("fanout: {n} LAs, {rows} records, {runs} runs without reloads, then {runs} with");
    let mut quiet = Vec::new();
    for run in 1..=runs {
        let t = send_fanout(&config_path, n);
        println!("  without reloads, run {run}: {t:.3} s");
        quiet.push(t);
    }
    let reloading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reloader = {
        let (reloading, count, handles) = (reloading.clone(), count.clone(), handles.clone());
        runtime.spawn(async move {
            while reloading.load(std::sync::atomic::Ordering::Relaxed) {
                for h in &handles {
                    h.reload().await.expect("reloads");
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut busy = Vec::new();
    for run in 1..=runs {
        let t = send_fanout(&config_path, n);
        println!("  with reloads, run {run}: {t:.3} s");
        busy.push(t);
    }
    reloading.store(false, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(reloader).expect("reloader");
    let total: f64 = busy.iter().sum();
    let (quiet, busy) = (median(&mut quiet), median(&mut busy));
    println!(
        "fanout median without reloads {quiet:.3} s, with every endpoint reloaded every 100 ms \
         {busy:.3} s: ratio {:.2} ({} reloads during {total:.1} s of pushing)",
        busy / quiet,
        count.load(std::sync::atomic::Ordering::Relaxed)
    );
    stops.cancel();
}

/// A TCP proxy that forwards to `target` until a connection has sent
/// `limit` bytes towards it, then holds it (telling `stalled`) until
/// `release` is notified, and closes it.
async fn stall_proxy(
    target: SocketAddr,
    limit: u64,
) -> (
    SocketAddr,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stalled = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (stalled.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (s, r) = (s.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut sent = 0u64;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let allowed = usize::try_from(limit.saturating_sub(sent))
                        .unwrap_or(usize::MAX)
                        .min(n);
                    if sw.write_all(&buf[..allowed]).await.is_err() {
                        break;
                    }
                    sent += allowed as u64;
                    if allowed < n {
                        s.notify_one();
                        r.notified().await;
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    (addr, stalled, release)
}

fn cutoff(trials: usize) {
    use mishare::provider::push::{Courier, Delivered, PushOptions, deliver};
    use mishare::provider::store::{Maker, Scope};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::new();
    let (codes, las, stops) = endpoints(&runtime, &setup, 1);
    let (proxy, stalled, release) = runtime.block_on(stall_proxy(las[0].1, 64 * 1024));
    let via_proxy = vec![(las[0].0.clone(), proxy, las[0].2.clone())];
    let config = Arc::new(
        ProviderConfig::load(&setup.provider_config(&via_proxy)).expect("provider config"),
    );
    setup.add_agreements(&config, &codes);
    let la = codes[0].clone();
    let store = SharedStore::open(&config.data_dir).expect("store");
    let mut latencies = Vec::with_capacity(trials);
    runtime.block_on(async {
        let options = PushOptions::default();
        let watch = mishare::provider::watch::StateWatch::start(
            store.clone(),
            options.watch_interval,
            &Shutdown::new(),
        )
        .await
        .expect("watch");
        let courier = Courier::new(
            config.clone(),
            store.clone(),
            watch,
            "bench",
            options,
            Default::default(),
        )
        .expect("courier");
        // Larger than every buffer between the feed and the stalled proxy
        // (the channel, HTTP/2's windows, both sockets), so the push is
        // still streaming when the suspension comes.
        let plaintext: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        for trial in 0..trials {
            let run = store
                .lock()
                .start_run("fanout", "2026-10", "bench", Utc::now())
                .expect("run");
            let delivery = mishare::provider::outbox::spool(
                &store,
                mishare::provider::outbox::Addressed {
                    run_id: run,
                    la: &la,
                    report: "fanout",
                    period: "2026-10",
                    classification: mishare::sanitiser::Classification::Internal,
                },
                &plaintext[..],
                &config.authorities[0].recipients,
                mishare::provider::outbox::Release {
                    table: &bench_release(&la),
                    findings: &[],
                },
                "bench",
                Utc::now(),
            )
            .expect("spool");
            let (c, d) = (courier.clone(), delivery.clone());
            let push = tokio::spawn(async move { deliver(&c, &d).await });
            stalled.notified().await;
            let (data_dir, code) = (config.data_dir.clone(), la.clone());
            let (id, started) = tokio::task::spawn_blocking(move || {
                let mut operator = Store::open(&data_dir).expect("store");
                let s = operator
                    .suspend(
                        Scope::La(code),
                        Maker::Provider,
                        "cut-off bench",
                        None,
                        "bench",
                        Utc::now(),
                    )
                    .expect("suspend");
                (s.id, Instant::now())
            })
            .await
            .expect("join");
            let outcome = push.await.expect("push task");
            let elapsed = started.elapsed();
            assert!(
                matches!(&outcome, Delivered::Refused { stage, .. }
                    if stage == "in_flight" || stage == "before_commit"),
                "trial {trial}: {outcome:?}"
            );
            latencies.push(elapsed.as_secs_f64() * 1000.0);
            release.notify_waiters();
            let data_dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || {
                Store::open(&data_dir)
                    .expect("store")
                    .lift(id, Maker::Provider, "bench", Utc::now())
                    .expect("lift")
            })
            .await
            .expect("join");
        }
    });
    stops.cancel();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "cutoff: {trials} trials, suspension committed -> push cut off: median {:.1} ms, p99 {:.1} ms, max {:.1} ms; target p99 < 250 ms: {}",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1],
        if at(0.99) < 250.0 { "MET" } else { "NOT MET" }
    );
}

fn fanout(n: usize, runs: usize, rows: u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::new();
    let (codes, las, stops) = endpoints(&runtime, &setup, n);
    write_records(&setup.path("data/participants.csv"), rows, &codes);
    let config_path = setup.provider_config(&las);
    let config = ProviderConfig::load(&config_path).expect("provider config");
    setup.add_agreements(&config, &codes);

    println!("fanout: {n} LAs, each its own endpoint on loopback; {rows} records; {runs} runs");
    let mut times = Vec::new();
    for run in 1..=runs {
        let elapsed = send_fanout(&config_path, n);
        println!("  run {run}: {elapsed:.3} s, {n} files delivered");
        times.push(elapsed);
    }
    let median = median(&mut times);
    println!(
        "fanout median {median:.3} s (min {:.3}, max {:.3}) = {:.0} files/s; target < 3 s: {}",
        times[0],
        times[times.len() - 1],
        n as f64 / median,
        if median < 3.0 { "MET" } else { "NOT MET" }
    );
    stops.cancel();
}

/// Participant records spread over `codes`, referred in the last two years.
fn scheduled(n: usize, rows: u64, idle_secs: u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::new();
    let (codes, las, stops) = endpoints(&runtime, &setup, n);
    write_records(&setup.path("data/participants.csv"), rows, &codes);
    let config_path = setup.provider_config(&las);
    let mut text = std::fs::read_to_string(&config_path).expect("provider.toml");
    for (name, measure, rows) in [
        ("starts", "job_starts", "payment_group"),
        ("starts-disability", "job_starts", "disability"),
        ("referrals-disability", "referrals", "disability"),
    ] {
        text.push_str(&format!(
            "\n[[report]]\nname = \"{name}\"\nsource = {{ records = \"data/participants.csv\" }}\n\
             measure = \"{measure}\"\nview = \"counts\"\nrows = \"{rows}\"\ncols = \"period\"\n\
             period = \"month\"\nschedule = \"0 6 2 * *\"\nrecipients = \"all\"\n\
             split_by_recipient = true\nclassification = \"internal\"\nmissed = \"run-once\"\n"
        ));
    }
    std::fs::write(&config_path, text).expect("provider.toml");
    let config = ProviderConfig::load(&config_path).expect("provider config");
    setup.add_agreements(&config, &codes);
    {
        let store = Store::open(&config.data_dir).expect("store");
        drop(store);
        let conn = rusqlite::Connection::open(config.database_path()).expect("db");
        let back = mishare::common::time::timestamp(Utc::now() - chrono::Duration::days(40));
        for report in &config.reports {
            conn.execute(
                "INSERT INTO schedule_marks (report, handled_until) VALUES (?1, ?2)",
                [&report.name, &back],
            )
            .expect("mark");
        }
    }
    let want = (config.reports.len() * n) as i64;
    println!(
        "scheduled: {} reports x {n} LAs on loopback; {rows} records; the daemon finds each run due at start",
        config.reports.len()
    );
    let started = Instant::now();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["provider", "run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("provider run");
    let conn = rusqlite::Connection::open(config.database_path()).expect("db");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0) };
    loop {
        if count("SELECT count(*) FROM receipts") >= want {
            break;
        }
        let settled = count("SELECT count(*) FROM report_runs WHERE spooled_at IS NULL") == 0
            && count(
                "SELECT count(*) FROM deliveries WHERE state IN ('queued', 'sending', 'failed')",
            ) == 0;
        assert!(
            !settled || count("SELECT count(*) FROM report_runs") < 4,
            "the runs are done but only {} of {want} files were delivered",
            count("SELECT count(*) FROM receipts")
        );
        if let Some(status) = daemon.try_wait().expect("try_wait") {
            panic!("the daemon exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not done in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = count("SELECT count(*) FROM deliveries WHERE state = 'delivered'");
    let rss = vm_hwm_kib(daemon.id()) / 1024.0;
    println!(
        "scheduled: start to last receipt {elapsed:.3} s ({delivered} of {want} delivered); \
         target < 10 s: {}",
        if elapsed < 10.0 { "MET" } else { "NOT MET" }
    );
    println!(
        "scheduled: daemon peak RSS {rss:.1} MiB; target < 128 MiB: {}",
        if rss < 128.0 { "MET" } else { "NOT MET" }
    );

    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // Fields after the command name (which may hold spaces): utime and
        // stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
    };
    let before = cpu(daemon.id());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let ticks = cpu(daemon.id()) - before;
    let seconds = ticks as f64 / 100.0;
    println!(
        "idle: {seconds:.2} s of CPU over {idle_secs} s ({:.3}% of one core)",
        100.0 * seconds / idle_secs as f64
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    stops.cancel();
}

fn write_records(path: &Path, rows: u64, codes: &[String]) {
    const GROUPS: [&str; 9] = mishare::reference::DEFAULT_PAYMENT_GROUPS;
    let start = Utc::now().date_naive() - chrono::Duration::days(730);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("records"));
    out.write_all(
        b"participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
          job_start_date,job_outcome_date,first_sustainment_date\n",
    )
    .expect("write");
    let mut state: u64 = 42;
    let mut next = |below: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    };
    for i in 0..rows {
        let la = &codes[next(codes.len() as u64) as usize];
        let group = GROUPS[next(GROUPS.len() as u64) as usize];
        let day = start + chrono::Duration::days(next(730) as i64);
        writeln!(out, "P{i:09},{la},{group},N,{day},,,,").expect("write");
    }
    out.flush().expect("flush");
}

fn large(mib: u64, runs: usize) {
    let setup = Setup::new();
    let port = free_port();
    let code = "E09000002".to_string();
    let (authority_path, recipient) = setup.authority(&code, &format!("127.0.0.1:{port}"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config_path = setup.provider_config(&[(code.clone(), addr, recipient)]);
    let config = ProviderConfig::load(&config_path).expect("provider config");
    setup.add_agreements(&config, std::slice::from_ref(&code));
    let sshd = Sshd::start(setup.dir.path());

    println!(
        "large: one sealed file of {mib} MiB through one push, {runs} runs, against scp over loopback SSH"
    );
    let (mut ours, mut scps) = (Vec::new(), Vec::new());
    let (mut provider_rss, mut authority_rss, mut scp_rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let mut authority = Command::new(env!("CARGO_BIN_EXE_mishare"))
            .args(["authority", "run", "--config"])
            .arg(&authority_path)
            .stderr(Stdio::null())
            .spawn()
            .expect("authority");
        wait_for_port(addr);
        let child = Command::new(std::env::current_exe().expect("exe"))
            .args(["large-provider"])
            .arg(setup.dir.path())
            .arg(mib.to_string())
            .output()
            .expect("provider child");
        let report = String::from_utf8_lossy(&child.stdout).to_string();
        assert!(
            child.status.success(),
            "{report}\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        let field = |name: &str| -> f64 {
            report
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {report}"))
        };
        let endpoint_hwm = vm_hwm_kib(authority.id());
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(authority.id().to_string())
            .status();
        let _ = authority.wait();
        ours.push(field("push_s"));
        provider_rss.push(field("vmhwm_kib") / 1024.0);
        authority_rss.push(endpoint_hwm / 1024.0);

        let inbox = setup.path("la-e09000002/inbox").join(PROVIDER_ID);
        let file = newest(&inbox);
        if let Some(sshd) = &sshd {
            let (secs, kib) = sshd.copy(&file, &setup.path("scp-dest.bin"));
            scps.push(secs);
            scp_rss.push(kib / 1024.0);
            let _ = std::fs::remove_file(setup.path("scp-dest.bin"));
        }
        println!(
            "  run {run}: mishare push {:.2} s (provider RSS {:.1} MiB, endpoint RSS {:.1} MiB){}",
            ours[ours.len() - 1],
            provider_rss[provider_rss.len() - 1],
            authority_rss[authority_rss.len() - 1],
            scps.last()
                .map_or(String::new(), |s| format!("; scp {s:.2} s"))
        );
        let _ = std::fs::remove_file(file);
    }
    let mb = (mib * 1024 * 1024) as f64 / 1e6;
    let m = median(&mut ours);
    println!(
        "mishare push: median {m:.2} s = {:.0} MB/s; peak RSS provider {:.1} MiB, endpoint {:.1} MiB (target < 64 MiB each)",
        mb / m,
        max(&provider_rss),
        max(&authority_rss)
    );
    if scps.is_empty() {
        println!("scp: not measured (install Debian's openssh-server to compare)");
    } else {
        let s = median(&mut scps);
        println!(
            "scp:          median {s:.2} s = {:.0} MB/s; peak RSS scp {:.1} MiB",
            mb / s,
            max(&scp_rss)
        );
        println!(
            "throughput ratio mishare/scp = {:.2} (target >= 1: {})",
            s / m,
            if s / m >= 1.0 { "MET" } else { "NOT MET" }
        );
    }
}

/// The provider side of `large`, in a process of its own: spools MIB MiB of
/// plaintext sealed (streamed, never in memory) and times the push alone.
fn large_provider(dir: &Path, mib: u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let config = Arc::new(ProviderConfig::load(&dir.join("provider.toml")).expect("config"));
    let authority = &config.authorities[0];
    let store = SharedStore::open(&config.data_dir).expect("store");
    let now = Utc::now();
    let run_id = store
        .lock()
        .start_run("fanout", "2026-10", "bench", now)
        .expect("run");
    let plaintext = Pattern {
        left: mib * 1024 * 1024,
        state: 7,
    };
    let delivery = mishare::provider::outbox::spool(
        &store,
        mishare::provider::outbox::Addressed {
            run_id,
            la: &authority.code,
            report: "fanout",
            period: "2026-10",
            classification: mishare::sanitiser::Classification::Internal,
        },
        plaintext,
        &authority.recipients,
        mishare::provider::outbox::Release {
            table: &bench_release(&authority.code),
            findings: &[],
        },
        "bench",
        now,
    )
    .expect("spool");
    let outcome = runtime.block_on(async {
        let options = mishare::provider::push::PushOptions {
            chunk_bytes: mishare::provider::push::MAX_CHUNK_BYTES,
            ..Default::default()
        };
        let watch = mishare::provider::watch::StateWatch::start(
            store.clone(),
            options.watch_interval,
            &Shutdown::new(),
        )
        .await
        .expect("watch");
        let courier = mishare::provider::push::Courier::new(
            config.clone(),
            store,
            watch,
            "bench",
            options,
            Default::default(),
        )
        .expect("courier");
        let started = Instant::now();
        let outcome = mishare::provider::push::deliver(&courier, &delivery).await;
        (outcome, started.elapsed())
    });
    let (delivered, elapsed) = outcome;
    assert!(
        matches!(
            delivered,
            mishare::provider::push::Delivered::Delivered { .. }
        ),
        "{delivered:?}"
    );
    println!(
        "push_s={:.3} vmhwm_kib={}",
        elapsed.as_secs_f64(),
        vm_hwm_kib(std::process::id())
    );
}

/// Incompressible-looking plaintext from a fast generator.
struct Pattern {
    left: u64,
    state: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A private sshd on a spare loopback port, for scp.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Option<Self> {
        if !Path::new("/usr/sbin/sshd").exists() {
            return None;
        }
        let ssh = dir.join("ssh");
        std::fs::create_dir_all(&ssh).expect("mkdir");
        for key in ["host", "client"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(ssh.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
        }
        std::fs::copy(ssh.join("client.pub"), ssh.join("authorized_keys")).expect("keys");
        let port = free_port();
        let config = ssh.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n\
                 StrictModes no\nPidFile none\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
                ssh.join("host").display(),
                ssh.join("authorized_keys").display()
            ),
        )
        .expect("sshd_config");
        std::fs::create_dir_all("/run/sshd").ok();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd");
        wait_for_port(format!("127.0.0.1:{port}").parse().expect("addr"));
        Some(Self {
            child,
            port,
            key: ssh.join("client"),
        })
    }

    /// Copies `from` to `to` over loopback: (seconds, scp's peak RSS in KiB).
    fn copy(&self, from: &Path, to: &Path) -> (f64, f64) {
        let output = Command::new("/usr/bin/time")
            .args(["-f", "%e %M", "scp", "-q", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-P",
                &self.port.to_string(),
            ])
            .arg(from)
            .arg(format!("root@127.0.0.1:{}", to.display()))
            .output()
            .expect("scp");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "scp: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        let mut parts = last
            .split_whitespace()
            .map(|p| p.parse::<f64>().expect("time output"));
        (parts.next().expect("secs"), parts.next().expect("kib"))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

/// Peak resident set size of a process, from /proc.
fn vm_hwm_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn newest(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("inbox")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .expect("a delivered file")
}

/// A release record for a file spooled straight through the outbox (the
/// bench measures bytes on the wire, not figures).
fn bench_release(la: &str) -> mishare::provider::ledger::ReleaseTable {
    use mishare::provider::ledger::{Axis, Figures, ReleaseTable};
    ReleaseTable {
        measure: mishare::sanitiser::Measure::Referrals,
        view: mishare::sanitiser::View::Counts,
        range: "2026-10".parse().expect("range"),
        rows: Axis {
            dimension: "period".into(),
            codes: vec!["2026-10".into()],
        },
        cols: None,
        fixed: vec![("la_code".into(), la.into())],
        figures: Figures::Counts {
            cells: vec![vec![200]],
            row_totals: vec![200],
            col_totals: vec![200],
            total: 200,
        },
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// One scrape of `/metrics` on a new connection: (milliseconds, body bytes).
fn scrape_once(addr: SocketAddr) -> (f64, usize) {
    let started = Instant::now();
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).expect("response");
    let took = started.elapsed().as_secs_f64() * 1000.0;
    assert!(body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    (took, body.len())
}

fn metrics(n: usize, runs: usize, rows: u64, scrapes: usize) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = Setup::new();
    // Two sets of endpoints: "on" serves [metrics], "off" does not.
    let mut sets = Vec::new();
    let stops = Shutdown::new();
    let mut endpoint_metrics = None;
    for (set, observed) in [(0usize, false), (1, true)] {
        let mut las = Vec::new();
        for i in 0..n {
            let code = format!("E{:08}", 9_100_000 + set * 10_000 + i);
            let (path, recipient) = setup.authority(&code, "127.0.0.1:0");
            let config = AuthorityConfig::load(&path).expect("authority config");
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let metrics = observed.then(|| {
                runtime
                    .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                    .expect("bind")
            });
            if endpoint_metrics.is_none() {
                endpoint_metrics = metrics.as_ref().map(|l| l.local_addr().expect("addr"));
            }
            let stop = stops.clone();
            runtime.spawn(async move {
                let options = mishare::authority::ServeOptions {
                    metrics,
                    ..Default::default()
                };
                mishare::authority::serve_with(config, listener, &stop, options)
                    .await
                    .expect("endpoint");
            });
            las.push((code, addr, recipient));
        }
        sets.push(las);
    }
    let all: Vec<_> = sets.iter().flatten().cloned().collect();
    // Reference data for every LA of both sets.
    setup.provider_config(&all);
    let mut configs = Vec::new();
    for (set, las) in sets.iter().enumerate() {
        let codes: Vec<String> = las.iter().map(|(c, _, _)| c.clone()).collect();
        write_records(
            &setup.path(&format!("data/participants-{set}.csv")),
            rows,
            &codes,
        );
        configs.push(codes);
    }
    println!(
        "metrics: {n} LAs per set on loopback, {rows} records, {runs} rounds; the daemon with \
         [metrics] on and off, interleaved"
    );
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut scrape_ms = Vec::new();
    let mut endpoint_ms = Vec::new();
    let mut body_bytes = 0;
    for round in 0..runs {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for set in order {
            let las = &sets[set];
            let metrics_addr = (set == 1).then(|| {
                let port = free_port();
                SocketAddr::from(([127, 0, 0, 1], port))
            });
            let mut text = format!(
                "provider = \"Bench Provider\"\ndata_dir = \"var/provider-{round}-{set}\"\n\
                 contract_areas = [\"London East\"]\nreference = \"reference/las.csv\"\n\n\
                 [tls]\ncert = \"certs/provider.pem\"\nkey = \"certs/provider.key\"\n\
                 ca = \"certs/ca.pem\"\n\n"
            );
            if let Some(addr) = metrics_addr {
                text.push_str(&format!("[metrics]\nlisten = \"{addr}\"\n\n"));
            }
            for (code, addr, recipient) in las {
                text.push_str(&format!(
                    "[[authority]]\ncode = \"{code}\"\nendpoint = \"https://{addr}\"\n\
                     server_name = \"{}\"\nrecipients = [\"{recipient}\"]\n\n",
                    la_server_name(code)
                ));
            }
            text.push_str(&format!(
                "[[report]]\nname = \"fanout\"\nsource = {{ records = \"data/participants-{set}.csv\" }}\n\
                 measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\ncols = \"period\"\n\
                 period = \"month\"\nschedule = \"0 6 2 * *\"\nrecipients = \"all\"\n\
                 split_by_recipient = true\nclassification = \"internal\"\nmissed = \"run-once\"\n"
            ));
            let config_path = setup.path(&format!("provider-{round}-{set}.toml"));
            std::fs::write(&config_path, text).expect("provider.toml");
            let config = ProviderConfig::load(&config_path).expect("provider config");
            {
                let mut store = Store::open(&config.data_dir).expect("store");
                let today = Utc::now().date_naive();
                let signed = (today - chrono::Duration::days(30)).to_string();
                let expires = (today + chrono::Duration::days(365)).to_string();
                for code in &configs[set] {
                    let request = AgreementRequest {
                        la: code,
                        representative: "Jo Bloggs <jo@example.gov.uk>",
                        signed: &signed,
                        expires: Some(&expires),
                        document: &setup.path("agreement.pdf"),
                    };
                    let new = NewAgreement::validate(&request, &config, today).expect("valid");
                    store
                        .add_agreement(&new, "bench", Utc::now())
                        .expect("added");
                }
                let back =
                    mishare::common::time::timestamp(Utc::now() - chrono::Duration::days(40));
                rusqlite::Connection::open(config.database_path())
                    .expect("db")
                    .execute(
                        "INSERT INTO schedule_marks (report, handled_until) VALUES ('fanout', ?1)",
                        [&back],
                    )
                    .expect("mark");
            }
            let started = Instant::now();
            let mut daemon = Command::new(env!("CARGO_BIN_EXE_mishare"))
                .args(["provider", "run", "--config"])
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("provider run");
            let conn = rusqlite::Connection::open(config.database_path()).expect("db");
            loop {
                let receipts: i64 = conn
                    .query_row("SELECT count(*) FROM receipts", [], |r| r.get(0))
                    .unwrap_or(0);
                if receipts >= n as i64 {
                    break;
                }
                if let Some(status) = daemon.try_wait().expect("try_wait") {
                    panic!("the daemon exited: {status}");
                }
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "not done in 10 minutes"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let elapsed = started.elapsed().as_secs_f64();
            times[set].push(elapsed);
            let label = if set == 1 { "on " } else { "off" };
            print!("  round {}: metrics {label} {elapsed:.3} s", round + 1);
            if let Some(addr) = metrics_addr {
                // Let the observer read the database once, so every gauge is set.
                std::thread::sleep(mishare::provider::metrics::OBSERVE_EVERY);
                let mut these = Vec::with_capacity(scrapes);
                for _ in 0..scrapes {
                    let (ms, bytes) = scrape_once(addr);
                    these.push(ms);
                    body_bytes = bytes;
                }
                let ep = endpoint_metrics.expect("an endpoint serves metrics");
                for _ in 0..scrapes.min(50) {
                    endpoint_ms.push(scrape_once(ep).0);
                }
                print!(
                    "; scrape median {:.3} ms ({body_bytes} bytes)",
                    median(&mut these.clone())
                );
                scrape_ms.extend(these);
            }
            println!();
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
    let off = median(&mut times[0]);
    let on = median(&mut times[1]);
    println!(
        "metrics: daemon start to last receipt, median of {runs}: off {off:.3} s, on {on:.3} s; \
         on/off {:.3}",
        on / off
    );
    scrape_ms.sort_by(f64::total_cmp);
    let p99 =
        scrape_ms[((0.99 * scrape_ms.len() as f64).ceil() as usize).clamp(1, scrape_ms.len()) - 1];
    println!(
        "metrics: provider scrape with {n} LAs ({body_bytes} bytes), {} scrapes: median {:.3} ms, \
         p99 {p99:.3} ms; target < 5 ms: {}",
        scrape_ms.len(),
        median(&mut scrape_ms.clone()),
        if median(&mut scrape_ms.clone()) < 5.0 {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!(
        "metrics: endpoint scrape, {} scrapes: median {:.3} ms",
        endpoint_ms.len(),
        median(&mut endpoint_ms)
    );
    stops.cancel();
}
