//! `mishare demo`: the whole job on an embedded default, in a temporary
//! directory, so a newcomer sees what mishare does with one command.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::{Days, NaiveDate, Utc};
use mishare::certs::{self, la_server_name};
use mishare::common::shutdown::Shutdown;
use mishare::config::{AuthorityConfig, ProviderConfig};
use mishare::provider::agreement::{AgreementRequest, NewAgreement};
use mishare::provider::push::Delivered;
use mishare::provider::store::{Maker, Scope, Store};
use mishare::provider::{LaOutcome, SendOptions};
use mishare::sanitiser::{self, Catalogue, InputError, Measure, TableSpec};
use tokio::net::TcpListener;

use super::Outcome;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files (PKI, keys, configs, inboxes, state) in DIR,
    /// which must not already hold a demo, instead of a temporary directory
    /// removed at the end.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// How many synthetic participant records to make.
    #[arg(long, value_name = "N", default_value_t = 40_000)]
    participants: u32,
}

/// The demo's local authorities: four in the provider's contract package
/// areas, one outside them.
const LAS: &str = "la_code,la_name,cpa
E09000002,Barking and Dagenham,London East
E09000030,Tower Hamlets,London East
E09000009,Ealing,London West
E09000005,Brent,London West
E08000025,Birmingham,West Midlands Birmingham Solihull & Black Country
";

/// Every LA gets an endpoint; what the gate will say about each.
const CODES: [&str; 5] = [
    "E09000002",
    "E09000030",
    "E09000009",
    "E09000005",
    "E08000025",
];
const WITH_AGREEMENT: [&str; 4] = ["E09000002", "E09000030", "E09000009", "E08000025"];
const SUSPENDED: &str = "E09000009";

const PROVIDER_ID: &str = "provider.test";
const REPORT: &str = "referrals-quarterly";

const HEADER: &str = "participant_id,la_code,payment_group,disability,referral_date,\
                      attachment_date,job_start_date,job_outcome_date,first_sustainment_date\n";

pub(crate) fn run(args: &DemoArgs) -> Outcome {
    let temp;
    let dir: PathBuf = match &args.out {
        Some(dir) => {
            if dir.join("provider.toml").exists() {
                anyhow::bail!(
                    "{} already holds a demo; choose an empty or new directory",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.canonicalize()
                .with_context(|| format!("cannot resolve {}", dir.display()))?
        }
        None => {
            temp = tempfile::tempdir().context("cannot make a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let text = runtime.block_on(demo(&dir, args.participants))?;
    let code = super::write_stdout(text.as_bytes())?;
    if args.out.is_none() {
        eprintln!("(the demo's files are removed now; `mishare demo --out DIR` keeps them)");
    }
    Ok(code)
}

/// One LA's running endpoint.
struct Endpoint {
    code: &'static str,
    inbox: PathBuf,
    key: PathBuf,
}

async fn demo(dir: &Path, participants: u32) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mishare demo, everything on loopback in {}\n",
        dir.display()
    );
    for sub in ["reference", "data", "keys"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("reference/las.csv"), LAS)?;
    let first_referral = Utc::now().date_naive() - Days::new(730);
    std::fs::write(
        dir.join("data/participants.csv"),
        synthetic_records(participants, first_referral),
    )?;
    let document = dir.join("agreement-signed.pdf");
    std::fs::write(
        &document,
        b"%PDF-1.4 (a signed confidentiality agreement would be here)\n",
    )?;
    let codes: Vec<String> = CODES.iter().map(|c| c.to_string()).collect();
    let pki = certs::write_dev_pki(&dir.join("certs"), PROVIDER_ID, "dwp.test", &codes)?;
    let _ = writeln!(
        out,
        "── A development PKI ({}), an age key per LA, and an authority endpoint per LA:",
        pki.ca.display()
    );

    let mut endpoints = Vec::new();
    let mut authorities = String::new();
    let running = Shutdown::new();
    for code in CODES {
        let stem = format!("la-{}", code.to_ascii_lowercase());
        let key = dir.join(format!("keys/{code}.key"));
        let recipient = mishare::seal::generate(&key)?;
        let la_dir = dir.join(&stem);
        std::fs::create_dir_all(&la_dir)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let toml = format!(
            "code = \"{code}\"\nlisten = \"{addr}\"\ninbox = \"inbox\"\ndata_dir = \"state\"\n\
             max_file_bytes = 1073741824\n\n[tls]\ncert = \"../certs/{stem}.pem\"\n\
             key = \"../certs/{stem}.key\"\nca = \"../certs/ca.pem\"\n\n\
             [[provider]]\nid = \"{PROVIDER_ID}\"\nname = \"Example Provider Ltd\"\n"
        );
        let path = la_dir.join("authority.toml");
        std::fs::write(&path, &toml)?;
        let config = AuthorityConfig::from_toml(&path, &toml)?;
        let stop = running.clone();
        running.spawn(async move {
            if let Err(e) = mishare::authority::serve(config, listener, &stop).await {
                tracing::error!(error = %e, "a demo endpoint failed");
            }
        });
        let _ = writeln!(
            out,
            "   {code} at https://{addr} as {} (key {})",
            la_server_name(code),
            key.display()
        );
        authorities.push_str(&format!(
            "[[authority]]\ncode = \"{code}\"\nendpoint = \"https://{addr}\"\n\
             server_name = \"{}\"\nrecipients = [\"{recipient}\"]\n\n",
            la_server_name(code)
        ));
        endpoints.push(Endpoint {
            code,
            inbox: la_dir.join("inbox").join(PROVIDER_ID),
            key,
        });
    }

    let config_path = dir.join("provider.toml");
    std::fs::write(
        &config_path,
        format!(
            "provider = \"Example Provider Ltd\"\ndata_dir = \"var/provider\"\n\
             contract_areas = [\"London East\", \"London West\"]\n\
             reference = \"reference/las.csv\"\n\n[tls]\ncert = \"certs/provider.pem\"\n\
             key = \"certs/provider.key\"\nca = \"certs/ca.pem\"\n\n{authorities}\
             [[report]]\nname = \"{REPORT}\"\nsource = {{ records = \"data/participants.csv\" }}\n\
             measure = \"referrals\"\nview = \"counts\"\nrows = \"payment_group\"\n\
             cols = \"period\"\nperiod = \"quarter\"\nperiods = 4\nschedule = \"0 6 2 1,4,7,10 *\"\n\
             recipients = \"all\"\nsplit_by_recipient = true\nclassification = \"internal\"\n\
             missed = \"run-once\"\n"
        ),
    )?;
    let config = ProviderConfig::load(&config_path)?;

    let _ = writeln!(
        out,
        "\n── The provider's operator puts agreements on file and suspends one LA:"
    );
    let now = Utc::now();
    let today = now.date_naive();
    let signed = (today - Days::new(200)).to_string();
    let mut store = Store::open(&config.data_dir)?;
    for code in WITH_AGREEMENT {
        let request = AgreementRequest {
            la: code,
            representative: "Jo Bloggs <jo.bloggs@example.gov.uk>",
            signed: &signed,
            expires: None,
            document: &document,
        };
        match NewAgreement::validate(&request, &config, today) {
            Ok(new) => {
                store.add_agreement(&new, "provider:demo", now)?;
                let _ = writeln!(
                    out,
                    "   mishare agreement add --la {code} …   agreement on file"
                );
            }
            Err(e) => {
                let _ = writeln!(out, "   mishare agreement add --la {code} …   refused: {e}");
            }
        }
    }
    let suspension = store.suspend(
        Scope::La(SUSPENDED.to_string()),
        Maker::Provider,
        "the LA reported a misdirected email",
        Some("INC-42"),
        "provider:demo",
        now,
    )?;
    let _ = writeln!(
        out,
        "   mishare suspend --la {SUSPENDED} …   suspension {}",
        suspension.id
    );
    drop(store);
    let _ = writeln!(out, "   (E09000005 has no agreement on file)");

    let _ = writeln!(
        out,
        "\n── mishare send-now {REPORT}: one read of the records, one sealed file per LA:"
    );
    let config = Arc::new(config);
    let options = SendOptions {
        at: now,
        actor: "provider:demo".into(),
        push: Default::default(),
        progress: Arc::new(|_| {}),
    };
    let sending = Shutdown::new();
    let results =
        mishare::provider::send_now(config.clone(), REPORT, None, options, &sending).await?;
    for result in &results {
        let _ = writeln!(out, "   {}", result.line());
    }

    let _ = writeln!(
        out,
        "\n── What each LA holds, and how it opens it with the standard age tool:"
    );
    for result in &results {
        let LaOutcome::Pushed(Delivered::Delivered { stored_as, .. }) = &result.outcome else {
            continue;
        };
        let Some(endpoint) = endpoints.iter().find(|e| e.code == result.la) else {
            continue;
        };
        let file = endpoint.inbox.join(stored_as);
        let _ = writeln!(
            out,
            "   {}\n     age -d -i {} {}",
            file.display(),
            endpoint.key.display(),
            file.display()
        );
    }
    if let Some(first) = results.iter().find_map(|r| match &r.outcome {
        LaOutcome::Pushed(Delivered::Delivered { stored_as, .. }) => {
            Some((r.la.clone(), stored_as.clone()))
        }
        _ => None,
    }) && let Some(endpoint) = endpoints.iter().find(|e| e.code == first.0)
    {
        let plaintext = decrypt(&endpoint.inbox.join(&first.1), &endpoint.key)?;
        let _ = writeln!(out, "\n── {} decrypted with its own key:", first.0);
        out.push_str(&String::from_utf8_lossy(&plaintext));
    }

    let _ = writeln!(
        out,
        "\n── And the sanitiser refuses outcome volumes outright (mishare sanitise):"
    );
    let volumes = TableSpec::new(Measure::JobOutcomes, "payment_group");
    match sanitiser::read_records(
        std::fs::File::open(dir.join("data/participants.csv"))?,
        "participants.csv",
        &volumes,
        &Catalogue::default(),
    ) {
        Err(InputError::Blocked(blocked)) => {
            let _ = writeln!(out, "   {blocked}");
        }
        other => anyhow::bail!("outcome volumes were not refused: {other:?}"),
    }

    running.cancel();
    running
        .drain(std::time::Duration::from_secs(10), "demo endpoints")
        .await;
    let _ = writeln!(
        out,
        "\nEvery decision above is in the provider's hash-chained audit log \
         (mishare audit verify, mishare audit export)."
    );
    Ok(out)
}

/// Opens a delivered file with the LA's key, as `mishare decrypt` does.
fn decrypt(file: &Path, key: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let identities = mishare::seal::Identities::load(key)?;
    let mut opened = mishare::seal::open(std::fs::File::open(file)?, &identities)?;
    let mut plaintext = Vec::new();
    opened.read_to_end(&mut plaintext)?;
    Ok(plaintext)
}

/// Synthetic participant records referred over the two years from `start`
/// (a linear congruential generator: the same day gives the same records).
fn synthetic_records(n: u32, start: NaiveDate) -> String {
    // (payment group, weight in thousandths, chance of disability in %)
    const GROUPS: [(&str, u64, u64); 9] = [
        ("JSA 18-24", 200, 10),
        ("JSA 25+", 480, 14),
        ("JSA Early Access", 90, 18),
        ("JSA Ex-IB", 20, 45),
        ("ESA Volunteers", 30, 80),
        ("New ESA Claimants", 100, 85),
        ("ESA Ex-IB", 40, 88),
        ("IB/IS", 20, 60),
        ("JSA Prison Leavers", 20, 12),
    ];
    let mut state: u64 = 0x5eed_2012;
    let mut next = |below: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    };
    let mut out = String::with_capacity(n as usize * 96);
    out.push_str(HEADER);
    for id in 0..n {
        let la = CODES[next(CODES.len() as u64) as usize];
        let mut pick = next(1000);
        let (group, _, disabled_pct) = *GROUPS
            .iter()
            .find(|(_, w, _)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .unwrap_or(&GROUPS[1]);
        let disability = if next(100) < disabled_pct { "Y" } else { "N" };
        let referral = start + Days::new(next(730));
        let mut dates = [Some(referral), None, None, None, None];
        if next(100) < 95 {
            dates[1] = Some(referral + Days::new(3 + next(25)));
            if next(100) < 32 {
                dates[2] = dates[1].map(|d| d + Days::new(20 + next(300)));
                if next(100) < 60 {
                    dates[3] = dates[2].map(|d| d + Days::new(91 + next(90)));
                    if next(100) < 80 {
                        dates[4] = dates[3].map(|d| d + Days::new(28));
                    }
                }
            }
        }
        // An extract taken two years after `start`: stages not reached by
        // then are empty, as in a real case-management export.
        let extract = start + Days::new(730);
        let _ = write!(out, "P{id:09},{la},{group},{disability}");
        for date in dates.into_iter().map(|d| d.filter(|d| *d <= extract)) {
            out.push(',');
            if let Some(d) = date {
                let _ = write!(out, "{}", d.format("%Y-%m-%d"));
            }
        }
        out.push('\n');
    }
    out
}
