//! STATUS: can this node take an ADD now? `subnet.env` is readable and
//! each of its families has a free address in the IPAM store.
//!
//! Only looks: it allocates nothing and touches no kernel object (opening
//! the store creates its directory if missing).

use common::SubnetEnvError;

use super::{ipam_error, open_store};
use crate::cni_err;
use crate::error::Result;
use crate::spec::NetConf;

pub fn run(conf: &NetConf) -> Result<()> {
    let senv = common::SubnetEnv::read(&conf.subnet_file).map_err(|e| match e {
        SubnetEnvError::Missing { path } => cni_err!(
            NotAvailable,
            "flanneld has not written {} yet",
            path.display()
        ),
        other => cni_err!(NotAvailable, "subnet file unusable: {other}"),
    })?;
    // ADD takes one address of each family: each must have one free.
    let store = open_store(conf)?;
    for f in senv.families() {
        let subnet = f.pod_subnet();
        let free = store.free_count(subnet, f.gateway()).map_err(ipam_error)?;
        if free == 0 {
            return Err(cni_err!(NotAvailable, "no free address left in {subnet}"));
        }
    }
    Ok(())
}
