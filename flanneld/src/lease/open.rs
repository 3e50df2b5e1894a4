//! The lease store the flags name: one place that turns a `StoreConfig`
//! into a store, so `main` only parses flags.
//!
//! Owns the choice of store; it does not parse flags and does no lease
//! operation.

use super::etcd::{EtcdConfig, EtcdStore};
use super::file::FileStore;
use super::kube::{KubeConfig, KubeStore};
use super::{LeaseError, LeaseStore, LeaseTiming};
use std::path::PathBuf;

/// Which store, and its settings.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded store (`--lease-dir`), reading `--net-config-path`.
    File {
        dir: PathBuf,
        net_config_path: PathBuf,
    },
    /// etcd v3 (`--etcd-*`).
    Etcd(EtcdConfig),
    /// The Kubernetes API (`--kube-subnet-mgr`).
    Kube(KubeConfig),
}

pub async fn open(
    config: StoreConfig,
    timing: LeaseTiming,
) -> Result<Box<dyn LeaseStore>, LeaseError> {
    Ok(match config {
        StoreConfig::File {
            dir,
            net_config_path,
        } => {
            tracing::info!(dir = %dir.display(), "embedded lease store");
            Box::new(FileStore::new(dir, net_config_path, timing))
        }
        StoreConfig::Etcd(config) => {
            tracing::info!(endpoints = %config.endpoints.join(","), prefix = %config.prefix, "etcd lease store");
            Box::new(EtcdStore::new(config, timing)?)
        }
        StoreConfig::Kube(config) => Box::new(KubeStore::connect(config).await?),
    })
}
