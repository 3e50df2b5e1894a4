//! Fuzz target `ipam`: what the IPAM store reads back from disk, the
//! address records (`Allocation::parse`: host-local's `<cid>\r\n<ifname>`
//! and the legacy `<cid>`) and `last_reserved_ip.0`, with the records as
//! DEL (`release`) uses them. Corpus: `fuzz/corpus/ipam-record/` and
//! `fuzz/corpus/ipam-last-reserved/`.

use flannel_cluster::TempDir;
use flannel_tests::fuzz::{self, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;
use ipnetwork::Ipv4Network;
use std::net::Ipv4Addr;

const SUBNET: &str = "10.244.1.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const CID: &str = "4b5e0f0d2c1a";
const IFNAME: &str = "eth0";

/// What a record says, stated as host-local compares records: the
/// whitespace-trimmed text is `<cid>\r\n<ifname>`, or `<cid>` alone.
fn check_record(record: &[u8]) -> Result<Allocation, TestCaseError> {
    let ip = Ipv4Addr::new(10, 244, 1, 7);
    let a = Allocation::parse(ip.into(), record);
    let text = String::from_utf8_lossy(record);
    let text = text.trim();
    prop_assert_eq!(a.ip, ip);
    prop_assert!(!a.container_id.contains(LINE_BREAK));
    match &a.ifname {
        Some(ifname) => prop_assert_eq!(format!("{}{LINE_BREAK}{ifname}", a.container_id), text),
        None => prop_assert_eq!(a.container_id.as_str(), text),
    }
    Ok(a)
}

/// Interface names the plugin accepts (`CNI_IFNAME`'s rules).
fn ifname() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,14}",
        nasty_string().prop_filter("a valid ifname", |n| crate::env::validate_ifname(n).is_ok()),
    ]
}

fuzz_test! {
    /// A record as `allocate` writes it names its owner when read back.
    fn records_round_trip((cid, ifname) in ("[a-zA-Z0-9][a-zA-Z0-9_.-]{0,70}", ifname())) {
        let record = format!("{}{LINE_BREAK}{ifname}", cid.trim());
        let a = check_record(record.as_bytes())?;
        prop_assert_eq!(a.container_id, cid);
        prop_assert_eq!(a.ifname, Some(ifname));
    }
}

fuzz_test! {
    fn arbitrary_records(record in prop::collection::vec(any::<u8>(), 0..300)) {
        check_record(&record)?;
    }
}

/// Records built around (CID, IFNAME): whitespace, separators, other owners.
fn near_records() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![CID, IFNAME, "\r\n", "\n", "\r", " ", "\t", "\u{a0}",
            "\u{2003}", "\0", "eth1", "4b5e0f0d2c1", "\u{fffd}"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fuzz_test! {
    fn near_miss_records(record in near_records()) {
        check_record(&record)?;
    }
}

fn store() -> (TempDir, Store) {
    let dir = TempDir::new("ipam-fuzz");
    let store = Store::open(dir.path(), "cbr0").expect("open the store");
    (dir, store)
}

fuzz_test! {
    /// DEL frees exactly the files whose record names (CID, IFNAME), or,
    /// when none does, CID alone; every other file stays.
    fn release_frees_exactly_the_owners_files(records in prop::collection::vec(near_records(), 1..5)) {
        let (_dir, s) = store();
        for (i, r) in records.iter().enumerate() {
            fs::write(s.dir().join(format!("10.244.1.{}", i + 2)), r).expect("write a record");
        }
        let parsed: Vec<Allocation> = records.iter().map(|r| check_record(r)).collect::<Result<_, _>>()?;
        let exact = |a: &Allocation| a.container_id == CID && a.ifname.as_deref() == Some(IFNAME);
        let legacy = |a: &Allocation| a.container_id == CID && a.ifname.is_none();
        let owned: &dyn Fn(&Allocation) -> bool = if parsed.iter().any(exact) { &exact } else { &legacy };
        let want: Vec<Ipv4Addr> = (0..records.len())
            .filter(|&i| owned(&parsed[i]))
            .map(|i| Ipv4Addr::new(10, 244, 1, i as u8 + 2))
            .collect();
        prop_assert_eq!(s.find(CID, IFNAME).expect("find"), want.clone());
        prop_assert_eq!(s.release(CID, IFNAME).expect("release"), want.clone());
        let left: Vec<IpAddr> = s.allocations().expect("list").iter().map(|a| a.ip).collect();
        for (i, a) in parsed.iter().enumerate() {
            let ip = Ipv4Addr::new(10, 244, 1, i as u8 + 2);
            // DEL also sweeps files with no owner in them.
            let kept = !want.contains(&ip) && !a.container_id.is_empty();
            prop_assert_eq!(left.contains(&IpAddr::V4(ip)), kept, "{} {:?}", ip, a);
        }
    }
}

/// Allocates once with `content` in `last_reserved_ip.0`; returns the
/// address and whether the file was used (an in-range address).
fn allocate_after(content: &[u8]) -> (IpAddr, bool) {
    let (_dir, s) = store();
    fs::write(s.dir().join(LAST_RESERVED), content).expect("write last_reserved_ip.0");
    let subnet: Ipv4Network = SUBNET.parse().expect("cidr");
    let (start, end) = range::usable(subnet.into()).expect("a /24 has room");
    let used = s
        .last_reserved(0)
        .filter(IpAddr::is_ipv4)
        .map(range::to_int)
        .filter(|ip| (start..=end).contains(ip));
    let ip = s
        .allocate(subnet, GATEWAY, 0, CID, IFNAME)
        .expect("allocate");
    let want = match used {
        Some(last) if last < end => last + 1,
        _ => start,
    };
    assert_eq!(
        ip,
        range::from_int(subnet.into(), want).expect("in range"),
        "after {:?}",
        String::from_utf8_lossy(content)
    );
    assert_eq!(s.last_reserved(0), Some(ip), "last_reserved_ip.0 rewritten");
    (ip, used.is_some())
}

fuzz_test! {
    /// A readable in-range address is resumed after; anything else is
    /// ignored (the search starts at network+2), never an error.
    fn last_reserved_resumes_or_is_ignored(content in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        nasty_string().prop_map(String::into_bytes),
        (any::<u8>(), "[ \t\r\n]{0,3}", "[ \t\r\n]{0,3}")
            .prop_map(|(n, a, b)| format!("{a}10.244.1.{n}{b}").into_bytes()),
    ]) {
        let text = std::str::from_utf8(&content).ok().map(str::trim);
        let (_, used) = allocate_after(&content);
        let in_range = text.and_then(|t| t.parse::<Ipv4Addr>().ok())
            .is_some_and(|ip| (Ipv4Addr::new(10, 244, 1, 2)..=Ipv4Addr::new(10, 244, 1, 254)).contains(&ip));
        prop_assert_eq!(used, in_range);
    }
}

#[test]
fn corpus_replay_records() {
    fuzz::replay("ipam-record", |name, record| {
        let a = check_record(record).unwrap_or_else(|e| panic!("{name}: {e}"));
        // ok: the file names an owner; bad: it names none (crash debris).
        if a.container_id.is_empty() {
            Err("no owner".to_string())
        } else {
            Ok(())
        }
    });
}

#[test]
fn corpus_replay_last_reserved() {
    fuzz::replay("ipam-last-reserved", |_, content| {
        let (ip, used) = allocate_after(content);
        if used {
            Ok(())
        } else {
            Err(format!("ignored, allocated {ip}"))
        }
    });
}
