//! A node as upstream flannel leaves it when its DaemonSet pod is deleted
//! (flanneld gone, the kernel and the files stay), made by hand the way
//! upstream makes it: the Node annotated by its kube subnet manager,
//! `subnet.env`, `flannel.1` with the peers' neighbour, FDB and route
//! entries, and pods attached by the reference `bridge` + `host-local`
//! plugins with the delegate config upstream's `flannel` CNI plugin builds
//! from `subnet.env`. For switching a node from flannel to flannel-rs and
//! back (`tests/tests/e2e_kube/switch.rs`).
//!
//! It writes only inside the node's namespace and its directory, and never
//! runs upstream flannel's own binaries.

use super::kube::ANNOTATION_PREFIX;
use super::{Cluster, ClusterPod, VXLAN_DEV};
use crate::cni::{CniCall, REFERENCE_CNI_PATH};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Where Debian puts the reference bridge plugin.
pub const REFERENCE_BRIDGE: &str = "/usr/lib/cni/bridge";
/// The CNI network name of upstream's conflist (kube-flannel.yml), which
/// names the host-local store directory `<dataDir>/cbr0`.
pub const NETWORK_NAME: &str = "cbr0";
/// The CNI version of upstream's conflist.
pub const UPSTREAM_CNI_VERSION: &str = "0.3.1";

/// `subnet.env` as upstream's `WriteSubnetFile` writes it (IPv4 only).
pub fn upstream_subnet_env(network: &str, subnet: &str, mtu: u32, ipmasq: bool) -> String {
    let gw = first_host(subnet);
    let len = subnet.split('/').nth(1).unwrap_or("24");
    format!("FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={gw}/{len}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ipmasq}\n")
}

/// "10.244.3.0/24" → "10.244.3.1".
fn first_host(subnet: &str) -> Ipv4Addr {
    let ip: Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad subnet {subnet}"));
    Ipv4Addr::from(u32::from(ip) + 1)
}

/// "10.244.3.0/24" → "10.244.3.0".
fn network_addr(subnet: &str) -> &str {
    subnet.split('/').next().unwrap_or(subnet)
}

impl Cluster {
    /// Waits for node `i`'s podCIDR (the stand-in's node IPAM gives it).
    #[track_caller]
    pub fn wait_pod_cidr(&self, i: usize) -> String {
        crate::wait::eventually(Duration::from_secs(10), "a podCIDR", || {
            self.kube_node(i)["spec"]["podCIDR"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{} has no podCIDR yet", self.node(i).name))
        })
    }

    /// Node `i`'s Node as upstream's kube subnet manager leaves it: its four
    /// annotations (`backend-data` byte for byte as Go's encoding/json
    /// writes it) and `NetworkUnavailable=False`, reason `FlannelIsUp`.
    /// Returns its podCIDR.
    #[track_caller]
    pub fn annotate_as_upstream(&self, i: usize, vtep_mac: &str) -> String {
        let cidr = self.wait_pod_cidr(i);
        let n = self.node(i);
        let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
        let patch = json!({"metadata": {"annotations": {
            a("backend-data"): format!(r#"{{"VNI":1,"VtepMAC":"{vtep_mac}"}}"#),
            a("backend-type"): "vxlan",
            a("kube-subnet-manager"): "true",
            a("public-ip"): n.ip.to_string(),
        }}});
        self.kube().patch_node(&n.name, &patch);
        let now = "2025-01-01T00:00:00Z";
        let status = json!({"status": {"conditions": [{
            "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node",
            "lastTransitionTime": now, "lastHeartbeatTime": now,
        }]}});
        let path = format!("/api/v1/nodes/{}/status", n.name);
        let ans = self
            .kube()
            .client()
            .send_json(
                "PATCH",
                &path,
                "application/strategic-merge-patch+json",
                &status,
            )
            .unwrap_or_else(|e| panic!("patch {path}: {e}"));
        assert!(ans.is_success(), "patch {path}: {}", ans.text());
        cidr
    }

    /// Node `i`'s files and kernel as upstream flanneld leaves them for
    /// `subnet` (the podCIDR): `subnet.env`; `flannel.1` as upstream makes
    /// it (VXLAN id 1, local = node IP, dev eth0, dstport 8472, nolearning,
    /// `vtep_mac`, MTU eth0 − 50, `<subnet>.0/32`, up); and for every other
    /// node's lease its neighbour, FDB and onlink route.
    #[track_caller]
    pub fn leave_as_upstream(&self, i: usize, subnet: &str, vtep_mac: &str, ipmasq: bool) {
        let n = self.node(i);
        let ns = &n.ns;
        let eth_mtu = ns.link("eth0").expect("eth0")["mtu"]
            .as_u64()
            .expect("eth0 mtu");
        let mtu = (eth_mtu - 50).to_string();
        let env = upstream_subnet_env("10.244.0.0/16", subnet, eth_mtu as u32 - 50, ipmasq);
        std::fs::write(n.subnet_file(), env).expect("write subnet.env");
        ns.ip_ok(&[
            "link",
            "add",
            VXLAN_DEV,
            "address",
            vtep_mac,
            "mtu",
            &mtu,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &n.ip.to_string(),
            "dev",
            "eth0",
            "dstport",
            "8472",
            "nolearning",
        ]);
        ns.ip_ok(&[
            "addr",
            "add",
            &format!("{}/32", network_addr(subnet)),
            "dev",
            VXLAN_DEV,
        ]);
        ns.ip_ok(&["link", "set", VXLAN_DEV, "up"]);
        let me = n.ip.to_string();
        for l in self.leases().iter().filter(|l| l.public_ip != me) {
            let vtep = network_addr(&l.subnet);
            ns.ip_ok(&[
                "neigh",
                "replace",
                vtep,
                "lladdr",
                &l.vtep_mac,
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ]);
            let out = ns.exec(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    &l.vtep_mac,
                    "dev",
                    VXLAN_DEV,
                    "dst",
                    &l.public_ip,
                    "self",
                    "permanent",
                ],
            );
            assert!(out.success(), "{out}");
            ns.ip_ok(&[
                "route", "replace", &l.subnet, "via", vtep, "dev", VXLAN_DEV, "onlink",
            ]);
        }
    }

    /// The delegate config upstream's `flannel` CNI plugin builds on node
    /// `i` from its `subnet.env` and the default conflist's delegate
    /// (`hairpinMode`, `isDefaultGateway`): bridge `cni0` with the gateway,
    /// `ipMasq = !FLANNEL_IPMASQ`, `mtu = FLANNEL_MTU`, host-local over
    /// FLANNEL_SUBNET's network with a route to FLANNEL_NETWORK. The
    /// host-local `dataDir` is the node's IPAM dir (the cluster's CNI
    /// config's `dataDir`; `/var/lib/cni/networks` on a real node, where
    /// neither plugin is told one).
    #[track_caller]
    pub fn upstream_delegate_config(&self, i: usize) -> Value {
        let n = self.node(i);
        let env = n
            .subnet_env()
            .unwrap_or_else(|| panic!("{}: no subnet.env", n.name));
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{}: no {k} in subnet.env {env:?}", n.name))
        };
        let mtu: u64 = get("FLANNEL_MTU").parse().expect("FLANNEL_MTU");
        let ipmasq: bool = get("FLANNEL_IPMASQ").parse().expect("FLANNEL_IPMASQ");
        let subnet = super::network_of(&get("FLANNEL_SUBNET")).expect("FLANNEL_SUBNET");
        json!({
            "cniVersion": UPSTREAM_CNI_VERSION, "name": NETWORK_NAME, "type": "bridge",
            "hairpinMode": true, "isDefaultGateway": true, "isGateway": true,
            "ipMasq": !ipmasq, "mtu": mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": get("FLANNEL_NETWORK")}],
                "dataDir": n.data_dir(),
            }
        })
    }

    /// A reference `bridge` call on node `i`, as upstream's plugin delegates it.
    fn reference_call(&self, i: usize, verb: &str) -> CniCall {
        assert!(
            std::path::Path::new(REFERENCE_BRIDGE).exists(),
            "{REFERENCE_BRIDGE} missing: install containernetworking-plugins (ci/deps.sh)"
        );
        CniCall::new(REFERENCE_BRIDGE, Some(&self.node(i).ns))
            .command(verb)
            .env("CNI_PATH", REFERENCE_CNI_PATH)
            .config(&self.upstream_delegate_config(i))
    }

    /// Where upstream's flannel plugin keeps each pod's delegate config
    /// (`/var/lib/cni/flannel` next to `/var/lib/cni/networks`; here
    /// `flannel` next to node `i`'s IPAM dir, where flannel-rs's plugin
    /// writes it too).
    pub fn scratch_dir(&self, i: usize) -> PathBuf {
        let data = self.node(i).data_dir();
        data.parent().unwrap_or(&data).join("flannel")
    }

    /// A new pod on node `i` attached as upstream flannel attaches it: the
    /// delegate config saved as `<scratch dir>/<containerID>`, then handed
    /// to the reference bridge.
    #[track_caller]
    pub fn add_pod_upstream(&self, i: usize) -> ClusterPod {
        let pod = self.new_pod(i);
        let dir = self.scratch_dir(i);
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        let conf = self.upstream_delegate_config(i);
        std::fs::write(dir.join(&pod.cid), conf.to_string()).expect("save the delegate config");
        let result = self.reference_call(i, "ADD").pod(&pod).run().success_json();
        ClusterPod::from_result(i, pod, result).expect("an address in the ADD result")
    }

    /// CNI DEL of `p` as upstream's flannel plugin makes it: the delegate
    /// config saved at ADD, verbatim, handed to the reference bridge, then
    /// the file removed. Upstream deletes nothing (and says nothing) when
    /// there is no such file: that panics here.
    #[track_caller]
    pub fn del_pod_upstream(&self, p: ClusterPod) {
        let path = self.scratch_dir(p.node).join(&p.pod.cid);
        let saved = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: upstream's DEL would skip {} (no saved delegate config): {e}",
                path.display(),
                p.ip
            )
        });
        CniCall::new(REFERENCE_BRIDGE, Some(&self.node(p.node).ns))
            .command("DEL")
            .env("CNI_PATH", REFERENCE_CNI_PATH)
            .pod(&p.pod)
            .stdin_raw(&saved)
            .run()
            .success_empty();
        std::fs::remove_file(&path).expect("remove the saved delegate config");
    }

    /// Node `i`'s host-local store: the allocated addresses and what each
    /// file holds (`<containerID>\r\n<ifname>`).
    pub fn ipam_files(&self, i: usize) -> Vec<(Ipv4Addr, String)> {
        let dir: PathBuf = self.node(i).data_dir().join(NETWORK_NAME);
        let mut v: Vec<(Ipv4Addr, String)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let ip = e.file_name().to_str()?.parse().ok()?;
                        Some((ip, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
