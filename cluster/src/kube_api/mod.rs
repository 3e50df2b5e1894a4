//! A Kubernetes API server stand-in for tests: Nodes and Pods of core/v1
//! over HTTP(S) with bearer-token auth, faithful to what kube-rs (the
//! client and kube-runtime's `watcher`) and client-go rely on, with faults
//! a test can inject and a synchronous API to set up and inspect state.
//!
//! ```no_run
//! use flannel_cluster::kube_api::{fixtures, KubeApiOptions, KubeApiServer};
//! let api = KubeApiServer::start_with(KubeApiOptions::new().tls()).expect("start");
//! api.create_node(fixtures::realistic_node("node-0", 0)).expect("create");
//! api.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig")).expect("write");
//! // flanneld --kube-subnet-mgr --kubeconfig-file /tmp/kubeconfig ...
//! api.drop_watches(); // every open watch is cut
//! ```
//!
//! Served:
//! - `GET /api/v1/nodes` (list, or watch with `watch=true`), `POST`;
//!   `GET|PUT|PATCH|DELETE /api/v1/nodes/NAME`; `GET|PUT|PATCH
//!   /api/v1/nodes/NAME/status`; the same for
//!   `/api/v1/namespaces/NS/pods[/NAME[/status]]`, and `GET /api/v1/pods`.
//! - `/version`, `/api`, `/healthz`, `/livez`, `/readyz`.
//! - On the admin listener only ([`KubeApiOptions::admin_listen`]), which
//!   faults never touch: the same, plus the controls under `/_standin/`
//!   (faults, request log, status, IPAM pause) for a stand-in run as a
//!   process.
//!
//! One module per concern: `admin` (the `/_standin/` controls), `store` (objects, resourceVersions, history),
//! `list` (pagination), `watch` (streams), `patch` (patch types),
//! `selector`, `object` (server-owned fields), `routes`, `http` (server,
//! auth, the order of faults), `tls` (certificates, kubeconfig), `faults`
//! (faults, request log), [`ipam`] (node CIDR controller), [`fixtures`]
//! (realistic objects), `server` (lifecycle) and `state` (the test-facing
//! API on [`KubeApiServer`]).

mod admin;
mod faults;
pub mod fixtures;
mod http;
pub mod ipam;
mod list;
mod object;
mod patch;
mod respond;
mod routes;
mod selector;
mod server;
mod state;
mod store;
mod tls;
mod watch;

pub use faults::{DownMode, RequestRecord};
pub use fixtures::{realistic_node, realistic_nodes, FlannelAnnotations, NodeFixture};
pub use ipam::NodeIpam;
pub use server::{KubeApiOptions, KubeApiServer};
