//! Fuzz target `subnet-env`: `SubnetEnv::parse` and `SubnetEnv::read` of
//! `subnet.env`, and `render` → `parse` round trips. Corpus:
//! `fuzz/corpus/subnet-env/`.

use std::net::Ipv6Addr;

use flannel_cluster::TempDir;
use flannel_tests::fuzz::{self, text};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;

const TARGET: &str = "subnet-env";

/// Whatever the text: an error, or a value that keeps every rule and that
/// `render` writes back as text parsing to the same value.
fn check_text(text: &str) -> Result<(), TestCaseError> {
    if let Ok(env) = SubnetEnv::parse(text) {
        prop_assert!((576..=65535).contains(&env.mtu));
        prop_assert!(!env.families().is_empty());
        for f in env.families() {
            let bits = if f.subnet.is_ipv4() { 32 } else { 128 };
            prop_assert!(f.subnet.prefix() <= bits - 2);
            prop_assert!(f.gateway() != f.subnet.network());
            if let ipnetwork::IpNetwork::V4(s) = f.subnet {
                prop_assert!(s.ip() != s.broadcast());
            }
            prop_assert!(f.subnet.prefix() >= f.network.prefix());
            prop_assert!(f.network.contains(f.subnet.network()));
        }
        let again = SubnetEnv::parse(&env.render()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(again, env);
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_text(s in any::<String>()) {
        check_text(&s)?;
    }
}

fuzz_test! {
    fn mutated_corpus((seed, edits) in (
        prop::sample::select(fuzz::seeds(TARGET)),
        text::line_edits(4),
    )) {
        let seed = String::from_utf8(seed).expect("ok-* seeds are UTF-8");
        check_text(&text::mutate_lines(&seed, &edits))?;
    }
}

/// A valid `SubnetEnv`: a network, a subnet inside it and a host address
/// of that subnet as the gateway.
fn valid() -> impl Strategy<Value = SubnetEnv> {
    (0u8..=30, any::<u32>(), any::<u32>(), any::<u32>())
        .prop_flat_map(|(net_len, net, sub, host)| (Just((net_len, net, sub, host)), net_len..=30))
        .prop_flat_map(|((net_len, net, sub, host), sub_len)| {
            let network = Ipv4Network::new(net.into(), net_len).expect("len <= 32");
            let network = Ipv4Network::new(network.network(), net_len).expect("len <= 32");
            let size = 1u64 << (32 - u32::from(sub_len));
            let within = u64::from(sub) & ((1u64 << (32 - u32::from(net_len))) - 1);
            let base = u32::from(network.network()) as u64 + (within & !(size - 1));
            let gateway = base + 1 + u64::from(host) % (size - 2);
            let subnet =
                Ipv4Network::new(Ipv4Addr::from(gateway as u32), sub_len).expect("len <= 32");
            (
                Just((network, subnet)),
                576u32..=65535,
                any::<bool>(),
                // A /0 network could hold a /0 subnet, whose size (2^128) no u128 holds.
                proptest::option::of((any::<u128>(), 1u8..=126, any::<u128>(), any::<u128>())),
                any::<bool>(),
            )
        })
        .prop_map(|((network, subnet), mtu, ipmasq, v6, keep_v4)| {
            let v6 = v6.map(|(net, net_len, sub, host)| {
                // A subnet of net_len..=126 inside the network, its gateway a
                // host address other than the subnet's first.
                let sub_len = net_len + (sub % u128::from(127 - net_len)) as u8;
                let net_mask = u128::MAX.checked_shl(128 - u32::from(net_len)).unwrap_or(0);
                let sub_size = 1u128 << (128 - u32::from(sub_len));
                let base = (net & net_mask) | ((sub << 7) & !net_mask & !(sub_size - 1));
                let gateway = base + 1 + host % (sub_size - 1);
                let n = Ipv6Network::new(Ipv6Addr::from(net & net_mask), net_len).expect("len");
                let s = Ipv6Network::new(Ipv6Addr::from(gateway), sub_len).expect("len");
                (n, s)
            });
            let keep_v4 = keep_v4 || v6.is_none();
            SubnetEnv {
                network: keep_v4.then_some(network),
                subnet: keep_v4.then_some(subnet),
                mtu,
                ipmasq,
                ipv6_network: v6.map(|p| p.0),
                ipv6_subnet: v6.map(|p| p.1),
            }
        })
}

fuzz_test! {
    fn render_then_parse_is_the_same(env in valid()) {
        let back = SubnetEnv::parse(&env.render()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, env);
    }
}

const KEYS: [&str; 6] = [
    "FLANNEL_NETWORK",
    "FLANNEL_SUBNET",
    "FLANNEL_MTU",
    "FLANNEL_IPMASQ",
    "FLANNEL_IPV6_NETWORK",
    "FLANNEL_IPV6_SUBNET",
];

fuzz_test! {
    /// A key with a value that is not of its kind is an error naming the
    /// key, never a default.
    fn bad_values_are_errors((env, key, value) in (valid(), prop::sample::select(KEYS.to_vec()), text::nasty_string())) {
        let v = value.trim().trim_matches('"');
        let well_formed = match key {
            "FLANNEL_NETWORK" | "FLANNEL_SUBNET" => v.parse::<Ipv4Network>().is_ok(),
            "FLANNEL_MTU" => v.parse::<u32>().is_ok(),
            "FLANNEL_IPMASQ" => v.parse::<bool>().is_ok(),
            _ => v.parse::<Ipv6Network>().is_ok(),
        };
        prop_assume!(!well_formed && !value.contains(['\n', '\r']));
        let text = format!("{}{key}={value}\n", env.render());
        let e = SubnetEnv::parse(&text).err();
        prop_assert!(e.as_deref().is_some_and(|e| e.contains(key)), "{:?} for {:?}", e, value);
    }
}

/// `SubnetEnv::read` of a file holding `bytes`: parsed, or `Invalid`
/// (never `Io`: the file was there and readable, only its text was bad).
fn read_bytes(bytes: &[u8]) -> Result<SubnetEnv, String> {
    let dir = TempDir::new("subnet-env-fuzz");
    let path = dir.join("subnet.env");
    std::fs::write(&path, bytes).expect("write subnet.env");
    match SubnetEnv::read(&path) {
        Ok(env) => Ok(env),
        Err(SubnetEnvError::Invalid { reason, .. }) => Err(reason),
        Err(other) => panic!("{other:?} is not a parse error"),
    }
}

fuzz_test! {
    fn read_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let read = read_bytes(&bytes);
        match std::str::from_utf8(&bytes) {
            Ok(t) => prop_assert_eq!(read, SubnetEnv::parse(t)),
            Err(_) => prop_assert!(read.is_err()),
        }
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay(TARGET, |name, bytes| {
        if let Ok(t) = std::str::from_utf8(bytes) {
            check_text(t).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        read_bytes(bytes).map(drop)
    });
}
