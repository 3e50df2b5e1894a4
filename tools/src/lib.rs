//! flannel-tools: the programs built on flannel-cluster, as a library their
//! binaries (`src/bin/`) share. [`netns_cluster`] is the `netns-cluster`
//! tool's work (a cluster persisted across processes); [`bench`] holds the
//! benchmarks' shared parts.
//!
//! It drives flannel-rs only through its binaries and files (as
//! flannel-cluster does), never through the product's internals, and it
//! does not depend on the test crate.

pub mod bench;
pub mod netns_cluster;
