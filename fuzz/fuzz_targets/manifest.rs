//! A manifest off the wire: bytes decoded as `mishare.v1.Manifest`, as
//! tonic would, then validated as the endpoint does before any field
//! touches a path or the database.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::authority::manifest::validate;
use mishare::wire::v1;
use prost::Message;

/// The endpoint's limit: large enough that size checks pass and fail.
const MAX_FILE_BYTES: u64 = 1 << 30;

fuzz_target!(|bytes: &[u8]| {
    let Ok(wire) = v1::Manifest::decode(bytes) else {
        return;
    };
    match validate(wire, mishare_fuzz::OWN_LA, MAX_FILE_BYTES) {
        Ok(manifest) => {
            // The inbox name is a single, ordinary path component.
            let name = manifest.stored_as();
            assert!(!name.contains(['/', '\\', '\0']), "{name:?}");
            assert!(name != "." && name != "..", "{name:?}");
            assert!(manifest.offset <= manifest.size);
            assert!(manifest.size <= MAX_FILE_BYTES);
        }
        Err(e) => {
            // What the peer would be sent.
            let _ = (e.code(), e.to_string());
        }
    }
});
