//! End to end on the etcd lease store (a real etcd in the underlay
//! namespace): the full matrix with exactly the peers' entries, and a node
//! whose lease key is deleted vanishes from every peer.

use flannel_cluster::cluster::{Cluster, StoreKind};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(10);
const REACH: Duration = Duration::from_secs(10);

#[test]
fn etcd_store_matrix_exact_entries_and_a_released_lease() {
    let mut c = Cluster::builder().nodes(3).store(StoreKind::Etcd).build();
    c.wait_all_converged(CONVERGE);
    assert_eq!(c.leases().len(), 3, "{:#?}", c.leases());
    for l in c.leases() {
        let key = l.path.to_string_lossy().into_owned();
        assert_eq!(
            key,
            format!("/coreos.com/network/subnets/{}", l.subnet.replace('/', "-"))
        );
    }
    let pods = c.add_pods(2);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    c.tcp_matrix(&refs, REACH).assert_all_ok();
    for i in 0..3 {
        assert_eq!(c.expected_peers(i).len(), 2);
    }

    let gone = c.lease_of_ok(2);
    c.stop(2);
    c.remove_lease(2);
    flannel_cluster::eventually(CONVERGE, "the released node's entries to go", || {
        for i in 0..2 {
            c.no_trace_of(i, &gone)?;
            c.check_entries(i, &c.expected_peers(i))?;
        }
        Ok(())
    });
    c.ping_matrix(&refs[..4], REACH).assert_all_ok();
}
