//! IPv6 in the Kubernetes store: flannel #2225 (a dual-stack Node with an
//! IPv4-only configuration, our own and upstream peers), a change to only
//! the IPv6 annotations is an update, a dual-stack configuration's lease
//! and annotations, and bad IPv6 parts dropped without losing the peer.
//!
//! Talks only to its own API stand-in on loopback; touches no kernel state.

use super::*;

const DUAL_CONF: &str = r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#;
const V6_DATA: &str = r#"{"VNI":1,"VtepMAC":"0e:6a:00:00:00:61"}"#;

fn v6net(s: &str) -> ipnetwork::Ipv6Network {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Gives `name` both podCIDRs, IPv6 first (the order must not matter).
fn dual_cidrs(b: &KubeBacking, name: &str, v4: &str, v6: &str) {
    b.api
        .patch_node(
            name,
            &json!({"spec": {"podCIDR": v6, "podCIDRs": [v6, v4]}}),
        )
        .expect("assign podCIDRs");
}

/// What upstream flannel adds on a dual-stack node.
fn upstream_v6(b: &KubeBacking, name: &str, ip6: &str, data: &str) {
    b.api
        .patch_node(
            name,
            &json!({"metadata": {"annotations": {
                format!("{PREFIX}backend-v6-data"): data,
                format!("{PREFIX}public-ipv6"): ip6,
            }}}),
        )
        .expect("annotate");
}

fn conf(b: &KubeBacking, text: &str) -> crate::netconf::NetConfig {
    std::fs::write(b.dir.path().join("net-conf.json"), text).expect("write net-conf");
    config(text)
}

#[tokio::test]
async fn flannel_2225_own_dual_stack_node_with_the_default_config() {
    let b = KubeBacking::start(false);
    let name = b.register(NodeFixture::new("dual", 3));
    dual_cidrs(&b, &name, "10.244.3.0/24", "fd00:10:244:3::/64");
    let store = b.store(&name).await;
    let lease = store
        .acquire(&net_conf(), &attrs(3, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(lease.subnet, net("10.244.3.0/24"));
    assert_eq!(
        lease.ipv6_subnet, None,
        "IPv6 is off: its podCIDR is ignored"
    );
    assert_eq!(b.annotation(&name, "backend-v6-data"), None);
    assert_eq!(b.annotation(&name, "public-ipv6"), None);
}

#[tokio::test]
async fn flannel_2225_upstream_dual_stack_peers_are_ipv4_peers_and_v6_changes_update() {
    let b = KubeBacking::start(false);
    let peer = b.register(upstream("peer", 5, "10.244.5.0/24"));
    dual_cidrs(&b, &peer, "10.244.5.0/24", "fd00:10:244:5::/64");
    upstream_v6(&b, &peer, "2001:db8::5", V6_DATA);
    let me = b.register(NodeFixture::new("me", 1).pod_cidr("10.244.1.0/24"));
    let store = b.store(&me).await;
    store
        .acquire(&net_conf(), &attrs(1, 0), None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    let mut w = crate::lease::listed(&store).await;
    let l = w
        .snapshot
        .iter()
        .find(|l| l.subnet == net("10.244.5.0/24"))
        .unwrap_or_else(|| panic!("the dual-stack peer is a peer: {:?}", w.snapshot))
        .clone();
    assert_eq!(l.ipv6_subnet, None, "IPv6 is off");
    assert!(
        l.attrs.vxlan_data().is_some(),
        "an IPv4 vxlan peer as usual"
    );
    assert_eq!(
        l.attrs.public_ipv6,
        Some("2001:db8::5".parse().expect("ip6"))
    );

    // Only backend-v6-data changes (flannel drops this): an update.
    let newer = r#"{"VNI":1,"VtepMAC":"0e:6a:00:00:00:62"}"#;
    b.api
        .set_node_annotation(&peer, &format!("{PREFIX}backend-v6-data"), Some(newer))
        .expect("annotate");
    match next_event(&mut w, Duration::from_secs(5)).await {
        LeaseEvent::Added(n) => {
            assert_eq!(n.subnet, l.subnet);
            let d = n.attrs.vxlan_v6_data().expect("v6 data");
            assert_eq!(d.vtep_mac, "0e:6a:00:00:00:62");
            assert_eq!(
                n.attrs.backend_data, l.attrs.backend_data,
                "IPv4 part unchanged"
            );
        }
        ev => panic!("expected an update, got {ev:?}"),
    }
    // Only public-ipv6 changes: an update too.
    b.api
        .set_node_annotation(&peer, &format!("{PREFIX}public-ipv6"), Some("2001:db8::55"))
        .expect("annotate");
    match next_event(&mut w, Duration::from_secs(5)).await {
        LeaseEvent::Added(n) => {
            assert_eq!(
                n.attrs.public_ipv6,
                Some("2001:db8::55".parse().expect("ip6"))
            )
        }
        ev => panic!("expected an update, got {ev:?}"),
    }
    // An unrelated annotation: nothing.
    b.api
        .set_node_annotation(&peer, "example.com/other", Some("x"))
        .expect("annotate");
    expect_quiet(&mut w, Duration::from_millis(800)).await;
}

#[tokio::test]
async fn bad_ipv6_parts_are_dropped_and_the_peer_stays() {
    let b = KubeBacking::start(false);
    let cfg = conf(&b, DUAL_CONF);
    for (i, (ip6, data, v6cidr)) in [
        ("fe80::1", V6_DATA, "fd00:10:244:6::/64"),
        (
            "2001:db8::7",
            r#"{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}"#,
            "fd00:10:244:7::/64",
        ),
        ("banana", "not json", "fd00:99::/64"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 6 + i as u32;
        let peer = b.register(upstream(&format!("bad{n}"), n, &format!("10.244.{n}.0/24")));
        dual_cidrs(&b, &peer, &format!("10.244.{n}.0/24"), v6cidr);
        upstream_v6(&b, &peer, ip6, data);
    }
    let me = b.register(NodeFixture::new("me", 1));
    dual_cidrs(&b, &me, "10.244.1.0/24", "fd00:10:244:1::/64");
    let store = b.store(&me).await;
    let mine = attrs(1, 0).with_ipv6("2001:db8::1".parse().expect("ip6"), 1, "0a:58:0a:00:01:01");
    store
        .acquire(&cfg, &mine, None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    let w = crate::lease::listed(&store).await;
    let get = |n: u8| {
        w.snapshot
            .iter()
            .find(|l| l.subnet == net(&format!("10.244.{n}.0/24")))
            .unwrap_or_else(|| panic!("peer {n} kept as an IPv4 peer: {:?}", w.snapshot))
    };
    let link_local = get(6);
    assert_eq!(
        link_local.attrs.public_ipv6, None,
        "fe80::1 is no public IPv6"
    );
    assert_eq!(link_local.ipv6_subnet, Some(v6net("fd00:10:244:6::/64")));
    let broadcast_mac = get(7);
    assert_eq!(
        broadcast_mac.attrs.backend_v6_data, None,
        "a broadcast VtepMAC"
    );
    assert!(broadcast_mac.attrs.public_ipv6.is_some());
    let garbage = get(8);
    assert_eq!(
        (
            garbage.attrs.public_ipv6,
            &garbage.attrs.backend_v6_data,
            garbage.ipv6_subnet
        ),
        (None, &None, None),
        "every IPv6 part bad (the podCIDR outside IPv6Network)"
    );
    assert!(garbage.attrs.vxlan_data().is_some());
    let me_lease = get(1);
    assert_eq!(me_lease.ipv6_subnet, Some(v6net("fd00:10:244:1::/64")));
}

#[tokio::test]
async fn dual_stack_config_leases_both_families_and_annotates_like_flannel() {
    let b = KubeBacking::start(false);
    let cfg = conf(&b, DUAL_CONF);
    let name = b.register(NodeFixture::new("dual", 2));
    dual_cidrs(&b, &name, "10.244.2.0/24", "fd00:10:244:2::/64");
    b.api
        .set_node_annotation(
            &name,
            &format!("{PREFIX}public-ipv6-overwrite"),
            Some("2001:db8::22"),
        )
        .expect("annotate");
    let store = b.store(&name).await;
    let a = attrs(2, 0).with_ipv6("2001:db8::2".parse().expect("ip6"), 1, "0a:58:0a:00:01:02");
    let lease = store
        .acquire(&cfg, &a, None)
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert_eq!(lease.subnet, net("10.244.2.0/24"));
    assert_eq!(lease.ipv6_subnet, Some(v6net("fd00:10:244:2::/64")));
    assert_eq!(
        lease.attrs.public_ipv6,
        Some("2001:db8::22".parse().expect("ip6"))
    );
    assert_eq!(
        b.annotation(&name, "backend-v6-data").as_deref(),
        Some(r#"{"VNI":1,"VtepMAC":"0a:58:0a:00:01:02"}"#)
    );
    assert_eq!(
        b.annotation(&name, "public-ipv6").as_deref(),
        Some("2001:db8::22")
    );
    let hints = store
        .node_hints()
        .await
        .unwrap_or_else(|e| panic!("hints: {e}"));
    assert_eq!(hints.vtep_mac_v6, Some([0x0a, 0x58, 0x0a, 0, 1, 2]));
    let again = store
        .renew(&lease)
        .await
        .unwrap_or_else(|e| panic!("renew: {e}"));
    assert_eq!(again.ipv6_subnet, lease.ipv6_subnet);
    // The IPv6 podCIDR moving means the lease is no longer ours.
    dual_cidrs(&b, &name, "10.244.2.0/24", "fd00:10:244:9::/64");
    let lost = store.renew(&lease).await.expect_err("IPv6 podCIDR moved");
    assert!(lost.to_string().contains("fd00:10:244:9::/64"), "{lost}");
}

#[tokio::test]
async fn dual_stack_config_without_an_ipv6_pod_cidr_is_one_clear_error() {
    let b = KubeBacking::start(false);
    let cfg = conf(&b, DUAL_CONF);
    let name = b.register(NodeFixture::new("v4only", 4).pod_cidr("10.244.4.0/24"));
    let store = b.store(&name).await;
    let a = attrs(4, 0).with_ipv6("2001:db8::4".parse().expect("ip6"), 1, "0a:58:0a:00:01:04");
    let e = store
        .acquire(&cfg, &a, None)
        .await
        .expect_err("no IPv6 podCIDR");
    let e = e.to_string();
    assert!(
        e.contains("EnableIPv6") && e.contains("v4only") && !e.contains('\n'),
        "{e}"
    );
}
