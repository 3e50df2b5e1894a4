//! Metric hooks for the stores: a store notes what an operator wants
//! counted (its watch restarted, and why) without knowing about metrics.
//! flanneld installs one observer at start-up; without one (unit tests,
//! other embedders) the notes go nowhere.
//!
//! Owns the hook only; it counts nothing itself and reads no store.

use std::sync::{Arc, OnceLock};

/// What the stores report; implemented by flanneld's metrics.
pub trait StoreObserver: Send + Sync {
    /// The lease watch of `store` ("etcd", "kube", "file") was restarted
    /// (re-listed) because of `reason`.
    fn watch_restarted(&self, store: &'static str, reason: &'static str);
}

static OBSERVER: OnceLock<Arc<dyn StoreObserver>> = OnceLock::new();

/// Installs the observer; the first one stays (set once per process).
pub fn set_observer(observer: Arc<dyn StoreObserver>) {
    let _ = OBSERVER.set(observer);
}

/// A store's watch restarted.
pub fn watch_restarted(store: &'static str, reason: &'static str) {
    if let Some(o) = OBSERVER.get() {
        o.watch_restarted(store, reason);
    }
}
