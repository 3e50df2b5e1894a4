//! Fuzz target `net-conf`: `NetConfig::parse` of `net-conf.json` (the
//! file, the kube-flannel ConfigMap, etcd's `<prefix>/config`): every rule
//! holds for what is accepted, keys in any case, wrong types refused.
//! Corpus: `fuzz/corpus/net-conf/`.

use flannel_tests::fuzz::{self, json, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::error::chain;

const TARGET: &str = "net-conf";

fn seeds() -> Vec<Value> {
    let seeds = fuzz::seeds(TARGET)
        .into_iter()
        .map(|s| serde_json::from_slice(&s));
    seeds
        .collect::<Result<_, _>>()
        .expect("ok-* seeds are JSON")
}

/// What is accepted keeps every rule the daemon relies on.
fn check_text(text: &str) -> Result<(), TestCaseError> {
    let Ok(c) = NetConfig::parse(text) else {
        return Ok(());
    };
    prop_assert!(c.ipv4.is_some() || c.ipv6.is_some());
    if let Some(f) = &c.ipv4 {
        check_family(f)?;
    }
    if let Some(f) = &c.ipv6 {
        check_family(f)?;
    }
    let b = &c.backend;
    prop_assert!(b.kind == "vxlan" && b.vni < (1 << 24) && b.port != 0);
    prop_assert!(b.mtu.is_none_or(|m| (1280..=65535).contains(&m)));
    Ok(())
}

/// Every rule of one family's part, whichever the family.
fn check_family<N: Family>(c: &FamilyConfig<N>) -> Result<(), TestCaseError> {
    let prefix = c.network.prefix();
    prop_assert!(c.network.is_canonical());
    prop_assert!(prefix + 2 <= c.subnet_len && c.subnet_len <= N::MAX_SUBNET_LEN);
    let size = 1u128 << (N::BITS - c.subnet_len);
    let (min, max) = (N::to_bits(c.subnet_min), N::to_bits(c.subnet_max));
    prop_assert!(min <= max && min % size == 0 && max % size == 0);
    prop_assert!(c.network.contains_addr(c.subnet_min) && c.network.contains_addr(c.subnet_max));
    for bound in [c.subnet_min, c.subnet_max] {
        let subnet = N::new(bound, c.subnet_len).expect("len <= BITS");
        prop_assert!(c.is_leasable(subnet));
    }
    for s in c.subnets().take(3) {
        prop_assert!(c.is_leasable(s));
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_text(text in any::<String>()) {
        check_text(&text)?;
    }
}

fuzz_test! {
    fn mutated_corpus(bytes in json::mutated_any(&fuzz::seeds(TARGET))) {
        // etcd's value is read lossily; the file must be UTF-8.
        check_text(&String::from_utf8_lossy(&bytes))?;
    }
}

/// `v` with the case of every letter of every key flipped where `flips` says.
fn recase(v: &Value, flips: &[bool], n: &mut usize) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let k: String = k
                        .chars()
                        .map(|c| {
                            *n += 1;
                            let flip = flips[*n % flips.len()];
                            if flip {
                                c.to_ascii_uppercase()
                            } else {
                                c.to_ascii_lowercase()
                            }
                        })
                        .collect();
                    (k, recase(v, flips, n))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fuzz_test! {
    fn keys_are_case_insensitive((seed, flips) in (
        prop::sample::select(seeds()),
        prop::collection::vec(any::<bool>(), 1..16),
    )) {
        // Errors compare by their text (the JSON parser's error has no `==`).
        let parse = |text: &str| NetConfig::parse(text).map_err(|e| chain(&e));
        let want = parse(&seed.to_string());
        let recased = recase(&seed, &flips, &mut 0);
        prop_assert_eq!(parse(&recased.to_string()), want, "{}", recased);
    }
}

type Field = (&'static str, bool, fn(&Value) -> bool);

const FIELDS: [Field; 18] = [
    ("Network", false, Value::is_string),
    ("SubnetLen", false, Value::is_number),
    ("SubnetMin", false, Value::is_string),
    ("SubnetMax", false, Value::is_string),
    ("EnableIPv4", false, Value::is_boolean),
    ("IPv6Network", false, Value::is_string),
    ("IPv6SubnetLen", false, Value::is_number),
    ("IPv6SubnetMin", false, Value::is_string),
    ("IPv6SubnetMax", false, Value::is_string),
    ("EnableIPv6", false, Value::is_boolean),
    ("EnableNFTables", false, Value::is_boolean),
    ("Backend", false, Value::is_object),
    ("Type", true, Value::is_string),
    ("VNI", true, Value::is_number),
    ("Port", true, Value::is_number),
    ("GBP", true, Value::is_boolean),
    ("Learning", true, Value::is_boolean),
    ("DirectRouting", true, Value::is_boolean),
];

fuzz_test! {
    /// A field of the wrong type is an error naming it, never its default
    /// (`null` alone means absent).
    fn wrong_types_are_errors((seed, (key, in_backend, ok_type), value) in (
        prop::sample::select(seeds()),
        prop::sample::select(FIELDS.to_vec()),
        json::any_json(),
    )) {
        prop_assume!(!value.is_null() && !ok_type(&value));
        let mut doc = recase(&seed, &[false], &mut 0);
        let key_lower = key.to_ascii_lowercase();
        if in_backend {
            if !doc["backend"].is_object() {
                doc["backend"] = json!({});
            }
            doc["backend"][key_lower.as_str()] = value;
        } else {
            doc[key_lower.as_str()] = value;
        }
        let e = NetConfig::parse(&doc.to_string());
        prop_assert!(e.as_ref().is_err_and(|e| e.to_string().contains(key)), "{:?} for {}", e, doc);
    }
}

/// A valid configuration as JSON, and what it must be read as.
fn valid() -> impl Strategy<Value = (Value, NetConfig)> {
    (0u8..=28, any::<u32>())
        .prop_flat_map(|(prefix, ip)| {
            let net = Ipv4Network::new(ip.into(), prefix).expect("len <= 32");
            let net = Ipv4Network::new(net.network(), prefix).expect("len <= 32");
            (
                Just(net),
                (prefix + 2)..=30,
                any::<(u32, u32)>(),
                any::<bool>(),
            )
        })
        .prop_flat_map(|(net, len, picks, cidr_bounds)| {
            let backend = (
                0u32..(1 << 24),
                1u16..,
                proptest::option::of(1280u32..=65535),
                any::<[bool; 4]>(),
            );
            (Just((net, len, picks, cidr_bounds)), backend)
        })
        .prop_map(
            |((net, len, (a, b), cidr), (vni, port, mtu, [gbp, learning, direct, nft]))| {
                let size = 1u64 << (32 - len);
                let count = 1u64 << (len - net.prefix());
                let at = |i: u64| {
                    Ipv4Addr::from((u64::from(u32::from(net.network())) + i * size) as u32)
                };
                let (lo, hi) = (u64::from(a) % count, u64::from(b) % count);
                let (min, max) = (at(lo.min(hi)), at(lo.max(hi)));
                let bound = |ip: Ipv4Addr| {
                    if cidr {
                        format!("{ip}/{len}")
                    } else {
                        ip.to_string()
                    }
                };
                let doc = json!({
                    "Network": net.to_string(), "SubnetLen": len, "SubnetMin": bound(min),
                    "SubnetMax": bound(max), "EnableNFTables": nft,
                    "Backend": {"Type": "vxlan", "VNI": vni, "Port": port, "MTU": mtu,
                        "GBP": gbp, "Learning": learning, "DirectRouting": direct},
                });
                let backend = BackendConfig {
                    kind: "vxlan".into(),
                    vni,
                    port,
                    mtu,
                    gbp,
                    learning,
                    direct_routing: direct,
                };
                let config = NetConfig {
                    ipv4: Some(FamilyConfig {
                        network: net,
                        subnet_len: len,
                        subnet_min: min,
                        subnet_max: max,
                    }),
                    ipv6: None,
                    enable_nftables: nft,
                    backend,
                };
                (doc, config)
            },
        )
}

fuzz_test! {
    fn valid_configs_are_read_as_written((doc, want) in valid()) {
        let got = NetConfig::parse(&doc.to_string()).map_err(|e| TestCaseError::fail(format!("{doc}: {e}")))?;
        prop_assert_eq!(got, want);
    }
}

fuzz_test! {
    /// SubnetMin/SubnetMax: an IPv4 address, bare or with a prefix length
    /// (0..=32, digits only), and nothing else.
    fn bounds_are_addresses(bound in nasty_string()) {
        let doc = json!({"Network": "0.0.0.0/0", "SubnetLen": 30, "SubnetMin": bound});
        let addr = match bound.split_once('/') {
            Some((a, len)) => a.parse::<Ipv4Addr>().ok().filter(|_| {
                len.bytes().all(|b| b.is_ascii_digit()) && len.parse::<u8>().is_ok_and(|n| n <= 32)
            }),
            None => bound.parse::<Ipv4Addr>().ok(),
        };
        let got = NetConfig::parse(&doc.to_string()).ok();
        match addr {
            Some(a) if u32::from(a) % 4 == 0 => prop_assert_eq!(got.and_then(|c| c.ipv4).map(|c| c.subnet_min), Some(a)),
            _ => prop_assert!(got.is_none(), "accepted {:?}", bound),
        }
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay(TARGET, |name, bytes| {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        check_text(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        NetConfig::parse(text).map(drop).map_err(|e| chain(&e))
    });
}
