//! What each node's `flannel.1` and `flannel-v6.1` should hold (one
//! entry set per peer lease of that family), what they do hold, and
//! waiting until the two agree.
//!
//! It compares and waits; it never writes an entry (that is flanneld's job,
//! or a test fixture's in `kernel.rs`).

use super::family::IpFamily;
use super::{Cluster, ExpectedPeer, KernelState};
use std::time::Duration;

impl Cluster {
    /// What node `i`'s flannel.1 should hold: one entry set per unexpired
    /// vxlan lease of another node that has an IPv4 subnet.
    pub fn expected_peers(&self, i: usize) -> Vec<ExpectedPeer> {
        self.expected_peers_of(i, IpFamily::V4)
    }

    /// What node `i`'s device of single family `f` (flannel.1 or
    /// flannel-v6.1) should hold: one entry set per unexpired vxlan lease
    /// of another node that has a subnet of `f`. Nothing when node `i`
    /// runs no `f` (the cluster's family leaves it out and its subnet.env
    /// names no subnet of it, e.g. a hand-written IPv4-only net-conf.json
    /// among dual-stack peers): the device must then hold no peer.
    pub fn expected_peers_of(&self, i: usize, f: IpFamily) -> Vec<ExpectedPeer> {
        if !self.runs(i, f) {
            return Vec::new();
        }
        let n = &self.nodes[i];
        let mut v: Vec<ExpectedPeer> = self
            .leases()
            .iter()
            .filter(|l| !l.is_of(n.ip, n.ip6) && !l.is_expired() && l.backend_type == "vxlan")
            .filter_map(|l| ExpectedPeer::of_family(l, f))
            .collect();
        v.sort_by(|a, b| a.subnet.cmp(&b.subnet));
        v
    }

    /// Does node `i` run single family `f`: the cluster's family has it, or
    /// its subnet.env names a subnet of it (a net-conf.json given by hand)?
    fn runs(&self, i: usize, f: IpFamily) -> bool {
        if self.opts.family.singles().contains(&f) {
            return true;
        }
        let key = match f {
            IpFamily::V6 => "FLANNEL_IPV6_SUBNET",
            _ => "FLANNEL_SUBNET",
        };
        self.nodes[i]
            .subnet_env()
            .is_some_and(|env| env.contains_key(key))
    }

    /// Node `i`'s kernel state on flannel.1.
    pub fn kernel(&self, i: usize) -> KernelState {
        KernelState::read(&self.nodes[i].ns)
    }

    /// Node `i`'s kernel state on the device of single family `f`.
    pub fn kernel_of(&self, i: usize, f: IpFamily) -> KernelState {
        KernelState::read_family(&self.nodes[i].ns, f)
    }

    /// `Ok` when node `i`'s routes, neighbours and FDB entries on flannel.1 are
    /// exactly those of `expected`.
    pub fn check_entries(&self, i: usize, expected: &[ExpectedPeer]) -> Result<(), String> {
        self.check_entries_of(i, IpFamily::V4, expected)
    }

    /// As [`check_entries`](Self::check_entries), on the device of single
    /// family `f`.
    pub fn check_entries_of(
        &self,
        i: usize,
        f: IpFamily,
        expected: &[ExpectedPeer],
    ) -> Result<(), String> {
        self.kernel_of(i, f)
            .check_exactly(expected)
            .map_err(|e| format!("{}: {e}", self.nodes[i].name))
    }

    /// `Ok` when node `i`'s flannel.1 and flannel-v6.1 each hold exactly
    /// what the leases call for (a family the cluster does not run: no
    /// peer entries at all).
    pub fn check_all_entries(&self, i: usize) -> Result<(), String> {
        for f in [IpFamily::V4, IpFamily::V6] {
            self.check_entries_of(i, f, &self.expected_peers_of(i, f))?;
        }
        Ok(())
    }

    /// Waits until every node in `which` has exactly the entries its current
    /// peers' leases call for, in both families.
    pub fn wait_converged(&self, which: &[usize], timeout: Duration) {
        crate::wait::eventually(timeout, "peer entries to match the leases", || {
            for &i in which {
                self.check_all_entries(i)?;
            }
            Ok(())
        });
    }

    /// Waits until every running node has exactly its peers' entries.
    pub fn wait_all_converged(&self, timeout: Duration) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        self.wait_converged(&running, timeout);
    }
}
