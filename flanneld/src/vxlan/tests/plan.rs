//! The diff alone, without a kernel: what is ours, what is wrong.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol};

use super::{net, peer};
use crate::vxlan::neigh::{FdbEntry, NeighEntry};
use crate::vxlan::peer::PeerEntries;
use crate::vxlan::reconcile::{is_managed, plan, Observed};
use crate::vxlan::route::{RouteEntry, RouteSpec};
use crate::vxlan::{Device, Routing};

fn dev() -> Device {
    Device {
        index: 10,
        name: "flannel.1".to_string(),
        mac: [0x0e, 0, 0, 0, 0, 0x11],
    }
}

fn routing() -> Routing {
    Routing {
        network: net("10.244.0.0/16"),
        subnet_len: 24,
        ext_index: 2,
        ext_name: "eth0".to_string(),
        direct_routing: true,
        ext_subnets: vec![net("192.168.64.0/24")],
    }
}

fn route(dst: &str, gw: Option<[u8; 4]>, oif: u32, onlink: bool) -> RouteEntry<Ipv4Network> {
    RouteEntry {
        dst: net(dst),
        gw: gw.map(Ipv4Addr::from),
        oif: Some(oif),
        onlink,
        priority: 0,
        protocol: RouteProtocol::Boot,
        msg: RouteMessage::default(),
    }
}

fn overlay(n: u8, vtep: [u8; 4]) -> PeerEntries<Ipv4Network> {
    let p = peer(n, vtep);
    PeerEntries::Overlay {
        neigh_ip: p.gateway(),
        mac: p.vtep_mac,
        vtep: p.public_ip,
        route: RouteSpec {
            dst: p.subnet,
            gw: p.gateway(),
            oif: 10,
            dev: "flannel.1".to_string(),
            onlink: true,
        },
    }
}

/// What `overlay(n, vtep)` looks like once programmed.
fn observed_overlay(n: u8, vtep: [u8; 4]) -> Observed<Ipv4Network> {
    let p = peer(n, vtep);
    Observed {
        neighbours: vec![NeighEntry {
            ip: p.gateway(),
            mac: Some(p.vtep_mac.to_vec()),
            permanent: true,
        }],
        fdb: vec![FdbEntry {
            mac: p.vtep_mac.to_vec(),
            dst: Some(p.public_ip),
            permanent: true,
        }],
        routes: vec![route(
            &p.subnet.to_string(),
            Some(p.subnet.network().octets()),
            10,
            true,
        )],
    }
}

#[test]
fn nothing_to_do_when_the_kernel_matches() {
    let obs = observed_overlay(2, [192, 168, 64, 3]);
    let p = plan(&obs, &[overlay(2, [192, 168, 64, 3])], &dev(), None);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn wrong_entries_are_replaced_and_strays_removed() {
    let mut obs = observed_overlay(2, [192, 168, 64, 3]);
    obs.neighbours[0].mac = Some(vec![0x0e, 0, 0, 0, 0, 0x77]);
    obs.fdb[0].dst = Some(Ipv4Addr::new(192, 168, 64, 99));
    obs.routes[0].onlink = false;
    let p = plan(&obs, &[overlay(2, [192, 168, 64, 3])], &dev(), None);
    assert!(p.del_neigh.is_empty(), "replaced in place: {p:?}");
    assert_eq!(p.add_neigh.len(), 1);
    assert_eq!(p.del_fdb.len(), 1);
    assert_eq!(
        p.add_fdb,
        vec![([0x0e, 0, 0, 0, 0, 2], Ipv4Addr::new(192, 168, 64, 3))]
    );
    assert_eq!(p.del_routes.len(), 1);
    assert_eq!(p.add_routes.len(), 1);
}

#[test]
fn non_permanent_entries_are_the_kernels() {
    let mut obs = Observed::<Ipv4Network>::default();
    obs.neighbours.push(NeighEntry {
        ip: Ipv4Addr::new(10, 244, 9, 0),
        mac: None,
        permanent: false,
    });
    obs.fdb.push(FdbEntry {
        mac: vec![0x0e, 0, 0, 0, 0, 9],
        dst: Some(Ipv4Addr::new(192, 168, 64, 9)),
        permanent: false,
    });
    assert!(plan(&obs, &[], &dev(), None).is_empty());
}

#[test]
fn only_flannel_shaped_routes_are_managed() {
    let d = dev();
    let r = routing();
    // Any route out of the device, but not the kernel's own.
    assert!(is_managed(
        &route("10.1.0.0/16", Some([10, 1, 0, 1]), 10, true),
        &d,
        None
    ));
    let mut kernel = route("10.244.1.0/24", None, 10, false);
    kernel.protocol = RouteProtocol::Kernel;
    assert!(!is_managed(&kernel, &d, Some(&r)));
    // Out of the external interface: only with a Routing, a gateway, and a
    // SubnetLen-sized destination inside Network.
    let direct = route("10.244.5.0/24", Some([192, 168, 64, 5]), 2, false);
    assert!(is_managed(&direct, &d, Some(&r)));
    assert!(!is_managed(&direct, &d, None));
    assert!(!is_managed(
        &route("10.244.0.0/16", Some([192, 168, 64, 1]), 2, false),
        &d,
        Some(&r)
    ));
    assert!(!is_managed(
        &route("10.99.5.0/24", Some([192, 168, 64, 1]), 2, false),
        &d,
        Some(&r)
    ));
    assert!(!is_managed(
        &route("10.244.5.0/24", None, 2, false),
        &d,
        Some(&r)
    ));
    assert!(!is_managed(
        &route("10.244.5.0/24", Some([192, 168, 64, 5]), 3, false),
        &d,
        Some(&r)
    ));
}
