//! `mishare authority inbox list|open`, for LA staff: files delivered by a
//! real `send-now` to a real endpoint on 127.0.0.1:0, listed, and opened as
//! a CSV with a byte-order mark and as an XLSX read back with calamine.

#[path = "common/net.rs"]
mod net;

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use calamine::{Data, Reader, Xlsx};
use net::Net;

const LA: &str = "E09000002";

/// `mishare authority ARGS` with the LA's authority.toml.
async fn authority(net: &Net, args: &[&str]) -> Output {
    let mut all = vec!["authority", "--config"];
    let config = net
        .path(&format!("la-{}", LA.to_ascii_lowercase()))
        .join("authority.toml");
    let config = config.to_str().expect("utf-8 path").to_string();
    all.push(&config);
    all.extend_from_slice(args);
    net.run(&all).await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One delivered file, by `send-now`; its name in the inbox.
async fn delivered(net: &Net) -> (String, PathBuf) {
    net.add_agreement(LA);
    let out = net.run(&["send-now", "referrals-monthly"]).await;
    assert!(out.status.success(), "send-now: {}", stderr(&out));
    let files = net.inbox(LA);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    (name, files[0].clone())
}

fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_list_shows_what_arrived_with_its_digest_and_receipt() {
    let net = Net::start(&[LA]).await;
    let empty = authority(&net, &["inbox", "list"]).await;
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(String::from_utf8_lossy(&empty.stdout).contains("no files received yet"));

    let (name, path) = delivered(&net).await;
    let out = authority(&net, &["inbox", "list", "--format", "json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let files = list.as_array().expect("array");
    assert_eq!(files.len(), 1, "{list}");
    let f = &files[0];
    assert_eq!(f["file"], name.as_str());
    assert_eq!(f["provider"], net::PROVIDER_ID);
    assert_eq!(f["report"], "referrals-monthly");
    assert_eq!(f["classification"], "internal");
    assert!(
        name.starts_with(f["period"].as_str().expect("period")),
        "{f}"
    );
    assert_eq!(f["size"], std::fs::metadata(&path).expect("meta").len());
    assert_eq!(f["sha256"], sha256_hex(&path).as_str());
    assert_eq!(f["receipt_issued"], true);
    assert_eq!(f["present"], true);
    assert!(
        f["received"].as_str().expect("received").ends_with('Z'),
        "{f}"
    );

    let text = authority(&net, &["inbox", "list"]).await;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&name) && text.contains(&sha256_hex(&path)),
        "{text}"
    );
    assert!(text.contains("receipt issued"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_open_as_csv_puts_a_byte_order_mark_before_the_file_as_sent() {
    let net = Net::start(&[LA]).await;
    let (name, path) = delivered(&net).await;
    let key = net.la(LA).identity_file.display().to_string();

    let out = authority(&net, &["inbox", "open", &name, "--identity", &key]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout.starts_with(b"\xEF\xBB\xBF"),
        "a UTF-8 byte-order mark first"
    );
    assert_eq!(&out.stdout[3..], &net.decrypt(LA, &path)[..]);
    let text = String::from_utf8(out.stdout[3..].to_vec()).expect("utf-8");
    assert!(
        text.starts_with("# Internal MI \u{2013} for "),
        "the en dash Excel showed as â€“ without the mark: {text}"
    );

    // By path, to a file: the same bytes, owner-only.
    let copy = net.path("copy.age");
    std::fs::copy(&path, &copy).expect("copy");
    let csv = net.path("opened.csv");
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            copy.to_str().expect("path"),
            "--identity",
            &key,
            "--out",
            csv.to_str().expect("path"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let written = std::fs::read(&csv).expect("written");
    assert!(written.starts_with(b"\xEF\xBB\xBF"));
    assert_eq!(&written[3..], &net.decrypt(LA, &path)[..]);
    let mode = std::fs::metadata(&csv).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "plaintext is owner-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_open_as_xlsx_reads_back_with_a_cover_sheet_numbers_and_the_label_on_every_page() {
    let net = Net::start(&[LA]).await;
    let (name, path) = delivered(&net).await;
    let key = net.la(LA).identity_file.display().to_string();
    let plaintext = String::from_utf8(net.decrypt(LA, &path)).expect("utf-8");
    let label = plaintext
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .expect("label line")
        .to_string();

    let xlsx = net.path("opened.xlsx");
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            &name,
            "--identity",
            &key,
            "--out",
            xlsx.to_str().expect("path"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&xlsx).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut book: Xlsx<_> = calamine::open_workbook(&xlsx).expect("calamine opens it");
    assert_eq!(book.sheet_names(), vec!["About", "Table"]);
    let about = book.worksheet_range("About").expect("About");
    let cover: Vec<(String, String)> = about
        .rows()
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    let get = |key: &str| {
        cover
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} on the cover: {cover:?}"))
    };
    assert_eq!(get("Label"), label);
    assert!(get("Method").contains("20"), "{cover:?}");
    assert_eq!(get("Sent by"), net::PROVIDER_ID);
    assert_eq!(get("Report name"), "referrals-monthly");
    assert_eq!(get("Classification"), "internal");
    assert!(name.starts_with(&get("Period (file)")), "{cover:?}");
    assert_eq!(get("SHA-256 (as received)"), sha256_hex(&path));

    // The table: the CSV's rows, every figure a number.
    let table = book.worksheet_range("Table").expect("Table");
    let csv_rows: Vec<Vec<String>> = plaintext
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let sheet_rows: Vec<&[Data]> = table.rows().collect();
    assert_eq!(sheet_rows.len(), csv_rows.len());
    let mut numbers = 0;
    for (sheet, csv) in sheet_rows.iter().zip(&csv_rows).skip(1) {
        for (cell, field) in sheet.iter().zip(csv).skip(1) {
            let n: f64 = field.parse().expect("a figure");
            assert_eq!(cell, &Data::Float(n), "{field}");
            numbers += 1;
        }
    }
    assert!(numbers > 0, "the table has figures");
    assert_eq!(sheet_rows[0][0], Data::String(csv_rows[0][0].clone()));

    // The label is the page header of both sheets (in the sheets' XML).
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&xlsx).expect("open")).expect("zip");
    for sheet in ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"] {
        let mut xml = String::new();
        zip.by_name(sheet)
            .expect("sheet")
            .read_to_string(&mut xml)
            .expect("xml");
        let header = format!(
            "<oddHeader>&amp;C{}</oddHeader>",
            label.replace('&', "&amp;&amp;")
        );
        assert!(xml.contains(&header), "{sheet} has no {header}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_open_refuses_and_writes_nothing() {
    let net = Net::start(&[LA, "E09000009"]).await;
    let (name, path) = delivered(&net).await;
    let key = net.la(LA).identity_file.display().to_string();
    let other_key = net.la("E09000009").identity_file.display().to_string();
    let out_path = net.path("out.xlsx");
    let out_arg = out_path.to_str().expect("path").to_string();

    // XLSX is written only to a file.
    let out = authority(
        &net,
        &["inbox", "open", &name, "--identity", &key, "--as", "xlsx"],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--out"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    // Another LA's key does not open it.
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            &name,
            "--identity",
            &other_key,
            "--out",
            &out_arg,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!out_path.exists(), "nothing written");

    // A file that was not received here, byte for byte, is refused.
    let changed = net.path("changed.age");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&changed, &bytes).expect("write");
    let changed_arg = changed.to_str().expect("path").to_string();
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            &changed_arg,
            "--identity",
            &key,
            "--out",
            &out_arg,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a file this endpoint received"),
        "{}",
        stderr(&out)
    );
    assert!(!out_path.exists(), "nothing written");

    // No such name.
    let out = authority(
        &net,
        &["inbox", "open", "2026-01_nothing_x.age", "--identity", &key],
    )
    .await;
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(stderr(&out).contains("inbox list"), "{}", stderr(&out));

    // A key file that is not one.
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            &name,
            "--identity",
            &changed_arg,
            "--out",
            &out_arg,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(!out_path.exists(), "nothing written");

    // An existing --out is never replaced.
    std::fs::write(&out_path, b"keep me").expect("write");
    let out = authority(
        &net,
        &[
            "inbox",
            "open",
            &name,
            "--identity",
            &key,
            "--out",
            &out_arg,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(&out_path).expect("read"), b"keep me");
    let strays: Vec<_> = std::fs::read_dir(net.path(""))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".mishare-open-")
        })
        .collect();
    assert!(strays.is_empty(), "no temporary file left: {strays:?}");
}

/// The LA's endpoint database.
fn endpoint_db(net: &Net) -> rusqlite::Connection {
    let path = net
        .path(&format!("la-{}", LA.to_ascii_lowercase()))
        .join("state")
        .join(mishare::authority::store::DATABASE_FILE);
    rusqlite::Connection::open(path).expect("endpoint db")
}

/// Makes every received file look `days` days older than it is.
fn age_received(net: &Net, days: i64) {
    endpoint_db(net)
        .execute(
            "UPDATE transfers SET received_ms = received_ms - ?1 WHERE stored_as IS NOT NULL",
            [days * 86_400_000],
        )
        .expect("age");
}

fn deletions_audited(net: &Net) -> Vec<serde_json::Value> {
    let conn = endpoint_db(net);
    let mut stmt = conn
        .prepare("SELECT detail FROM audit_log WHERE kind = 'inbox_file_deleted' ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_purge_deletes_old_files_audits_each_with_its_digest_and_keeps_the_receipt() {
    let net = Net::start(&[LA]).await;
    let (name, path) = delivered(&net).await;
    let digest = sha256_hex(&path);

    // Received just now: not older than a day.
    let out = authority(&net, &["inbox", "purge", "--older-than", "1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 file(s)"));
    assert!(path.exists());

    let out = authority(&net, &["inbox", "purge", "--older-than", "0"]).await;
    assert_eq!(out.status.code(), Some(2), "clap refuses 0 days");
    assert!(path.exists());

    age_received(&net, 3);
    let out = authority(&net, &["inbox", "purge", "--older-than", "2"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&digest) && text.contains("1 file(s)"),
        "{text}"
    );
    assert!(!path.exists(), "deleted");

    let audited = deletions_audited(&net);
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["sha256"], digest.as_str());
    assert_eq!(audited[0]["stored_as"], name.as_str());
    assert_eq!(audited[0]["file_was_present"], true);
    assert!(
        audited[0]["why"]
            .as_str()
            .expect("why")
            .contains("--older-than 2"),
        "{audited:?}"
    );

    // The transfer and its receipt stay; the list says when it went.
    let receipts: i64 = endpoint_db(&net)
        .query_row(
            "SELECT count(*) FROM transfers WHERE signature IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(receipts, 1);
    let list = authority(&net, &["inbox", "list", "--format", "json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(list[0]["present"], false);
    assert!(list[0]["deleted"].is_string(), "{list}");

    // Again: nothing more to delete, nothing more audited; the chain holds.
    let out = authority(&net, &["inbox", "purge", "--older-than", "2"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 file(s)"));
    assert_eq!(deletions_audited(&net).len(), 1);
    let verify = authority(&net, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_deletes_files_past_inbox_days_by_itself() {
    let mut net = Net::start(&[LA]).await;
    let (_, path) = delivered(&net).await;
    let digest = sha256_hex(&path);
    age_received(&net, 8);
    // The sweep runs every partial_ttl_secs / 4 (at least a second).
    net.restart_endpoint_with(LA, "partial_ttl_secs = 4\n[retention]\ninbox_days = 7\n")
        .await;
    let mut waited = 0;
    while path.exists() {
        assert!(waited < 600, "the file past retention was never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    let mut audited = deletions_audited(&net);
    while audited.is_empty() && waited < 600 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
        audited = deletions_audited(&net);
    }
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["sha256"], digest.as_str());
    assert_eq!(audited[0]["why"], "retention: inbox_days = 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbox_days_out_of_range_is_a_configuration_error_naming_the_key() {
    let net = Net::start(&[LA]).await;
    let path = net
        .path(&format!("la-{}", LA.to_ascii_lowercase()))
        .join("authority.toml");
    let base = std::fs::read_to_string(&path).expect("authority.toml");
    for (retention, says) in [
        ("inbox_days = 0", "retention.inbox_days"),
        ("inbox_days = -3", "retention.inbox_days"),
        ("inbox_days = 40000", "retention.inbox_days"),
        ("days = 7", "days"),
    ] {
        let text = format!("{base}\n[retention]\n{retention}\n");
        let err = mishare::config::AuthorityConfig::from_toml(&path, &text)
            .expect_err(retention)
            .to_string();
        assert!(err.contains(says), "{retention}: {err}");
    }
    let ok = format!("{base}\n[retention]\ninbox_days = 30\n");
    let config = mishare::config::AuthorityConfig::from_toml(&path, &ok).expect("valid");
    assert_eq!(config.inbox_days, Some(30));
}
