//! `net-conf.json` with IPv6: dual-stack, IPv6-only, and each bad
//! combination refused with one line naming the key.

use super::*;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn dual_stack_gets_flannels_defaults() {
    let c = NetConfig::parse(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#,
    )
    .expect("valid");
    assert!(c.ipv4.is_some());
    let f = c.ipv6.expect("ipv6");
    assert_eq!(
        f.network,
        "fd00:10:244::/56".parse::<Ipv6Network>().expect("net")
    );
    assert_eq!(f.subnet_len, 64);
    // As flannel: the second subnet up to the last.
    assert_eq!(f.subnet_min, v6("fd00:10:244:1::"));
    assert_eq!(f.subnet_max, v6("fd00:10:244:ff::"));
    assert_eq!(f.subnets().count(), 255);
    assert!(f.is_leasable("fd00:10:244:7::/64".parse().expect("net")));
    assert!(!f.is_leasable("fd00:10:244::/64".parse().expect("net")));
    assert!(!f.is_leasable("fd00:10:244:7::1/64".parse().expect("net")));
    assert!(!f.is_leasable("fd00:10:245:7::/64".parse().expect("net")));
    assert!(f.contains("fd00:10:244:7::/64".parse().expect("net")));
}

#[test]
fn ipv6_only_parses_without_network() {
    let c = NetConfig::parse(
        r#"{"EnableIPv4":false,"enableipv6":true,"ipv6network":"fd00::/48","IPv6SubnetLen":80}"#,
    )
    .expect("valid");
    assert_eq!(c.ipv4, None);
    assert!(c.v4().unwrap_err().to_string().contains("EnableIPv4"));
    let f = c.ipv6.expect("ipv6");
    assert_eq!(f.subnet_len, 80);
    assert_eq!(f.subnet_min, v6("fd00::1:0:0:0"));
    assert_eq!(f.subnet_max, v6("fd00:0:0:ffff:ffff::"));
    // 2^32 - 1 subnets: counted lazily, never listed.
    assert_eq!(
        f.subnets().nth(1),
        Some("fd00::2:0:0:0/80".parse().expect("net"))
    );
}

#[test]
fn small_and_huge_ipv6_networks() {
    // Prefix + 2 when the network cannot give each node a /64.
    let c =
        NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/120"}"#)
            .expect("valid");
    let f = c.ipv6.expect("ipv6");
    assert_eq!(f.subnet_len, 122);
    assert_eq!(f.subnets().count(), 3);
    // The whole address space is a network too (no overflow).
    let c = NetConfig::parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"::/0"}"#)
        .expect("valid");
    let f = c.ipv6.expect("ipv6");
    assert_eq!(f.subnet_len, 64);
    assert_eq!(f.subnet_max, v6("ffff:ffff:ffff:ffff::"));
}

#[test]
fn explicit_bounds_and_cidr_spelling() {
    let c = NetConfig::parse(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56",
            "IPv6SubnetMin":"fd00:0:0:10::","IPv6SubnetMax":"fd00:0:0:20::/64"}"#,
    )
    .expect("valid");
    let f = c.ipv6.expect("ipv6");
    assert_eq!(
        (f.subnet_min, f.subnet_max),
        (v6("fd00:0:0:10::"), v6("fd00:0:0:20::"))
    );
    assert_eq!(f.subnets().count(), 17);
}

#[test]
fn each_bad_combination_names_its_field() {
    let cases = [
        (
            r#"{"Network":"10.244.0.0/16","EnableIPv6":true}"#,
            "EnableIPv6 is true but IPv6Network is missing",
        ),
        (
            r#"{"EnableIPv4":false}"#,
            "EnableIPv4 and EnableIPv6 are both false",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":false,"IPv6Network":"fd00::/48"}"#,
            "both false",
        ),
        (
            r#"{"EnableIPv6":true,"IPv6Network":"fd00::/48"}"#,
            "Network is missing",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}"#,
            "IPv6Network \"10.0.0.0/8\" is not an IPv6 CIDR",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::1/48"}"#,
            "IPv6Network fd00::1/48 has host bits set",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/125"}"#,
            "IPv6Network fd00::/125 is too small",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/64","IPv6SubnetLen":64}"#,
            "IPv6SubnetLen 64 must be at least the IPv6Network prefix + 2 (66)",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127}"#,
            "IPv6SubnetLen 127 must be 126 or less",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":300}"#,
            "IPv6SubnetLen 300 is not a prefix length",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::"}"#,
            "IPv6SubnetMin fd01:: is outside IPv6Network fd00::/48",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00::5"}"#,
            "IPv6SubnetMax fd00::5 is not aligned to a /64 subnet",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48",
                "IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:3::"}"#,
            "IPv6SubnetMin fd00:0:0:9:: is above IPv6SubnetMax fd00:0:0:3::",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"banana"}"#,
            "IPv6SubnetMin \"banana\" is not an IPv6 address",
        ),
        (
            r#"{"EnableIPv4":false,"EnableIPv6":"yes","IPv6Network":"fd00::/48"}"#,
            "EnableIPv6 must be true or false",
        ),
    ];
    for (text, needle) in cases {
        let e = NetConfig::parse(text).expect_err(text).to_string();
        assert!(e.contains(needle), "{text}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn ipv6_keys_are_read_but_unused_when_ipv6_is_off() {
    // flannel decodes every key, and checks IPv6Network only with EnableIPv6.
    let c = NetConfig::parse(r#"{"Network":"10.244.0.0/16","IPv6Network":"fd00::/125"}"#)
        .expect("valid");
    assert_eq!(c.ipv6, None);
    let e = NetConfig::parse(r#"{"Network":"10.244.0.0/16","IPv6Network":"banana"}"#)
        .expect_err("not a CIDR")
        .to_string();
    assert!(e.contains("IPv6Network"), "{e}");
}
