//! GC: free every address whose attachment the runtime no longer lists (in
//! `cni.dev/valid-attachments`), remove the saved delegate configs of
//! containers it no longer lists (`scratch.rs`), then drop the masquerade
//! elements whose address is no longer allocated. Freeing addresses and
//! removing files keeps going after individual failures; refuses to run
//! without the list, rather than free everything.
//!
//! Touches no link: a pod's interface goes with its namespace or its DEL.

use std::collections::HashSet;

use super::{ipam_error, open_store};
use crate::cni_err;
use crate::error::Result;
use crate::spec::NetConf;
use crate::{masq, scratch};

pub fn run(conf: &NetConf) -> Result<()> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        cni_err!(
            InvalidConfig,
            "GC needs cni.dev/valid-attachments (refusing to free every address)"
        )
    })?;
    let cids: HashSet<&str> = valid.iter().map(|(cid, _)| cid.as_str()).collect();
    scratch::gc(conf, &cids);
    let store = open_store(conf)?;
    let report = store.gc(valid).map_err(ipam_error)?;
    for e in &report.errors {
        tracing::warn!("GC: {e}");
    }
    for a in &report.freed {
        tracing::info!(
            "GC freed {} held by {} {}",
            a.ip,
            a.container_id,
            a.ifname.as_deref().unwrap_or("?")
        );
    }
    // Masquerade elements whose address is no longer allocated. The set is
    // read before the allocations: an element only exists after its
    // address was allocated, so a pod being added meanwhile is never taken
    // for stale.
    let members = masq::members(&conf.name)?;
    let allocated: HashSet<_> = store
        .allocations()
        .map_err(ipam_error)?
        .into_iter()
        .map(|a| a.ip)
        .collect();
    let stale: Vec<_> = members
        .into_iter()
        .filter(|ip| !allocated.contains(ip))
        .collect();
    masq::remove(&conf.name, &stale)
}
