//! Code shared by `flanneld` and the `flannel` CNI plugin: the `subnet.env`
//! contract between them, and safe entry into network namespaces.

pub mod netns;
pub mod subnet_env;

pub use subnet_env::{SubnetEnv, SubnetEnvError};
