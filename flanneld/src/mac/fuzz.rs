//! Fuzz target `mac`: `mac::parse` of a lease's VtepMAC, written by any
//! node of the cluster. Accepted: six colon-separated pairs of hex digits,
//! as flannel writes them (either case); nothing else. Corpus:
//! `fuzz/corpus/mac/`.

use flannel_tests::fuzz::{self, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;

fn check_text(text: &str) -> Result<(), TestCaseError> {
    if let Some(mac) = parse(text) {
        prop_assert_eq!(
            format(&mac),
            text.to_ascii_lowercase(),
            "not a canonical MAC"
        );
    }
    Ok(())
}

fuzz_test! {
    fn arbitrary_text(text in any::<String>()) {
        check_text(&text)?;
    }
}

fuzz_test! {
    /// Six parts of nasty or near-valid octets, joined by colons or not.
    fn near_misses((parts, sep) in (
        prop::collection::vec(prop_oneof![
            3 => "[0-9a-fA-F]{2}",
            1 => "[+-]?[0-9a-fA-F]{0,3}",
            1 => nasty_string(),
        ], 0..8),
        prop_oneof![4 => Just(":"), 1 => Just("-"), 1 => Just(""), 1 => Just(": ")],
    )) {
        check_text(&parts.join(sep))?;
    }
}

fuzz_test! {
    fn round_trip(mac in any::<[u8; 6]>(), upper in any::<bool>()) {
        let text = if upper { format(&mac).to_uppercase() } else { format(&mac) };
        prop_assert_eq!(parse(&text), Some(mac));
    }
}

fuzz_test! {
    /// Every derived VTEP MAC is a locally administered unicast address
    /// that reads back as itself.
    fn vtep_macs(ip in any::<u32>(), vni in any::<u32>()) {
        let mac = vtep_mac(ip.into(), vni);
        prop_assert_eq!(mac[0] & 0x03, 0x02);
        prop_assert_eq!(parse(&format(&mac)), Some(mac));
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay("mac", |name, bytes| {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        check_text(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        parse(text).map(drop).ok_or_else(|| "not a MAC".to_string())
    });
}
