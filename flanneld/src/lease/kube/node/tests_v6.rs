//! The IPv6 half of a Node: what passes as a public IPv6 and a
//! `backend-v6-data`, and a peer kept when its IPv6 half is bad.
//!
//! Pure: no API, no I/O.

use super::*;
use serde_json::json;

fn view(annotations: serde_json::Value, cidrs: serde_json::Value) -> NodeView {
    let slim: SlimNode = serde_json::from_value(json!({
        "metadata": {"name": "n", "annotations": annotations},
        "spec": {"podCIDRs": cidrs},
    }))
    .expect("a node");
    NodeView::of(
        &slim,
        &Names::new("flannel.alpha.coreos.com").expect("names"),
    )
}

const P: &str = "flannel.alpha.coreos.com/";

#[test]
fn global_unicast_as_go_has_it() {
    for ok in ["2001:db8::1", "fd00::1", "2a00:1450::5"] {
        assert!(is_global_unicast(ok.parse().expect("ip")), "{ok}");
    }
    for bad in ["::", "::1", "fe80::1", "ff02::1", "::ffff:10.0.0.1"] {
        assert!(!is_global_unicast(bad.parse().expect("ip")), "{bad}");
    }
}

#[test]
fn ipv6_annotations_are_checked() {
    let v = view(
        json!({
            format!("{P}public-ipv6"): "2001:db8::9",
            format!("{P}backend-v6-data"): r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:09"}"#,
        }),
        json!([]),
    );
    assert_eq!(
        v.public_ipv6(),
        Ok(Some("2001:db8::9".parse().expect("ip")))
    );
    assert!(v.backend_v6_data().expect("valid").is_some());
    for (ip, data, needle) in [
        ("10.0.0.1", "{}", "public-ipv6"),
        ("ff02::1", "{}", "global unicast"),
    ] {
        let v = view(
            json!({format!("{P}public-ipv6"): ip, format!("{P}backend-v6-data"): data}),
            json!([]),
        );
        let err = v.public_ipv6().unwrap_err().to_string();
        assert!(err.contains(needle), "{ip}: {err}");
    }
    for data in [
        "nope",
        r#"{"VNI":1}"#,
        r#"{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}"#,
        r#"{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}"#,
        r#"{"VNI":1,"VtepMAC":"zz"}"#,
    ] {
        let v = view(json!({format!("{P}backend-v6-data"): data}), json!([]));
        assert!(
            v.backend_v6_data()
                .unwrap_err()
                .to_string()
                .contains("backend-v6-data"),
            "{data}"
        );
    }
    let empty = view(json!({}), json!([]));
    assert_eq!(
        (empty.public_ipv6(), empty.backend_v6_data()),
        (Ok(None), Ok(None))
    );
}

#[test]
fn a_bad_ipv6_half_leaves_an_ipv4_peer() {
    let v = view(
        json!({
            format!("{P}kube-subnet-manager"): "true",
            format!("{P}backend-type"): "vxlan",
            format!("{P}backend-data"): r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}"#,
            format!("{P}public-ip"): "192.168.64.1",
            format!("{P}public-ipv6"): "fe80::1",
            format!("{P}backend-v6-data"): "[]",
        }),
        json!(["fd00:10:244:1::/64", "10.244.1.0/24"]),
    );
    let nets = Networks {
        v4: Some("10.244.0.0/16".parse().expect("net")),
        v6: Some("fd00:10:244::/56".parse().expect("net")),
    };
    let l = v.lease(nets).expect("still a peer");
    assert_eq!(
        l.subnet,
        "10.244.1.0/24".parse::<Ipv4Network>().expect("net")
    );
    assert_eq!(
        l.ipv6_subnet,
        Some("fd00:10:244:1::/64".parse().expect("net"))
    );
    assert_eq!((l.attrs.public_ipv6, l.attrs.backend_v6_data), (None, None));
    // IPv4-only: the IPv6 podCIDR is not taken.
    let l = v
        .lease(Networks { v6: None, ..nets })
        .expect("an IPv4 peer");
    assert_eq!(l.ipv6_subnet, None);
}

#[test]
fn an_ipv6_only_node_is_a_peer_by_its_ipv6_podcidr() {
    // As flannel annotates an IPv6-only node: no public-ip, no backend-data.
    let annotations = json!({
        format!("{P}kube-subnet-manager"): "true",
        format!("{P}backend-type"): "vxlan",
        format!("{P}public-ipv6"): "2001:db8::1",
        format!("{P}backend-v6-data"): r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"}"#,
    });
    let nets = Networks {
        v4: None,
        v6: Some("fd00:10:244::/56".parse().expect("net")),
    };
    let l = view(annotations.clone(), json!(["fd00:10:244:1::/64"]))
        .lease(nets)
        .expect("an IPv6-only peer");
    assert_eq!(l.subnet, crate::lease::NO_IPV4);
    assert_eq!(l.key(), "0.0.0.0-0&fd00:10:244:1::-64");
    assert_eq!(l.attrs.public_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        l.attrs.node_ip(),
        "2001:db8::1".parse::<std::net::IpAddr>().expect("ip")
    );
    assert!(l.attrs.backend_data.is_null());
    assert!(l.attrs.vxlan_v6_data().is_some());
    // podCIDR as a single entry, or dual-stack podCIDRs: the IPv6 one.
    let dual = view(
        annotations.clone(),
        json!(["10.244.1.0/24", "fd00:10:244:1::/64"]),
    )
    .lease(nets)
    .expect("IPv6 half of a dual-stack node");
    assert_eq!(dual.id(), l.id());
    for (cidrs, needle) in [
        (json!(["10.244.1.0/24"]), "no IPv6 podCIDR"),
        (json!(["fd00:99::/64"]), "outside IPv6Network"),
    ] {
        let e = view(annotations.clone(), cidrs)
            .lease(nets)
            .expect_err(needle)
            .to_string();
        assert!(e.contains(needle), "{e}");
    }
    let no_ip = view(
        json!({
            format!("{P}kube-subnet-manager"): "true",
            format!("{P}backend-v6-data"): r#"{"VNI":1,"VtepMAC":"0e:00:00:00:00:11"}"#,
        }),
        json!(["fd00:10:244:1::/64"]),
    );
    assert!(no_ip
        .lease(nets)
        .expect_err("no ip")
        .to_string()
        .contains("public-ipv6"));
}
