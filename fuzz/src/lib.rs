//! What the fuzz targets share: the tables they ask for, the declared
//! dimensions and LAs, the directory a config's files resolve against, and
//! the certificate receipts are checked with.
//!
//! Everything here is made once per process: a target must never write a
//! file per input.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mishare::certs::{DevCa, Usage, Validity};
use mishare::reference::{Dimensions, LaReference, LocalAuthority};
use mishare::sanitiser::{
    Catalogue, Classification, CountTable, Measure, PeriodGrain, Recipient, TableSpec, View,
    render, sanitise,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The LA reference data of `tests/data/reference/las.csv`, which the
/// config directory holds too.
pub const LAS_CSV: &str = include_str!("../../tests/data/reference/las.csv");

/// The LA every table for one recipient, and every manifest, is for.
pub const OWN_LA: &str = "E09000002";

/// The built-in declared dimensions and the LAs of [`LAS_CSV`].
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let las = LAS_CSV.lines().skip(1).filter_map(|line| {
            let mut fields = line.split(',');
            Some(LocalAuthority {
                code: fields.next()?.to_string(),
                name: fields.next()?.to_string(),
                cpa: fields.next()?.to_string(),
            })
        });
        Catalogue::new(Dimensions::default(), LaReference::from_entries(las))
    })
}

/// The tables every counts or records input is read for, between them
/// using every kind of dimension, both views, filters, a period range of
/// each grain, a recipient and strict mode.
pub fn specs() -> &'static [TableSpec] {
    static SPECS: OnceLock<Vec<TableSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let range = |text: &str| Some(text.parse().expect("a fixed period range"));
        vec![
            // Referrals by payment group, every period in the input.
            TableSpec {
                classification: Some(Classification::Published),
                ..TableSpec::new(Measure::Referrals, "payment_group")
            },
            // Job starts by payment group × quarter, over a year (T5).
            TableSpec {
                cols: Some("period".into()),
                period: PeriodGrain::Quarter,
                periods: range("2012-Q1..2012-Q4"),
                classification: Some(Classification::Internal),
                ..TableSpec::new(Measure::JobStarts, "payment_group")
            },
            // Outcome shares by payment group × LA, disabled participants.
            TableSpec {
                view: View::Shares,
                cols: Some("la_code".into()),
                filters: vec![("disability".into(), "Y".into())],
                classification: Some(Classification::Published),
                ..TableSpec::new(Measure::JobOutcomes, "payment_group")
            },
            // One LA's referrals by disability × month, strict.
            TableSpec {
                cols: Some("period".into()),
                periods: range("2012-07..2012-09"),
                classification: Some(Classification::Internal),
                recipient: Some(Recipient {
                    code: OWN_LA.into(),
                    name: "Barking and Dagenham".into(),
                }),
                strict: true,
                ..TableSpec::new(Measure::Referrals, "disability")
            },
        ]
    })
}

/// What a report does with a table a reader made: sanitise it, then render
/// both outputs, so the fuzzers reach the rules and rendering too.
pub fn sanitise_and_render(spec: &TableSpec, table: &CountTable) {
    if let Ok(sanitised) = sanitise(spec, table) {
        let _ = render::csv(&sanitised);
        let _ = render::json(&sanitised);
    }
}

/// A directory holding what the example configs name (reference data,
/// declared dimensions and a development PKI), so a config that is
/// otherwise valid gets as far as loading its certificates.
#[derive(Debug)]
pub struct ConfigDir {
    // Held so that the directory lives as long as the process.
    _dir: tempfile::TempDir,
    /// Where `provider.toml` "is": relative paths resolve beside it.
    pub provider_toml: PathBuf,
    /// Where `authority.toml` "is".
    pub authority_toml: PathBuf,
}

/// The [`ConfigDir`], made on first use. libFuzzer ends a process with
/// `exit`, so the directory is never removed: it is made under
/// `fuzz/target`, where `cargo clean` removes it, not in `/tmp`.
pub fn config_dir() -> &'static ConfigDir {
    static DIR: OnceLock<ConfigDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/config-dirs");
        std::fs::create_dir_all(&parent).expect("create fuzz/target/config-dirs");
        let dir = tempfile::Builder::new()
            .prefix("config-")
            .tempdir_in(&parent)
            .expect("a config directory");
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write a config fixture");
        };
        write("reference/las.csv", LAS_CSV);
        write("reference/dimensions.csv", DIMENSIONS_CSV);
        let ca = DevCa::new("fuzz CA").expect("a CA");
        let issue = |name: &str, usage| ca.issue(name, usage, Validity::Current).expect("issue");
        let provider = issue("provider.test", Usage::Client);
        let authority = issue(&mishare::certs::la_server_name(OWN_LA), Usage::Server);
        write("certs/ca.pem", ca.cert_pem());
        write("certs/dwp-ca.pem", ca.cert_pem());
        write("certs/provider.pem", &provider.cert_pem);
        write("certs/provider.key", &provider.key_pem);
        write("certs/authority.pem", &authority.cert_pem);
        write("certs/authority.key", &authority.key_pem);
        ConfigDir {
            provider_toml: dir.path().join("provider.toml"),
            authority_toml: dir.path().join("authority.toml"),
            _dir: dir,
        }
    })
}

/// The built-in declaration, as a file a config may name.
const DIMENSIONS_CSV: &str = "dimension,category,label
payment_group,JSA 18-24,
payment_group,JSA 25+,
payment_group,JSA Early Access,
payment_group,JSA Ex-IB,
payment_group,ESA Volunteers,
payment_group,New ESA Claimants,
payment_group,ESA Ex-IB,
payment_group,IB/IS,
payment_group,JSA Prison Leavers,
disability,Y,Disabled
disability,N,Not disabled
";

/// Whether a config text might name a file that never ends (`/dev/zero`,
/// `/proc/…`, a FIFO under `/sys`) or standard input. The loaders read
/// whatever file a config names, to its end: an operator's mistake there
/// hangs the command, which is not what these targets look for. TOML
/// escapes could spell such a name, so any `\u` escape is skipped too.
pub fn may_name_a_special_file(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["dev", "proc", "sys", "\\u"]
        .iter()
        .any(|word| lower.contains(word))
}

/// The endpoint certificate the committed receipt seeds are signed for
/// (`fixtures/receipt-endpoint.pem`), so a seed verifies and its mutants
/// reach the signature check. `examples/make_seeds.rs` made it once with
/// `DevCa`; its key was never kept.
pub fn receipt_cert() -> &'static CertificateDer<'static> {
    static CERT: OnceLock<CertificateDer<'static>> = OnceLock::new();
    CERT.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECEIPT_CERT);
        CertificateDer::from_pem_file(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e:?}; `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds` \
                 makes it",
                path.display()
            )
        })
    })
}

/// Where [`receipt_cert`] is, under `fuzz/`.
pub const RECEIPT_CERT: &str = "fixtures/receipt-endpoint.pem";
