//! Fuzz target `lease-file`: the embedded store's lease files
//! (`format::decode`, `format::encode`): flannel's lease value plus an
//! RFC 3339 UTC `Expiration`, checked against an independent reading of
//! the date. Corpus: `fuzz/corpus/lease-file/`.
//!
//! Owns the fuzz target only; no I/O.

use std::time::{Duration, UNIX_EPOCH};

use flannel_tests::fuzz::{self, json, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;
use ipnetwork::Ipv4Network;

fn subnet() -> Ipv4Network {
    "10.244.1.0/24".parse().expect("cidr")
}

/// `t` cut to whole milliseconds, as `encode` writes it.
fn millis(t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
    UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64)
}

/// An error, or a lease that is written back as a file reading the same
/// (to the millisecond). No float in BackendData here: the seeds have none.
fn check_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(lease) = decode((subnet(), None), bytes) {
        prop_assert!(lease.expiration >= UNIX_EPOCH);
        let again = decode(
            (subnet(), None),
            &encode(&lease).map_err(|e| TestCaseError::fail(e.to_string()))?,
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.attrs.public_ip, lease.attrs.public_ip);
        prop_assert_eq!(again.attrs.backend_type, lease.attrs.backend_type);
        prop_assert_eq!(again.expiration, millis(lease.expiration));
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        check_file(&bytes)?;
    }
}

fuzz_test! {
    fn mutated_corpus(bytes in json::mutated_any(&fuzz::seeds("lease-file"))) {
        check_file(&bytes)?;
    }
}

fuzz_test! {
    fn encode_then_decode_is_the_same((ip, ms, vni) in (any::<u32>(), 0u64..=253_402_300_799_999, any::<u32>())) {
        let lease = Lease {
            subnet: subnet(),
            ipv6_subnet: None,
            attrs: LeaseAttrs::vxlan(ip.into(), vni, "c6:d2:32:6f:8f:44"),
            expiration: UNIX_EPOCH + Duration::from_millis(ms),
        };
        let back = decode((subnet(), None), &encode(&lease).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert_eq!(back, Ok(lease));
    }
}

/// Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fuzz_test! {
    /// Expiration is read as the instant it names, in UTC (`Z` or
    /// `+00:00`); any other zone, or a date that does not exist, is an
    /// error. A leap second (:60) counts as :59.
    fn expirations_are_read_as_written(((y, mo, d), (h, mi, s), frac, zone) in (
        (1960i64..=9999, 0i64..=13, 0i64..=32),
        (0i64..=24, 0i64..=60, 0i64..=61),
        proptest::option::of("[0-9]{1,12}"),
        prop::sample::select(vec!["Z", "+00:00", "+01:00", "-00:00", "z", ""]),
    )) {
        let frac_text = frac.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
        let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac_text}{zone}");
        let file = format!(r#"{{"PublicIP":"10.0.0.1","BackendType":"vxlan","Expiration":"{text}"}}"#);
        let valid = y >= 1970 && (1..=12).contains(&mo) && (1..=days_in_month(y, mo)).contains(&d)
            && h <= 23 && mi <= 59 && s <= 60 && matches!(zone, "Z" | "+00:00");
        let got = decode((subnet(), None), file.as_bytes()).map(|l| l.expiration);
        if valid {
            let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59);
            let digits = format!("{:0<9}", frac.unwrap_or_default());
            let nanos: u32 = digits[..9].parse().expect("nine digits");
            let want = UNIX_EPOCH + Duration::new(secs as u64, nanos);
            prop_assert_eq!(got, Ok(want), "{}", text);
        } else {
            prop_assert!(got.is_err(), "accepted {}", text);
        }
    }
}

fuzz_test! {
    fn nasty_expirations(text in nasty_string()) {
        let file = serde_json::json!({"PublicIP": "10.0.0.1", "BackendType": "vxlan", "Expiration": text});
        check_file(file.to_string().as_bytes())?;
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay("lease-file", |name, bytes| {
        check_file(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        decode((subnet(), None), bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}
