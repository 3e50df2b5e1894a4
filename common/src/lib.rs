//! Code shared by `flanneld` and the `flannel` CNI plugin: the `subnet.env`
//! contract between them, safe entry into network namespaces, atomic file
//! writes and locks, MAC addresses as text, and running `nft`.

pub mod files;
pub mod mac;
pub mod netns;
pub mod nft;
pub mod subnet_env;

pub use subnet_env::{SubnetEnv, SubnetEnvError};
