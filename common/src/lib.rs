//! Code shared by `flanneld` and the `flannel` CNI plugin: the `subnet.env`
//! contract between them, safe entry into network namespaces, atomic file
//! writes and locks, MAC addresses as text, and running `nft`.
//!
//! Each of these is written here once and nowhere else. This crate depends
//! on neither binary, knows nothing of leases or the CNI, has no `tracing`
//! and never writes to stdout: errors go back to the caller, who names them
//! in its own log or result. (Its one write of its own is `netns`'s line to
//! stderr just before it aborts the process.)

pub mod files;
pub mod mac;
pub mod netns;
pub mod nft;
pub mod subnet_env;

pub use subnet_env::{SubnetEnv, SubnetEnvError};
