//! The device: created with exactly the spec, adopted when it matches,
//! replaced when it does not; its address.

use ipnetwork::Ipv4Network;

use super::{TestNs, LOCAL, MAC};
use crate::vxlan::{Device, DeviceSpec, Vxlan, VxlanError};

fn ensure(ns: &TestNs, spec: &DeviceSpec) -> Device {
    ns.run(|vx| async move { vx.ensure_device(spec).await })
        .unwrap_or_else(|e| panic!("ensure_device: {e}"))
}

#[test]
fn device_is_created_with_exactly_the_spec() {
    let ns = TestNs::new();
    let spec = ns.spec();
    let dev = ensure(&ns, &spec);
    assert_eq!(dev.name, "flannel.1");
    assert_eq!(dev.mac, MAC);
    assert_eq!(dev.index, ns.ifindex("flannel.1"));

    let v = ns.ip_json(&["-d", "link", "show", "flannel.1"]);
    let link = &v[0];
    let data = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
    assert_eq!(data["id"], 1, "{data}");
    assert_eq!(data["local"], LOCAL.to_string(), "{data}");
    assert_eq!(data["link"], "eth0", "{data}");
    assert_eq!(data["port"], 8472, "{data}");
    assert_eq!(data["learning"], false, "{data}");
    assert_eq!(data["ttl"], 0, "{data}");
    assert!(data.get("gbp").is_none(), "{data}");
    assert_eq!(link["mtu"], 1450, "{link}");
    assert_eq!(link["address"], "0e:00:00:00:00:11", "{link}");
    let flags = link["flags"].as_array().cloned().unwrap_or_default();
    assert!(flags.iter().any(|f| f == "UP"), "{link}");
    assert_eq!(ns.proc_sys("net/ipv6/conf/flannel.1/accept_ra"), "0");
}

#[test]
fn gbp_and_learning_are_set_when_asked() {
    let ns = TestNs::new();
    let spec = DeviceSpec {
        vni: 7,
        gbp: true,
        learning: true,
        ..ns.spec()
    };
    let dev = ensure(&ns, &spec);
    assert_eq!(dev.name, "flannel.7");
    let v = ns.ip_json(&["-d", "link", "show", "flannel.7"]);
    let data = &v[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 7, "{data}");
    assert_eq!(data["learning"], true, "{data}");
    assert_eq!(data["gbp"], true, "{data}");
}

#[test]
fn matching_device_is_adopted_and_brought_to_spec() {
    let ns = TestNs::new();
    let spec = ns.spec();
    let first = ensure(&ns, &spec);
    let again = ensure(&ns, &spec);
    assert_eq!(first, again);

    // Down, another MTU and MAC: still adopted (same ifindex), fixed up.
    ns.ip(&["link", "set", "flannel.1", "down"]);
    ns.ip(&["link", "set", "flannel.1", "mtu", "1300"]);
    let spec = DeviceSpec {
        mtu: 1400,
        mac: [0x0e, 0, 0, 0, 0, 0x22],
        ..spec
    };
    let adopted = ensure(&ns, &spec);
    assert_eq!(adopted.index, first.index);
    assert_eq!(adopted.mac, spec.mac);
    let link = &ns.ip_json(&["link", "show", "flannel.1"])[0];
    assert_eq!(link["mtu"], 1400, "{link}");
    assert_eq!(link["address"], "0e:00:00:00:00:22", "{link}");
    assert!(
        link["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "{link}"
    );

    let found = ns.run(|vx: Vxlan<Ipv4Network>| async move { vx.find_device(1).await });
    assert_eq!(found.ok().flatten(), Some(adopted));
}

/// Replaces flannel.1 with `ip link add flannel.1 <args>`; its ifindex.
fn put_foreign(ns: &TestNs, args: &str) -> u32 {
    ns.ip(&["link", "del", "flannel.1"]);
    let mut cmd = vec!["link", "add", "flannel.1"];
    cmd.extend(args.split_whitespace());
    ns.ip(&cmd);
    ns.ifindex("flannel.1")
}

#[test]
fn mismatched_device_is_replaced() {
    let ns = TestNs::new();
    ns.ip(&["addr", "add", "192.168.64.9/24", "dev", "eth0"]);
    let spec = ns.spec();
    let first = ensure(&ns, &spec);

    // Another local address.
    let moved = DeviceSpec {
        local: "192.168.64.9".parse().expect("ip"),
        ..spec.clone()
    };
    let second = ensure(&ns, &moved);
    assert_ne!(second.index, first.index);
    let data = &ns.ip_json(&["-d", "link", "show", "flannel.1"])[0]["linkinfo"]["info_data"];
    assert_eq!(data["local"], "192.168.64.9", "{data}");

    // Someone else's flannel.1 with another VNI.
    let foreign = put_foreign(
        &ns,
        "type vxlan id 5 local 192.168.64.2 dev eth0 dstport 8472 nolearning",
    );
    let third = ensure(&ns, &spec);
    assert_ne!(third.index, foreign);
    let data = &ns.ip_json(&["-d", "link", "show", "flannel.1"])[0]["linkinfo"]["info_data"];
    assert_eq!(data["id"], 1, "{data}");

    // Learning on, where we want it off.
    let foreign = put_foreign(
        &ns,
        "type vxlan id 1 local 192.168.64.2 dev eth0 dstport 8472 learning",
    );
    assert_ne!(ensure(&ns, &spec).index, foreign);

    // Another port.
    let foreign = put_foreign(
        &ns,
        "type vxlan id 1 local 192.168.64.2 dev eth0 dstport 4789 nolearning",
    );
    assert_ne!(ensure(&ns, &spec).index, foreign);

    // Not a VXLAN device at all.
    put_foreign(&ns, "type veth peer name flpeer");
    let dev = ensure(&ns, &spec);
    let v = ns.ip_json(&["-d", "link", "show", "flannel.1"]);
    assert_eq!(v[0]["linkinfo"]["info_kind"], "vxlan", "{v}");
    assert_eq!(dev.index, ns.ifindex("flannel.1"));
}

#[test]
fn deleted_device_is_noticed_and_recreated() {
    let ns = TestNs::new();
    let spec = ns.spec();
    let dev = ensure(&ns, &spec);
    ns.ip(&["link", "del", "flannel.1"]);
    let (found, reconciled) = ns.run(|vx: Vxlan<Ipv4Network>| {
        let dev = dev.clone();
        async move { (vx.find_device(1).await, vx.reconcile(&dev, &[]).await) }
    });
    assert!(matches!(found, Ok(None)), "{found:?}");
    match reconciled {
        Err(e @ VxlanError::DeviceGone { .. }) => {
            assert!(e.is_device_gone());
            assert_eq!(e.to_string(), "flannel.1 does not exist");
        }
        other => panic!("expected DeviceGone, got {other:?}"),
    }
    let again = ensure(&ns, &spec);
    assert_eq!(again.index, ns.ifindex("flannel.1"));
}

#[test]
fn address_is_set_and_strays_inside_network_removed() {
    let ns = TestNs::new();
    let dev = ensure(&ns, &ns.spec());
    ns.ip(&["addr", "add", "10.244.7.0/32", "dev", "flannel.1"]);
    ns.ip(&["addr", "add", "10.244.1.0/24", "dev", "flannel.1"]);
    ns.ip(&["addr", "add", "172.16.0.1/32", "dev", "flannel.1"]);
    let network = super::net("10.244.0.0/16");
    let addr = "10.244.1.0".parse().expect("ip");
    for _ in 0..2 {
        let dev = dev.clone();
        ns.run(|vx| async move { vx.ensure_address(&dev, addr, network).await })
            .unwrap_or_else(|e| panic!("ensure_address: {e}"));
        let v = ns.ip_json(&["-4", "addr", "show", "dev", "flannel.1"]);
        let mut have: Vec<String> = v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{}/{}", super::s(&a["local"]), a["prefixlen"]))
            .collect();
        have.sort();
        assert_eq!(have, ["10.244.1.0/32", "172.16.0.1/32"]);
    }
}

#[test]
fn device_name_is_flannel_dot_vni() {
    assert_eq!(Vxlan::<Ipv4Network>::device_name(1), "flannel.1");
    assert_eq!(Vxlan::<Ipv4Network>::device_name(4096), "flannel.4096");
}
