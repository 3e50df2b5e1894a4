//! One line for an error and its chain of sources, as `main` prints it
//! and as the log lines quote it.
//!
//! A leaf: it depends on nothing in the crate, so every layer (the lease
//! stores included) can use it without reaching up to `error`, the
//! top-level error module.

use std::error::Error;

/// `e` and every `source()` below it, joined by ": " (one line). A
/// source whose text the line already holds is not repeated: some errors
/// (`common::nft::NftError`'s, `LeaseError::Io`, the lease stores') print
/// their source themselves.
pub fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.contains(&part) {
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
