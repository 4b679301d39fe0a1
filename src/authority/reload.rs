//! Reloading the endpoint's certificates, key, trust anchors, revocation
//! lists and `[[provider]]` allow-list without a restart (SIGHUP, or
//! [`ReloadHandle`](crate::common::reload::ReloadHandle) in tests).
//!
//! What a connection uses is read once, as it is accepted: the TLS
//! configuration and allow-list from [`SharedServerTls`], and, through the
//! identity its handshake presented ([`tls::Peer::presented`]), the key
//! that signs its receipts. A reload replaces both atomically for new
//! connections; a push in flight finishes on the old ones, so its receipt
//! is signed by the key of the certificate the provider verified. The
//! allow-list in [`Live`] is also checked at each request, so a provider
//! removed from it is refused even on a connection it opened before.
//!
//! Everything is loaded and checked before anything is replaced; a broken
//! file leaves all the old material in use. The rest of `authority.toml`
//! (addresses, directories, limits) applies only after a restart: a change
//! to it is reported, and the running values stay.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::common::audit::Kind;
use crate::common::reload::{ReloadError, Reloaded, file_sha256};
use crate::config::{AuthorityConfig, ConfigError};
use crate::receipt::ReceiptSigner;
use crate::tls::{self, Identity, ServerTls, SharedServerTls};

use super::error::{ExchangeError, InternalError};
use super::service::Shared;

/// The reloadable material every request reads: the allow-list and the
/// receipt signer for the certificate in use now.
#[derive(Debug)]
pub(crate) struct Live {
    providers: Vec<String>,
    identity: Arc<Identity>,
    signer: ReceiptSigner,
    /// What was loaded, by key: the digests a reload compares and audits.
    digests: BTreeMap<String, String>,
}

impl Live {
    /// From a finished configuration, the identity its listener presents
    /// and the signer made from that identity.
    pub(crate) fn new(
        config: &AuthorityConfig,
        identity: Arc<Identity>,
        signer: ReceiptSigner,
    ) -> Self {
        Self {
            providers: config.providers.iter().map(|p| p.id.clone()).collect(),
            identity,
            signer,
            digests: digests(config),
        }
    }

    /// The identity the listener presents now.
    pub(crate) fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Whether `identity` is on the allow-list in use now.
    pub(crate) fn serves(&self, identity: &str) -> bool {
        self.providers.iter().any(|p| p == identity)
    }

    /// The signer for the certificate a connection presented: the current
    /// one, or (for a connection accepted before a reload) the one it had.
    pub(crate) fn signer_for(
        &self,
        presented: Option<&Arc<Identity>>,
    ) -> Result<ReceiptSigner, ExchangeError> {
        match presented {
            Some(identity)
                if !Arc::ptr_eq(identity, &self.identity) && **identity != *self.identity =>
            {
                ReceiptSigner::new(identity)
                    .map_err(|e| ExchangeError::Internal(InternalError::from(e)))
            }
            _ => Ok(self.signer.clone()),
        }
    }
}

/// What the reloadable parts of `config` are, by key: the SHA-256 of the
/// leaf certificate, of the CA and revocation list files, and the
/// allow-list itself.
fn digests(config: &AuthorityConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(
        "tls.cert".to_string(),
        tls::certificate_sha256(config.identity.leaf()),
    );
    out.insert("tls.ca".to_string(), file_sha256(&config.tls.ca));
    for path in &config.tls.crls {
        out.insert(format!("tls.crls[{}]", path.display()), file_sha256(path));
    }
    let mut ids: Vec<&str> = config.providers.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    out.insert("provider".to_string(), ids.join(","));
    out
}

/// The keys that differ between the running configuration and `new` but
/// take effect only on a restart.
fn needs_restart(old: &AuthorityConfig, new: &AuthorityConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differ = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differ("code", old.code != new.code);
    differ("listen", old.listen != new.listen);
    differ("inbox", old.inbox != new.inbox);
    differ("data_dir", old.data_dir != new.data_dir);
    differ("max_file_bytes", old.max_file_bytes != new.max_file_bytes);
    differ(
        "max_chunk_bytes",
        old.max_chunk_bytes != new.max_chunk_bytes,
    );
    differ("max_streams", old.max_streams != new.max_streams);
    differ(
        "max_streams_per_provider",
        old.max_streams_per_provider != new.max_streams_per_provider,
    );
    differ(
        "max_partial_bytes_per_provider",
        old.max_partial_bytes_per_provider != new.max_partial_bytes_per_provider,
    );
    differ("min_free_bytes", old.min_free_bytes != new.min_free_bytes);
    differ("stream_idle_secs", old.stream_idle != new.stream_idle);
    differ("partial_ttl_secs", old.partial_ttl != new.partial_ttl);
    differ(
        "shutdown_grace_secs",
        old.shutdown_grace != new.shutdown_grace,
    );
    differ(
        "sync_every_bytes",
        old.sync_every_bytes != new.sync_every_bytes,
    );
    differ("retention.inbox_days", old.inbox_days != new.inbox_days);
    differ("metrics.listen", old.metrics != new.metrics);
    keys
}

/// Reads `authority.toml` and every file it names again and, if all of it
/// is usable, puts the new TLS configuration, allow-list and signer in
/// place at once. Audited either way.
pub(crate) async fn reload(
    shared: &Shared,
    server_tls: &SharedServerTls,
) -> Result<Reloaded, ReloadError> {
    let path = shared.config.path.clone();
    let outcome = load_and_swap(shared, server_tls).await;
    let (kind, detail) = match &outcome {
        Ok((done, digests)) => (
            Kind::ConfigReloaded,
            json!({
                "config": path.display().to_string(),
                "changed": done.changed,
                "needs_restart": done.needs_restart,
                "sha256": digests,
            }),
        ),
        Err(e) => (
            Kind::ConfigReloadRefused,
            json!({ "config": path.display().to_string(), "error": e.to_string() }),
        ),
    };
    shared.audit(kind, "endpoint", detail).await;
    let outcome = outcome.map(|(done, _)| done);
    crate::common::reload::log_outcome("authority endpoint", &path, &outcome);
    outcome
}

async fn load_and_swap(
    shared: &Shared,
    server_tls: &SharedServerTls,
) -> Result<(Reloaded, BTreeMap<String, String>), ReloadError> {
    let path = shared.config.path.clone();
    let new = crate::common::blocking::blocking(move || AuthorityConfig::load(&path))
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
    // Built and checked in full before anything is replaced.
    let identity = Arc::new(new.identity.clone());
    let signer = ReceiptSigner::new(&identity).map_err(|e| ConfigError::Invalid {
        path: new.path.clone(),
        key: "tls.key".into(),
        reason: e.to_string(),
    })?;
    let tls = ServerTls::new(identity.clone(), &new.provider_anchors, new.allow_list())?;
    let live = Live::new(&new, identity, signer);
    let before = shared.live.load();
    let done = Reloaded::between(
        &before.digests,
        &live.digests,
        needs_restart(&shared.config, &new),
    );
    let digests = live.digests.clone();
    // The allow-list first: a connection accepted with the old TLS in the
    // moment between the two is checked against the new list at its first
    // request, and its receipts are signed for the certificate it saw.
    shared.live.store(Arc::new(live));
    server_tls.replace(tls);
    Ok((done, digests))
}
