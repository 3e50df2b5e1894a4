//! Fuzz target `lease-value`: etcd lease values (`keys::decode`, written
//! by any node: flannel or flannel-rs), `LeaseAttrs::vxlan_data`, and the
//! lease keys (`Keys::subnet_of`). Corpus: `fuzz/corpus/lease-value/` and
//! `fuzz/corpus/etcd-key/`.
//!
//! Owns the fuzz target only; no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use flannel_tests::fuzz::{self, json, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// A failed case, with `e`'s message.
fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// An error, short whatever the value (it is logged), or a lease that
/// encodes to bytes decoding to itself.
fn check_value(value: &[u8]) -> Result<(), TestCaseError> {
    match decode(value) {
        Err(e) => {
            let e = e.to_string();
            prop_assert!(e.len() <= 4096, "a {}-byte message", e.len())
        }
        Ok(attrs) => {
            let _ = attrs.vxlan_data();
            let bytes = encode(&attrs).map_err(fail)?;
            let again = decode(&bytes).map_err(fail)?;
            // Floats too: serde_json's float_roundtrip reads them back exactly.
            prop_assert_eq!(again, attrs);
        }
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_bytes(value in prop::collection::vec(any::<u8>(), 0..300)) {
        check_value(&value)?;
    }
}

fuzz_test! {
    fn mutated_corpus(value in json::mutated_any(&fuzz::seeds("lease-value"))) {
        check_value(&value)?;
    }
}

fn attrs() -> impl Strategy<Value = LeaseAttrs> {
    (
        any::<u32>(),
        proptest::option::of(any::<u128>()),
        prop_oneof![Just("vxlan".to_string()), nasty_string()],
        json::any_json(),
        // `null` reads back as absent, as flannel's empty RawMessage.
        proptest::option::of(json::any_json().prop_filter("not null", |v| !v.is_null())),
    )
        .prop_map(
            |(ip, v6, backend_type, backend_data, backend_v6_data)| LeaseAttrs {
                public_ip: Ipv4Addr::from(ip),
                public_ipv6: v6.map(Ipv6Addr::from),
                backend_type,
                backend_data,
                backend_v6_data,
            },
        )
}

fuzz_test! {
    fn encode_then_decode_is_the_same(a in attrs()) {
        let bytes = encode(&a).map_err(fail)?;
        prop_assert_eq!(decode(&bytes).map_err(fail)?, a);
    }
}

fuzz_test! {
    fn vxlan_leases_read_back((ip, vni, mac) in (any::<u32>(), any::<u32>(), any::<[u8; 6]>())) {
        let mac = crate::mac::format(&mac);
        let a = LeaseAttrs::vxlan(ip.into(), vni, &mac);
        let back = decode(&encode(&a).map_err(fail)?).map_err(fail)?;
        let data = back.vxlan_data().ok_or_else(|| TestCaseError::fail("no vxlan data"))?;
        prop_assert_eq!((data.vni, data.vtep_mac), (vni, mac));
    }
}

fuzz_test! {
    /// PublicIP, PublicIPv6 and BackendType of the wrong type or spelling
    /// are errors, never a default (`null` PublicIPv6 is "none").
    fn wrong_fields_are_errors((seed, key, value) in (
        prop::sample::select(fuzz::seeds("lease-value")),
        prop::sample::select(vec!["PublicIP", "PublicIPv6", "BackendType"]),
        json::any_json(),
    )) {
        let mut doc: Value = serde_json::from_slice(&seed).expect("ok-* seeds are JSON");
        let fits = match key {
            "PublicIP" => value.as_str().is_some_and(|s| s.parse::<Ipv4Addr>().is_ok()),
            "PublicIPv6" => value.is_null() || value.as_str().is_some_and(|s| s.parse::<Ipv6Addr>().is_ok()),
            _ => value.is_string(),
        };
        prop_assume!(!fits);
        doc[key] = value;
        prop_assert!(decode(doc.to_string().as_bytes()).is_err(), "accepted {}", doc);
    }
}

fuzz_test! {
    /// A key names a subnet only as `Keys::lease` writes it (plus an
    /// optional dual-stack `&...` part).
    fn keys_name_subnets_one_way((prefix, name) in (
        prop_oneof![Just("/coreos.com/network".to_string()), Just("/coreos.com/network/".to_string()), nasty_string()],
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(ip, len)| format!("{}-{len}", Ipv4Addr::from(ip))),
            nasty_string(),
        ],
    )) {
        let keys = Keys::new(&prefix);
        let key = format!("{}{name}", keys.subnets());
        if let Some((n, v6)) = keys.subnet_of(key.as_bytes()) {
            prop_assert_eq!(key.clone(), keys.lease(n, v6));
        }
        prop_assert_eq!(keys.subnet_of(keys.config().as_bytes()), None);
    }
}

#[test]
fn corpus_replay_values() {
    fuzz::replay("lease-value", |name, value| {
        check_value(value).unwrap_or_else(|e| panic!("{name}: {e}"));
        decode(value).map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn corpus_replay_keys() {
    let keys = Keys::new("/coreos.com/network");
    fuzz::replay("etcd-key", |_, key| {
        keys.subnet_of(key)
            .map(drop)
            .ok_or_else(|| "not a lease key".to_string())
    });
}
