//! The ADD result's shape in each supported cniVersion, checked against the
//! kernel state it describes.

use flannel_cluster::*;
use serde_json::Value;

fn bin() -> std::path::PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

fn is_mac(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 17
            && s.split(':').count() == 6
            && s.split(':')
                .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
    })
}

fn mac_of(ns: &NetNs, dev: &str) -> Value {
    ns.link(dev)
        .unwrap_or_else(|| panic!("{dev} missing in {}", ns.name()))["address"]
        .clone()
}

fn result_shape(version: &str) {
    let node = CniNode::new(bin());
    let pod = Pod::new();
    let conf = node.config(version);
    let res = node.add_ok(&pod, &conf);
    let pre_1 = version.starts_with("0.");
    assert_eq!(res["cniVersion"], version, "{res}");

    let ifs = res["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no interfaces: {res}"));
    assert_eq!(ifs.len(), 3, "interfaces: {res}");
    assert_eq!(ifs[0]["name"], "cni0");
    let veth = ifs[1]["name"].as_str().unwrap();
    assert!(is_host_veth_name(veth), "{veth}");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], pod.ns.path_str(), "{res}");
    assert!(
        ifs[0].get("sandbox").is_none() && ifs[1].get("sandbox").is_none(),
        "{res}"
    );
    for i in ifs {
        assert!(is_mac(&i["mac"]), "bad mac in {i}");
    }
    assert_eq!(ifs[0]["mac"], mac_of(&node.ns, "cni0"));
    assert_eq!(ifs[1]["mac"], mac_of(&node.ns, veth));
    assert_eq!(ifs[2]["mac"], mac_of(&pod.ns, "eth0"));
    if version == "1.1.0" {
        assert_eq!(
            ifs[2]["mtu"], 1450,
            "1.1.0 container interface has mtu: {res}"
        );
    } else {
        for i in ifs {
            assert!(
                i.get("mtu").is_none(),
                "no interface mtu before 1.1.0: {res}"
            );
        }
    }

    let ips = res["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips: {res}"));
    assert_eq!(ips.len(), 1, "{res}");
    assert_eq!(ips[0]["address"], "10.244.1.2/24");
    assert_eq!(ips[0]["gateway"], "10.244.1.1");
    assert_eq!(ips[0]["interface"], 2);
    if pre_1 {
        assert_eq!(ips[0]["version"], "4", "{version} ips carry version: {res}");
    } else {
        assert!(
            ips[0].get("version").is_none(),
            "{version} ips have no version: {res}"
        );
    }
    assert_eq!(pod.ipv4_addrs(), vec!["10.244.1.2/24".to_owned()]);

    let mut routes: Vec<(String, String)> = res["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("no routes: {res}"))
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_owned(),
                r["gw"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        vec![
            ("0.0.0.0/0".into(), "10.244.1.1".into()),
            ("10.244.0.0/16".into(), "10.244.1.1".into())
        ],
        "{res}"
    );

    // The result round-trips as prevResult: DEL accepts it and cleans up.
    node.del(&pod, &with_prev_result(&conf, &res))
        .success_empty();
    assert!(!pod.ns.has_link("eth0"));
    assert!(node.ipam_allocations().is_empty());
}

#[test]
fn result_shape_0_3_0() {
    result_shape("0.3.0");
}

#[test]
fn result_shape_0_3_1() {
    result_shape("0.3.1");
}

#[test]
fn result_shape_0_4_0() {
    result_shape("0.4.0");
}

#[test]
fn result_shape_1_0_0() {
    result_shape("1.0.0");
}

#[test]
fn result_shape_1_1_0() {
    result_shape("1.1.0");
}
