//! Code shared by `flanneld` and the `flannel` CNI plugin: the `subnet.env`
//! contract between them, safe entry into network namespaces, and atomic
//! file writes and locks.

pub mod files;
pub mod netns;
pub mod subnet_env;

pub use subnet_env::{SubnetEnv, SubnetEnvError};
