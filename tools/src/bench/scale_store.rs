//! The scale benchmark's store side: writing the fake peers' leases into
//! the file store's directory, into etcd (as upstream flannel does: one
//! etcd lease per key) or into the in-process Kubernetes API stand-in as
//! Node objects, and removing them again.
//!
//! It writes only the fake peers' leases, and only into the benchmark's own
//! stores; it never writes the measured node's lease.

use std::path::PathBuf;

use etcd_client::{Client, Compare, PutOptions, Txn, TxnOp};
use flannel_cluster::kube_api::{KubeApiServer, NodeFixture};
use flannel_cluster::NetNs;

use super::scale_kernel::FakePeer;

/// etcd's default limit of operations in one transaction is 128.
const TXN_OPS: usize = 100;
/// flannel's prefix.
const PREFIX: &str = "/coreos.com/network/subnets/";

pub enum Feed {
    /// The lease directory, and a scratch directory on the same file
    /// system (files are written there and renamed in, as the store does).
    File {
        dir: PathBuf,
        scratch: PathBuf,
    },
    /// etcd's client URL, reachable from `underlay`.
    Etcd {
        endpoint: String,
        underlay: NetNs,
    },
    Kube(KubeApiServer),
}

impl Feed {
    /// Makes `peers` leases.
    pub fn add(&self, peers: &[FakePeer]) {
        match self {
            Feed::File { dir, scratch } => {
                for p in peers {
                    let tmp = scratch.join(p.key());
                    std::fs::write(&tmp, file_value(p))
                        .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
                    let to = dir.join(p.key());
                    std::fs::rename(&tmp, &to)
                        .unwrap_or_else(|e| panic!("rename to {}: {e}", to.display()));
                }
            }
            Feed::Etcd { .. } => {
                let puts: Vec<(String, String)> = peers
                    .iter()
                    .map(|p| (format!("{PREFIX}{}", p.key()), p.value()))
                    .collect();
                self.etcd(move |mut c| async move {
                    for chunk in puts.chunks(TXN_OPS) {
                        let grants = chunk.iter().map(|_| {
                            let mut c = c.clone();
                            async move { c.lease_grant(86_400, None).await }
                        });
                        let ids = futures::future::join_all(grants).await;
                        let mut ops = Vec::new();
                        for ((k, v), id) in chunk.iter().zip(ids) {
                            let id = id.map_err(|e| format!("grant a lease for {k}: {e}"))?.id();
                            let opts = PutOptions::new().with_lease(id);
                            ops.push(TxnOp::put(k.as_str(), v.as_str(), Some(opts)));
                        }
                        c.txn(Txn::new().when(Vec::<Compare>::new()).and_then(ops))
                            .await
                            .map_err(|e| format!("put {} leases: {e}", chunk.len()))?;
                    }
                    Ok(())
                });
            }
            Feed::Kube(api) => {
                let nodes = peers.iter().map(node_of).collect();
                api.create_nodes(nodes)
                    .unwrap_or_else(|e| panic!("create Node objects: {e}"));
            }
        }
    }

    /// Removes the leases of `peers`.
    pub fn remove(&self, peers: &[FakePeer]) {
        match self {
            Feed::File { dir, .. } => {
                for p in peers {
                    let path = dir.join(p.key());
                    std::fs::remove_file(&path)
                        .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
                }
            }
            Feed::Etcd { .. } => {
                let keys: Vec<String> = peers
                    .iter()
                    .map(|p| format!("{PREFIX}{}", p.key()))
                    .collect();
                self.etcd(move |mut c| async move {
                    for chunk in keys.chunks(TXN_OPS) {
                        let ops: Vec<TxnOp> = chunk
                            .iter()
                            .map(|k| TxnOp::delete(k.as_str(), None))
                            .collect();
                        c.txn(Txn::new().and_then(ops))
                            .await
                            .map_err(|e| format!("delete {} leases: {e}", chunk.len()))?;
                    }
                    Ok(())
                });
            }
            Feed::Kube(api) => {
                for p in peers {
                    api.delete_node(&node_name(p));
                }
            }
        }
    }

    /// etcd: compacts the history up to the current revision.
    pub fn compact(&self) {
        self.etcd(|mut c| async move {
            let rev = c
                .get("/", None)
                .await
                .map_err(|e| format!("get the revision: {e}"))?
                .header()
                .map_or(0, |h| h.revision());
            c.compact(rev, None)
                .await
                .map_err(|e| format!("compact at {rev}: {e}"))?;
            Ok(())
        });
    }

    /// Runs `f` with a client connected from the underlay namespace.
    fn etcd<F, Fut>(&self, f: F)
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let Feed::Etcd { endpoint, underlay } = self else {
            panic!("not an etcd feed")
        };
        let endpoint = endpoint.clone();
        let r = underlay.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            rt.block_on(async move {
                let c = Client::connect([endpoint.as_str()], None)
                    .await
                    .map_err(|e| format!("connect to etcd at {endpoint}: {e}"))?;
                f(c).await
            })
        });
        if let Err(e) = r {
            panic!("etcd: {e}");
        }
    }
}

/// The file store's format: flannel's value plus `Expiration`.
fn file_value(p: &FakePeer) -> String {
    format!(
        r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}},"Expiration":"2099-01-01T00:00:00.000Z"}}"#,
        p.public_ip, p.mac
    ) + "\n"
}

fn node_name(p: &FakePeer) -> String {
    format!("peer-{}", p.index)
}

/// Peer `p` as a Node with flannel's annotations and its podCIDR.
fn node_of(p: &FakePeer) -> serde_json::Value {
    NodeFixture::new(&node_name(p), p.index)
        .pod_cidr(&p.cidr())
        .flannel()
        .build()
}
