//! `provider.toml` as any text, finished as every provider command does:
//! relative paths resolve in a directory holding the reference data and a
//! development PKI, so a config that is otherwise valid loads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::config::ProviderConfig;

fuzz_target!(|text: &str| {
    if mishare_fuzz::may_name_a_special_file(text) {
        return;
    }
    let dir = mishare_fuzz::config_dir();
    match ProviderConfig::from_toml(&dir.provider_toml, text) {
        Ok(config) => {
            for report in &config.reports {
                let _ = config.recipients_of(report);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
