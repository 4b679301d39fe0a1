//! Writes the seeds that are not text a person can type: encoded
//! manifests, and receipts signed by a throwaway endpoint key, with that
//! endpoint's certificate (never its key) for the `receipt` target.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`
//! rewrites them; the receipt seeds and the certificate change together.

use std::path::Path;

use mishare::certs::{DevCa, Usage, Validity};
use mishare::receipt::{self, ReceiptSigner};
use mishare::wire::v1;
use prost::Message;

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |rel: &str, bytes: &[u8]| {
        let path = fuzz.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write a seed");
        println!("wrote {}", path.display());
    };

    let manifest = v1::Manifest {
        transfer_id: "0d9c3e7a-5b21-4c7e-9f0a-2b6d8e4f1a3c".into(),
        report: "referrals-monthly".into(),
        period: "2012-10".into(),
        classification: v1::Classification::Internal as i32,
        la_code: mishare_fuzz::OWN_LA.into(),
        size: 4096,
        sha256: vec![0xab; 32],
        offset: 0,
    };
    write("corpus/manifest/internal.pb", &manifest.encode_to_vec());
    let resumed = v1::Manifest {
        report: "job-starts-quarterly".into(),
        period: "2012-Q3".into(),
        classification: v1::Classification::Published as i32,
        offset: 1024,
        ..manifest.clone()
    };
    write(
        "corpus/manifest/published-resumed.pb",
        &resumed.encode_to_vec(),
    );

    let ca = DevCa::new("fuzz receipt CA").expect("a CA");
    let endpoint = ca
        .issue(
            &mishare::certs::la_server_name(mishare_fuzz::OWN_LA),
            Usage::Server,
            Validity::Current,
        )
        .expect("an endpoint certificate");
    let signer = ReceiptSigner::new(&endpoint.identity()).expect("a signer");
    let stored_as =
        manifest.period.clone() + "_" + &manifest.report + "_" + &manifest.transfer_id + ".age";
    let signed = signer
        .sign(
            &manifest.transfer_id,
            &[0xab; 32],
            manifest.size,
            &stored_as,
            1_350_000_000_000,
        )
        .expect("a receipt");
    receipt::verify(&signed, &endpoint.cert_der).expect("the receipt verifies");
    write(mishare_fuzz::RECEIPT_CERT, endpoint.cert_pem.as_bytes());
    write(
        "corpus/receipt/valid.json",
        (receipt::to_json(&signed) + "\n").as_bytes(),
    );
    write("corpus/receipt/valid.pb", &signed.encode_to_vec());
}
