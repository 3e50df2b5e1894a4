//! Unit tests of the IPAM store.

use super::*;
use flannel_cluster::tempdir::TempDir;
use ipnetwork::Ipv4Network;
use nix::fcntl::FlockArg;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<Ipv4Addr> {
    list.iter().map(|s| ip(s)).collect()
}

fn setup() -> (TempDir, Store) {
    let tmp = TempDir::new("-ipam");
    let store = Store::open(tmp.path(), "cbr0").unwrap();
    (tmp, store)
}

/// Allocates in 10.244.1.0/24 with gateway .1.
fn take(s: &Store, cid: &str, ifname: &str) -> IpAddr {
    let (subnet, gw) = (net("10.244.1.0/24"), ip("10.244.1.1"));
    s.allocate(subnet, gw, 0, cid, ifname).unwrap()
}

fn put(s: &Store, name: &str, content: &str) {
    fs::write(s.dir().join(name), content).unwrap();
}

fn held(s: &Store) -> Vec<IpAddr> {
    s.allocations().unwrap().iter().map(|a| a.ip).collect()
}

#[test]
fn first_allocation_is_dot2_in_host_local_format() {
    let (tmp, s) = setup();
    assert_eq!(s.dir(), tmp.join("cbr0"));
    assert_eq!(take(&s, "cid1", "eth0"), ip("10.244.1.2"));
    let file = s.dir().join("10.244.1.2");
    assert_eq!(fs::read(&file).unwrap(), b"cid1\r\neth0");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(s.dir()) & 0o722, 0o700, "0755 minus umask");
    let last = fs::read_to_string(s.dir().join(LAST_RESERVED)).unwrap();
    assert_eq!(last, "10.244.1.2");
    assert!(s.dir().join(LOCK_FILE).is_file());
    assert!(Store::open(tmp.path(), "cbr0").is_ok(), "reopen");
}

#[test]
fn round_robin_does_not_reuse_a_freed_address_at_once() {
    let (_tmp, s) = setup();
    assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.2"));
    assert_eq!(take(&s, "b", "eth0"), ip("10.244.1.3"));
    assert_eq!(s.release("a", "eth0").unwrap(), ips(&["10.244.1.2"]));
    assert_eq!(take(&s, "c", "eth0"), ip("10.244.1.4"));
}

#[test]
fn wraps_around_and_exhausts_a_small_subnet() {
    let (_tmp, s) = setup();
    let (subnet, gw) = (net("10.0.0.0/28"), ip("10.0.0.1"));
    put(&s, LAST_RESERVED, "10.0.0.14");
    for i in (2..=14).chain([6]) {
        let got = s.allocate(subnet, gw, 0, &format!("c{i}"), "eth0").unwrap();
        assert_eq!(got, Ipv4Addr::new(10, 0, 0, i));
        if i == 14 {
            // Full: free .6, and the search wraps past the taken ones to it.
            assert_eq!(s.release("c6", "eth0").unwrap(), ips(&["10.0.0.6"]));
        }
    }
    let err = s.allocate(subnet, gw, 0, "x", "eth0").unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { range } if range == subnet.into()));
    assert_eq!(err.to_string(), "no free IP address in 10.0.0.0/28");
    assert_eq!(held(&s).len(), 13);
}

#[test]
fn tiny_subnets_and_odd_gateways() {
    let tmp = TempDir::new("-ipam");
    // (subnet, gateway, last octets handed out before exhaustion)
    let cases: [(&str, &str, &[u8]); 6] = [
        ("10.0.0.0/30", "10.0.0.1", &[2]),
        ("10.0.0.0/30", "10.0.0.2", &[]), // network+1 is never handed out
        ("10.0.0.0/31", "10.0.0.1", &[]),
        ("10.0.0.7/32", "10.0.0.7", &[]),
        ("10.0.0.0/29", "10.0.0.5", &[2, 3, 4, 6]),
        ("10.0.0.9/29", "10.0.0.9", &[10, 11, 12, 13, 14]),
    ];
    for (n, (subnet, gw, want)) in cases.into_iter().enumerate() {
        let s = Store::open(tmp.path(), &format!("net{n}")).unwrap();
        let (subnet, gw) = (net(subnet), ip(gw));
        assert_eq!(s.free_count(subnet, gw).unwrap(), want.len(), "{subnet}");
        for &octet in want {
            let got = s.allocate(subnet, gw, 0, "c", "e").unwrap();
            assert_eq!(got, Ipv4Addr::new(10, 0, 0, octet), "{subnet} gw {gw}");
        }
        let range = Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap();
        let last = s.allocate(subnet, gw, 0, "c", "e");
        assert!(matches!(last, Err(IpamError::Exhausted { range: r }) if r == range.into()));
    }
}

#[test]
fn stale_or_garbage_last_reserved_is_ignored() {
    let (_tmp, s) = setup();
    for content in ["192.168.0.7", "garbage", "", "10.244.1.255", "10.244.1.1"] {
        put(&s, LAST_RESERVED, content);
        assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.2"), "{content:?}");
        s.release("a", "eth0").unwrap();
    }
    put(&s, LAST_RESERVED, "10.244.1.7\n");
    assert_eq!(take(&s, "a", "eth0"), ip("10.244.1.8"));
}

#[test]
fn find_and_release_by_container_and_ifname() {
    let (_tmp, s) = setup();
    for (cid, ifname) in [("c1", "eth0"), ("c1", "net1"), ("c2", "eth0")] {
        take(&s, cid, ifname);
    }
    assert_eq!(s.find("c1", "eth0").unwrap(), ips(&["10.244.1.2"]));
    assert_eq!(s.find("c1", "net1").unwrap(), ips(&["10.244.1.3"]));
    assert!(s.find("c3", "eth0").unwrap().is_empty());
    assert!(s.find("c1", "eth1").unwrap().is_empty());
    assert_eq!(s.release("c1", "eth0").unwrap(), ips(&["10.244.1.2"]));
    assert!(s.release("c1", "eth0").unwrap().is_empty(), "idempotent");
    assert_eq!(held(&s), ips(&["10.244.1.3", "10.244.1.4"]));
}

#[test]
fn legacy_container_id_only_files() {
    let (_tmp, s) = setup();
    put(&s, "10.244.1.9", "old\n");
    put(&s, "10.244.1.10", "old");
    put(&s, "10.244.1.11", "older");
    let legacy = ips(&["10.244.1.9", "10.244.1.10"]);
    assert_eq!(s.find("old", "eth0").unwrap(), legacy);
    // An exact (cid, ifname) match wins over legacy files.
    assert_eq!(take(&s, "old", "eth0"), ip("10.244.1.2"));
    assert_eq!(s.release("old", "eth0").unwrap(), ips(&["10.244.1.2"]));
    assert_eq!(s.release("old", "eth0").unwrap(), legacy);
    assert!(s.release("old", "eth0").unwrap().is_empty());
    let older = s.allocations().unwrap();
    assert_eq!(
        (older[0].container_id.as_str(), &older[0].ifname),
        ("older", &None)
    );
}

#[test]
fn release_ip_frees_only_that_address_of_that_container() {
    let (_tmp, s) = setup();
    let first = take(&s, "c", "eth0");
    let second = take(&s, "c", "eth0"); // e.g. a repeated ADD that failed
    put(&s, "10.244.1.9", "c"); // legacy
    assert!(!s.release_ip(first, "other").unwrap(), "not its holder");
    assert!(s.release_ip(second, "c").unwrap());
    assert!(!s.release_ip(second, "c").unwrap(), "already gone");
    assert!(s.release_ip(ip("10.244.1.9"), "c").unwrap());
    assert_eq!(held(&s), vec![first]);
}

#[test]
fn missing_store_directory_is_empty() {
    let (_tmp, s) = setup();
    fs::remove_dir_all(s.dir()).unwrap();
    assert!(s.release("a", "eth0").unwrap().is_empty());
    assert!(s.find("a", "eth0").unwrap().is_empty());
    assert!(s.gc(&HashSet::new()).unwrap().freed.is_empty());
    let free = s.free_count(net("10.244.1.0/24"), ip("10.244.1.1"));
    assert_eq!(free.unwrap(), 253);
    assert!(!s.dir().exists(), "nothing recreated it");
}

#[test]
fn allocations_ignore_other_entries() {
    let (_tmp, s) = setup();
    take(&s, "x", "eth0");
    for name in [
        "last_reserved_ip.1",
        "fd00:0::5",
        "FD00::5",
        "10.244.1.300",
        "010.244.1.3",
        "notes",
    ] {
        put(&s, name, "x\r\neth0");
    }
    fs::create_dir(s.dir().join("10.244.1.77")).unwrap();
    let all = s.allocations().unwrap();
    let got = all
        .iter()
        .map(|a| (a.ip, &*a.container_id, a.ifname.as_deref()));
    assert_eq!(
        got.collect::<Vec<_>>(),
        [(IpAddr::from(ip("10.244.1.2")), "x", Some("eth0"))]
    );
}

#[test]
fn gc_frees_what_is_not_valid() {
    let (_tmp, s) = setup();
    take(&s, "a", "eth0"); // .2 kept
    take(&s, "b", "eth0"); // .3 freed: only (b, eth1) is valid
    take(&s, "a", "net1"); // .4 freed
    put(&s, "10.244.1.50", "a"); // legacy of a valid container: kept
    put(&s, "10.244.1.51", "zombie"); // legacy, unknown: freed
    put(&s, "10.244.1.52", ""); // crashed half-way: freed
    let valid = [("a", "eth0"), ("b", "eth1")].map(|(c, i)| (c.to_owned(), i.to_owned()));
    let report = s.gc(&HashSet::from(valid.clone())).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let freed: Vec<IpAddr> = report.freed.iter().map(|a| a.ip).collect();
    let want = ["10.244.1.3", "10.244.1.4", "10.244.1.51", "10.244.1.52"];
    assert_eq!(freed, ips(&want));
    assert_eq!(report.freed[0].container_id, "b");
    assert_eq!(held(&s), ips(&["10.244.1.2", "10.244.1.50"]));
    assert!(s.gc(&HashSet::from(valid)).unwrap().freed.is_empty());
}

#[test]
fn free_count_counts_the_usable_range() {
    let (_tmp, s) = setup();
    let (subnet, gw) = (net("10.244.1.0/24"), ip("10.244.1.1"));
    assert_eq!(s.free_count(subnet, gw).unwrap(), 253);
    for cid in ["a", "b", "c"] {
        take(&s, cid, "eth0");
    }
    // Files outside the range (old subnet, broadcast, gateway) do not count.
    for name in ["10.244.2.5", "10.244.1.255", "10.244.1.1"] {
        put(&s, name, "old");
    }
    assert_eq!(s.free_count(subnet, gw).unwrap(), 250);
    assert_eq!(s.free_count(subnet, ip("10.244.1.9")).unwrap(), 249);
    let big = s.free_count(net("172.16.0.0/12"), ip("172.16.0.1"));
    assert_eq!(big.unwrap(), (1 << 20) - 3);
}

#[test]
fn concurrent_allocations_are_distinct() {
    let tmp = TempDir::new("-ipam");
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let (dir, barrier) = (tmp.path().to_path_buf(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let store = Store::open(&dir, "cbr0").unwrap();
                barrier.wait();
                (i, take(&store, &format!("cid{i}"), "eth0"))
            })
        })
        .collect();
    let got: Vec<(i32, IpAddr)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: HashSet<IpAddr> = got.iter().map(|&(_, a)| a).collect();
    let want: HashSet<IpAddr> = (2..66)
        .map(|i| Ipv4Addr::new(10, 244, 1, i).into())
        .collect();
    assert_eq!(distinct, want);
    let s = Store::open(tmp.path(), "cbr0").unwrap();
    for (i, addr) in got {
        assert_eq!(s.find(&format!("cid{i}"), "eth0").unwrap(), vec![addr]);
    }
}

#[test]
fn the_lock_is_an_flock_on_the_lock_file() {
    let (_tmp, s) = setup();
    let file = writer().create(true).open(s.dir().join(LOCK_FILE)).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || take(&s2, "a", "eth0"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!waiter.is_finished(), "allocate must wait for the lock");
    drop(held);
    assert_eq!(waiter.join().unwrap(), ip("10.244.1.2"));
}

#[test]
fn errors_name_the_operation_and_the_object() {
    let tmp = TempDir::new("-ipam");
    let file = tmp.join("file");
    fs::write(&file, "not a directory").unwrap();
    let err = Store::open(&file, "cbr0").unwrap_err().to_string();
    let want = format!("create directory {}/cbr0: Not a directory", file.display());
    assert_eq!(err, want);
    for bad in ["", ".", "..", "a/b", "../x"] {
        let err = Store::open(tmp.path(), bad).unwrap_err();
        assert!(matches!(err, IpamError::InvalidNetwork { .. }), "{bad:?}");
    }
    fs::remove_file(&file).unwrap();
}
