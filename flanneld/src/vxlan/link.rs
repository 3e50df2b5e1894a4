//! Links and addresses over rtnetlink: one typed method per kernel
//! operation, and the one place links and addresses are dumped (the VXLAN
//! device's code and `iface`'s choice of the external interface both read
//! them here). Every error names the operation and the link.
//!
//! Owns the netlink requests only: it does not decide which device or
//! address should exist (that is `device`), nor which interface is the
//! external one (that is `iface`).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use super::error::{ok_if_exists, ok_if_missing, VxlanError};
use super::{DeviceSpec, VxlanFamily};

/// The kernel's default VXLAN destination port when none is given.
pub(crate) const KERNEL_DEFAULT_PORT: u16 = 8472;

/// One address as dumped: its link, the address (IFA_LOCAL when present,
/// the interface's own, else IFA_ADDRESS) and prefix length, and the
/// message to delete it by.
#[derive(Debug, Clone)]
pub(crate) struct AddrRow {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix: u8,
    pub msg: AddressMessage,
}

/// A link as read back from the kernel, with its VXLAN parameters when it
/// is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<InfoKind>,
    pub vxlan: VxlanParams,
}

/// The VXLAN parameters the adoption check compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VxlanParams {
    pub vni: Option<u32>,
    /// IFLA_VXLAN_LOCAL or IFLA_VXLAN_LOCAL6.
    pub local: Option<IpAddr>,
    pub dev: Option<u32>,
    pub port: Option<u16>,
    pub gbp: bool,
    pub learning: Option<bool>,
}

impl LinkState {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = LinkState {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = a,
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k),
                            LinkInfo::Data(InfoData::Vxlan(data)) => {
                                link.vxlan = VxlanParams::from_info(&data)
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_vxlan(&self) -> bool {
        matches!(self.kind, Some(InfoKind::Vxlan))
    }
}

impl VxlanParams {
    fn from_info(data: &[InfoVxlan]) -> Self {
        let mut p = VxlanParams::default();
        for d in data {
            match d {
                InfoVxlan::Id(v) => p.vni = Some(*v),
                InfoVxlan::Local(a) => p.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) => p.local = Some(IpAddr::V6(*a)),
                InfoVxlan::Link(i) => p.dev = Some(*i),
                InfoVxlan::Port(port) => p.port = Some(*port),
                InfoVxlan::Gbp => p.gbp = true,
                InfoVxlan::Learning(l) => p.learning = Some(*l),
                _ => {}
            }
        }
        p
    }

    /// What a device made from `spec` reports.
    pub fn wanted<F: VxlanFamily>(spec: &DeviceSpec<F>) -> Self {
        VxlanParams {
            vni: Some(spec.vni),
            local: Some(F::to_ip(spec.local)),
            dev: Some(spec.ext_index),
            port: Some(if spec.port == 0 {
                KERNEL_DEFAULT_PORT
            } else {
                spec.port
            }),
            gbp: spec.gbp,
            learning: Some(spec.learning),
        }
    }

    /// The parameters that differ, for the log line that explains a
    /// replacement ("vni 2 != 1, local 192.168.64.9 != 192.168.64.2").
    pub fn differences(&self, wanted: &VxlanParams) -> Vec<String> {
        fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "unset".to_string(), ToString::to_string)
        }
        let mut out = Vec::new();
        let mut cmp = |what: &str, have: String, want: String| {
            if have != want {
                out.push(format!("{what} {have} != {want}"));
            }
        };
        cmp("vni", show(&self.vni), show(&wanted.vni));
        cmp("local", show(&self.local), show(&wanted.local));
        cmp("dev", show(&self.dev), show(&wanted.dev));
        cmp("port", show(&self.port), show(&wanted.port));
        cmp("gbp", self.gbp.to_string(), wanted.gbp.to_string());
        cmp("learning", show(&self.learning), show(&wanted.learning));
        out
    }
}

/// Link and address operations on one rtnetlink connection.
pub(crate) struct Links<'a> {
    pub handle: &'a Handle,
}

impl Links<'_> {
    /// The link called `name`, or None.
    pub async fn by_name(&self, name: &str) -> Result<Option<LinkState>, VxlanError> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(LinkState::from_message)),
            Err(e) => {
                let e = VxlanError::netlink(format!("look up link {name}"), e);
                if e.is(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The link with ifindex `index`, or None.
    pub async fn by_index(&self, index: u32) -> Result<Option<LinkState>, VxlanError> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(LinkState::from_message)),
            Err(e) => {
                let e = VxlanError::netlink(format!("look up link #{index}"), e);
                if e.is(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `ip link add NAME type vxlan id VNI local L dev D dstport P
    /// [no]learning ttl 0 [gbp]` with MTU and MAC, left down.
    pub async fn create_vxlan<F: VxlanFamily>(
        &self,
        name: &str,
        spec: &DeviceSpec<F>,
    ) -> Result<(), VxlanError> {
        let mut b = LinkVxlan::new(name, spec.vni).dev(spec.ext_index);
        b = match F::to_ip(spec.local) {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        b = b.learning(spec.learning).ttl(0);
        if spec.port != 0 {
            b = b.port(spec.port);
        }
        if spec.gbp {
            b = b.gbp();
        }
        let msg = b.mtu(spec.mtu).address(spec.mac.to_vec()).build();
        self.handle.link().add(msg).execute().await.map_err(|e| {
            VxlanError::netlink(
                format!(
                    "create vxlan device {name} (id {}, local {}, dev #{}, port {}, mac {})",
                    spec.vni,
                    spec.local,
                    spec.ext_index,
                    spec.port,
                    common::mac::format(&spec.mac)
                ),
                e,
            )
        })
    }

    pub async fn delete(&self, index: u32, name: &str) -> Result<(), VxlanError> {
        let r = self
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| VxlanError::netlink(format!("delete link {name}"), e));
        match r {
            Err(e) if e.is(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    pub async fn set_mtu(&self, index: u32, name: &str, mtu: u32) -> Result<(), VxlanError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| VxlanError::netlink(format!("set mtu {mtu} on {name}"), e))
    }

    pub async fn set_mac(&self, index: u32, name: &str, mac: [u8; 6]) -> Result<(), VxlanError> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.handle.link().set(msg).execute().await.map_err(|e| {
            VxlanError::netlink(
                format!("set address {} on {name}", common::mac::format(&mac)),
                e,
            )
        })
    }

    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), VxlanError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| VxlanError::netlink(format!("set {name} up"), e))
    }

    /// Every link (`ip link show`).
    pub async fn all(&self) -> Result<Vec<LinkState>, VxlanError> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| VxlanError::netlink("list links".to_string(), e))?
        {
            out.push(LinkState::from_message(msg));
        }
        Ok(out)
    }

    /// The addresses of every family on link `(index, name)`, or on every
    /// link when `link` is None (`ip addr show [dev NAME]`).
    pub async fn address_rows(
        &self,
        link: Option<(u32, &str)>,
    ) -> Result<Vec<AddrRow>, VxlanError> {
        let mut req = self.handle.address().get();
        if let Some((index, _)) = link {
            req = req.set_link_index_filter(index);
        }
        let mut stream = req.execute();
        let op = || match link {
            Some((_, name)) => format!("list addresses of {name}"),
            None => "list addresses".to_string(),
        };
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| VxlanError::netlink(op(), e))?
        {
            if link.is_some_and(|(index, _)| msg.header.index != index) {
                continue;
            }
            if let Some(ip) = address_of(&msg) {
                let (index, prefix) = (msg.header.index, msg.header.prefix_len);
                out.push(AddrRow {
                    index,
                    ip,
                    prefix,
                    msg,
                });
            }
        }
        Ok(out)
    }

    /// The addresses of family `F` on link `index` with their prefix
    /// length, and the messages to delete them by.
    pub async fn addresses<F: VxlanFamily>(
        &self,
        index: u32,
        name: &str,
    ) -> Result<Vec<(F, AddressMessage)>, VxlanError> {
        let rows = self.address_rows(Some((index, name))).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.msg.header.family == F::AF)
            .filter_map(|r| Some((F::new(F::from_ip(r.ip)?, r.prefix)?, r.msg)))
            .collect())
    }

    /// `ip addr add ADDR/PREFIX dev NAME [nodad]`; an address already
    /// there is fine. An IPv6 address skips duplicate address detection:
    /// it is the node's own, from its lease, and usable at once.
    pub async fn add_address<F: VxlanFamily>(
        &self,
        index: u32,
        name: &str,
        net: F,
    ) -> Result<(), VxlanError> {
        let mut req = self
            .handle
            .address()
            .add(index, F::to_ip(net.addr()), net.prefix());
        if F::to_ip(net.addr()).is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        ok_if_exists(
            req.execute()
                .await
                .map_err(|e| VxlanError::netlink(format!("add address {net} to {name}"), e)),
        )
    }

    /// Deletes an address as dumped; one already gone is fine.
    pub async fn del_address<F: VxlanFamily>(
        &self,
        name: &str,
        net: F,
        msg: AddressMessage,
    ) -> Result<(), VxlanError> {
        ok_if_missing(
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(|e| VxlanError::netlink(format!("delete address {net} from {name}"), e)),
        )
    }
}

/// IFA_LOCAL when present (the interface's own address), else IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}
