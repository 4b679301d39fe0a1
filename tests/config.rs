//! `provider.toml`: the documented example parses, and every kind of mistake
//! is refused naming the file, the key (or line and column) and the reason.

use std::path::{Path, PathBuf};

mod common;

use mishare::config::provider::{Missed, ReportRecipients, Source};
use mishare::config::{ConfigError, ProviderConfig};
use mishare::sanitiser::{Classification, Measure, PeriodGrain, View};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn example() -> String {
    std::fs::read_to_string(data("provider.example.toml")).expect("example")
}

/// The example with `from` replaced by `to` (which must occur).
fn edited(from: &str, to: &str) -> String {
    let text = example();
    assert!(text.contains(from), "the example contains {from:?}");
    text.replacen(from, to, 1)
}

fn error(text: &str) -> String {
    ProviderConfig::from_toml(&data("provider.toml"), text)
        .expect_err("refused")
        .to_string()
}

/// The example in a directory of its own, beside its reference data and
/// a PKI made for the test (the example names `certs/…`; no key is ever
/// committed).
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("reference")).expect("mkdir");
    std::fs::copy(
        data("reference/las.csv"),
        dir.path().join("reference/las.csv"),
    )
    .expect("las");
    std::fs::write(dir.path().join("provider.toml"), example()).expect("example");
    common::write_provider_certs(&dir.path().join("certs"));
    std::fs::copy(
        dir.path().join("certs/ca.pem"),
        dir.path().join("certs/dwp-ca.pem"),
    )
    .expect("dwp ca");
    dir
}

#[test]
fn the_documented_example_parses() {
    let dir = example_dir();
    let at = |rel: &str| dir.path().join(rel);
    let config = ProviderConfig::load(&at("provider.toml")).expect("example parses");
    assert_eq!(config.provider, "Example Provider Ltd");
    assert_eq!(
        config.data_dir,
        at("var/provider"),
        "relative to the config file"
    );
    assert_eq!(
        config
            .contract_areas
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["London East", "London West"]
    );
    assert_eq!(config.reference.len(), 3);
    assert_eq!(config.tls.paths.key, at("certs/provider.key"));
    assert_eq!(
        config.tls.identity.names().expect("names"),
        ["provider.test"]
    );
    let directive = config.directive.as_ref().expect("directive");
    assert_eq!(directive.listen.to_string(), "127.0.0.1:7444");
    assert_eq!(directive.regulators, ["dwp.test"]);
    let authority = config.authority("E09000002").expect("authority");
    assert_eq!(authority.server_name, "la-e09000002.test");
    let report = config.report("referrals-monthly").expect("report");
    assert_eq!(report.source, Source::Records(at("data/participants.csv")));
    assert_eq!(report.schedule.to_string(), "0 6 2 * *");
    assert_eq!(report.measure, Measure::Referrals);
    assert_eq!(report.view, View::Counts);
    assert_eq!(report.cols.as_deref(), Some("period"));
    assert_eq!(report.period, PeriodGrain::Month);
    assert_eq!(report.recipients, ReportRecipients::All);
    assert!(report.split_by_recipient);
    assert_eq!(report.classification, Classification::Internal);
    assert_eq!(report.missed, Missed::RunOnce);
}

/// DESIGN.md is the spec; the copy here must not drift from it.
#[test]
fn the_example_matches_design_md() {
    let design = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/DESIGN.md");
    let design = std::fs::read_to_string(&design).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the spec is checked out beside the crate (as CI lays it out)",
            design.display()
        )
    });
    let start = design
        .find("`provider.toml` (commands look")
        .expect("config section");
    let block = &design[start..];
    let block = &block[block.find("```toml\n").expect("toml block") + 8..];
    let block = &block[..block.find("```").expect("block end")];
    let ours = example().replace(
        "\"age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq\"",
        "\"age1…\"",
    );
    assert_eq!(
        ours, block,
        "tests/data/provider.example.toml differs from DESIGN.md"
    );
}

#[test]
fn unknown_keys_are_refused_with_line_and_column() {
    let err = error(&edited("[tls]\n", "[tls]\nverify = false\n"));
    assert!(
        err.starts_with(&format!("{}: line ", data("provider.toml").display())),
        "{err}"
    );
    assert!(err.contains("unknown field `verify`"), "{err}");
    let line = example().lines().position(|l| l == "[tls]").expect("tls") + 2;
    assert!(err.contains(&format!("line {line}, column 1")), "{err}");

    let err = error(&edited(
        "missed = \"run-once\"",
        "missed = \"run-once\"\nretries = 3",
    ));
    assert!(err.contains("unknown field `retries`"), "{err}");
}

#[test]
fn missing_and_mistyped_keys() {
    let err = error(&edited("provider = \"Example Provider Ltd\"\n", ""));
    assert!(err.contains("missing field `provider`"), "{err}");
    let err = error(&edited("missed = \"run-once\"", "missed = \"later\""));
    assert!(err.contains("unknown variant `later`"), "{err}");
    let err = error(&edited(
        "classification = \"internal\"",
        "classification = \"secret\"",
    ));
    assert!(err.contains("unknown variant `secret`"), "{err}");
}

#[test]
fn validation_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "contract_areas = [\"London East\", \"London West\"]",
            "contract_areas = []",
            "`contract_areas`: lists no area",
        ),
        (
            "contract_areas = [\"London East\", \"London West\"]",
            "contract_areas = [\"London North\"]",
            "`contract_areas`: \"London North\" is not a contract package area",
        ),
        (
            "code = \"E09000002\"",
            "code = \"E09-000002\"",
            "`authority[1].code`: \"E09-000002\" is not an LA code",
        ),
        (
            "endpoint = \"https://127.0.0.1:7443\"",
            "endpoint = \"http://127.0.0.1:7443\"",
            "`authority[1].endpoint`: \"http://127.0.0.1:7443\" must be an https:// URL",
        ),
        (
            "\"age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq\"",
            "\"AGE-SECRET-KEY-1QQQQ\"",
            "`authority[1].recipients`: ",
        ),
        (
            "schedule = \"0 6 2 * *\"",
            "schedule = \"0 6 31 2 *\"",
            "`report[1].schedule`: schedule \"0 6 31 2 *\": no date ever matches it",
        ),
        (
            "name = \"referrals-monthly\"",
            "name = \"Referrals Monthly\"",
            "`report[1].name`: \"Referrals Monthly\" is not a report name",
        ),
        (
            "recipients = \"all\"",
            "recipients = \"everyone\"",
            "`report[1].recipients`: \"everyone\" is neither \"all\" nor a list of LA codes",
        ),
        (
            "recipients = \"all\"",
            "recipients = [\"E09000030\"]",
            "`report[1].recipients`: \"E09000030\" has no [[authority]] section",
        ),
        (
            "source = { records = \"data/participants.csv\" }",
            "source = { records = \"a.csv\", counts = \"b.csv\" }",
            "`report[1].source`: needs exactly one of",
        ),
        (
            "listen = \"127.0.0.1:7444\"",
            "listen = \"localhost\"",
            "`directive.listen`: \"localhost\" is not an address and port",
        ),
        (
            "regulators = [\"dwp.test\"]",
            "regulators = []",
            "`directive.regulators`: lists no DWP identity",
        ),
    ];
    for (from, to, want) in cases {
        let err = error(&edited(from, to));
        assert!(err.contains(want), "{to}: {err}");
    }
}

#[test]
fn duplicates_are_refused() {
    let text = example();
    let start = text.find("[[authority]]").expect("authority");
    let end = text.find("[[report]]").expect("report");
    let doubled = format!("{}{}", &text[..end], &text[start..]);
    let err = error(&doubled);
    assert!(
        err.contains("`authority[2].code`: E09000002 has more than one [[authority]] section"),
        "{err}"
    );

    let report = &text[end..];
    let err = error(&format!("{text}\n{report}"));
    assert!(
        err.contains("`report[2].name`: referrals-monthly names more than one report"),
        "{err}"
    );
}

#[test]
fn missing_reference_data_is_named() {
    let err = error(&edited("reference/las.csv", "reference/nope.csv"));
    assert!(
        err.contains("`reference`: cannot read reference data"),
        "{err}"
    );
    assert!(err.contains("nope.csv"), "{err}");
}

#[test]
fn tls_material_is_loaded_at_start_and_a_bad_file_is_named() {
    let dir = example_dir();
    let path = dir.path().join("provider.toml");
    std::fs::remove_file(dir.path().join("certs/provider.key")).expect("rm key");
    let err = ProviderConfig::load(&path).expect_err("no key").to_string();
    assert!(err.contains("`tls.cert`"), "{err}");
    assert!(err.contains("provider.key"), "{err}");

    let dir = example_dir();
    let path = dir.path().join("provider.toml");
    std::fs::write(dir.path().join("certs/dwp-ca.pem"), "not a certificate\n").expect("dwp ca");
    let err = ProviderConfig::load(&path)
        .expect_err("bad dwp ca")
        .to_string();
    assert!(err.contains("`directive.ca`"), "{err}");
    assert!(err.contains("dwp-ca.pem"), "{err}");
}

#[test]
fn a_missing_file_is_not_found() {
    let err = ProviderConfig::load(Path::new("/nonexistent/provider.toml")).expect_err("missing");
    assert!(matches!(err, ConfigError::NotFound { .. }));
}

/// A private key its group or others can read is refused at load, as ssh
/// refuses one, naming the file and the `chmod` that fixes it.
#[test]
fn a_private_key_others_can_read_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o644, 0o640, 0o604] {
        let dir = example_dir();
        let key = dir.path().join("certs/provider.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = ProviderConfig::load(&dir.path().join("provider.toml"))
            .expect_err("an open key is refused")
            .to_string();
        assert!(err.contains("`tls.key`"), "{mode:o}: {err}");
        assert!(
            err.contains(&format!("(mode {mode:04o})")),
            "{mode:o}: {err}"
        );
        assert!(
            err.ends_with(&format!("chmod 600 {}", key.display())),
            "{mode:o}: {err}"
        );
    }
    // Owner-only loads.
    let dir = example_dir();
    let key = dir.path().join("certs/provider.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ProviderConfig::load(&dir.path().join("provider.toml")).expect("a 0600 key loads");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    ProviderConfig::load(&dir.path().join("provider.toml")).expect("a 0400 key loads");
}

/// `[metrics] listen` takes a loopback address only: the endpoint is plain
/// HTTP with no authentication and its labels name LAs.
#[test]
fn metrics_listen_only_on_loopback() {
    for listen in ["0.0.0.0:9464", "192.0.2.10:9464", "[::]:9464"] {
        let err = error(&format!(
            "{}\n[metrics]\nlisten = \"{listen}\"\n",
            example()
        ));
        assert!(
            err.starts_with(&format!(
                "{}: `metrics.listen`: {} is not a loopback address; the metrics endpoint is \
                 plain HTTP with no authentication and its labels name LAs and providers",
                data("provider.toml").display(),
                listen.parse::<std::net::SocketAddr>().expect("an address")
            )),
            "{listen}: {err}"
        );
    }
    let err = error(&format!(
        "{}\n[metrics]\nlisten = \"localhost:9464\"\n",
        example()
    ));
    assert!(
        err.contains("`metrics.listen`: \"localhost:9464\" is not an address and port"),
        "{err}"
    );
    let err = error(&format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:9464\"\nopen = true\n",
        example()
    ));
    assert!(err.contains("unknown field `open`"), "{err}");

    let dir = example_dir();
    let path = dir.path().join("provider.toml");
    let config = ProviderConfig::load(&path).expect("loads");
    assert_eq!(config.metrics, None, "off by default");
    for listen in ["127.0.0.1:9464", "[::1]:9464", "127.0.0.2:0"] {
        std::fs::write(
            &path,
            format!("{}\n[metrics]\nlisten = \"{listen}\"\n", example()),
        )
        .expect("write");
        let config = ProviderConfig::load(&path).expect("a loopback address loads");
        assert_eq!(config.metrics, Some(listen.parse().expect("address")));
    }
}

/// The same rule in `authority.toml`, naming that file.
#[test]
fn authority_metrics_listen_only_on_loopback() {
    use mishare::config::AuthorityConfig;
    let path = data("authority.toml");
    let text = |listen: &str| {
        format!(
            "code = \"E09000002\"\nlisten = \"127.0.0.1:7443\"\ninbox = \"inbox\"\n\
             data_dir = \"state\"\nmax_file_bytes = 1024\n\n[metrics]\nlisten = \"{listen}\"\n\n\
             [tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n\n\
             [[provider]]\nid = \"provider.test\"\nname = \"P\"\n"
        )
    };
    let err = AuthorityConfig::from_toml(&path, &text("0.0.0.0:9464"))
        .expect_err("refused")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}: `metrics.listen`: 0.0.0.0:9464 is not a loopback address; the metrics \
             endpoint is plain HTTP with no authentication",
            path.display()
        )),
        "{err}"
    );
    // A loopback address passes this check (and fails later, on the TLS
    // files this test does not make).
    let err = AuthorityConfig::from_toml(&path, &text("127.0.0.1:9464"))
        .expect_err("no TLS files")
        .to_string();
    assert!(!err.contains("metrics"), "{err}");
}
