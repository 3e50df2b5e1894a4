//! Random names and MACs, straight from getrandom(2).
//!
//! A userspace generator seeded per process would cost more than it saves
//! here: the plugin needs a dozen random bytes per run, and seeding one
//! (with its CPU feature detection) costs tens of microseconds of every
//! call. Nothing here is a secret; it only has to differ between pods.
//! Callers retry on a name clash; this module checks no name against the
//! kernel.

use std::time::{SystemTime, UNIX_EPOCH};

/// `N` bytes from the kernel's generator, without waiting for it to be
/// seeded (GRND_NONBLOCK: an ADD early in boot must not stall on entropy).
/// Should the system call fail (not seeded yet, or a kernel without it),
/// the clock and the PID stand in: callers retry on a name clash anyway.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SAFETY: `buf` is valid for writes of N bytes for the whole call.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), N, libc::GRND_NONBLOCK) };
    if usize::try_from(got).ok() != Some(N) {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut x = nanos as u64 ^ (u64::from(std::process::id()) << 32);
        for b in &mut buf {
            // xorshift64: enough to spread the clock over every byte.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    buf
}

/// A random locally administered unicast MAC.
pub fn mac() -> [u8; 6] {
    let mut mac = bytes::<6>();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// `prefix` + 8 random hex digits (a link name: 15 characters at most
/// for prefixes of up to 7).
pub fn name(prefix: &str) -> String {
    format!("{prefix}{:08x}", u32::from_ne_bytes(bytes::<4>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_local_unicast() {
        for _ in 0..64 {
            let m = mac();
            assert_eq!(m[0] & 0x01, 0, "multicast bit set in {m:02x?}");
            assert_eq!(m[0] & 0x02, 0x02, "local bit clear in {m:02x?}");
        }
    }

    #[test]
    fn names_are_link_names_and_differ() {
        let a = name("veth");
        let b = name("veth");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b, "two draws of 32 random bits collided");
    }
}
