//! MAC addresses as text, the way flannel and iproute2 write them
//! (`0e:00:00:ab:00:44`), and back. Pure functions: no kernel, no files.
//! Deriving a VtepMAC is flanneld's (`flanneld/src/mac.rs`); random MACs
//! are the plugin's (`cni-plugin/src/random.rs`).

/// Lower-case, colon-separated two-digit octets.
pub fn format(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&std::format!("{b:02x}"));
    }
    out
}

/// `c6:d2:32:6f:8f:44` (either case). Each octet is exactly two hex
/// digits: `u8::from_str_radix` alone would also take `+6` and `6`.
pub fn parse(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_flannel_and_parses_back() {
        let mac = [0x0e, 0, 0, 0xab, 0, 0x44];
        assert_eq!(format(&mac), "0e:00:00:ab:00:44");
        assert_eq!(parse("0E:00:00:AB:00:44"), Some(mac));
        assert_eq!(format(&[]), "");
    }

    #[test]
    fn parse_takes_six_two_digit_octets_only() {
        for bad in [
            "",
            "0e:00:00:ab:00",
            "0e:00:00:ab:00:44:55",
            "+e:00:00:ab:00:44",
            "e:00:00:ab:00:44",
            "0e-00-00-ab-00-44",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
