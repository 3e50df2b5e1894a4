//! flannel-tests: the end-to-end suites' test-only helpers. The cluster,
//! namespaces, temp dirs, CNI calls and the kube API stand-in the suites run
//! on are flannel-cluster's; this crate holds only what no tool needs, and
//! like flannel-cluster never configures the host's own network namespace:
//!
//! - [`fuzz`]: the fuzz targets' runner, the regression corpus under
//!   `fuzz/corpus/`, and generators of nasty JSON and text.
//! - [`deploy`]: `deploy/kube-flannel-rs.yml` read as the tests need it.
//! - [`containerd`]: a private containerd for running the image under a
//!   real runtime.

pub mod containerd;
pub mod deploy;
pub mod fuzz;
