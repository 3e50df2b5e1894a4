//! DEL: detach the pod's interface, free its address, drop its masquerade
//! element. Idempotent: whatever is already gone is skipped.
//!
//! Unregistering a veth makes the kernel wait for an RCU grace period
//! (~20 ms here), which would dominate DEL. So DEL renames the pod's
//! interface to a tombstone name and takes it down — after that the name
//! `CNI_IFNAME` is free and the link carries no traffic — and a forked
//! child, holding the namespace open, deletes the tombstone (see
//! `reap.rs`). If the child cannot be forked, DEL deletes the link itself.

use std::fs::File;
use std::net::Ipv4Addr;

use common::SubnetEnv;

use super::{ip_masq, ipam_error, open_netns, open_store, reap};
use crate::env::CniEnv;
use crate::error::{Code, Result};
use crate::netlink::Netlink;
use crate::spec::NetConf;
use crate::{masq, random};

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let (cid, ifname) = (&env.container_id, &env.ifname);
    // Detaching reads the interface's addresses, so the IPAM files can be
    // checked by name instead of scanning the whole store.
    let mut on_iface = Vec::new();
    if let Some(path) = env.netns.as_deref() {
        match open_netns(path) {
            Ok(ns) => on_iface = detach(&ns, &path.display().to_string(), ifname)?,
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
    let scan = ips.is_empty();
    if scan {
        // The namespace or the interface is gone: look the pod up.
        ips = store.find(cid, ifname).map_err(ipam_error)?;
    }
    if !ips.is_empty() {
        let senv = SubnetEnv::read(&conf.subnet_file).ok();
        // Unknown (no subnet.env, no delegate.ipMasq): clean up anyway.
        if ip_masq(conf, senv.as_ref()) != Some(false) {
            masq::remove(&conf.name, &ips)?;
        }
    }
    if scan {
        store.release(cid, ifname).map_err(ipam_error)?;
    } else {
        for ip in ips {
            store.release_ip(ip, cid).map_err(ipam_error)?;
        }
    }
    Ok(())
}

/// Renames the pod's interface out of the way and takes it down; returns
/// the IPv4 addresses it had. A missing interface is fine.
fn detach(ns: &File, place: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
    let pod = Netlink::open_in(ns, place)?;
    let link = pod.link_by_name(ifname)?;
    let Some(link) = link else {
        return Ok(Vec::new());
    };
    let addresses = pod.addresses(link.index)?;
    let tomb = random::name("cnidel");
    pod.rename_down(link.index, ifname, &tomb)?;
    if let Err(e) = reap::fork_deleter(ns, link.index) {
        tracing::debug!("cannot fork the link deleter ({e}); deleting {tomb} inline");
        pod.delete_link(link.index, &tomb)?;
    }
    Ok(addresses.into_iter().map(|net| net.ip()).collect())
}
