//! Reloading the daemon's certificate, key, trust anchors, revocation lists
//! and the LAs' age recipients without a restart (SIGHUP, or
//! [`Daemon::reload`](super::daemon::Daemon::reload)).
//!
//! `provider.toml` and every file it names are read and checked in full
//! (as at start); only then are the reloadable parts taken into the
//! running configuration: `[tls]` (a new client configuration for pushes)
//! and each `[[authority]]`'s `recipients` (used by the next run that
//! seals). The `Directive` listener presents the new certificate to new
//! connections and, when `[directive]` itself is unchanged, checks DWP's
//! certificates against the CA and revocation lists as the files now are.
//! Pushes in flight keep the client configuration they started
//! with, and a file already sealed stays sealed to the recipients it was
//! sealed to. Everything else (reports, schedules, `[delivery]`, LAs added
//! or removed, endpoints, `[directive]`'s listen address, file names and
//! regulators, `data_dir`) applies only after a
//! restart: a change to it is reported and the running values stay.

use std::collections::BTreeMap;

use crate::common::reload::file_sha256;
use crate::config::ProviderConfig;
use crate::tls;

/// The running configuration with the reloadable parts of `new` taken in,
/// and the keys of `new` that differ but wait for a restart.
pub(crate) fn merge(old: &ProviderConfig, new: &ProviderConfig) -> (ProviderConfig, Vec<String>) {
    let mut next = old.clone();
    next.tls = new.tls.clone();
    let directive = |c: &ProviderConfig| {
        c.directive
            .as_ref()
            .map(|d| (d.listen, d.ca.clone(), d.crls.clone(), d.regulators.clone()))
    };
    // The same files, read again: what a renewed CA or a new revocation
    // list says now.
    if directive(old) == directive(new) {
        next.directive = new.directive.clone();
    }
    for la in &mut next.authorities {
        if let Some(fresh) = new.authority(&la.code) {
            la.recipients = fresh.recipients.clone();
        }
    }
    let mut keys = Vec::new();
    let mut differ = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differ("provider", old.provider != new.provider);
    differ("data_dir", old.data_dir != new.data_dir);
    differ("contract_areas", old.contract_areas != new.contract_areas);
    differ("reference", old.reference_path != new.reference_path);
    differ("report", old.reports != new.reports);
    differ("delivery", old.delivery != new.delivery);
    differ("disclosure", old.disclosure != new.disclosure);
    let shape = |c: &ProviderConfig| -> Vec<(String, String, String)> {
        c.authorities
            .iter()
            .map(|a| (a.code.clone(), a.endpoint.clone(), a.server_name.clone()))
            .collect()
    };
    differ(
        "authority (LAs, endpoint, server_name)",
        shape(old) != shape(new),
    );
    differ("directive", directive(old) != directive(new));
    differ("metrics.listen", old.metrics != new.metrics);
    (next, keys)
}

/// What the reloadable parts of `config` are, by key: the SHA-256 of the
/// leaf certificate and of the CA and revocation list files (`[tls]`'s and
/// `[directive]`'s), and each LA's recipients (public keys).
pub(crate) fn digests(config: &ProviderConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(
        "tls.cert".to_string(),
        tls::certificate_sha256(config.tls.identity.leaf()),
    );
    out.insert("tls.ca".to_string(), file_sha256(&config.tls.paths.ca));
    for path in &config.tls.paths.crls {
        out.insert(format!("tls.crls[{}]", path.display()), file_sha256(path));
    }
    if let Some(d) = &config.directive {
        out.insert("directive.ca".to_string(), file_sha256(&d.ca));
        for path in &d.crls {
            out.insert(
                format!("directive.crls[{}]", path.display()),
                file_sha256(path),
            );
        }
    }
    for la in &config.authorities {
        out.insert(
            format!("authority.{}.recipients", la.code),
            la.recipients.to_strings().join(","),
        );
    }
    out
}

/// The digests of `next`, the configuration [`merge`] made from the running
/// one, whose digests are `before`. A `[directive]` that waits for a
/// restart keeps the anchors it was loaded with, and so keeps their
/// digests (its files are not read again).
pub(crate) fn digests_after(
    before: &BTreeMap<String, String>,
    next: &ProviderConfig,
    needs_restart: &[String],
) -> BTreeMap<String, String> {
    let mut out = digests(next);
    if needs_restart.iter().any(|key| key == "directive") {
        let directive = |key: &String| key.starts_with("directive.");
        out.retain(|key, _| !directive(key));
        out.extend(
            before
                .iter()
                .filter(|(key, _)| directive(key))
                .map(|(key, digest)| (key.clone(), digest.clone())),
        );
    }
    out
}
