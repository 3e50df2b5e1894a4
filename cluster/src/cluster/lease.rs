//! Leases as the stores hold them: the embedded store's files and etcd's
//! keys, parsed into one shape, with the IPv6 half of a dual-stack or
//! IPv6-only lease (`10.244.1.0-24&fd00:10:244:1::-64`, `PublicIPv6`,
//! `BackendV6Data`).
//!
//! It parses what the stores hold with the harness's own code, not
//! flanneld's, and never writes a lease.

use super::family::IpFamily;
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One lease: a file of the embedded lease store (e.g. `leases/10.244.1.0-24`)
/// or an etcd key (`/coreos.com/network/subnets/10.244.1.0-24`, in `path`).
#[derive(Debug, Clone)]
pub struct LeaseFile {
    pub path: PathBuf,
    /// "10.244.1.0/24", from the file name ("" when the lease has no
    /// IPv4 subnet: IPv6 only).
    pub subnet: String,
    /// "fd00:10:244:1::/64", the IPv6 subnet of a dual-stack or IPv6-only lease.
    pub subnet6: Option<String>,
    pub public_ip: String,
    /// `PublicIPv6`, when the lease has one.
    pub public_ipv6: Option<String>,
    /// `BackendV6Data.VtepMAC` (the peer's `flannel-v6.<VNI>`), lower case.
    pub vtep_mac6: Option<String>,
    pub backend_type: String,
    pub vni: Option<u64>,
    pub vtep_mac: String,
    /// When the store says it expires (when the file carries it in a form we know).
    pub expires: Option<SystemTime>,
    pub raw: Value,
}

impl LeaseFile {
    pub fn is_expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= SystemTime::now())
    }

    /// The subnet's network address ("10.244.1.0"): the peer's VTEP address.
    pub fn vtep_ip(&self) -> &str {
        self.subnet.split('/').next().unwrap_or("")
    }

    /// The IPv6 subnet's network address: the peer's IPv6 VTEP address.
    pub fn vtep_ip6(&self) -> Option<&str> {
        self.subnet6.as_deref().map(super::family::network_addr)
    }

    /// Does it hold a subnet of the single family `f`?
    pub fn has(&self, f: IpFamily) -> bool {
        match f {
            IpFamily::V4 => !self.subnet.is_empty(),
            IpFamily::V6 => self.subnet6.is_some(),
            IpFamily::Dual => !self.subnet.is_empty() && self.subnet6.is_some(),
        }
    }

    /// Is it the lease of the node with these underlay addresses?
    pub fn is_of(&self, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) -> bool {
        let v4 = !self.public_ip.is_empty() && self.public_ip == ip.to_string();
        let v6 = match (&self.public_ipv6, ip6) {
            (Some(p), Some(mine)) => p.parse::<Ipv6Addr>().ok() == Some(mine),
            _ => false,
        };
        v4 || v6
    }

    /// The subnets it holds, "10.244.1.0/24 fd00:10:244:1::/64".
    pub fn subnets(&self) -> String {
        let mut v: Vec<&str> = Vec::new();
        if !self.subnet.is_empty() {
            v.push(&self.subnet);
        }
        v.extend(self.subnet6.as_deref());
        v.join(" ")
    }
}

/// A lease's name: `10.244.1.0-24`, `10.244.1.0-24&fd00:10:244:1::-64`
/// (flannel's `MakeSubnetKey`), or an IPv6-only one (`fd00:10:244:1::-64`,
/// or with the IPv4 half `0.0.0.0-0`), as (IPv4 subnet or "", IPv6 subnet).
pub fn parse_lease_name(name: &str) -> Option<(String, Option<String>)> {
    let v4 = |s: &str| -> Option<String> {
        let (ip, len) = s.split_once('-')?;
        ip.parse::<Ipv4Addr>().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(format!("{ip}/{len}"))
    };
    let v6 = |s: &str| -> Option<String> {
        let (ip, len) = s.rsplit_once('-')?;
        ip.parse::<Ipv6Addr>().ok()?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
        Some(format!("{ip}/{len}"))
    };
    match name.split_once('&') {
        Some((a, b)) => {
            let four = v4(a)?;
            let four = if four == "0.0.0.0/0" {
                String::new()
            } else {
                four
            };
            Some((four, Some(v6(b)?)))
        }
        None => match v4(name) {
            Some(four) => Some((four, None)),
            None => Some((String::new(), Some(v6(name)?))),
        },
    }
}

/// Reads every lease-named file (see [`parse_lease_name`]) of `dir` (other names, e.g. temp files and
/// locks, are skipped, as are files that do not parse).
pub fn read_leases(dir: &Path) -> Vec<LeaseFile> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        v.extend(parse_lease(&name, &text, e.path()));
    }
    v.sort_by(|a, b| a.subnet.cmp(&b.subnet));
    v
}

/// The leases in `etcdctl get --prefix <prefix>/subnets/` output (key and
/// value on alternate lines). `path` of each is its etcd key.
pub fn parse_etcdctl_leases(out: &str) -> Vec<LeaseFile> {
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut v: Vec<LeaseFile> = lines
        .chunks(2)
        .filter_map(|kv| {
            let key = kv.first()?.trim();
            let name = key.rsplit('/').next()?;
            parse_lease(name, kv.get(1)?, PathBuf::from(key))
        })
        .collect();
    v.sort_by(|a, b| a.subnet.cmp(&b.subnet));
    v
}

/// One lease named as [`parse_lease_name`] reads (a file name or the last
/// part of an etcd key) holding flannel's lease value, if both parse.
pub fn parse_lease(name: &str, text: &str, path: PathBuf) -> Option<LeaseFile> {
    let (subnet, subnet6) = parse_lease_name(name)?;
    let raw = serde_json::from_str::<Value>(text).ok()?;
    let attrs = find_attrs(&raw)?;
    let bd = &attrs["BackendData"];
    let public_ip = attrs["PublicIP"].as_str().unwrap_or("").to_owned();
    Some(LeaseFile {
        path,
        subnet,
        subnet6,
        public_ip,
        public_ipv6: attrs["PublicIPv6"].as_str().map(str::to_owned),
        vtep_mac6: attrs["BackendV6Data"]["VtepMAC"]
            .as_str()
            .map(str::to_lowercase),
        backend_type: attrs["BackendType"].as_str().unwrap_or("").to_owned(),
        vni: bd["VNI"].as_u64(),
        vtep_mac: bd["VtepMAC"].as_str().unwrap_or("").to_lowercase(),
        expires: find_expiry(&raw),
        raw,
    })
}

/// The object holding `PublicIP` or `PublicIPv6` (the file itself or one
/// level down).
fn find_attrs(v: &Value) -> Option<&Value> {
    let is_attrs = |x: &Value| x.get("PublicIP").is_some() || x.get("PublicIPv6").is_some();
    if is_attrs(v) {
        return Some(v);
    }
    v.as_object()?.values().find(|x| is_attrs(x))
}

/// An expiry field: unix seconds/milliseconds or an RFC 3339 time.
fn find_expiry(v: &Value) -> Option<SystemTime> {
    let obj = v.as_object()?;
    let (_, val) = obj.iter().find(|(k, _)| {
        let k = k.to_lowercase();
        k.starts_with("expir") || k == "expires" || k == "expires_at"
    })?;
    match val {
        Value::Number(n) => {
            let f = n.as_f64()?;
            let secs = if f > 1e12 { f / 1000.0 } else { f };
            Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
        Value::String(s) => parse_rfc3339(s),
        Value::Object(o) => {
            // serde's SystemTime: {"secs_since_epoch":..,"nanos_since_epoch":..}
            let secs = o.get("secs_since_epoch")?.as_u64()?;
            let nanos = o
                .get("nanos_since_epoch")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
        }
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i.min(start + 9)];
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        b'+' | b'-' => {
            let sign = if b[i] == b'-' { -1 } else { 1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::node::network_of;

    #[test]
    fn rfc3339_and_networks_parse() {
        let t = parse_rfc3339("2024-01-02T03:04:05.5Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_704_164_645, 500_000_000)
        );
        let t2 = parse_rfc3339("2024-01-02T05:04:05+02:00").unwrap();
        assert_eq!(
            t2.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_704_164_645
        );
        assert_eq!(
            network_of("10.244.3.1/24").as_deref(),
            Some("10.244.3.0/24")
        );
        assert_eq!(network_of("x/24"), None);
    }

    #[test]
    fn etcdctl_output_parses_into_leases() {
        let out = "/coreos.com/network/subnets/10.244.7.0-24\n\
            {\"PublicIP\":\"192.168.64.11\",\"BackendType\":\"vxlan\",\
            \"BackendData\":{\"VNI\":1,\"VtepMAC\":\"0E:00:00:00:00:01\"}}\n\
            /coreos.com/network/subnets/junk\n{}\n";
        let v = parse_etcdctl_leases(out);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].subnet, "10.244.7.0/24");
        assert_eq!(v[0].public_ip, "192.168.64.11");
        assert_eq!(v[0].vtep_mac, "0e:00:00:00:00:01");
        assert_eq!(v[0].vni, Some(1));
        assert!(!v[0].is_expired());
    }

    #[test]
    fn dual_stack_and_ipv6_only_leases_parse() {
        let dual = "{\"PublicIP\":\"192.168.64.10\",\"PublicIPv6\":\"fd00:192:168:64::a\",\
            \"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":1,\"VtepMAC\":\"0e:00:00:00:00:01\"},\
            \"BackendV6Data\":{\"VNI\":1,\"VtepMAC\":\"0E:00:00:00:00:02\"}}";
        let l = parse_lease("10.244.1.0-24&fd00:10:244:1::-64", dual, PathBuf::new()).unwrap();
        assert_eq!(l.subnet, "10.244.1.0/24");
        assert_eq!(l.subnet6.as_deref(), Some("fd00:10:244:1::/64"));
        assert_eq!(l.vtep_ip6(), Some("fd00:10:244:1::"));
        assert_eq!(l.vtep_mac6.as_deref(), Some("0e:00:00:00:00:02"));
        assert!(l.has(IpFamily::Dual));
        assert!(l.is_of(Ipv4Addr::new(9, 9, 9, 9), "fd00:192:168:64::a".parse().ok()));
        for name in ["0.0.0.0-0&fd00:10:244:2::-64", "fd00:10:244:2::-64"] {
            let (four, six) = parse_lease_name(name).unwrap();
            assert_eq!(
                (four.as_str(), six.as_deref()),
                ("", Some("fd00:10:244:2::/64"))
            );
        }
        assert_eq!(parse_lease_name("junk"), None);
        assert_eq!(parse_lease_name("10.244.1.0-24&junk"), None);
    }
}
