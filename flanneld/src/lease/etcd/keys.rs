//! flannel's etcd layout: key names and lease values, byte for byte.
//!
//! ```text
//! <prefix>/config                 {"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}
//! <prefix>/subnets/10.244.1.0-24  {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
//! ```
//!
//! The value carries no expiry: the etcd lease the key is attached to does.
//!
//! Owns names and encodings only: no I/O, no etcd request.

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::lease::{parse_subnet_key, subnet_key, LeaseAttrs};

/// An example value for `<prefix>/config`, shown when the key is missing.
pub const EXAMPLE_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` as given by `--etcd-prefix`; a trailing `/` is dropped so
    /// `/coreos.com/network/` and `/coreos.com/network` name the same keys.
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        Self {
            prefix: trimmed.to_string(),
        }
    }

    /// `<prefix>/config`
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`: every lease key starts with it.
    pub fn subnets(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// `<prefix>/subnets/10.244.1.0-24`
    pub fn lease(&self, subnet: Ipv4Network, ipv6: Option<Ipv6Network>) -> String {
        format!("{}{}", self.subnets(), subnet_key(subnet, ipv6))
    }

    /// The subnet a lease key names. `None` for keys outside
    /// `<prefix>/subnets/` or not named like a subnet. A dual-stack key
    /// (`10.244.1.0-24&fc00::-64`) names its IPv4 subnet.
    pub fn subnet_of(&self, key: &[u8]) -> Option<(Ipv4Network, Option<Ipv6Network>)> {
        let key = std::str::from_utf8(key).ok()?;
        let name = key.strip_prefix(&self.subnets())?;
        parse_subnet_key(name)
    }
}

/// flannel's lease value: `LeaseAttrs` as JSON, fields in flannel's order.
pub fn encode(attrs: &LeaseAttrs) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(attrs)
}

/// A lease value that is not flannel's: serde's reason (cut to 300 bytes)
/// and the value's first 200 bytes, so a peer's value cannot make a log
/// line unbounded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a flannel lease value ({why}): {shown:?}")]
pub struct BadLeaseValue {
    why: String,
    shown: String,
}

/// Parses a lease value written by us or by upstream flannel.
pub fn decode(value: &[u8]) -> Result<LeaseAttrs, BadLeaseValue> {
    serde_json::from_slice(value).map_err(|e| {
        let shown = String::from_utf8_lossy(&value[..value.len().min(200)]).into_owned();
        // serde's message quotes the offending value whole ("invalid type:
        // string \"…\""): a peer's value must not make a log line unbounded.
        let mut why = e.to_string();
        if why.len() > 300 {
            let mut end = 300;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            why.push('…');
        }
        BadLeaseValue { why, shown }
    })
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn key_layout_is_flannels() {
        let k = Keys::new("/coreos.com/network/");
        assert_eq!(k.config(), "/coreos.com/network/config");
        assert_eq!(
            k.lease(net("10.244.1.0/24"), None),
            "/coreos.com/network/subnets/10.244.1.0-24"
        );
        let v6: Ipv6Network = "fc00::/64".parse().expect("net");
        assert_eq!(
            k.lease(net("10.244.1.0/24"), Some(v6)),
            "/coreos.com/network/subnets/10.244.1.0-24&fc00::-64"
        );
        let parse = |s: &str| k.subnet_of(s.as_bytes());
        assert_eq!(
            parse("/coreos.com/network/subnets/10.244.1.0-24"),
            Some((net("10.244.1.0/24"), None))
        );
        assert_eq!(
            parse("/coreos.com/network/subnets/10.244.1.0-24&fc00::-64"),
            Some((net("10.244.1.0/24"), Some(v6)))
        );
        for bad in [
            "/coreos.com/network/config",
            "/coreos.com/network/subnets/10.244.1.1-24",
            "/coreos.com/network/subnets/banana",
            "/coreos.com/network/subnets/10.244.1.0-24&fc00::1-64",
            "/coreos.com/network/subnets/10.244.1.0-24&",
            "/other/subnets/10.244.1.0-24",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn value_is_flannels_bytes() {
        let a = LeaseAttrs::vxlan("192.168.64.3".parse().expect("ip"), 1, "c6:d2:32:6f:8f:44");
        let v = encode(&a).expect("encode");
        assert_eq!(
            String::from_utf8(v.clone()).expect("utf8"),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
        assert_eq!(decode(&v).expect("decode"), a);
        assert!(decode(b"{\"PublicIP\":\"nope\"}").is_err());
    }

    #[test]
    fn dual_stack_value_is_flannels_bytes() {
        let a = LeaseAttrs::vxlan("192.168.64.3".parse().expect("ip"), 1, "c6:d2:32:6f:8f:44")
            .with_ipv6("2001:db8::3".parse().expect("ip6"), 1, "c6:d2:32:6f:8f:45");
        let v = encode(&a).expect("encode");
        assert_eq!(
            String::from_utf8(v.clone()).expect("utf8"),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}"#
        );
        assert_eq!(decode(&v).expect("decode"), a);
        let v6 = a.vxlan_v6_data().expect("v6 data");
        assert_eq!((v6.vni, v6.vtep_mac.as_str()), (1, "c6:d2:32:6f:8f:45"));
        // flannel writes `null` for an empty RawMessage too.
        let nulls = br#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":null}"#;
        let d = decode(nulls).expect("decode");
        assert_eq!(d.backend_v6_data, None);
        assert_eq!(d.vxlan_v6_data(), None);
    }

    #[test]
    fn ipv6_only_key_and_value_are_flannels() {
        // flannel's MakeSubnetKey with an empty IP4Net, and its value with
        // PublicIP 0.0.0.0 and no BackendData.
        let k = Keys::new("/coreos.com/network/");
        let v6: Ipv6Network = "fd00:10:244:1::/64".parse().expect("net");
        let key = "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:1::-64";
        assert_eq!(k.lease(crate::lease::NO_IPV4, Some(v6)), key);
        assert_eq!(
            k.subnet_of(key.as_bytes()),
            Some((crate::lease::NO_IPV4, Some(v6)))
        );
        let a =
            LeaseAttrs::vxlan_v6_only("2001:db8::3".parse().expect("ip6"), 1, "c6:d2:32:6f:8f:45");
        let v = encode(&a).expect("encode");
        assert_eq!(
            String::from_utf8(v.clone()).expect("utf8"),
            r#"{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::3","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:45"}}"#
        );
        let d = decode(&v).expect("decode");
        assert_eq!(d, a);
        assert_eq!(
            d.node_ip(),
            "2001:db8::3".parse::<std::net::IpAddr>().expect("ip")
        );
        assert_eq!(d.vxlan_data(), None);
    }
}
