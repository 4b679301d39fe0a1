//! `authority.toml` as any text, finished as `mishare authority run` does,
//! in a directory holding a development PKI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mishare::config::AuthorityConfig;

fuzz_target!(|text: &str| {
    if mishare_fuzz::may_name_a_special_file(text) {
        return;
    }
    let dir = mishare_fuzz::config_dir();
    match AuthorityConfig::from_toml(&dir.authority_toml, text) {
        Ok(config) => {
            let _ = config.allow_list();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
