//! Receipts checked against a fixed endpoint certificate: the input as the
//! JSON `mishare receipt verify` reads, and as a `mishare.v1.Receipt` off
//! the wire, as the provider gets it after a push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::receipt;
use mishare::wire::v1::Receipt;
use prost::Message;

fn check(r: &Receipt) {
    let _ = receipt::verify(r, mishare_fuzz::receipt_cert()).map_err(|e| e.to_string());
    let _ = receipt::scheme_name(r);
    // What the provider stores and exports reads back as the same receipt.
    let again = receipt::from_json(&receipt::to_json(r)).expect("to_json's output reads back");
    assert_eq!(&again, r);
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        match receipt::from_json(text) {
            Ok(r) => check(&r),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Ok(r) = Receipt::decode(bytes) {
        check(&r);
    }
});
