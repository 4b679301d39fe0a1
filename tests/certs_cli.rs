//! `mishare certs dev` writes a usable development PKI and never overwrites one.

use std::process::Command;

use mishare::tls;

fn certs_dev(out: &std::path::Path, las: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mishare"));
    cmd.args(["certs", "dev", "--out"]).arg(out);
    for la in las {
        cmd.args(["--la", la]);
    }
    cmd.output().expect("run mishare")
}

#[test]
fn writes_a_ca_a_provider_dwp_and_one_server_per_la() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("pki");
    let run = certs_dev(&out, &["E09000002", "E09000030"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("NOT for production"));
    tls::TrustAnchors::load(&out.join("ca.pem")).expect("CA loads");
    for (stem, name) in [
        ("provider", "provider.test"),
        ("dwp", "dwp.test"),
        ("la-e09000002", "la-e09000002.test"),
        ("la-e09000030", "la-e09000030.test"),
    ] {
        let id = tls::Identity::load(
            &out.join(format!("{stem}.pem")),
            &out.join(format!("{stem}.key")),
        )
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(id.names().expect("names"), [name]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join(format!("{stem}.key")))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{stem}.key is owner-only");
        }
    }
    assert!(
        std::fs::read_to_string(out.join("README.txt"))
            .expect("readme")
            .contains("NOT FOR PRODUCTION")
    );
}

#[test]
fn never_overwrites_a_pki() {
    let dir = tempfile::tempdir().expect("dir");
    assert!(certs_dev(dir.path(), &["E1"]).status.success());
    let before = std::fs::read(dir.path().join("provider.key")).expect("key");
    let again = certs_dev(dir.path(), &["E1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read(dir.path().join("provider.key")).expect("key"),
        before
    );
}

#[test]
fn refuses_a_hostile_la_code() {
    let dir = tempfile::tempdir().expect("dir");
    let run = certs_dev(dir.path(), &["../../etc"]);
    assert_eq!(run.status.code(), Some(64));
    assert!(!dir.path().join("ca.pem").exists());
}

/// A reader that goes away (`mishare … | head -1`) ends the command quietly,
/// never with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(["certs", "dev", "--la", "E1", "--out"])
        .arg(dir.path().join("pki"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mishare");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
