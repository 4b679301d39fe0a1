//! Delivery on real sockets: a temporary provider directory with a PKI made
//! in the test, one real authority endpoint per LA on 127.0.0.1:0, age keys
//! made in the test, participant records, and a TCP proxy that can cut or
//! stall a connection.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::Utc;
use mishare::certs::{DevCa, Usage, Validity, la_server_name};
use mishare::common::shutdown::Shutdown;
use mishare::config::{AuthorityConfig, ProviderConfig};
use mishare::provider::agreement::{AgreementRequest, NewAgreement};
use mishare::provider::report::last_complete_period;
use mishare::provider::store::Store;
use mishare::sanitiser::PeriodGrain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The LAs of these tests: two in each of the provider's areas.
pub const LAS_CSV: &str = "\
la_code,la_name,cpa
E09000002,Barking and Dagenham,London East
E09000030,Tower Hamlets,London East
E09000009,Ealing,London West
E09000005,Brent,London West
E08000025,Birmingham,Birmingham and the Black Country
";

/// The provider's identity in its certificate.
pub const PROVIDER_ID: &str = "provider.test";

/// DWP's identity in its certificate.
pub const DWP_ID: &str = "dwp.test";

/// One LA: its endpoint, inbox and age key.
pub struct La {
    pub code: String,
    /// Where the provider is told the endpoint is (a proxy, if one is put
    /// in front).
    pub endpoint: SocketAddr,
    /// Where the endpoint really listens.
    pub real: SocketAddr,
    pub inbox: PathBuf,
    pub identity_file: PathBuf,
    pub recipient: String,
    stop: Option<Shutdown>,
}

/// A provider and its LAs.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
    pub las: Vec<La>,
    /// Where the Directive service listens, when configured.
    pub directive: Option<SocketAddr>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for la in &mut self.las {
            if let Some(stop) = la.stop.take() {
                stop.cancel();
            }
        }
    }
}

impl Net {
    /// A PKI, age keys and one running endpoint for each of `codes`; then a
    /// provider.toml naming them (see [`Net::write_config`]).
    pub async fn start(codes: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        for sub in ["reference", "certs", "data", "keys"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        std::fs::write(root.join("reference/las.csv"), LAS_CSV).expect("las");
        std::fs::write(root.join("agreement.pdf"), b"%PDF-1.4 signed agreement\n").expect("doc");
        let ca = DevCa::new("test CA").expect("ca");
        std::fs::write(root.join("certs/ca.pem"), ca.cert_pem()).expect("ca.pem");
        let write_pair = |stem: &str, name: &str, usage: Usage| {
            let issued = ca.issue(name, usage, Validity::Current).expect("issue");
            std::fs::write(root.join(format!("certs/{stem}.pem")), &issued.cert_pem).expect("cert");
            let key = root.join(format!("certs/{stem}.key"));
            std::fs::write(&key, &issued.key_pem).expect("key");
            // Owner-only: a configuration naming an open key is refused.
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod key");
        };
        write_pair("provider", PROVIDER_ID, Usage::ClientAndServer);
        write_pair("dwp", DWP_ID, Usage::Client);

        let mut las = Vec::new();
        for code in codes {
            let stem = format!("la-{}", code.to_ascii_lowercase());
            write_pair(&stem, &la_server_name(code), Usage::Server);
            let identity_file = root.join(format!("keys/{code}.key"));
            let recipient = mishare::seal::generate(&identity_file).expect("age key");
            let la_dir = root.join(&stem);
            std::fs::create_dir(&la_dir).expect("mkdir");
            let toml = format!(
                "code = \"{code}\"\nlisten = \"127.0.0.1:0\"\ninbox = \"inbox\"\n\
                 data_dir = \"state\"\nmax_file_bytes = 1073741824\n\n\
                 [tls]\ncert = \"../certs/{stem}.pem\"\nkey = \"../certs/{stem}.key\"\n\
                 ca = \"../certs/ca.pem\"\n\n\
                 [[provider]]\nid = \"{PROVIDER_ID}\"\nname = \"Example Provider Ltd\"\n"
            );
            let path = la_dir.join("authority.toml");
            std::fs::write(&path, &toml).expect("authority.toml");
            let config = AuthorityConfig::from_toml(&path, &toml).expect("authority config");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let real = listener.local_addr().expect("addr");
            let stop = Shutdown::new();
            let shutdown = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = mishare::authority::serve(config, listener, &shutdown).await {
                    panic!("the authority endpoint failed: {e}");
                }
            });
            las.push(La {
                code: code.to_string(),
                endpoint: real,
                real,
                inbox: la_dir.join("inbox").join(PROVIDER_ID),
                identity_file,
                recipient,
                stop: Some(stop),
            });
        }
        let net = Self {
            dir,
            ca,
            las,
            directive: None,
        };
        net.write_records();
        net.write_config();
        net
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("provider.toml")
    }

    pub fn config(&self) -> ProviderConfig {
        ProviderConfig::load(&self.config_path()).expect("provider config")
    }

    pub fn la(&self, code: &str) -> &La {
        self.las
            .iter()
            .find(|l| l.code == code)
            .expect("a known LA")
    }

    /// Puts a proxy in front of `code`'s endpoint and rewrites provider.toml
    /// to go through it.
    pub async fn proxy(&mut self, code: &str, mode: ProxyMode) -> Proxy {
        let la = self
            .las
            .iter_mut()
            .find(|l| l.code == code)
            .expect("a known LA");
        let proxy = Proxy::start(la.real, mode).await;
        la.endpoint = proxy.addr;
        self.write_config();
        proxy
    }

    /// Stops `code`'s in-process endpoint and rewrites its authority.toml
    /// to listen on the same address with `max_file_bytes`, so the real
    /// binary can serve it ([`Net::authority_command`]).
    pub async fn stop_endpoint(&mut self, code: &str, max_file_bytes: u64) {
        let la = self
            .las
            .iter_mut()
            .find(|l| l.code == code)
            .expect("a known LA");
        if let Some(stop) = la.stop.take() {
            stop.cancel();
        }
        // Bounded wait until the port is free.
        for _ in 0..200 {
            if TcpListener::bind(la.real).await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.write_authority_toml(code, max_file_bytes);
    }

    /// Rewrites `code`'s authority.toml (listening on its real address).
    pub fn write_authority_toml(&self, code: &str, max_file_bytes: u64) {
        let la = self.la(code);
        let stem = format!("la-{}", code.to_ascii_lowercase());
        let toml = format!(
            "code = \"{code}\"\nlisten = \"{}\"\ninbox = \"inbox\"\n\
             data_dir = \"state\"\nmax_file_bytes = {max_file_bytes}\n\n\
             [tls]\ncert = \"../certs/{stem}.pem\"\nkey = \"../certs/{stem}.key\"\n\
             ca = \"../certs/ca.pem\"\n\n\
             [[provider]]\nid = \"{PROVIDER_ID}\"\nname = \"Example Provider Ltd\"\n",
            la.real
        );
        std::fs::write(self.path(&stem).join("authority.toml"), toml).expect("authority.toml");
    }

    /// Restarts `code`'s in-process endpoint on the same address with
    /// `extra` top-level keys in its authority.toml (limits, say).
    pub async fn restart_endpoint_with(&mut self, code: &str, extra: &str) {
        self.stop_endpoint(code, 1 << 30).await;
        let stem = format!("la-{}", code.to_ascii_lowercase());
        let path = self.path(&stem).join("authority.toml");
        let text = std::fs::read_to_string(&path).expect("authority.toml");
        let text = text.replacen("[tls]", &format!("{extra}\n[tls]"), 1);
        std::fs::write(&path, &text).expect("authority.toml");
        let config = AuthorityConfig::from_toml(&path, &text).expect("authority config");
        let listener = TcpListener::bind(self.la(code).real).await.expect("bind");
        let stop = Shutdown::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = mishare::authority::serve(config, listener, &shutdown).await {
                panic!("the authority endpoint failed: {e}");
            }
        });
        let la = self
            .las
            .iter_mut()
            .find(|l| l.code == code)
            .expect("a known LA");
        la.stop = Some(stop);
    }

    /// `mishare authority run` for `code` (after [`Net::stop_endpoint`]).
    pub fn authority_command(&self, code: &str) -> Command {
        let stem = format!("la-{}", code.to_ascii_lowercase());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mishare"));
        cmd.args(["authority", "run", "--config", "authority.toml"])
            .current_dir(self.path(&stem))
            .env_remove("MISHARE_LOG");
        cmd
    }

    /// Serves Directive on a port of its own and names it in provider.toml.
    pub async fn directive_listener(&mut self) -> TcpListener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.directive = Some(listener.local_addr().expect("addr"));
        self.write_config();
        listener
    }

    /// provider.toml: every LA as an [[authority]], report
    /// `referrals-monthly` (records, split by LA, to all).
    pub fn write_config(&self) {
        let mut text = String::from(
            "provider = \"Example Provider Ltd\"\ndata_dir = \"var/provider\"\n\
             contract_areas = [\"London East\", \"London West\"]\n\
             reference = \"reference/las.csv\"\n\n\
             [tls]\ncert = \"certs/provider.pem\"\nkey = \"certs/provider.key\"\n\
             ca = \"certs/ca.pem\"\n\n",
        );
        if let Some(addr) = self.directive {
            text.push_str(&format!(
                "[directive]\nlisten = \"{addr}\"\nca = \"certs/ca.pem\"\n\
                 regulators = [\"{DWP_ID}\"]\n\n"
            ));
        }
        for la in &self.las {
            text.push_str(&format!(
                "[[authority]]\ncode = \"{}\"\nendpoint = \"https://{}\"\n\
                 server_name = \"{}\"\nrecipients = [\"{}\"]\n\n",
                la.code,
                la.endpoint,
                la_server_name(&la.code),
                la.recipient
            ));
        }
        text.push_str(
            "[[report]]\nname = \"referrals-monthly\"\n\
             source = { records = \"data/participants.csv\" }\n\
             measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\n\
             cols = \"period\"\nperiod = \"month\"\nschedule = \"0 6 2 * *\"\n\
             recipients = \"all\"\nsplit_by_recipient = true\n\
             classification = \"internal\"\nmissed = \"run-once\"\n",
        );
        std::fs::write(self.config_path(), text).expect("provider.toml");
    }

    /// Participant records for every LA in the last complete month, and
    /// some this month that must not be sent.
    fn write_records(&self) {
        self.write_records_at(Utc::now());
    }

    /// A scheduled run of `referrals-monthly` (cron `0 6 2 * *`) made by
    /// `d` now, with records for it, spooled: the daemon's mark is set 40
    /// days back, so the latest scheduled time is due.
    pub async fn run_scheduled_now(&self, d: &mishare::provider::Daemon) {
        let mark = self.write_records_for_a_due_run();
        d.schedule(mark).await.expect("schedule");
        let done = d.schedule(Utc::now()).await.expect("schedule");
        assert!(
            matches!(
                done.as_slice(),
                [mishare::provider::ScheduledRun::Ran { .. }]
            ),
            "{done:?}"
        );
    }

    /// Records for the latest scheduled run of `referrals-monthly` (cron
    /// `0 6 2 * *`); returns a mark 40 days back, from which that run is
    /// due.
    pub fn write_records_for_a_due_run(&self) -> chrono::DateTime<Utc> {
        let now = Utc::now();
        let mark = now - chrono::Duration::days(40);
        let schedule: mishare::cron::Schedule = "0 6 2 * *".parse().expect("schedule");
        let latest = schedule
            .runs_between(mark, now)
            .last()
            .expect("a run within 40 days");
        self.write_records_at(latest);
        mark
    }

    /// [`Net::write_records`] as if it were `at`: records in the last
    /// complete month before `at`.
    pub fn write_records_at(&self, at: chrono::DateTime<Utc>) {
        let last = last_complete_period(PeriodGrain::Month, at);
        let this_month = last.last_day().succ_opt().expect("a day after");
        let mut text = String::from(
            "participant_id,la_code,payment_group,disability,referral_date,attachment_date,\
             job_start_date,job_outcome_date,first_sustainment_date\n",
        );
        let mut n = 0;
        for (i, la) in self.las.iter().enumerate() {
            for (group, count) in [("JSA 18-24", 137 + 10 * i), ("ESA Ex-IB", 61)] {
                for _ in 0..count {
                    n += 1;
                    text.push_str(&format!(
                        "P{n},{},{group},N,{},,,,\n",
                        la.code,
                        last.first_day()
                    ));
                }
            }
            for _ in 0..45 {
                n += 1;
                text.push_str(&format!("P{n},{},JSA 25+,N,{this_month},,,,\n", la.code));
            }
        }
        std::fs::write(self.path("data/participants.csv"), text).expect("records");
    }

    /// Replaces `from` by `to` in provider.toml (after any
    /// [`Net::write_config`]).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).expect("provider.toml");
        assert!(text.contains(from), "provider.toml has no {from:?}");
        std::fs::write(self.config_path(), text.replace(from, to)).expect("provider.toml");
    }

    /// Appends `text` to provider.toml (after any [`Net::write_config`]).
    pub fn append_config(&self, text: &str) {
        let mut all = std::fs::read_to_string(self.config_path()).expect("provider.toml");
        all.push('\n');
        all.push_str(text);
        std::fs::write(self.config_path(), all).expect("provider.toml");
    }

    pub fn store(&self) -> Store {
        Store::open(&self.config().data_dir).expect("store")
    }

    /// An agreement signed a year ago, not expiring.
    pub fn add_agreement(&self, la: &str) {
        let config = self.config();
        let today = Utc::now().date_naive();
        let signed = (today - chrono::Duration::days(365)).to_string();
        let request = AgreementRequest {
            la,
            representative: "Jo Bloggs <jo.bloggs@example.gov.uk>",
            signed: &signed,
            expires: None,
            document: &self.path("agreement.pdf"),
        };
        let new = NewAgreement::validate(&request, &config, today).expect("valid agreement");
        self.store()
            .add_agreement(&new, "provider:tester", Utc::now())
            .expect("agreement added");
    }

    /// Files in an LA's inbox.
    pub fn inbox(&self, code: &str) -> Vec<PathBuf> {
        let dir = &self.la(code).inbox;
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Decrypts a delivered file with the LA's key.
    pub fn decrypt(&self, code: &str, file: &Path) -> Vec<u8> {
        use std::io::Read;
        let identities =
            mishare::seal::Identities::load(&self.la(code).identity_file).expect("identity");
        let mut opened = mishare::seal::open(std::fs::File::open(file).expect("open"), &identities)
            .expect("decrypt");
        let mut out = Vec::new();
        opened.read_to_end(&mut out).expect("plaintext");
        out
    }

    /// Files left in the spool.
    pub fn spool(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.config().data_dir.join("spool")) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Runs `mishare ARGS` in the directory, off the async reactor so the
    /// endpoints in this process keep serving.
    pub async fn run(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let dir = self.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_mishare"))
                .args(&args)
                .current_dir(dir)
                .env("USER", "tester")
                .env_remove("MISHARE_LOG")
                .output()
                .expect("run mishare")
        })
        .await
        .expect("join")
    }
}

/// What a [`Proxy`] does to the provider → endpoint direction.
#[derive(Debug, Clone, Copy)]
pub enum ProxyMode {
    /// Forwards everything.
    Pass,
    /// The first connection is cut after this many bytes; later ones pass.
    CutFirstAfter(u64),
    /// Stops forwarding after this many bytes until released.
    StallAfter(u64),
    /// The first connection stops forwarding after this many bytes until
    /// released (then it is closed); later ones pass.
    StallFirstAfter(u64),
    /// Closes the first this many connections at once; later ones pass.
    RefuseFirst(usize),
}

/// A TCP proxy in front of an endpoint.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Bytes forwarded provider → endpoint, per connection, in order.
    pub forwarded: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    /// Told when a connection stalls.
    pub stalled: Arc<Notify>,
    release: Arc<Notify>,
}

impl Proxy {
    async fn start(target: SocketAddr, mode: ProxyMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stalled = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (c, f, s, r) = (
            connections.clone(),
            forwarded.clone(),
            stalled.clone(),
            release.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let index = c.fetch_add(1, Ordering::SeqCst);
                let count = Arc::new(AtomicU64::new(0));
                f.lock().expect("lock").push(count.clone());
                let limit = match mode {
                    ProxyMode::Pass => None,
                    ProxyMode::CutFirstAfter(n) if index == 0 => Some((n, false)),
                    ProxyMode::CutFirstAfter(_) => None,
                    ProxyMode::StallAfter(n) => Some((n, true)),
                    ProxyMode::StallFirstAfter(n) if index == 0 => Some((n, true)),
                    ProxyMode::StallFirstAfter(_) | ProxyMode::RefuseFirst(_) => None,
                };
                if let ProxyMode::RefuseFirst(n) = mode
                    && index < n
                {
                    drop(client);
                    continue;
                }
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let sent = count.load(Ordering::SeqCst);
                        let allowed = match limit {
                            None => n,
                            Some((max, _)) => usize::try_from(max.saturating_sub(sent))
                                .unwrap_or(usize::MAX)
                                .min(n),
                        };
                        if sw.write_all(&buf[..allowed]).await.is_err() {
                            break;
                        }
                        count.fetch_add(allowed as u64, Ordering::SeqCst);
                        if allowed < n {
                            match limit {
                                Some((_, true)) => {
                                    s.notify_one();
                                    r.notified().await;
                                    // Released: drop the connection and
                                    // what it held.
                                    break;
                                }
                                _ => break,
                            }
                        }
                    }
                    back.abort();
                });
            }
        });
        Self {
            addr,
            connections,
            forwarded,
            stalled,
            release,
        }
    }

    /// Lets a stalled connection go (it is closed, what it held dropped).
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Bytes forwarded on connection `i`.
    pub fn forwarded(&self, i: usize) -> u64 {
        self.forwarded.lock().expect("lock")[i].load(Ordering::SeqCst)
    }
}

/// A release record for a file spooled straight through the outbox (not
/// made by a report): one referrals figure of 2012-09 for `la`, rounded.
/// Every spool records one; these tests are about the bytes, not the
/// figures.
pub fn test_release(la: &str) -> mishare::provider::ledger::ReleaseTable {
    use mishare::provider::ledger::{Axis, Figures, ReleaseTable};
    use mishare::sanitiser::{Measure, View};
    ReleaseTable {
        measure: Measure::Referrals,
        view: View::Counts,
        range: "2012-09".parse().expect("range"),
        rows: Axis {
            dimension: "period".into(),
            codes: vec!["2012-09".into()],
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
