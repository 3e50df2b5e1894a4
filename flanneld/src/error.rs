//! flanneld's top-level error ([`DaemonError`]), whose variants wrap each
//! module's own error, and [`chain`], which prints an error and its
//! sources on one line ("a: b: c") as `main` does.

use std::error::Error;

/// `e` and every `source()` below it, joined by ": " (one line). A
/// source whose text the line already ends with is not repeated: some
/// errors (`common::nft::NftError`'s, `LeaseError::Io`) print their
/// source themselves.
pub fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.ends_with(&format!(": {part}")) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {what}")]
    struct Outer {
        what: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn chain_joins_each_source_once() {
        let e = Outer {
            what: "x",
            source: std::io::Error::other("inner"),
        };
        assert_eq!(chain(&e), "outer x: inner");
    }

    #[test]
    fn chain_skips_a_source_already_printed() {
        let e = common::nft::NftError::Spawn(std::io::Error::other("denied"));
        assert_eq!(chain(&e), "run nft: denied");
    }
}
