//! Pods on cluster nodes, attached by the real `flannel` CNI binary, and
//! traffic between them.

use super::Cluster;
use crate::cni::{result_ip, CniCall, CniOutput, Pod, REFERENCE_CNI_PATH};
use crate::tcp::{tcp_fetch, TcpServer};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A pod namespace attached to a node: its namespace, container ID, interface
/// and the address the plugin gave it. The namespace is deleted on drop.
#[derive(Debug)]
pub struct ClusterPod {
    pub node: usize,
    pub ip: Ipv4Addr,
    /// The CNI ADD result.
    pub result: Value,
    pub pod: Pod,
}

impl ClusterPod {
    pub fn ns(&self) -> &crate::netns::NetNs {
        &self.pod.ns
    }
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
        let ip = result_ip(&result).parse().map_err(|_| out.clone())?;
        Ok(ClusterPod {
            node: i,
            ip,
            result,
            pod,
        })
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

    /// One ping from `from` to `to` (1 s timeout).
    pub fn ping_once(&self, from: &ClusterPod, to: Ipv4Addr) -> Result<(), String> {
        let out = from
            .ns()
            .exec("ping", &["-c", "1", "-W", "1", "-n", &to.to_string()]);
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
    pub fn wait_ping(&self, from: &ClusterPod, to: Ipv4Addr, timeout: Duration) {
        crate::wait::eventually(timeout, &format!("ping {} → {to}", from.ip), || {
            self.ping_once(from, to)
        });
    }

    /// A TCP connection from `from` to a server in `to` that answers with a
    /// banner; retried until `timeout`. Returns the banner.
    #[track_caller]
    pub fn wait_tcp(&self, from: &ClusterPod, to: &ClusterPod, timeout: Duration) -> String {
        let banner = format!("hello from {}", to.ip);
        let server = TcpServer::start(to.ns(), SocketAddr::new(to.ip.into(), 0), &banner);
        let addr = server.addr();
        let got = crate::wait::eventually(timeout, &format!("tcp {} → {addr}", from.ip), || {
            tcp_fetch(from.ns(), addr, Duration::from_secs(1))
        });
        assert_eq!(got, banner, "tcp {} → {addr}: wrong banner", from.ip);
        got
    }
}
