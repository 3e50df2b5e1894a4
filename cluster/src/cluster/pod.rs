//! Pods on cluster nodes, attached by the real `flannel` CNI binary, and
//! traffic between them.
//!
//! Pods are made and removed only through the `flannel` binary's ADD and DEL;
//! nothing here writes a pod's interfaces by hand.

use super::family::IpFamily;
use super::Cluster;
use crate::cni::{CniCall, CniOutput, Pod, REFERENCE_CNI_PATH};
use crate::tcp::{tcp_fetch, TcpServer};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A pod namespace attached to a node: its namespace, container ID, interface
/// and the addresses the plugin gave it. The namespace is deleted on drop.
#[derive(Debug)]
pub struct ClusterPod {
    pub node: usize,
    /// Its first address (the IPv4 one on a dual-stack pod).
    pub ip: IpAddr,
    /// Every address of the result (`ips[].address`), in its order.
    pub ips: Vec<IpAddr>,
    /// The CNI ADD result.
    pub result: Value,
    pub pod: Pod,
}

impl ClusterPod {
    /// Pod `pod` on node `node` with the addresses of its ADD `result`
    /// (`None` when it names none).
    pub fn from_result(node: usize, pod: Pod, result: Value) -> Option<ClusterPod> {
        let ips = result_ips(&result);
        Some(ClusterPod {
            node,
            ip: *ips.first()?,
            ips,
            result,
            pod,
        })
    }

    pub fn ns(&self) -> &crate::netns::NetNs {
        &self.pod.ns
    }

    /// Its address of single family `f`, if it has one.
    pub fn ip_of(&self, f: IpFamily) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| f.matches(ip))
    }

    /// Its address of single family `f`; panics when it has none.
    #[track_caller]
    pub fn ip_of_ok(&self, f: IpFamily) -> IpAddr {
        self.ip_of(f).unwrap_or_else(|| {
            panic!(
                "pod {} has no {} address: {:?}",
                self.ns().name(),
                f.as_str(),
                self.ips
            )
        })
    }
}

/// Every address of a CNI result (`ips[].address` without the length).
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["address"].as_str()?.split('/').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// A CNI call of the flannel plugin inside node `i`, as a runtime makes it.
    pub fn cni_call(&self, i: usize, verb: &str, pod: &Pod) -> CniCall {
        CniCall::new(self.flannel_bin(), Some(&self.node(i).ns))
            .command(verb)
            .env("CNI_PATH", REFERENCE_CNI_PATH)
            .pod(pod)
            .config(&self.cni_config(i))
    }

    /// A new pod namespace for node `i` (not attached yet): a unique name,
    /// or `<prefix>node<i>-pod<k>` (also its container ID) with a name prefix.
    pub fn new_pod(&self, i: usize) -> Pod {
        match self.name_prefix() {
            None => Pod::new(),
            Some(_) => {
                let name = format!("node{i}-pod{}", self.node(i).next_pod_seq());
                let ns = self.make_ns("p", &name);
                Pod {
                    cid: ns.name().to_owned(),
                    ns,
                    ifname: "eth0".into(),
                }
            }
        }
    }

    /// CNI ADD of a new pod namespace on node `i`; returns the pod or the
    /// plugin's output when it failed.
    pub fn try_add_pod(&self, i: usize) -> Result<ClusterPod, CniOutput> {
        self.attach_pod(i, self.new_pod(i))
    }

    /// CNI ADD of `pod` (a namespace made beforehand, e.g. by
    /// [`new_pod`](Self::new_pod)) on node `i`.
    pub fn attach_pod(&self, i: usize, pod: Pod) -> Result<ClusterPod, CniOutput> {
        let out = self.cni_call(i, "ADD", &pod).run();
        if out.code() != Some(0) {
            return Err(out);
        }
        let result: Value = serde_json::from_str(out.stdout()).map_err(|_| out.clone())?;
        ClusterPod::from_result(i, pod, result).ok_or(out)
    }

    /// CNI ADD of a new pod on node `i`; panics with the plugin's output on failure.
    #[track_caller]
    pub fn add_pod(&self, i: usize) -> ClusterPod {
        self.try_add_pod(i)
            .unwrap_or_else(|out| panic!("CNI ADD on {} failed: {out}", self.node(i).name))
    }

    /// CNI DEL (with the ADD result as prevResult), then the namespace goes.
    #[track_caller]
    pub fn del_pod(&self, p: ClusterPod) {
        let conf = crate::cni::with_prev_result(&self.cni_config(p.node), &p.result);
        let out = self.cni_call(p.node, "DEL", &p.pod).config(&conf).run();
        out.success_empty();
    }

    /// One ping from `from` to `to` (1 s timeout; `ping -6` to an IPv6 address).
    pub fn ping_once(&self, from: &ClusterPod, to: impl Into<IpAddr>) -> Result<(), String> {
        let to: IpAddr = to.into();
        let fam = if to.is_ipv6() { "-6" } else { "-4" };
        let out = from
            .ns()
            .exec("ping", &[fam, "-c", "1", "-W", "1", "-n", &to.to_string()]);
        if out.success() {
            Ok(())
        } else {
            Err(format!(
                "ping {to} from {}: {}",
                from.ns().name(),
                out.stdout.trim()
            ))
        }
    }

    /// Pings until one answer comes back, up to `timeout`.
    #[track_caller]
    pub fn wait_ping(&self, from: &ClusterPod, to: impl Into<IpAddr>, timeout: Duration) {
        let to: IpAddr = to.into();
        crate::wait::eventually(timeout, &format!("ping {} → {to}", from.ip), || {
            self.ping_once(from, to)
        });
    }

    /// A TCP connection from `from` to a server in `to` that answers with a
    /// banner; retried until `timeout`. Returns the banner.
    #[track_caller]
    pub fn wait_tcp(&self, from: &ClusterPod, to: &ClusterPod, timeout: Duration) -> String {
        let banner = format!("hello from {}", to.ip);
        let server = TcpServer::start(to.ns(), SocketAddr::new(to.ip, 0), &banner);
        let addr = server.addr();
        let got = crate::wait::eventually(timeout, &format!("tcp {} → {addr}", from.ip), || {
            tcp_fetch(from.ns(), addr, Duration::from_secs(1))
        });
        assert_eq!(got, banner, "tcp {} → {addr}: wrong banner", from.ip);
        got
    }
}
