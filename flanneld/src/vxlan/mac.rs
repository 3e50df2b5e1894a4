//! MAC addresses in messages, as flannel writes them ("0e:00:00:00:00:44").
//! (Deriving and parsing the VtepMAC is `crate::mac`'s job.)

/// Lower-case, colon-separated: `0e:00:00:00:00:44`.
pub(crate) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_flannel() {
        assert_eq!(
            super::format_mac(&[0x0e, 0, 0, 0xab, 0, 0x44]),
            "0e:00:00:ab:00:44"
        );
    }
}
