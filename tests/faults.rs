//! Crash safety: the real `mishare provider run` (and, where it is killed,
//! `mishare authority run`) as processes, killed at each stage of a
//! delivery or faced with a bad network or a full endpoint, then restarted.
//! Afterwards every permitted delivery has exactly one file in its LA's
//! inbox with the right digest, one stored receipt and one `delivered` row,
//! nothing is left `sending`, and the audit chain verifies.
//!
//! The provider is killed through the test-only hook
//! `MISHARE_DANGEROUS_CRASH_AT` (it aborts, as `kill -9` would, at a named
//! stage); the endpoint with SIGKILL (`Child::kill`). Waits are bounded and
//! wait for conditions, never for time to pass.

#[path = "common/net.rs"]
mod net;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use net::{Net, ProxyMode};
use sha2::{Digest, Sha256};

const LAS: [&str; 2] = ["E09000002", "E09000009"];

/// Fast retries, so a fault costs a second or two.
const FAST: &str = "[delivery]\nmax_attempts = 20\nbackoff_first_secs = 1\nbackoff_cap_secs = 1\n";

/// The longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(90);

/// A child process killed (SIGKILL) if the test ends early.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGKILL, and reap it.
    fn kill9(mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("wait");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn count(net: &Net, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Agreements for both LAs, fast retries, records for the latest scheduled
/// time, and the report's schedule mark set 40 days back: the daemon's
/// first look at the clock finds one run due (missed = run-once).
async fn setup(net: &Net) {
    for la in LAS {
        net.add_agreement(la);
    }
    net.append_config(FAST);
    let now = Utc::now();
    let back = now - chrono::Duration::days(40);
    let schedule: mishare::cron::Schedule = "0 6 2 * *".parse().expect("schedule");
    let latest = schedule
        .runs_between(back, now)
        .last()
        .expect("a run within 40 days");
    net.write_records_at(latest);
    drop(net.store()); // migrated
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    conn.execute(
        "INSERT INTO schedule_marks (report, handled_until) VALUES ('referrals-monthly', ?1)",
        [mishare::common::time::timestamp(back)],
    )
    .expect("mark");
}

/// `mishare provider run`, its log in `provider-<n>.log`.
fn provider(net: &Net, n: usize, crash_at: Option<&str>) -> Proc {
    let log = std::fs::File::create(net.path(&format!("provider-{n}.log"))).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mishare"));
    cmd.args(["provider", "run"])
        .current_dir(net.dir.path())
        .env("MISHARE_LOG", "info")
        .env_remove(mishare::common::fault::DANGEROUS_CRASH_AT_VAR)
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(point) = crash_at {
        cmd.env(mishare::common::fault::DANGEROUS_CRASH_AT_VAR, point);
    }
    Proc(cmd.spawn().expect("provider run"))
}

fn log(net: &Net, n: usize) -> String {
    std::fs::read_to_string(net.path(&format!("provider-{n}.log"))).unwrap_or_default()
}

/// Waits for `cond`, failing with `what` (and the logs) after
/// [`PATIENCE`].
async fn wait_for(net: &Net, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}\nlog 1:\n{}\nlog 2:\n{}",
            log(net, 1),
            log(net, 2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a provider that aborts at its crash point to die.
async fn died(net: &Net, mut p: Proc) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = p.0.try_wait().expect("try_wait") {
            assert_eq!(
                status.code(),
                None,
                "killed by a signal: {status:?}\n{}",
                log(net, 1)
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider did not reach its crash point\n{}",
            log(net, 1)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every permitted delivery delivered exactly once, and the state sound.
async fn assert_all_delivered_once(net: &Net, las: &[&str]) {
    assert_all_delivered_once_leaving(net, las, 0).await;
}

/// As [`assert_all_delivered_once`], with up to `stray` sealed files left in
/// the spool that no delivery points at (a crash between sealing and
/// recording leaves one: ciphertext only, never sent).
async fn assert_all_delivered_once_leaving(net: &Net, las: &[&str], stray: usize) {
    let want = las.len() as i64;
    wait_for(net, "every delivery is delivered", || {
        count(
            net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
        ) == want
    })
    .await;
    for la in las {
        let files = net.inbox(la);
        assert_eq!(files.len(), 1, "{la}: {files:?}");
        let digest = hex(&Sha256::digest(std::fs::read(&files[0]).expect("read")));
        let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
        let (sha, stored_as): (String, String) = conn
            .query_row(
                "SELECT d.sha256, r.stored_as FROM deliveries d JOIN receipts r \
                 ON r.delivery_id = d.id WHERE d.la_code = ?1",
                [la],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("one delivery with its receipt");
        assert_eq!(digest, sha, "{la}");
        assert_eq!(
            files[0].file_name().and_then(|n| n.to_str()),
            Some(stored_as.as_str())
        );
        // The plaintext is the LA's own table.
        assert!(!net.decrypt(la, &files[0]).is_empty());
    }
    assert_eq!(count(net, "SELECT count(*) FROM deliveries"), want);
    assert_eq!(count(net, "SELECT count(*) FROM receipts"), want);
    assert_eq!(
        count(
            net,
            "SELECT count(*) FROM deliveries WHERE state IN ('sending', 'queued', 'failed')"
        ),
        0
    );
    assert_eq!(count(net, "SELECT count(*) FROM report_runs"), 1);
    // The release ledger: one release per delivery, each delivered.
    assert_eq!(count(net, "SELECT count(*) FROM releases"), want);
    assert_eq!(
        count(
            net,
            "SELECT count(*) FROM releases r JOIN deliveries d ON d.id = r.delivery_id \
             WHERE d.state = 'delivered' AND r.delivered_at IS NOT NULL \
             AND r.transfer_id = d.transfer_id AND r.la_code = d.la_code"
        ),
        want
    );
    let spool = net.spool();
    assert!(spool.len() <= stray, "{spool:?}");
    for file in &spool {
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
        let pointed: i64 = conn
            .query_row(
                "SELECT count(*) FROM deliveries WHERE spool_file = ?1",
                [name],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(pointed, 0, "{name} is a delivery's, not a stray");
    }
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}

/// The provider aborts at `point`; restarted, it finishes the job.
async fn provider_killed_at(point: &str) {
    let net = Net::start(&LAS).await;
    setup(&net).await;
    died(&net, provider(&net, 1, Some(point))).await;
    let _again = provider(&net, 2, None);
    assert_all_delivered_once(&net, &LAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_after_spooling() {
    provider_killed_at("after_spool").await;
}

/// The provider aborts inside the transaction that records a spooled file,
/// after the delivery's row and before its release: SQLite rolls both back,
/// so neither exists without the other. Restarted, it finishes the run:
/// every LA gets its file once, with exactly one release each, delivered,
/// and the audit chain and the ledger verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_between_spool_and_ledger_loses_neither() {
    let net = Net::start(&LAS).await;
    setup(&net).await;
    died(&net, provider(&net, 1, Some("before_ledger"))).await;
    assert_eq!(count(&net, "SELECT count(*) FROM deliveries"), 0);
    assert_eq!(count(&net, "SELECT count(*) FROM releases"), 0);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM audit_log WHERE kind = 'delivery_spooled'"
        ),
        0
    );
    let _again = provider(&net, 2, None);
    assert_all_delivered_once_leaving(&net, &LAS, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_mid_stream() {
    provider_killed_at("mid_stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_after_commit_before_the_receipt_is_stored() {
    provider_killed_at("after_commit_sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_killed_after_storing_the_receipt() {
    provider_killed_at("after_receipt").await;
}

/// `mishare authority run` for `code`, once it accepts connections.
async fn endpoint(net: &Net, code: &str) -> Proc {
    let p = Proc(
        net.authority_command(code)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("authority run"),
    );
    let addr = net.la(code).real;
    wait_for(net, "the endpoint listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_killed_mid_stream() {
    let mut net = Net::start(&LAS).await;
    net.stop_endpoint("E09000009", 1 << 30).await;
    let proxy = net
        .proxy("E09000009", ProxyMode::StallFirstAfter(1_800))
        .await;
    setup(&net).await;
    let la = endpoint(&net, "E09000009").await;
    let _provider = provider(&net, 1, None);
    tokio::time::timeout(PATIENCE, proxy.stalled.notified())
        .await
        .expect("the push stalls in flight");
    la.kill9();
    proxy.release();
    let _la = endpoint(&net, "E09000009").await;
    assert_all_delivered_once(&net, &LAS).await;
}

/// The endpoint aborts at `point` while committing (as `kill -9` would);
/// restarted without the hook, it reconciles and the provider's next
/// attempt finds the transfer complete or resumes it.
async fn endpoint_killed_mid_commit_at(point: &str) {
    let mut net = Net::start(&LAS).await;
    net.stop_endpoint("E09000009", 1 << 30).await;
    setup(&net).await;
    let mut crashing = net.authority_command("E09000009");
    crashing
        .env(mishare::common::fault::DANGEROUS_CRASH_AT_VAR, point)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut la = Proc(crashing.spawn().expect("authority run"));
    let addr = net.la("E09000009").real;
    wait_for(&net, "the endpoint listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    let _provider = provider(&net, 1, None);
    wait_for(&net, "the endpoint aborts at its crash point", || {
        la.0.try_wait().expect("try_wait").is_some()
    })
    .await;
    let status = la.0.wait().expect("wait");
    assert_eq!(status.code(), None, "aborted by a signal: {status:?}");
    if point == "endpoint_before_publish" {
        assert!(
            net.inbox("E09000009").is_empty(),
            "nothing visible before publish"
        );
    }
    let _again = endpoint(&net, "E09000009").await;
    assert_all_delivered_once(&net, &LAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_killed_mid_commit_before_the_file_is_published() {
    endpoint_killed_mid_commit_at("endpoint_before_publish").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_killed_mid_commit_after_publishing_before_the_receipt() {
    endpoint_killed_mid_commit_at("endpoint_after_publish").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_drops_stalls_and_refusals_are_ridden_out() {
    let mut net = Net::start(&["E09000002", "E09000009", "E09000005"]).await;
    // Cut after some bytes; refuse three connections; stall until released.
    let _cut = net
        .proxy("E09000002", ProxyMode::CutFirstAfter(2_000))
        .await;
    let _refuse = net.proxy("E09000009", ProxyMode::RefuseFirst(3)).await;
    let stall = net
        .proxy("E09000005", ProxyMode::StallFirstAfter(1_800))
        .await;
    net.add_agreement("E09000005");
    setup(&net).await;
    let _p = provider(&net, 1, None);
    tokio::time::timeout(PATIENCE, stall.stalled.notified())
        .await
        .expect("a push stalls");
    wait_for(&net, "the LAs not stalled are delivered", || {
        net.inbox("E09000002").len() == 1 && net.inbox("E09000009").len() == 1
    })
    .await;
    assert!(net.inbox("E09000005").is_empty());
    stall.release();
    assert_all_delivered_once(&net, &["E09000002", "E09000009", "E09000005"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_endpoint_makes_the_delivery_dead_until_retried() {
    let mut net = Net::start(&LAS).await;
    // "Disk full": the endpoint takes no file over 100 bytes. It answers
    // RESOURCE_EXHAUSTED, which is worth retrying: the delivery is dead once
    // it is out of attempts.
    net.stop_endpoint("E09000009", 100).await;
    setup(&net).await;
    net.edit_config("max_attempts = 20", "max_attempts = 3");
    let la = endpoint(&net, "E09000009").await;
    let _p = provider(&net, 1, None);
    wait_for(&net, "the refused delivery is dead", || {
        count(&net, "SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1
    })
    .await;
    assert!(net.inbox("E09000009").is_empty());
    let status = net.run(&["status"]).await;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("dead: 1"),
        "{status:?}"
    );

    // Space again; the operator retries, and the running daemon sends it.
    la.kill9();
    net.write_authority_toml("E09000009", 1 << 30);
    let _la = endpoint(&net, "E09000009").await;
    let id = count(&net, "SELECT id FROM deliveries WHERE state = 'dead'").to_string();
    let retry = net.run(&["retry", &id]).await;
    assert_eq!(retry.status.code(), Some(0), "{retry:?}");
    assert_all_delivered_once(&net, &LAS).await;
}

/// Audit entries of `kind` in the provider's log.
fn audit_kinds(net: &Net, kind: &str) -> Vec<serde_json::Value> {
    net.store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| serde_json::from_str(&e.detail).expect("detail"))
        .collect()
}

/// Once the Commit is on the wire, the outcome is the endpoint's to say. A
/// suspension made while a slowed endpoint is committing does not turn the
/// delivery into "refused, nothing committed": the LA has the file, the
/// delivery is recorded as delivered, and the audit log says the
/// suspension came after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspension_after_the_commit_is_recorded_as_delivered() {
    let mut net = Net::start(&["E09000002"]).await;
    net.stop_endpoint("E09000002", 1 << 30).await;
    net.add_agreement("E09000002");
    let mut slow = net.authority_command("E09000002");
    slow.env(
        mishare::common::fault::DANGEROUS_PAUSE_AT_VAR,
        "endpoint_before_publish",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _la = Proc(slow.spawn().expect("authority run"));
    let addr = net.la("E09000002").real;
    wait_for(&net, "the endpoint listens", || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;

    let sending = Proc(
        Command::new(env!("CARGO_BIN_EXE_mishare"))
            .args(["send-now", "referrals-monthly"])
            .current_dir(net.dir.path())
            .env_remove("MISHARE_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("send-now"),
    );
    wait_for(&net, "the gate permits the Commit", || {
        audit_kinds(&net, "gate_permit")
            .iter()
            .any(|d| d["stage"] == "before_commit")
    })
    .await;
    // The endpoint is now pausing mid-commit.
    let suspend = net
        .run(&[
            "suspend",
            "--la",
            "E09000002",
            "--reason",
            "after the commit",
        ])
        .await;
    assert_eq!(suspend.status.code(), Some(0), "{suspend:?}");

    let mut sending = sending;
    let child = std::mem::replace(
        &mut sending.0,
        Command::new("true").spawn().expect("placeholder"),
    );
    let out = child.wait_with_output().expect("send-now ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("E09000002 delivered "), "{stdout}");
    assert_eq!(net.inbox("E09000002").len(), 1);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
        ),
        1
    );
    let noted = audit_kinds(&net, "delivery_committed_before_refusal");
    assert_eq!(noted.len(), 1, "{noted:?}");
    assert_eq!(noted[0]["gate_now"]["reason"], "SUSPENDED_BY_PROVIDER");
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}
