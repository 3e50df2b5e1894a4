//! Fuzz target `subnet-key`: `parse_subnet_key`, which names a lease in
//! both stores (`10.244.1.0-24`: the embedded store's file name, etcd's key
//! suffix). A name is read only in the spelling `subnet_key` writes, so no
//! two names can stand for one subnet. Corpus: `fuzz/corpus/subnet-key/`.
//!
//! Owns the fuzz target only; it touches no file, store or kernel.

use flannel_tests::fuzz::{self, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;

fn check_name(name: &str) -> Result<(), TestCaseError> {
    if let Some((net, v6)) = parse_subnet_key(name) {
        prop_assert_eq!(net.ip(), net.network(), "host bits in {:?}", name);
        if let Some(v6) = v6 {
            prop_assert_eq!(v6.ip(), v6.network(), "host bits in {:?}", name);
        }
        prop_assert_eq!(subnet_key(net, v6), name, "not the canonical spelling");
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_names(name in any::<String>()) {
        check_name(&name)?;
    }
}

fuzz_test! {
    /// Near misses of a valid name: each part replaced by something nasty.
    fn near_miss_names((ip, sep, len) in (
        prop_oneof![Just("10.244.1.0".to_string()), Just("0.0.0.0".to_string()), nasty_string()],
        prop_oneof![Just("-".to_string()), nasty_string()],
        prop_oneof![
            Just("24".to_string()),
            nasty_string(),
            "[+-]?0{0,2}[0-9]{1,3}[ \n]?",
            any::<i64>().prop_map(|n| n.to_string()),
        ],
    )) {
        check_name(&format!("{ip}{sep}{len}"))?;
    }
}

fuzz_test! {
    fn names_round_trip((ip, len) in (any::<u32>(), 0u8..=32)) {
        let net = Ipv4Network::new(ip.into(), len).expect("len <= 32");
        let net = Ipv4Network::new(net.network(), len).expect("len <= 32");
        prop_assert_eq!(parse_subnet_key(&subnet_key(net, None)), Some((net, None)));
    }
}

fuzz_test! {
    /// Dual-stack names (`10.244.1.0-24&fd00::-64`) round-trip too.
    fn dual_stack_names_round_trip((ip, len, ip6, len6) in (any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128)) {
        let net = Ipv4Network::new(ip.into(), len).expect("len <= 32");
        let net = Ipv4Network::new(net.network(), len).expect("len <= 32");
        let v6 = Ipv6Network::new(ip6.into(), len6).expect("len <= 128");
        let v6 = Ipv6Network::new(v6.network(), len6).expect("len <= 128");
        let name = subnet_key(net, Some(v6));
        prop_assert_eq!(parse_subnet_key(&name), Some((net, Some(v6))), "{}", name);
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay("subnet-key", |name, bytes| {
        let key = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        check_name(key).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse_subnet_key(key)
            .map(drop)
            .ok_or_else(|| "not a subnet key".to_string())
    });
}
