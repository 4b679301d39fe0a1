//! The provider daemon: the schedule (missed runs, restarts), one daemon per
//! data_dir, `mishare plan`, and the outbox's retries, dead deliveries,
//! `mishare retry` and suspensions of queued deliveries. Time is passed in
//! where the schedule matters; nothing sleeps to make time pass.

mod common;
#[path = "common/net.rs"]
mod net;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mishare::common::shutdown::Shutdown;
use mishare::provider::store::DeliveryState;
use mishare::provider::store::{Maker, Scope};
use mishare::provider::{Daemon, DaemonOptions, ScheduledRun};
use net::{Net, ProxyMode};
use sha2::{Digest, Sha256};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a time")
        .with_timezone(&Utc)
}

fn count(net: &Net, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mishare ARGS` as a process in `net`'s directory, its standard output
/// and error piped.
fn spawn_mishare(net: &Net, args: &[&str]) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mishare"))
            .args(args)
            .current_dir(net.dir.path())
            .env_remove("MISHARE_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mishare starts"),
    )
}

/// `mishare provider run` as a process, once it has taken its lock; its
/// standard error arrives line by line on the receiver.
fn start_daemon(net: &Net) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut running = spawn_mishare(net, &["provider", "run"]);
    let stderr = running.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let started = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon starts");
    assert!(started.contains("locked"), "{started}");
    (running, rx)
}

async fn daemon(net: &Net) -> Daemon {
    let options = DaemonOptions {
        actor: "provider:daemon".into(),
        ..DaemonOptions::default()
    };
    Daemon::open(Arc::new(net.config()), options, &Shutdown::new())
        .await
        .expect("daemon opens")
}

/// Fast retries for tests.
const FAST: &str = "[delivery]\nmax_attempts = 3\nbackoff_first_secs = 1\nbackoff_cap_secs = 1\n";

const FIRST_START: &str = "2026-01-10T00:00:00Z";
const BACK_UP: &str = "2026-03-05T12:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_run_runs_once_on_start_and_a_restart_does_not_repeat_it() {
    let net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    net.write_records_at(t("2026-03-02T06:00:00Z"));

    let d = daemon(&net).await;
    // The first start sets the mark: no history is run.
    assert!(
        d.schedule(t(FIRST_START))
            .await
            .expect("schedule")
            .is_empty()
    );
    drop(d);

    // Down over two scheduled times (2 February, 2 March): one run, as of
    // the latest.
    let mut d = daemon(&net).await;
    let done = d.schedule(t(BACK_UP)).await.expect("schedule");
    let [ScheduledRun::Ran { scheduled_for, .. }] = done.as_slice() else {
        panic!("one run: {done:?}");
    };
    assert_eq!(*scheduled_for, t("2026-03-02T06:00:00Z"));
    assert_eq!(d.deliver_due(t(BACK_UP)).await.expect("deliver"), None);
    d.settle().await.expect("settle");

    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    let plaintext = String::from_utf8(net.decrypt("E09000002", &files[0])).expect("utf-8");
    assert!(plaintext.contains("2026-02"), "{plaintext}");
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM report_runs WHERE outcome = 'ran' AND period = '2026-02' \
             AND scheduled_for = '2026-03-02T06:00:00.000Z' AND spooled_at IS NOT NULL"
        ),
        1
    );
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
        ),
        1
    );

    // The same moment again, in this daemon or after a restart: nothing.
    assert!(d.schedule(t(BACK_UP)).await.expect("schedule").is_empty());
    drop(d);
    let d = daemon(&net).await;
    assert!(d.schedule(t(BACK_UP)).await.expect("schedule").is_empty());
    assert_eq!(count(&net, "SELECT count(*) FROM report_runs"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_runs_are_skipped_and_recorded_when_missed_is_skip() {
    let net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    net.edit_config("missed = \"run-once\"", "missed = \"skip\"");
    net.write_records_at(t("2026-04-02T05:00:00Z"));

    let d = daemon(&net).await;
    assert!(
        d.schedule(t(FIRST_START))
            .await
            .expect("schedule")
            .is_empty()
    );
    let done = d.schedule(t(BACK_UP)).await.expect("schedule");
    let [
        ScheduledRun::Skipped {
            report,
            scheduled_for,
        },
    ] = done.as_slice()
    else {
        panic!("skipped: {done:?}");
    };
    assert_eq!(report, "referrals-monthly");
    assert_eq!(
        scheduled_for,
        &[t("2026-02-02T06:00:00Z"), t("2026-03-02T06:00:00Z")]
    );
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM report_runs WHERE outcome = 'skipped'"
        ),
        2
    );
    assert_eq!(count(&net, "SELECT count(*) FROM deliveries"), 0);
    let skipped = net
        .store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "run_skipped")
        .count();
    assert_eq!(skipped, 2);

    // The next scheduled time (06:00 BST on 2 April) runs on time.
    let done = d
        .schedule(t("2026-04-02T05:00:30Z"))
        .await
        .expect("schedule");
    let [ScheduledRun::Ran { scheduled_for, .. }] = done.as_slice() else {
        panic!("one run: {done:?}");
    };
    assert_eq!(*scheduled_for, t("2026-04-02T05:00:00Z"));
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'queued'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let net = Net::start(&["E09000002"]).await;
    let (mut first, _said) = start_daemon(&net);

    let second = net.run(&["provider", "run"]).await;
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert_eq!(
        String::from_utf8_lossy(&second.stderr),
        "error: another mishare provider daemon is running on this data_dir: \
         var/provider/daemon.lock is locked; stop that daemon first (only one may use a \
         data_dir)\n"
    );
    // The library says the same.
    let again = Daemon::open(
        Arc::new(net.config()),
        DaemonOptions::default(),
        &Shutdown::new(),
    )
    .await;
    assert!(
        matches!(
            again,
            Err(mishare::provider::DaemonError::AlreadyRunning { .. })
        ),
        "{again:?}"
    );

    first.0.kill().expect("kill");
    first.0.wait().expect("wait");
    // The lock goes with the process.
    drop(daemon(&net).await);
}

#[test]
fn plan_lists_next_runs_recipients_and_the_gate_and_sends_nothing() {
    let env = common::Env::new();
    let mut store = env.store();
    env.add_agreement(&mut store, "E09000002", "2025-01-01", None, "2026-03-01");
    env.add_agreement(
        &mut store,
        "E09000030",
        "2025-01-01",
        Some("2026-03-31"),
        "2026-03-01",
    );
    drop(store);
    let audit_before = env.store().audit_entries(None).expect("audit").len();

    let out = env.run(&["plan", "--at", "2026-03-28T12:00:00Z"]);
    common::assert_status(&out, 0);
    assert_eq!(
        common::stdout(&out),
        "\
plan at 2026-03-28T12:00:00.000Z (2026-03-28 12:00 GMT); nothing is sent
referrals-monthly: next run 2026-04-02 06:00 BST (2026-04-02T05:00:00.000Z), period 2026-03, schedule \"0 6 2 * *\", missed run-once
  E09000002 permit
  E09000030 refuse AGREEMENT_EXPIRED: the agreement expired on 2026-03-31
    agreement covers up to 2026-03-31: the gate refuses from the run at 2026-04-02 06:00 BST (2026-04-02T05:00:00.000Z)
  E08000025 refuse NO_AGREEMENT: no agreement is on file; the LA is not in one of the provider's contract package areas
  E09999999 refuse UNKNOWN_LA: the LA is not in the reference data
  the ledger audit cannot be previewed: the tables cannot be made now: report referrals-monthly: cannot read data/participants.csv: No such file or directory (os error 2)
east-only: next run 2026-04-02 06:00 BST (2026-04-02T05:00:00.000Z), period 2026-03, schedule \"0 6 2 * *\", missed skip
  E09000002 permit
  the ledger audit cannot be previewed: the tables cannot be made now: report east-only: cannot read data/counts.csv: No such file or directory (os error 2)
"
    );

    let out = env.run(&["plan", "--at", "2026-03-28", "--format", "json"]);
    common::assert_status(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["at"], "2026-03-28T00:00:00.000Z");
    assert_eq!(
        doc["reports"][0]["next_run_utc"],
        "2026-04-02T05:00:00.000Z"
    );
    assert_eq!(doc["reports"][0]["next_run_london"], "2026-04-02 06:00 BST");
    assert_eq!(doc["reports"][0]["recipients"][0]["la"], "E09000002");
    assert_eq!(
        doc["reports"][0]["recipients"][0]["gate"]["permitted"],
        true
    );
    assert_eq!(doc["reports"][1]["missed"], "skip");
    assert_eq!(
        doc["reports"][0]["recipients"][1]["agreement_expiry"],
        serde_json::json!({
            "expires_on": "2026-03-31",
            "first_refused_run_utc": "2026-04-02T05:00:00.000Z",
        })
    );
    assert_eq!(
        doc["reports"][0]["recipients"][0]["agreement_expiry"],
        serde_json::Value::Null,
        "no expiry, nothing to say"
    );

    // Nothing written: no run, no delivery, no audit entry.
    let store = env.store();
    assert_eq!(
        store.audit_entries(None).expect("audit").len(),
        audit_before
    );
    let runs: i64 = store_count(&env, "SELECT count(*) FROM report_runs");
    assert_eq!(runs, 0);

    let bad = env.run(&["plan", "--at", "soon"]);
    common::assert_status(&bad, 64);
}

fn store_count(env: &common::Env, sql: &str) -> i64 {
    let conn = common::raw_connection(&common::database(env));
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Delivers what is due, waiting out each backoff, until nothing is
/// pending: every delivery is delivered, refused or dead.
async fn deliver_until_none_pending(net: &Net, d: &mut Daemon) {
    let mut attempts = 0;
    loop {
        let next = d.deliver_due(Utc::now()).await.expect("deliver");
        d.settle().await.expect("settle");
        let Some(next) = next.or_else(|| {
            net.store()
                .pending_deliveries()
                .expect("pending")
                .first()
                .and_then(|p| p.next_attempt_at)
        }) else {
            return;
        };
        attempts += 1;
        assert!(attempts < 10, "never dead");
        // Due later, with backoff: not before now.
        assert!(next > Utc::now() - chrono::Duration::seconds(1));
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_push_is_retried_with_backoff_then_dead_then_retried_by_hand() {
    let mut net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");
    // E09000009's endpoint refuses connections: the proxy points nowhere.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = closed.local_addr().expect("addr");
    drop(closed);
    let real = net.las[1].real;
    net.las[1].endpoint = nowhere;
    net.write_config();
    net.append_config(FAST);

    let mut d = daemon(&net).await;
    net.run_scheduled_now(&d).await;

    // Tried until max_attempts; the other LA is not held up.
    deliver_until_none_pending(&net, &mut d).await;
    assert_eq!(net.inbox("E09000002").len(), 1);
    let dead = net
        .store()
        .deliveries_in(DeliveryState::Dead)
        .expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].la, "E09000009");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("gave up after max_attempts = 3")),
        "{dead:?}"
    );
    assert!(dead[0].spool_path.as_ref().is_some_and(|p| p.exists()));

    // Status shows it.
    let status = net.run(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("dead: 1"), "{text}");
    assert!(
        text.contains(&format!("(mishare retry {})", dead[0].id)),
        "{text}"
    );

    // A suspension: retry refuses and says why.
    let id = dead[0].id.to_string();
    let suspension = net
        .store()
        .suspend(
            Scope::La("E09000009".into()),
            Maker::Provider,
            "checking",
            None,
            "provider:tester",
            Utc::now(),
        )
        .expect("suspend");
    let out = net.run(&["retry", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: delivery {id} to E09000009 not queued again: the gate refuses it: \
             SUSPENDED_BY_PROVIDER"
        )),
        "{err}"
    );
    net.store()
        .lift(
            suspension.id,
            Maker::Provider,
            "provider:tester",
            Utc::now(),
        )
        .expect("lift");

    // The endpoint is back: retry, and the same ciphertext goes.
    net.las[1].endpoint = real;
    net.write_config();
    net.append_config(FAST);
    drop(d);
    let out = net.run(&["retry", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "delivery {id} to E09000009 (referrals-monthly {}) queued again; a running daemon \
             sends it now\n",
            dead[0].period
        )
    );
    let mut d = daemon(&net).await;
    d.deliver_due(Utc::now()).await.expect("deliver");
    d.settle().await.expect("settle");
    let files = net.inbox("E09000009");
    assert_eq!(files.len(), 1);
    let digest = hex(&Sha256::digest(std::fs::read(&files[0]).expect("read")));
    assert_eq!(digest, dead[0].sha256_hex());
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
        ),
        2
    );
    assert!(net.spool().is_empty(), "{:?}", net.spool());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_delivery_whose_la_is_suspended_is_refused_and_never_sent() {
    let net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let mut d = daemon(&net).await;
    net.run_scheduled_now(&d).await;
    let status = net.run(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("queue: 1 undelivered (1 queued, 0 sending, 0 waiting to retry)\n"),
        "{text}"
    );
    assert!(
        text.contains("  oldest for E09000002: delivery 1 E09000002 referrals-monthly "),
        "{text}"
    );
    assert!(
        text.contains("dead: 0\nnext runs:\n  referrals-monthly at "),
        "{text}"
    );
    let json = net.run(&["status", "--format", "json"]).await;
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(doc["queue"]["depth"], 1);
    assert_eq!(doc["queue"]["oldest_per_la"][0]["la"], "E09000002");
    assert_eq!(doc["next_runs"][0]["report"], "referrals-monthly");
    net.store()
        .suspend(
            Scope::All,
            Maker::Provider,
            "incident",
            None,
            "provider:tester",
            Utc::now(),
        )
        .expect("suspend");
    assert_eq!(d.refuse_withheld().await.expect("refuse"), 1);
    let refused = net
        .store()
        .deliveries_in(DeliveryState::Refused)
        .expect("refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].reason.as_deref(), Some("SUSPENDED_BY_PROVIDER"));
    assert!(net.spool().is_empty());
    // Lifting the suspension sends nothing by itself.
    let s = net.store().suspensions(true).expect("list");
    net.store()
        .lift(s[0].id, Maker::Provider, "provider:tester", Utc::now())
        .expect("lift");
    assert_eq!(d.deliver_due(Utc::now()).await.expect("deliver"), None);
    d.settle().await.expect("settle");
    assert!(net.inbox("E09000002").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_left_sending_is_resumed_on_start_and_one_slow_la_holds_up_no_other() {
    let mut net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");
    let stall = net.proxy("E09000009", ProxyMode::StallAfter(2_000)).await;
    let d = daemon(&net).await;
    net.run_scheduled_now(&d).await;
    drop(d);
    // As if a daemon had stopped mid-push.
    {
        let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
        conn.execute("UPDATE deliveries SET state = 'sending'", [])
            .expect("update");
    }
    let mut d = daemon(&net).await;
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'sending'"
        ),
        0
    );
    d.deliver_due(Utc::now()).await.expect("deliver");
    // E09000002 is delivered while E09000009's push is stalled.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if !net.inbox("E09000002").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the other LA is delivered");
    assert!(net.inbox("E09000009").is_empty());
    // Released only once stalled: a release before the stall would be lost.
    tokio::time::timeout(Duration::from_secs(60), stall.stalled.notified())
        .await
        .expect("E09000009's push stalls");
    stall.release();
    d.settle().await.expect("settle");
}

#[test]
fn the_documented_systemd_unit_is_the_one_in_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for (file, run) in [
        (
            "mishare-provider.service",
            "ExecStart=/usr/local/bin/mishare provider run --config ",
        ),
        (
            "mishare-authority.service",
            "ExecStart=/usr/local/bin/mishare authority run --config ",
        ),
    ] {
        let unit =
            std::fs::read_to_string(root.join("tests/data").join(file)).expect("the unit file");
        let block = format!("```ini\n{unit}```");
        assert!(
            readme.contains(&block),
            "the README's systemd unit differs from tests/data/{file}"
        );
        assert!(unit.contains(run), "{file}");
        assert!(
            unit.contains("UnsetEnvironment=MISHARE_DANGEROUS_CRASH_AT"),
            "{file}"
        );
        // Ready only once serving, watched, and reloadable in place.
        for line in [
            "Type=notify\n",
            "NotifyAccess=main\n",
            "WatchdogSec=30s\n",
            "ExecReload=/bin/kill -HUP $MAINPID\n",
            "NoNewPrivileges=yes\n",
            "ProtectSystem=strict\n",
            "CapabilityBoundingSet=\n",
        ] {
            assert!(unit.contains(line), "{file} lacks {line:?}");
        }
        // sd_notify needs a Unix socket.
        assert!(
            unit.contains("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"),
            "{file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_finished_after_a_restart_does_not_send_what_the_gate_withheld() {
    let net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");
    let suspension = net
        .store()
        .suspend(
            Scope::La("E09000009".into()),
            Maker::Provider,
            "checking",
            None,
            "provider:tester",
            Utc::now(),
        )
        .expect("suspend");
    let d = daemon(&net).await;
    net.run_scheduled_now(&d).await;
    drop(d);
    assert_eq!(count(&net, "SELECT count(*) FROM deliveries"), 1);
    // As if the daemon had stopped before the run was wholly spooled; then
    // the suspension is lifted.
    {
        let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
        conn.execute("UPDATE report_runs SET spooled_at = NULL", [])
            .expect("update");
    }
    net.store()
        .lift(
            suspension.id,
            Maker::Provider,
            "provider:tester",
            Utc::now(),
        )
        .expect("lift");
    let d = daemon(&net).await;
    let done = d.schedule(Utc::now()).await.expect("schedule");
    assert!(
        matches!(done.as_slice(), [ScheduledRun::Ran { .. }]),
        "the run is finished: {done:?}"
    );
    assert_eq!(count(&net, "SELECT count(*) FROM deliveries"), 1);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE la_code = 'E09000009'"
        ),
        0
    );
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM report_runs WHERE spooled_at IS NOT NULL"
        ),
        1
    );
}

/// SIGTERM (as systemd sends it) stops the daemon cleanly: exit status 0,
/// and the lock is free for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_the_daemon_cleanly() {
    let net = Net::start(&["E09000002"]).await;
    let (mut running, rx) = start_daemon(&net);
    let term = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = running.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{status:?}");
    // The process has exited, so its stderr is at end: this ends.
    let said: Vec<String> = rx.iter().collect();
    assert!(
        said.iter().any(|l| l.contains("SIGTERM")),
        "it says why it stopped: {said:?}"
    );
    drop(daemon(&net).await);
}

/// Ctrl-C stops `send-now` cleanly: the push in flight ends, recorded as
/// failed (not left `sending`), its ciphertext stays spooled, the audit
/// chain verifies, and the daemon later delivers that same spooled file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_stops_send_now_and_leaves_what_is_spooled_for_the_daemon() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let proxy = net
        .proxy("E09000002", ProxyMode::StallFirstAfter(600))
        .await;
    net.append_config(FAST);
    let mut sending = spawn_mishare(&net, &["send-now", "referrals-monthly"]);
    tokio::time::timeout(Duration::from_secs(60), proxy.stalled.notified())
        .await
        .expect("the push reaches the stalled endpoint");
    let int = Command::new("kill")
        .args(["-INT", &sending.0.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(int.success());
    let child = std::mem::replace(
        &mut sending.0,
        Command::new("true").spawn().expect("placeholder"),
    );
    let out = child.wait_with_output().expect("wait");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("SIGINT"), "{stderr}");
    assert!(stderr.contains("send-now was stopped"), "{stderr}");
    assert!(
        stdout.starts_with("E09000002 failed: interrupted"),
        "{stdout}"
    );

    // Nothing half-recorded: one delivery, failed and resumable, its
    // ciphertext still spooled; nothing committed at the LA.
    let pending = net.store().pending_deliveries().expect("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].state, DeliveryState::Failed);
    assert!(pending[0].spool_path.as_ref().is_some_and(|p| p.exists()));
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'sending'"
        ),
        0
    );
    assert!(net.inbox("E09000002").is_empty());
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");

    // The daemon sends the same spooled bytes (retrying while the endpoint
    // still holds the interrupted stream).
    proxy.release();
    let spooled = std::fs::read(pending[0].spool_path.as_ref().expect("spooled")).expect("read");
    let mut d = daemon(&net).await;
    for _ in 0..30 {
        d.deliver_due(Utc::now()).await.expect("deliver");
        d.settle().await.expect("settle");
        if !net.inbox("E09000002").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let files = net.inbox("E09000002");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::read(&files[0]).expect("read"), spooled);
}

/// A burst of more pushes than the endpoint serves at once is ridden out:
/// RESOURCE_EXHAUSTED is retried with backoff, and no delivery is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_the_endpoints_stream_limit_is_retried_not_dead() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    net.restart_endpoint_with("E09000002", "max_streams = 2")
        .await;
    net.append_config(FAST);
    net.edit_config("max_attempts = 3", "max_attempts = 20");
    // Ten deliveries of 1 MiB each to one LA, all due at once.
    let store = mishare::provider::store::SharedStore::new(net.store());
    let recipients = mishare::seal::Recipients::parse(&[net.la("E09000002").recipient.clone()])
        .expect("recipients");
    for i in 0..10 {
        let run = store
            .lock()
            .start_run(
                "referrals-monthly",
                "2012-09",
                "provider:tester",
                Utc::now(),
            )
            .expect("run");
        let plaintext: Vec<u8> = (0..1 << 20).map(|b: u32| (b % 251) as u8 ^ i).collect();
        mishare::provider::outbox::spool(
            &store,
            mishare::provider::outbox::Addressed {
                run_id: run,
                la: "E09000002",
                report: "referrals-monthly",
                period: "2012-09",
                classification: mishare::sanitiser::Classification::Internal,
            },
            &plaintext[..],
            &recipients,
            mishare::provider::outbox::Release {
                table: &net::test_release("E09000002"),
                findings: &[],
            },
            "provider:tester",
            Utc::now(),
        )
        .expect("spooled");
    }
    let mut d = daemon(&net).await;
    let mut exhausted = false;
    for _ in 0..60 {
        d.deliver_due(Utc::now()).await.expect("deliver");
        d.settle().await.expect("settle");
        exhausted |= count(
            &net,
            "SELECT count(*) FROM deliveries WHERE last_error LIKE '%ResourceExhausted%'",
        ) > 0;
        if count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
        ) == 10
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(exhausted, "the burst went over the endpoint's limit");
    assert_eq!(
        count(&net, "SELECT count(*) FROM deliveries WHERE state = 'dead'"),
        0
    );
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'"
        ),
        10
    );
    assert_eq!(net.inbox("E09000002").len(), 10);
}

/// A suspension made and lifted while the daemon is down stops what was
/// queued before it: the delivery is never sent by itself (it is dead,
/// its ciphertext kept, the reason naming the suspension); only
/// `mishare retry` sends it, after asking the gate, and that is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_suspension_made_and_lifted_while_the_daemon_was_down_withholds_the_queue() {
    let net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let d = daemon(&net).await;
    net.run_scheduled_now(&d).await;
    drop(d); // down, with the delivery queued
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state = 'queued'"
        ),
        1
    );
    let made = net
        .run(&["suspend", "--la", "E09000002", "--reason", "investigating"])
        .await;
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let lifted = net.run(&["resume", "1"]).await;
    assert_eq!(lifted.status.code(), Some(0), "{lifted:?}");

    let mut d = daemon(&net).await;
    d.deliver_due(Utc::now()).await.expect("deliver");
    d.settle().await.expect("settle");
    assert!(
        net.inbox("E09000002").is_empty(),
        "not sent after the restart"
    );
    let dead = net
        .store()
        .deliveries_in(DeliveryState::Dead)
        .expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let why = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        why.starts_with("withheld: suspension 1 by the provider"),
        "{why}"
    );
    assert!(why.contains("mishare retry"), "{why}");
    assert!(dead[0].spool_path.as_ref().is_some_and(|p| p.exists()));

    // The daemon does not send it later by itself.
    d.deliver_due(Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("deliver");
    d.settle().await.expect("settle");
    assert!(net.inbox("E09000002").is_empty());

    // mishare retry asks the gate, is audited, and the daemon sends it.
    let retried = net.run(&["retry", &dead[0].id.to_string()]).await;
    assert_eq!(retried.status.code(), Some(0), "{retried:?}");
    d.deliver_due(Utc::now()).await.expect("deliver");
    d.settle().await.expect("settle");
    assert_eq!(net.inbox("E09000002").len(), 1);
    let requeued = net
        .store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "delivery_requeued")
        .count();
    assert_eq!(requeued, 1);
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}

/// `send-now` while the daemon runs on the same data_dir hands its
/// deliveries to the daemon instead of racing it: exactly one file per LA,
/// no failed or dead rows, every push made by the daemon, and an audit
/// chain that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_now_while_the_daemon_runs_hands_its_deliveries_to_the_daemon() {
    let net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");
    let (_running, _said) = start_daemon(&net);
    let out = net.run(&["send-now", "referrals-monthly"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, la) in lines.iter().zip(["E09000002", "E09000009"]) {
        assert!(line.starts_with(&format!("{la} delivered ")), "{stdout}");
        assert!(line.ends_with(" receipt verified"), "{stdout}");
        assert_eq!(net.inbox(la).len(), 1, "{la}");
    }
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE state IN ('failed', 'dead', 'sending', 'queued')"
        ),
        0
    );
    let pushers: Vec<String> = net
        .store()
        .audit_entries(None)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "delivery_delivered")
        .map(|e| e.actor)
        .collect();
    assert_eq!(pushers, ["provider:daemon", "provider:daemon"]);
    let verify = net.run(&["audit", "verify"]).await;
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}

/// While `send-now` pushes (no daemon was running), a daemon started on the
/// same data_dir waits its turn and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_started_while_send_now_pushes_says_so() {
    let mut net = Net::start(&["E09000002"]).await;
    net.add_agreement("E09000002");
    let proxy = net
        .proxy("E09000002", ProxyMode::StallFirstAfter(600))
        .await;
    let _sending = spawn_mishare(&net, &["send-now", "referrals-monthly"]);
    tokio::time::timeout(Duration::from_secs(60), proxy.stalled.notified())
        .await
        .expect("send-now's push stalls");
    let daemon = net.run(&["provider", "run"]).await;
    assert_eq!(daemon.status.code(), Some(1), "{daemon:?}");
    assert_eq!(
        String::from_utf8_lossy(&daemon.stderr),
        "error: mishare send-now is pushing from this data_dir (var/provider/daemon.lock is \
         locked by it); start the daemon when it has finished\n"
    );
    proxy.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandon_ends_a_dead_delivery_deletes_its_ciphertext_and_audits_it() {
    let mut net = Net::start(&["E09000002", "E09000009"]).await;
    net.add_agreement("E09000002");
    net.add_agreement("E09000009");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    net.las[1].endpoint = closed.local_addr().expect("addr");
    drop(closed);
    net.write_config();
    net.append_config(FAST);
    let mut d = daemon(&net).await;
    net.run_scheduled_now(&d).await;
    deliver_until_none_pending(&net, &mut d).await;
    let dead = net
        .store()
        .deliveries_in(DeliveryState::Dead)
        .expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let spooled = dead[0].spool_path.clone().expect("spooled");
    assert!(spooled.exists());
    let id = dead[0].id.to_string();
    let delivered = net
        .store()
        .deliveries_in(DeliveryState::Delivered)
        .expect("delivered");
    assert_eq!(delivered.len(), 1);

    // Refusals: no reason, no such delivery, one that is not dead.
    let out = net.run(&["abandon", &id, "--reason", "  "]).await;
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("give a reason"));
    let out = net.run(&["abandon", "9999", "--reason", "gone"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: there is no delivery 9999; `mishare status` lists deliveries\n"
    );
    let other = delivered[0].id.to_string();
    let out = net.run(&["abandon", &other, "--reason", "gone"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: delivery {other} is delivered, not dead; only a dead delivery can be \
             abandoned\n"
        )
    );
    assert!(spooled.exists(), "a refusal deletes nothing");

    let out = net
        .run(&[
            "abandon",
            &id,
            "--reason",
            "the council closed its endpoint",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "delivery {id} to E09000009 (referrals-monthly {}) abandoned; it will not be sent; \
             its ciphertext {} is deleted\n",
            dead[0].period,
            // As the configuration names it: data_dir is relative here.
            spooled
                .strip_prefix(net.dir.path())
                .expect("under the test's directory")
                .display()
        )
    );
    assert!(!spooled.exists());
    assert!(net.spool().is_empty(), "{:?}", net.spool());
    assert!(
        net.store()
            .deliveries_in(DeliveryState::Dead)
            .expect("dead")
            .is_empty()
    );
    let abandoned = net
        .store()
        .deliveries_in(DeliveryState::Abandoned)
        .expect("abandoned");
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].spool_path, None);
    assert_eq!(
        count(
            &net,
            "SELECT count(*) FROM deliveries WHERE abandon_reason = \
             'the council closed its endpoint' AND abandoned_by IS NOT NULL"
        ),
        1
    );
    // Nothing of its history is deleted: its release stays in the ledger.
    assert_eq!(
        count(
            &net,
            &format!("SELECT count(*) FROM releases WHERE delivery_id = {id}")
        ),
        1
    );

    // The step is audited with the file's digest and the reason, and the
    // chain verifies.
    let detail: String = {
        let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
        conn.query_row(
            "SELECT detail FROM audit_log WHERE kind = 'delivery_abandoned'",
            [],
            |r| r.get(0),
        )
        .expect("one audit entry")
    };
    let detail: serde_json::Value = serde_json::from_str(&detail).expect("json");
    assert_eq!(detail["sha256"], dead[0].sha256_hex());
    assert_eq!(detail["reason"], "the council closed its endpoint");
    assert_eq!(detail["ciphertext_removed"], true);
    let out = net.run(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // It is never sent again: retry and a second abandon refuse, the status
    // no longer lists it as dead, and the daemon has nothing to send.
    let out = net.run(&["retry", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("delivery {id} is abandoned, not dead")),
        "{out:?}"
    );
    let out = net.run(&["abandon", &id, "--reason", "again"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let status = net.run(&["status"]).await;
    assert!(String::from_utf8_lossy(&status.stdout).contains("dead: 0\n"));
    assert!(
        net.store()
            .pending_deliveries()
            .expect("pending")
            .is_empty()
    );
    drop(d);
    // The database itself refuses to send it, whatever asks.
    let conn = rusqlite::Connection::open(net.config().database_path()).expect("db");
    let err = conn
        .execute(
            &format!("UPDATE deliveries SET state = 'queued' WHERE id = {id}"),
            [],
        )
        .expect_err("the trigger refuses");
    assert!(err.to_string().contains("never sent"), "{err}");
}
