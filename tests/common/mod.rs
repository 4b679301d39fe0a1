//! Shared helpers: a temporary provider directory with reference data, a
//! `provider.toml` and a signed document, and a way to run the real binary
//! against it.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, NaiveDate, Utc};
use mishare::config::ProviderConfig;
use mishare::provider::agreement::{AgreementRequest, NewAgreement};
use mishare::provider::store::Store;

/// The reference data every test uses.
pub const LAS_CSV: &str = "\
la_code,la_name,cpa
E09000002,Barking and Dagenham,London East
E09000030,Tower Hamlets,London East
E09000009,Ealing,London West
E08000025,Birmingham,Birmingham and the Black Country
";

pub const AGE_KEY: &str = "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq";

/// A provider directory in a temporary folder.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Contract areas London East and London West; authorities E09000002,
    /// E09000030, E08000025 (outside the areas) and E09999999 (not in the
    /// reference data); reports `referrals-monthly` (to all) and `east-only`
    /// (to E09000002).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Self { dir };
        std::fs::create_dir(env.path("reference")).expect("mkdir");
        std::fs::write(env.path("reference/las.csv"), LAS_CSV).expect("write las");
        std::fs::write(env.path("agreement.pdf"), b"%PDF-1.4 signed agreement\n").expect("doc");
        write_provider_certs(&env.path("certs"));
        env.write_config("provider.toml", &["London East", "London West"]);
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("provider.toml")
    }

    /// Writes a config named `name` with these contract areas (the rest as
    /// in [`Env::new`]); all configs share the same data_dir.
    pub fn write_config(&self, name: &str, areas: &[&str]) -> PathBuf {
        let areas: Vec<String> = areas.iter().map(|a| format!("{a:?}")).collect();
        let authority = |code: &str| {
            format!(
                "[[authority]]\ncode = \"{code}\"\nendpoint = \"https://127.0.0.1:7443\"\n\
                 server_name = \"la-{code}.test\"\nrecipients = [\"{AGE_KEY}\"]\n\n"
            )
        };
        let mut text = format!(
            "provider = \"Example Provider Ltd\"\ndata_dir = \"var/provider\"\n\
             contract_areas = [{}]\nreference = \"reference/las.csv\"\n\n\
             [tls]\ncert = \"certs/provider.pem\"\nkey = \"certs/provider.key\"\nca = \"certs/ca.pem\"\n\n",
            areas.join(", ")
        );
        for code in ["E09000002", "E09000030", "E08000025", "E09999999"] {
            text.push_str(&authority(code));
        }
        text.push_str(
            "[[report]]\nname = \"referrals-monthly\"\nsource = { records = \"data/participants.csv\" }\n\
             measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\ncols = \"period\"\n\
             period = \"month\"\nschedule = \"0 6 2 * *\"\nrecipients = \"all\"\n\
             split_by_recipient = true\nclassification = \"internal\"\nmissed = \"run-once\"\n\n\
             [[report]]\nname = \"east-only\"\nsource = { counts = \"data/counts.csv\" }\n\
             measure = \"job_starts\"\nrows = \"payment_group\"\nschedule = \"0 6 2 * *\"\n\
             recipients = [\"E09000002\"]\nclassification = \"internal\"\nmissed = \"skip\"\n",
        );
        let path = self.path(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn config(&self) -> ProviderConfig {
        ProviderConfig::load(&self.config_path()).expect("test config loads")
    }

    pub fn store(&self) -> Store {
        Store::open(&self.config().data_dir).expect("store opens")
    }

    /// Runs `mishare ARGS` in the directory, as user `tester`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mishare"))
            .args(args)
            .current_dir(self.dir.path())
            .env("USER", "tester")
            .env_remove("MISHARE_LOG")
            .output()
            .expect("run mishare")
    }

    /// Puts an agreement on file through the library, as if today were
    /// `today`.
    pub fn add_agreement(
        &self,
        store: &mut Store,
        la: &str,
        signed: &str,
        expires: Option<&str>,
        today: &str,
    ) {
        let config = self.config();
        let request = AgreementRequest {
            la,
            representative: "Jo Bloggs <jo.bloggs@example.gov.uk>",
            signed,
            expires,
            document: &self.path("agreement.pdf"),
        };
        let new = NewAgreement::validate(&request, &config, date(today)).expect("valid agreement");
        store
            .add_agreement(&new, "provider:tester", at(&format!("{today}T09:00:00Z")))
            .expect("agreement added");
    }
}

/// A CA and the provider's certificate and key in `dir` (`ca.pem`,
/// `provider.pem`, `provider.key`), made in the test: a provider
/// configuration is finished only with its TLS material loaded.
pub fn write_provider_certs(dir: &Path) {
    use mishare::certs::{DevCa, Usage, Validity};
    std::fs::create_dir_all(dir).expect("mkdir certs");
    let ca = DevCa::new("test CA").expect("ca");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
    let issued = ca
        .issue("provider.test", Usage::ClientAndServer, Validity::Current)
        .expect("issue");
    std::fs::write(dir.join("provider.pem"), &issued.cert_pem).expect("cert");
    write_private_key(&dir.join("provider.key"), &issued.key_pem);
}

/// Writes a private key owner-only (0600): a configuration naming a key
/// its group or others can read is refused.
pub fn write_private_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).expect("key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status, showing the output when it differs.
pub fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The database file, for tamper tests that edit it as `sqlite3` would.
pub fn database(env: &Env) -> PathBuf {
    env.config().database_path()
}

pub fn raw_connection(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("raw connection")
}
