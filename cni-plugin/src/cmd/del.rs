//! DEL: detach the pod's interface, free its address, drop its masquerade
//! element. Idempotent: whatever is already gone is skipped.
//!
//! Unregistering a veth makes the kernel wait for an RCU grace period
//! (~20 ms here), which would dominate DEL. So DEL renames the pod's
//! interface to a tombstone name and takes it down — after that the name
//! `CNI_IFNAME` is free, the link carries no traffic, and the address can
//! be handed out again — and a detached child process, holding the
//! namespace open, deletes the tombstone. If that child cannot be started,
//! DEL deletes the link itself.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};

use common::SubnetEnv;
use rand::Rng;

use super::{ip_masq, ipam_error, open_netns, open_store};
use crate::env::CniEnv;
use crate::error::{Code, Result};
use crate::masq;
use crate::netlink::Netlink;
use crate::spec::NetConf;

pub async fn run(env: &CniEnv, conf: &NetConf) -> Result<()> {
    let (cid, ifname) = (&env.container_id, &env.ifname);
    // Detaching reads the interface's addresses, so the IPAM files can be
    // checked by name instead of scanning the whole store.
    let mut on_iface = Vec::new();
    if let Some(path) = env.netns.as_deref() {
        match open_netns(path) {
            Ok(ns) => on_iface = detach(&ns, &path.display().to_string(), ifname).await?,
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
async fn detach(ns: &File, place: &str, ifname: &str) -> Result<Vec<Ipv4Addr>> {
    let pod = Netlink::open_in(ns, place)?;
    let Some(link) = pod.link_by_name(ifname).await? else {
        return Ok(Vec::new());
    };
    let addresses = pod.addresses(link.index).await?;
    let tomb = format!("cnidel{:08x}", rand::rng().random::<u32>());
    pod.rename_down(link.index, ifname, &tomb).await?;
    if let Err(e) = spawn_reaper(ns, link.index) {
        tracing::debug!("cannot start the link reaper ({e}); deleting {tomb} inline");
        pod.delete_link(link.index, &tomb).await?;
    }
    Ok(addresses.into_iter().map(|a| a.ip()).collect())
}

/// Starts `flannel --reap-link <ifindex> <fd>` detached, with the pod's
/// namespace passed as an inherited descriptor so it outlives our exit.
fn spawn_reaper(ns: &File, index: u32) -> std::io::Result<()> {
    let fd = nix::unistd::dup(ns.as_fd()).map_err(std::io::Error::from)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(REAP_FLAG)
        .arg(index.to_string())
        .arg(fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()?;
    Ok(())
}

/// The first argument that turns the binary into the link reaper.
pub const REAP_FLAG: &str = "--reap-link";

/// The reaper: enter the namespace behind `fd`, delete link `index`.
pub fn reap(args: &[String]) -> std::result::Result<(), String> {
    use std::os::fd::FromRawFd;
    let [index, fd] = args else {
        return Err(format!("usage: flannel {REAP_FLAG} IFINDEX FD"));
    };
    let index: u32 = index.parse().map_err(|_| format!("bad ifindex {index}"))?;
    let fd: i32 = fd.parse().map_err(|_| format!("bad fd {fd}"))?;
    // SAFETY: the parent passed us this descriptor and nothing else owns it.
    let ns = unsafe { File::from_raw_fd(fd) };
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter namespace: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("start runtime: {e}"))?;
    rt.block_on(async {
        let nl = Netlink::open().map_err(|e| e.to_string())?;
        match nl.delete_link(index, &format!("#{index}")).await {
            Err(e) if !e.is(libc::ENODEV) => Err(e.to_string()),
            _ => Ok(()),
        }
    })
}
