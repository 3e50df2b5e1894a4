//! Watch breaks: dropped watches (resumed where they were), a forced 410
//! (a relist), and the API down for 20 s while nodes leave and join. Each
//! ends with every node's entries exactly right, and the entries nothing
//! changed for untouched; with nothing changed, not one netlink write.

use crate::*;
use flannel_cluster::cluster::entry_monitor::EntryMonitor;
use flannel_cluster::cluster::netlink_writes::NetlinkWrites;
use flannel_cluster::cluster::traffic::Pinger;
use flannel_cluster::cluster::VXLAN_DEV;
use flannel_cluster::eventually;
use flannel_cluster::kube_api::DownMode;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn dropped_watches_resume_where_they_were_and_miss_no_deletion() {
    let mut c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    wait_watches(&c, 3);
    let mons: Vec<(usize, EntryMonitor)> = (0..2)
        .map(|i| (i, EntryMonitor::start(&c.node(i).ns, VXLAN_DEV)))
        .collect();
    let gone = c.lease_of_ok(2);
    c.stop_checked(2, false);
    c.kube().clear_requests();
    c.kube().drop_watches();
    // Deleted while the watches are cut (flanneld waits ≥ 200 ms to resume).
    c.remove_lease(2);
    wait_gone_everywhere(&c, &gone, CONVERGE);
    wait_watches(&c, 2);
    let reqs = c.kube().requests();
    assert!(
        !reqs.iter().any(is_list),
        "resumed, not relisted: {reqs:#?}"
    );
    assert!(
        reqs.iter().filter_map(watch_from).count() >= 2,
        "each resumed from its version: {reqs:#?}"
    );
    assert_untouched(&c, &mons, &[&gone]);
    for (i, m) in &mons {
        assert!(
            m.events()
                .iter()
                .any(|e| !e.added && e.entry.concerns(&gone)),
            "{}: the deletion was not applied through netlink",
            c.node(*i).name
        );
    }
}

#[test]
fn a_forced_410_relists_leaving_unchanged_entries_untouched_and_applying_changes() {
    let mut c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    wait_watches(&c, 3);

    // 1. Nothing flannel reads changed: updates and a relist that find
    // what the nodes have write nothing.
    let before: Vec<_> = (0..3).map(|i| c.kernel(i)).collect();
    let mons: Vec<(usize, EntryMonitor)> = (0..3)
        .map(|i| (i, EntryMonitor::start(&c.node(i).ns, VXLAN_DEV)))
        .collect();
    let traces: Vec<NetlinkWrites> = (0..3).map(|i| c.trace_netlink_writes(i)).collect();
    // Heartbeat-like updates (MODIFIED Nodes whose flannel fields are
    // unchanged) come through the open watches first.
    for i in 0..3 {
        let beat = json!({"metadata": {"labels": {"example.com/heartbeat": "1"}}});
        c.kube().patch_node(&c.node(i).name, &beat);
    }
    c.kube().clear_requests();
    c.kube().expire_resource_versions();
    let floor = c.kube().status()["resourceVersion"].as_u64().expect("rv");
    c.kube().drop_watches();
    eventually(CONVERGE, "every node to relist and watch anew", || {
        let reqs = c.kube().requests();
        let expired = reqs
            .iter()
            .filter(|r| watch_from(r).is_some_and(|rv| rv < floor))
            .count();
        let lists = reqs.iter().filter(|r| is_list(r)).count();
        let fresh = reqs
            .iter()
            .filter(|r| watch_from(r).is_some_and(|rv| rv >= floor))
            .count();
        let open = c.kube().open_watches();
        if expired >= 3 && lists >= 3 && fresh >= 3 && open == 3 {
            Ok(())
        } else {
            Err(format!(
                "{expired} expired watches, {lists} lists, {fresh} new watches, {open} open"
            ))
        }
    });
    // A measurement window (the relist's diff, then a periodic resync),
    // not an assertion.
    std::thread::sleep(c.resync_interval() + Duration::from_millis(500));
    for (i, t) in traces.into_iter().enumerate() {
        assert!(
            t.requests() > 0,
            "{}: the trace saw nothing at all",
            c.node(i).name
        );
        let writes = t.finish();
        assert!(
            writes.is_empty(),
            "{}: netlink writes during the updates and the relist: {writes:#?}",
            c.node(i).name
        );
    }
    for (i, m) in &mons {
        let seen: Vec<String> = m.events().iter().map(ToString::to_string).collect();
        assert!(
            seen.is_empty(),
            "{}: the relist changed {seen:?}",
            c.node(*i).name
        );
        let now = c.kernel(*i);
        let was = &before[*i];
        assert_eq!(
            (&now.routes, &now.neighs, &now.fdb),
            (&was.routes, &was.neighs, &was.fdb)
        );
        assert_eq!(
            now.link.map(|l| l.ifindex),
            was.link.as_ref().map(|l| l.ifindex)
        );
    }
    drop(mons);

    // 2. A Node deleted while the watches were broken, its deletion
    // compacted away: the relist removes exactly its entries.
    let mons: Vec<(usize, EntryMonitor)> = (0..2)
        .map(|i| (i, EntryMonitor::start(&c.node(i).ns, VXLAN_DEV)))
        .collect();
    let gone = c.lease_of_ok(2);
    c.stop_checked(2, false);
    c.kube().set_down(Some(DownMode::CloseConnections));
    c.remove_lease(2);
    c.kube().expire_resource_versions();
    let floor = c.kube().status()["resourceVersion"].as_u64().expect("rv");
    c.kube().clear_requests();
    c.kube().set_down(None);
    wait_gone_everywhere(&c, &gone, CONVERGE);
    wait_watches(&c, 2);
    let reqs = c.kube().requests();
    assert!(
        reqs.iter().filter(|r| is_list(r)).count() >= 2
            && reqs
                .iter()
                .any(|r| watch_from(r).is_some_and(|rv| rv < floor)),
        "relisted after 410: {reqs:#?}"
    );
    assert_untouched(&c, &mons, &[&gone]);
}

#[test]
fn the_api_down_for_20s_while_a_node_leaves_and_one_joins_ends_right() {
    let outage = Duration::from_secs(20);
    let mut c = kube_cluster(3);
    c.wait_all_converged(CONVERGE);
    let pods = c.add_pods(1);
    let refs: Vec<_> = pods.iter().collect();
    c.ping_matrix(&refs, REACH).assert_all_ok();
    let pinger = Pinger::start(&pods[0], pods[1].ip, Duration::from_millis(100));
    c.wait_ping(&pods[0], pods[1].ip, REACH);
    let mons: Vec<(usize, EntryMonitor)> = (0..2)
        .map(|i| (i, EntryMonitor::start(&c.node(i).ns, VXLAN_DEV)))
        .collect();
    let gone = c.lease_of_ok(2);

    c.kube().set_down(Some(DownMode::CloseConnections));
    let down = Instant::now();
    // Node 2 leaves, node 3 joins, both through the admin listener (the
    // control plane still works; the nodes cannot reach it).
    c.stop_checked(2, false);
    c.remove_lease(2);
    let new = c.add_node();
    c.start(new);
    std::thread::sleep(outage.saturating_sub(down.elapsed()));
    // Nobody could have known.
    assert!(c.node(new).subnet_env().is_none(), "{}", c.log(new));
    assert!(c.node(new).is_running(), "{}", c.log(new));
    for i in 0..2 {
        assert!(c.kernel(i).routes.iter().any(|r| r.dst == gone.subnet));
    }
    c.kube().set_down(None);
    let up = Instant::now();

    // Each flanneld retries on its back-off (at most 10 s apart).
    let catch_up = Duration::from_secs(30);
    eventually(catch_up, "node 3's subnet.env", || {
        c.node(new)
            .subnet_env()
            .filter(|e| e.contains_key("FLANNEL_SUBNET"))
            .ok_or_else(|| c.log(new))
    });
    wait_gone_everywhere(&c, &gone, catch_up);
    eprintln!("caught up {:?} after the API came back", up.elapsed());
    let joined = c.lease_of_ok(new);
    let p = c.add_pod(new);
    let all = [&pods[0], &pods[1], &p];
    c.ping_matrix(&all, REACH).assert_all_ok();
    let s = pinger.finish();
    assert!(
        s.lost_time() <= Duration::from_millis(500),
        "node 0 → node 1 lost {:?} during the outage:\n{}",
        s.lost_time(),
        s.output
    );
    assert_untouched(&c, &mons, &[&gone, &joined]);
    for i in [0, 1, new] {
        let log = c.log(i);
        assert!(
            log.contains("retrying with back-off") && log.contains("answers again"),
            "{}: {log}",
            c.node(i).name
        );
    }
}
