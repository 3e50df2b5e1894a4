//! Reading the lease directory: the threaded path gives exactly what one
//! thread gives (same leases, same order, the same skips), and reading
//! leaves the files' access times alone.

use std::time::{Duration, UNIX_EPOCH};

use super::format::{encode, lease_path};
use super::read::{threads_for, threads_for_cpus, LeaseDir, MAX_THREADS, MIN_CPUS, PARALLEL_FROM};
use crate::lease::contract_tests::TempDir;
use crate::lease::{Lease, LeaseAttrs};

/// Lease `10.<i / 256>.<i % 256>.0/24` of node 192.168.<i / 256>.<i % 256>.
fn lease(i: u32) -> Lease {
    let (hi, lo) = ((i / 256) as u8, (i % 256) as u8);
    Lease {
        subnet: format!("10.{hi}.{lo}.0/24").parse().expect("subnet"),
        ipv6_subnet: None,
        attrs: LeaseAttrs::vxlan(
            format!("192.168.{hi}.{lo}").parse().expect("ip"),
            1,
            &format!("0e:00:00:00:{hi:02x}:{lo:02x}"),
        ),
        // Fixed, whole milliseconds: every call gives the same lease.
        expiration: UNIX_EPOCH + Duration::from_secs(4_000_000_000),
    }
}

/// A directory of `n` leases, plus a malformed one, a directory named
/// like a lease and a temp file, none of which is a lease.
fn populated(t: &TempDir, n: u32) -> std::path::PathBuf {
    let dir = t.path().join("leases");
    std::fs::create_dir_all(&dir).expect("lease dir");
    for i in 0..n {
        let l = lease(i);
        let bytes = encode(&l).expect("encode");
        std::fs::write(lease_path(&dir, l.id()), bytes).expect("write lease");
    }
    std::fs::write(dir.join("10.250.0.0-24"), b"{not json").expect("malformed");
    std::fs::create_dir(dir.join("10.250.1.0-24")).expect("dir named like a lease");
    std::fs::write(dir.join(".10.250.2.0-24.1.tmp"), b"{}").expect("temp file");
    dir
}

fn sorted(mut v: Vec<Lease>) -> Vec<Lease> {
    v.sort_by_key(|l| l.subnet);
    v
}

#[test]
fn threaded_reads_give_what_one_thread_gives_in_listing_order() {
    let t = TempDir::new("leases-threaded");
    let dir = populated(&t, 300);
    let mut d = LeaseDir::open(&dir).expect("open");
    let names = d.list().expect("list");
    let single = d.read_threaded(&names, 1).expect("one thread");
    assert_eq!(
        single.len(),
        300,
        "the malformed file and the directory are skipped"
    );
    // Uneven shares (300 in 7 is 43 each, the last one 42) and more
    // threads than the cap allows, all in listing order.
    for threads in [2, 3, MAX_THREADS, 7] {
        let threaded = d.read_threaded(&names, threads).expect("threaded");
        assert_eq!(threaded, single, "{threads} threads");
    }
    let want: Vec<Lease> = (0..300).map(lease).collect();
    assert_eq!(sorted(single), want);
    // A share of nothing: no names, no leases.
    assert_eq!(d.read_threaded(&[], 4).expect("empty"), vec![]);
}

#[test]
fn threads_only_for_many_leases_and_enough_cpus() {
    assert_eq!(threads_for_cpus(PARALLEL_FROM - 1, 8), 1);
    assert_eq!(threads_for_cpus(PARALLEL_FROM, MIN_CPUS - 1), 1);
    assert_eq!(
        threads_for_cpus(PARALLEL_FROM, MIN_CPUS),
        MIN_CPUS.min(MAX_THREADS)
    );
    assert_eq!(threads_for_cpus(PARALLEL_FROM, 64), MAX_THREADS);
}

#[test]
fn read_all_of_many_leases_reads_every_one() {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let n = PARALLEL_FROM as u32 + 5;
    assert_eq!(threads_for(n as usize), threads_for_cpus(n as usize, cpus));
    let t = TempDir::new("leases-many");
    let dir = populated(&t, n);
    let all = LeaseDir::open(&dir)
        .expect("open")
        .read_all()
        .expect("read all");
    assert_eq!(sorted(all), (0..n).map(lease).collect::<Vec<_>>());
}

#[test]
fn reading_leaves_the_access_time_alone() {
    use std::os::unix::fs::MetadataExt;
    let t = TempDir::new("leases-noatime");
    let dir = populated(&t, 1);
    let path = lease_path(&dir, lease(0).id());
    // An access time older than the modification: `relatime` would
    // update it on the next read.
    let old = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let times = std::fs::FileTimes::new()
        .set_accessed(old)
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_500_000_000));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_times(times))
        .expect("set times");
    let leases = LeaseDir::open(&dir)
        .expect("open")
        .read_all()
        .expect("read");
    assert_eq!(leases, vec![lease(0)]);
    let after = std::fs::metadata(&path).expect("stat");
    assert_eq!(
        after.atime(),
        1_000_000_000,
        "atime moved: O_NOATIME not used"
    );
}
