//! Which transfers a stream (or the idle sweep) is working on: one holder
//! per (provider, transfer id) at a time, so two streams never write the
//! same partial file and the sweep never removes one in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

type ClaimMap = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// Which transfers a stream (or the idle sweep) is working on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims(Arc<Mutex<ClaimMap>>);

/// Held while working on one transfer.
#[derive(Debug)]
pub(crate) struct Claim {
    guard: Option<OwnedMutexGuard<()>>,
    lock: Arc<tokio::sync::Mutex<()>>,
    key: (String, String),
    claims: Claims,
}

impl Claims {
    fn map(&self) -> std::sync::MutexGuard<'_, ClaimMap> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, key: &(String, String)) -> Arc<tokio::sync::Mutex<()>> {
        self.map().entry(key.clone()).or_default().clone()
    }

    /// Claims the transfer, waiting up to `wait` for another holder.
    pub(crate) async fn claim(&self, provider: &str, id: &str, wait: Duration) -> Option<Claim> {
        let key = (provider.to_string(), id.to_string());
        let lock = self.entry(&key);
        let guard = tokio::time::timeout(wait, lock.clone().lock_owned())
            .await
            .ok();
        self.finish(key, lock, guard)
    }

    /// Claims the transfer only if nobody holds it.
    pub(crate) fn try_claim(&self, provider: &str, id: &str) -> Option<Claim> {
        let key = (provider.to_string(), id.to_string());
        let lock = self.entry(&key);
        let guard = lock.clone().try_lock_owned().ok();
        self.finish(key, lock, guard)
    }

    fn finish(
        &self,
        key: (String, String),
        lock: Arc<tokio::sync::Mutex<()>>,
        guard: Option<OwnedMutexGuard<()>>,
    ) -> Option<Claim> {
        let claim = Claim {
            guard,
            lock,
            key,
            claims: self.clone(),
        };
        // Without the guard, dropping the claim tidies the map.
        claim.guard.is_some().then_some(claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.claims.map();
        // The map's reference and this one: nobody else holds or awaits it
        // (clones are only taken with the map locked).
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}
