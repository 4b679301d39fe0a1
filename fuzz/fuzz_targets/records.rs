//! Participant records, read for each of the fixed tables, then sanitised
//! and rendered; and read once split by LA, as a report for several LAs
//! does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::sanitiser::{read_records, read_records_split};

fuzz_target!(|bytes: &[u8]| {
    let catalogue = mishare_fuzz::catalogue();
    for spec in mishare_fuzz::specs() {
        match read_records(bytes, "records.csv", spec, catalogue) {
            Ok(table) => mishare_fuzz::sanitise_and_render(spec, &table),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // A report's split: the LAs asked for, one twice and one undeclared.
    let spec = &mishare_fuzz::specs()[1];
    let parts = ["E09000002", "E09000030", "E09000002", "E99999999"].map(String::from);
    match read_records_split(bytes, "records.csv", spec, catalogue, "la_code", &parts) {
        Ok(tables) => {
            assert_eq!(tables.len(), parts.len(), "one table per part asked for");
            for table in &tables {
                mishare_fuzz::sanitise_and_render(spec, table);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
