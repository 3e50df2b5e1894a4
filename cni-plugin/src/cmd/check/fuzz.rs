//! Fuzz target `cni-prev-result`: CHECK's reading of `prevResult`
//! (`Prev::parse`, the container interface, its addresses and the routes)
//! for results of every CNI version. Corpus: `fuzz/corpus/prev-result/`.

use flannel_tests::fuzz::{self, json};
use flannel_tests::fuzz_test;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::error::Code;
use crate::spec::{AddResult, Interface, IpConfig, RouteConfig, SUPPORTED_VERSIONS};

const TARGET: &str = "prev-result";

/// Everything CHECK reads from `prev` for `ifname`, or the first error.
fn read(prev: Value, ifname: &str) -> Result<(Option<usize>, Vec<IpNetwork>, usize)> {
    let prev = Prev::parse(prev)?;
    let container = prev.container(ifname);
    let addresses = prev.addresses(container)?;
    Ok((container, addresses, prev.routes()?.len()))
}

/// No panic, and any error is a decode error (code 6).
fn check_any(prev: Value) -> Result<(), TestCaseError> {
    if let Err(e) = read(prev, "eth0") {
        prop_assert_eq!(e.code, Code::Decode, "{}", e);
        prop_assert!(e.msg.contains("prevResult"), "{}", e);
    }
    Ok(())
}

fuzz_test! {
    fn any_json_value(prev in json::any_json()) {
        check_any(prev)?;
    }
}

fuzz_test! {
    fn mutated_corpus(text in json::mutated_any(&fuzz::seeds(TARGET))) {
        // Text that is not JSON never gets here: NetConf::parse refuses it.
        if let Ok(prev) = serde_json::from_slice::<Value>(&text) {
            check_any(prev)?;
        }
    }
}

/// A network of either family, and a gateway of the same family.
fn net() -> impl Strategy<Value = (IpNetwork, IpAddr)> {
    prop_oneof![
        (any::<u32>(), 0u8..=32, any::<u32>()).prop_map(|(ip, len, gw)| {
            let n = Ipv4Network::new(ip.into(), len).expect("a prefix of at most 32");
            (IpNetwork::V4(n), IpAddr::V4(gw.into()))
        }),
        (any::<u128>(), 0u8..=128, any::<u128>()).prop_map(|(ip, len, gw)| {
            let n = Ipv6Network::new(ip.into(), len).expect("a prefix of at most 128");
            (IpNetwork::V6(n), IpAddr::V6(gw.into()))
        }),
    ]
}

fn add_result() -> impl Strategy<Value = AddResult> {
    let iface = |name: BoxedStrategy<String>, sandbox: bool| {
        (
            name,
            "[0-9a-f]{2}(:[0-9a-f]{2}){5}",
            proptest::option::of(576u32..=65535),
        )
            .prop_map(move |(name, mac, mtu)| Interface {
                name,
                mac,
                mtu,
                sandbox: sandbox.then(|| "/var/run/netns/cni-1".to_string()),
            })
    };
    let names = |re: &'static str| re.prop_map(String::from).boxed();
    (
        iface(names("[a-z][a-z0-9]{0,14}"), false),
        iface(names("veth[0-9a-f]{8}"), false),
        iface(names("[a-z][a-z0-9_.-]{0,14}"), true),
        prop::collection::vec(net(), 1..3),
        prop::collection::vec(net(), 0..4),
    )
        .prop_map(|(bridge, host, container, ips, routes)| AddResult {
            bridge,
            host,
            container,
            ips: ips
                .into_iter()
                .map(|(address, gateway)| IpConfig { address, gateway })
                .collect(),
            routes: routes
                .into_iter()
                .map(|(dst, gw)| RouteConfig { dst, gw })
                .collect(),
        })
}

fuzz_test! {
    /// What ADD prints, in every version's shape, is what CHECK reads back.
    fn add_results_read_back((r, version) in (
        add_result(),
        prop::sample::select(SUPPORTED_VERSIONS.to_vec()),
    )) {
        let version = Version::parse(version).expect("supported");
        let prev = Prev::parse(r.to_json(version)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let container = prev.container(&r.container.name);
        prop_assert_eq!(container, Some(2));
        let addresses = prev.addresses(container).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<_> = r.ips.iter().map(|ip| ip.address).collect();
        prop_assert_eq!(addresses, want);
        let routes = prev.routes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<_> = r.routes.iter().map(|r| (r.dst, Some(r.gw))).collect();
        prop_assert_eq!(routes, want);
    }
}

fuzz_test! {
    /// Only `<address>/len` is a CIDR: no bare address, netmask or sign.
    /// IPv4 text is canonical; IPv6 has several spellings of one address
    /// (`::110.244.1.0` is `::6ef4:100`), so it must read back the same.
    fn cidrs_are_strict(s in flannel_tests::fuzz::text::nasty_string()) {
        if let Some(n) = parse_cidr(&s) {
            let text = format!("{}/{}", n.ip(), n.prefix());
            match n {
                IpNetwork::V4(_) => prop_assert_eq!(text, s),
                IpNetwork::V6(_) => {
                    let (_, len) = s.split_once('/').expect("a CIDR has a /");
                    prop_assert_eq!(len, n.prefix().to_string());
                    prop_assert_eq!(parse_cidr(&text), Some(n));
                }
            }
        }
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay(TARGET, |name, bytes| {
        let prev: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        check_any(prev.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        read(prev, "eth0").map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn corpus_has_every_version() {
    let names: Vec<String> = fuzz::corpus(TARGET).into_iter().map(|(n, _)| n).collect();
    for v in SUPPORTED_VERSIONS {
        assert!(names.contains(&format!("ok-{v}.json")), "no ok-{v}.json");
    }
}
