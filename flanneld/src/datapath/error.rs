//! [`DatapathError`]: why the datapath could not be set up or must stop;
//! each variant names the device or the lease. Only the datapath's own
//! failures: a bad peer lease is skipped and logged, never an error here.

use std::net::IpAddr;

use crate::vxlan::VxlanError;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// A family is enabled in the configuration but `Specs` has no device.
    #[error("{family} is enabled but no {family} device was asked for")]
    NoDevice { family: &'static str },
    /// Creating the device, reading the routing, or addressing the device.
    #[error(transparent)]
    Vxlan(#[from] VxlanError),
    #[error("our lease {lease} has no {family} subnet and public IP")]
    OwnLeaseIncomplete { lease: String, family: &'static str },
    #[error("lease for {own} was taken over by {by}: exiting so this node stops serving a subnet it no longer owns")]
    TakenOver { own: String, by: IpAddr },
    #[error("resync of {device}")]
    Resync {
        device: String,
        #[source]
        source: VxlanError,
    },
}
