//! Neighbour (ARP / NDP) and FDB entries on the VXLAN device, as dumped
//! (writing them is `write.rs`'s).
//!
//! Owns the entry types and their dump only: it does not decide which
//! entries should exist (that is `peer` and `reconcile`).

use std::marker::PhantomData;

use futures::TryStreamExt;
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::error::VxlanError;
use super::VxlanFamily;

const NUD_PERMANENT: u16 = 0x80;

/// A neighbour entry of family `F` as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NeighEntry<F: VxlanFamily> {
    pub ip: F::Addr,
    pub mac: Option<Vec<u8>>,
    pub permanent: bool,
}

/// An FDB entry (one remote of it) as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FdbEntry<F: VxlanFamily> {
    pub mac: Vec<u8>,
    /// The remote VTEP; None for entries without a destination of family
    /// `F`.
    pub dst: Option<F::Addr>,
    pub permanent: bool,
}

fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

/// Neighbour and FDB operations of family `F` on one device.
pub(crate) struct Neighbours<'a, F> {
    pub handle: &'a Handle,
    pub index: u32,
    pub name: &'a str,
    pub family: PhantomData<F>,
}

impl<F: VxlanFamily> Neighbours<'_, F> {
    /// The neighbour entries of family `F` on this device.
    pub async fn dump(&self) -> Result<Vec<NeighEntry<F>>, VxlanError> {
        let mut out = Vec::new();
        for msg in self.entries(F::AF, "neighbours").await? {
            let mut ip = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(a) => ip = F::of_neigh_address(a),
                    NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m.clone()),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(NeighEntry {
                    ip,
                    mac,
                    permanent: is_permanent(msg.header.state),
                });
            }
        }
        Ok(out)
    }

    /// One dump of the neighbour table in `family` (the family's neighbours, or
    /// the bridge family's FDB), keeping this device's entries.
    async fn entries(
        &self,
        family: AddressFamily,
        what: &str,
    ) -> Result<Vec<NeighbourMessage>, VxlanError> {
        let mut stream = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| VxlanError::netlink(format!("list {what} of {}", self.name), e))?
        {
            if msg.header.ifindex == self.index && msg.header.family == family {
                out.push(msg);
            }
        }
        Ok(out)
    }

    /// The FDB entries of this device (one per remote). A device of one
    /// family only has remotes of that family.
    pub async fn fdb_dump(&self) -> Result<Vec<FdbEntry<F>>, VxlanError> {
        let mut out = Vec::new();
        for msg in self.entries(AddressFamily::Bridge, "fdb").await? {
            let mut mac = None;
            let mut dst = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m.clone()),
                    NeighbourAttribute::Destination(a) => dst = F::of_neigh_address(a),
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(FdbEntry {
                    mac,
                    dst,
                    permanent: is_permanent(msg.header.state),
                });
            }
        }
        Ok(out)
    }
}
