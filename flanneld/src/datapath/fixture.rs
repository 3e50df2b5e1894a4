//! What the IPv4 namespace tests of the datapath share: a lease of a fake
//! peer, and a datapath on `flannel.1` in a test namespace that has adopted
//! its own lease (node 192.168.64.2). Test code only; it owns no kernel
//! state beyond the namespace the test made.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnetwork::Ipv4Network;

use super::{Datapath, Specs};
use crate::lease::{Lease, LeaseAttrs};
use crate::metrics::Metrics;
use crate::netconf::NetConfig;
use crate::vxlan::tests::TestNs;

const V4: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// Subnet 10.244.N.0/24 held by node `node` (192.168.64.NODE), whose VTEP
/// MAC is 0e:00:00:00:VER:NODE.
pub fn lease(n: u8, node: u8, ver: u8) -> Lease {
    Lease {
        subnet: Ipv4Network::new(Ipv4Addr::new(10, 244, n, 0), 24).expect("net"),
        ipv6_subnet: None,
        attrs: LeaseAttrs::vxlan(
            Ipv4Addr::new(192, 168, 64, node),
            1,
            &format!("0e:00:00:00:{ver:02x}:{node:02x}"),
        ),
        expiration: SystemTime::now(),
    }
}

/// The specs of an IPv4-only datapath in `ns`, as node 192.168.64.2.
pub fn v4_specs(ns: &TestNs) -> Specs {
    let mut spec = ns.spec();
    spec.local = Ipv4Addr::new(192, 168, 64, 2);
    Specs {
        v4: Some(spec),
        v6: None,
    }
}

/// A datapath made from `specs` (within the test namespace whose
/// `handle` this is) that has adopted `own`.
pub async fn adopted(handle: rtnetlink::Handle, specs: Specs, own: &Lease) -> Datapath {
    let config = NetConfig::parse(V4).expect("config");
    let metrics = Arc::new(Metrics::new());
    let mut dp = Datapath::create(handle, config, specs, true, metrics)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    dp.adopt(own).await.unwrap_or_else(|e| panic!("adopt: {e}"));
    dp
}
