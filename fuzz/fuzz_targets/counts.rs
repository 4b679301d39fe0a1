//! The long counts CSV, read for each of the fixed tables, then sanitised
//! and rendered as a report would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::sanitiser::read_counts;

fuzz_target!(|bytes: &[u8]| {
    for spec in mishare_fuzz::specs() {
        match read_counts(bytes, "counts.csv", spec, mishare_fuzz::catalogue()) {
            Ok(table) => mishare_fuzz::sanitise_and_render(spec, &table),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
