//! One module per CNI verb (`add`, `check`, `del`, `gc`, `status`; VERSION
//! is answered in `main.rs`), plus `reap`, DEL's forked link deleter, and the
//! few steps the verbs share: opening the pod's namespace, reading
//! `subnet.env`, opening the IPAM store, and mapping their failures to CNI
//! error codes.
//!
//! The verbs decide what to do and in what order, and undo on failure; the
//! kernel, the IPAM files, nftables and the scratch files are written only
//! through `netlink`, `bridge`, `ipam`, `masq` and `scratch`. No verb writes
//! to stdout: its result goes back to `main.rs`.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
mod reap;
pub mod status;

use std::path::Path;

use common::netns::Netns;
use common::{SubnetEnv, SubnetEnvError};

use crate::cni_err;
use crate::error::{CniError, Code, Result};
use crate::ipam::{IpamError, Store};
use crate::spec::NetConf;

/// Opens the pod's namespace; a missing path means the container is gone.
pub fn open_netns(path: &Path) -> Result<Netns> {
    Netns::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => cni_err!(
            UnknownContainer,
            "network namespace {} does not exist",
            path.display()
        ),
        _ => cni_err!(
            InvalidEnv,
            "CNI_NETNS={}: cannot open as a network namespace: {e}",
            path.display()
        ),
    })
}

/// Reads subnet.env; missing means flanneld has not started yet (try again).
pub fn read_subnet_env(conf: &NetConf) -> Result<SubnetEnv> {
    SubnetEnv::read(&conf.subnet_file).map_err(|e| match e {
        SubnetEnvError::Missing { path } => cni_err!(
            TryAgainLater,
            "flanneld has not written {} yet (is flanneld running on this node?)",
            path.display()
        ),
        SubnetEnvError::Io { .. } => CniError::new(Code::Io, e.to_string()),
        SubnetEnvError::Invalid { .. } => {
            CniError::new(Code::InvalidConfig, format!("invalid subnet file {e}"))
        }
    })
}

pub fn open_store(conf: &NetConf) -> Result<Store> {
    Store::open(&conf.data_dir, &conf.name).map_err(ipam_error)
}

pub fn ipam_error(e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted { .. } => CniError::new(Code::RangeExhausted, e.to_string()),
        other => CniError::new(Code::Io, other.to_string()),
    }
}

/// Whether pods masquerade: `delegate.ipMasq`, else the opposite of
/// FLANNEL_IPMASQ (flanneld masquerades itself when that is true).
pub fn ip_masq(conf: &NetConf, env: Option<&SubnetEnv>) -> Option<bool> {
    conf.delegate.ip_masq.or(env.map(|e| !e.ipmasq))
}
