//! The benchmarks' shared parts. `cni-bench`: one plugin invocation
//! ([`exec`]), one side of the comparison ([`side`]), masquerade's cost
//! ([`masq_cost`]) and the printed table ([`report`]). `scale-bench` and
//! `kube-scale`: the flanneld they measure ([`scale_flanneld`]), the fake
//! peers and the kernel anchor ([`scale_kernel`]) and
//! their leases in each store ([`scale_store`]).
//!
//! Benchmarks print figures next to a reference measured in the same run;
//! nothing here asserts a timing. Everything runs in namespaces the
//! benchmark makes and removes, never in the host's own.

pub mod exec;
pub mod masq_cost;
pub mod report;
pub mod scale_flanneld;
pub mod scale_kernel;
pub mod scale_store;
pub mod side;
