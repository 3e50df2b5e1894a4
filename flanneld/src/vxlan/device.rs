//! `flannel.<VNI>` / `flannel-v6.<VNI>`: create it, adopt a matching one,
//! replace one that does not match; its `<subnet>.0/32` (`<subnet>::/128`)
//! address.
//!
//! Owns the device's lifecycle; the netlink requests are `link`'s, and it
//! never touches peers' entries.

use std::path::Path;

use super::link::{LinkState, VxlanParams};
use super::{Device, DeviceSpec, Vxlan, VxlanError, VxlanFamily};

impl<F: VxlanFamily> Vxlan<F> {
    /// Creates `flannel.<VNI>` from `spec` (VXLAN id, local, dev, dstport,
    /// learning, TTL 0, GBP, MTU, MAC; IPv6 `accept_ra=0`; up), or adopts
    /// an existing one when type, VNI, local, dev, port, GBP and learning
    /// all match (its MTU and MAC are then set to the spec's, and it is set
    /// up). Any other link of that name is deleted and the device created
    /// anew.
    pub async fn ensure_device(&self, spec: &DeviceSpec<F>) -> Result<Device, VxlanError> {
        let name = Self::device_name(spec.vni);
        let links = self.links();
        let wanted = VxlanParams::wanted(spec);
        if let Some(link) = links.by_name(&name).await? {
            if link.is_vxlan() && link.vxlan == wanted {
                tracing::info!(device = %name, index = link.index, "adopting existing device");
                return self.adopt(link, spec).await;
            }
            let why = if link.is_vxlan() {
                link.vxlan.differences(&wanted).join(", ")
            } else {
                format!("kind {:?}, not vxlan", link.kind)
            };
            tracing::warn!(device = %name, index = link.index, %why, "replacing mismatched device");
            links.delete(link.index, &name).await?;
        }
        links.create_vxlan(&name, spec).await?;
        let link = self.read_back(&name).await?;
        tracing::info!(device = %name, index = link.index, mac = %common::mac::format(&spec.mac), "created device");
        self.adopt(link, spec).await
    }

    /// The device `flannel.<VNI>` if a VXLAN link of that name exists
    /// (compare its index with the one you hold to notice a re-creation).
    pub async fn find_device(&self, vni: u32) -> Result<Option<Device>, VxlanError> {
        let name = Self::device_name(vni);
        Ok(self
            .links()
            .by_name(&name)
            .await?
            .filter(LinkState::is_vxlan)
            .map(device_of))
    }

    /// Puts `addr/32` (`addr/128`) on the device and removes its other
    /// addresses inside `network` (e.g. a previous lease's `<subnet>.0/32`).
    pub async fn ensure_address(
        &self,
        dev: &Device,
        addr: F::Addr,
        network: F,
    ) -> Result<(), VxlanError> {
        let links = self.links();
        let want = F::new(addr, F::BITS).ok_or_else(|| VxlanError::Unexpected {
            op: format!("address {addr}/{}", F::BITS),
            reason: "not an address of this family".to_string(),
        })?;
        let have = links.addresses::<F>(dev.index, &dev.name).await?;
        if !have.iter().any(|(net, _)| *net == want) {
            links.add_address(dev.index, &dev.name, want).await?;
        }
        for (net, msg) in have {
            if net != want && network.contains_addr(net.addr()) {
                tracing::info!(device = %dev.name, address = %net, "removing stale address");
                links.del_address(&dev.name, net, msg).await?;
            }
        }
        Ok(())
    }

    /// Brings a matching link to the spec's MTU, MAC, `accept_ra=0` and up.
    async fn adopt(&self, link: LinkState, spec: &DeviceSpec<F>) -> Result<Device, VxlanError> {
        let links = self.links();
        let name = link.name.clone();
        if spec.mtu != 0 && link.mtu != spec.mtu {
            links.set_mtu(link.index, &name, spec.mtu).await?;
        }
        if link.mac != spec.mac {
            links.set_mac(link.index, &name, spec.mac).await?;
        }
        disable_accept_ra(&name)?;
        if !link.up {
            links.set_up(link.index, &name).await?;
        }
        // Something (udev's MACAddressPolicy, a network manager) may assign
        // its own MAC when the link appears or comes up: check afterwards.
        let link = self.read_back(&name).await?;
        if link.mac != spec.mac {
            tracing::warn!(device = %name, found = %common::mac::format(&link.mac), "MAC changed behind our back; setting it again");
            links.set_mac(link.index, &name, spec.mac).await?;
            return self.read_back(&name).await.map(device_of);
        }
        Ok(device_of(link))
    }

    async fn read_back(&self, name: &str) -> Result<LinkState, VxlanError> {
        self.links()
            .by_name(name)
            .await?
            .ok_or_else(|| VxlanError::DeviceGone {
                name: name.to_string(),
            })
    }
}

fn device_of(link: LinkState) -> Device {
    let mut mac = [0u8; 6];
    if link.mac.len() == 6 {
        mac.copy_from_slice(&link.mac);
    }
    Device {
        index: link.index,
        name: link.name,
        mac,
    }
}

/// `net.ipv6.conf.<name>.accept_ra = 0`. /proc/sys/net resolves against the
/// network namespace of the calling thread. Without IPv6 there is no such
/// file, and nothing to do.
///
/// A defence, not a need: with forwarding on, the kernel ignores router
/// advertisements anyway. So where /proc/sys is read-only — an unprivileged
/// container, as kube-flannel-rs.yml runs flanneld (NET_ADMIN and NET_RAW
/// only; the runtime mounts /proc/sys read-only) — it is logged and left.
fn disable_accept_ra(name: &str) -> Result<(), VxlanError> {
    let path = Path::new("/proc/sys/net/ipv6/conf")
        .join(name)
        .join("accept_ra");
    match std::fs::read_to_string(&path) {
        Ok(cur) if cur.trim() == "0" => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    match std::fs::write(&path, "0") {
        Ok(()) => Ok(()),
        Err(e) if read_only(&e) => {
            tracing::warn!(device = %name, "cannot set net.ipv6.conf.{name}.accept_ra to 0 ({e}: /proc/sys is read-only here, as in an unprivileged container); leaving it");
            Ok(())
        }
        Err(source) => Err(VxlanError::Io {
            op: format!("set net.ipv6.conf.{name}.accept_ra to 0"),
            source,
        }),
    }
}

/// /proc/sys mounted read-only, or writes refused to us.
fn read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}
