//! DEL: detach the pod's interface, free its address, drop its masquerade
//! element, remove upstream's per-pod file. Idempotent: whatever is already
//! gone is skipped.
//!
//! Unregistering a veth makes the kernel wait for an RCU grace period
//! (~20 ms here), which would dominate DEL. So DEL renames the pod's
//! interface to a tombstone name and takes it down — after that the name
//! `CNI_IFNAME` is free and the link carries no traffic — and a forked
//! child, holding the namespace open, deletes the tombstone (see
//! `reap.rs`). If the child cannot be forked, DEL deletes the link itself.
//!
//! Leaves alone any interface ADD did not make (the pod's `lo`, a device of
//! its own): only a veth whose other end is a port of our bridge is taken.

use std::net::IpAddr;

use common::netns::Netns;
use common::SubnetEnv;

use super::{ip_masq, ipam_error, open_netns, open_store, reap};

use crate::env::CniEnv;
use crate::error::{Code, Result};
use crate::netlink::{is_veth, Link, Netlink};
use crate::spec::NetConf;
use crate::{masq, random, scratch};

/// Prefix of the name a detached interface carries until it is deleted.
const TOMBSTONE: &str = "cnidel";

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let (cid, ifname) = (&env.container_id, &env.ifname);
    let senv = SubnetEnv::read(&conf.subnet_file).ok();
    // Unknown (no subnet.env, no delegate.ipMasq): clean up anyway.
    let masq_on = ip_masq(conf, senv.as_ref()) != Some(false);
    // Opened before the link deleter is forked, which then holds it (see
    // masq::Early).
    let early = match (masq_on, &env.netns) {
        (true, Some(_)) => masq::Early::open(),
        _ => None,
    };
    // Detaching reads the interface's addresses, so the IPAM files can be
    // checked by name instead of scanning the whole store.
    let mut on_iface = Vec::new();
    if let Some(path) = env.netns.as_deref() {
        match open_netns(path) {
            Ok(ns) => on_iface = detach(&ns, ifname, &conf.delegate.bridge)?,
            Err(e) if e.code == Code::UnknownContainer => {}
            Err(e) => return Err(e),
        }
    }
    let store = open_store(conf)?;
    let mut ips = Vec::new();
    for ip in on_iface {
        if store.holds(ip, cid, ifname).map_err(ipam_error)? {
            ips.push(ip);
        }
    }
    // One address per family of subnet.env: fewer on the interface (one
    // removed by hand, or subnet.env unknown) and the store is scanned.
    let families = senv.as_ref().map(|s| s.families().len());
    let scan = ips.is_empty() || families.is_none_or(|n| ips.len() < n);
    if scan {
        // The namespace or the interface is gone: look the pod up.
        ips = store.find(cid, ifname).map_err(ipam_error)?;
    }
    if !ips.is_empty() && masq_on {
        masq::remove_with(&conf.name, &ips, early, reap::forked_a_deleter())?;
    }
    if scan {
        store.release(cid, ifname).map_err(ipam_error)?;
    } else {
        for ip in ips {
            store.release_ip(ip, cid).map_err(ipam_error)?;
        }
    }
    scratch::remove(conf, cid);
    Ok(())
}

/// Renames the pod's interface out of the way and takes it down; returns
/// the addresses it had (both families). A missing interface is fine, and so is one
/// that ADD did not make (the pod's `lo`, a device of its own): that is
/// left as it is.
fn detach(ns: &Netns, ifname: &str, bridge: &str) -> Result<Vec<IpAddr>> {
    let pod = Netlink::open_in(ns)?;
    let link = pod.link_by_name(ifname)?;
    let Some(link) = link else {
        // Maybe an earlier DEL was killed after renaming it: finish that.
        remove_tombstones(ns, &pod, bridge)?;
        return Ok(Vec::new());
    };
    if !made_by_add(&link, bridge)? {
        tracing::info!("DEL leaves {ifname} in {ns} alone: not a veth of ours on {bridge}");
        return Ok(Vec::new());
    }
    let addresses = pod.addresses(link.index)?;
    let tomb = random::name(TOMBSTONE);
    pod.rename_down(link.index, ifname, &tomb)?;
    delete_soon(ns, &pod, link.index, &tomb)?;
    // IPv6 link-local addresses are the kernel's, never the store's.
    Ok(addresses
        .into_iter()
        .map(|net| net.ip())
        .filter(|ip| !matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local()))
        .collect())
}

/// Deletes a detached link off the critical path (see `reap.rs`), or
/// inline when no child can be forked.
fn delete_soon(ns: &Netns, pod: &Netlink, index: u32, name: &str) -> Result<()> {
    if let Err(e) = reap::fork_deleter(ns.file(), index) {
        tracing::debug!("cannot fork the link deleter ({e}); deleting {name} inline");
        pod.delete_link(index, name)?;
    }
    Ok(())
}

/// Deletes the tombstones a DEL killed between its rename and its delete
/// left in the pod: links named `cnidel…` that are veths of ours.
fn remove_tombstones(ns: &Netns, pod: &Netlink, bridge: &str) -> Result<()> {
    for link in pod.links()? {
        if link.name.starts_with(TOMBSTONE) && made_by_add(&link, bridge)? {
            tracing::info!("removing {} in {ns}, left by an interrupted DEL", link.name);
            delete_soon(ns, pod, link.index, &link.name)?;
        }
    }
    Ok(())
}

/// Whether the pod's `link` is what ADD makes: a veth whose other end lives
/// in this (the node's) namespace, is a port of `bridge`, and points back
/// at `link`.
fn made_by_add(link: &Link, bridge: &str) -> Result<bool> {
    let (true, Some(peer), Some(_)) = (is_veth(link), link.peer, link.peer_netnsid) else {
        return Ok(false);
    };
    let host = Netlink::open()?;
    let Some(host_end) = host.link_by_index(peer)? else {
        return Ok(false);
    };
    if !is_veth(&host_end) || host_end.peer != Some(link.index) {
        return Ok(false);
    }
    let Some(controller) = host_end.controller else {
        return Ok(false);
    };
    Ok(host
        .link_by_name(bridge)?
        .is_some_and(|b| b.index == controller))
}
