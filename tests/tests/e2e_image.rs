//! The image (ci/image.sh) under a real runtime: a private containerd runs
//! it as deploy/kube-flannel-rs.yml does, on one node of a netns cluster
//! on the Kubernetes API stand-in, next to two nodes whose flanneld runs
//! natively.
//!
//! - The init containers run from the image (`/flannel install-plugin`,
//!   `/flannel install-conflist`) into node 2's stand-ins for the host's
//!   /opt/cni/bin and /etc/cni/net.d.
//! - flanneld runs from the image in node 2's network namespace with
//!   NET_ADMIN and NET_RAW added (not privileged), the manifest's mounts,
//!   environment and arguments, and reaches the API in-cluster style
//!   (`KUBERNETES_SERVICE_HOST`/`PORT` and a mounted service account).
//! - Node 2's pods are attached by the plugin the init container installed,
//!   with the flannel entry of the conflist it installed. Only `subnetFile`
//!   and `dataDir` are pointed at node 2's directory, because this test
//!   runs on a host whose own /run/flannel and /var/lib/cni must not be
//!   touched (in the container, node 2's directory is /run/flannel).
//!
//! Everything the manifest decides is read from deploy/kube-flannel-rs.yml:
//! the image, the init containers' commands and mounts, flanneld's command,
//! environment (the downward API's values filled in), capabilities and
//! mounts, the ConfigMap's files and the probe's port.
//!
//! Needs `FLANNEL_IMAGE_ARCHIVE`: the path `ci/image.sh` prints (ci/test.sh
//! builds the image and sets it). Without it the test fails; it never
//! skips.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flannel_cluster::cluster::kube::KUBE_API_PORT;
use flannel_cluster::cluster::{StoreKind, UNDERLAY_GATEWAY};
use flannel_cluster::cni::REFERENCE_CNI_PATH;
use flannel_cluster::http_status;
use flannel_cluster::{eventually, require_root, Cluster, ClusterPod, CniCall, Pod};
use flannel_tests::containerd::{mounts_under, Containerd, RunSpec};
use flannel_tests::deploy::Manifest;
use serde_json::Value;

/// The reference `ci/image.sh` gives the image (and the manifest runs).
const IMAGE: &str = concat!("localhost/flannel-rs:", env!("CARGO_PKG_VERSION"));
const CONVERGE: Duration = Duration::from_secs(20);
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Node 2's stand-ins for the host paths and the ConfigMap the manifest
/// mounts: host path (or `configMap:<name>`) → a path under the node's dir.
struct HostPaths(Vec<(String, PathBuf)>);

impl HostPaths {
    /// The test's path for volume `name` of the manifest's pod.
    #[track_caller]
    fn of_volume(&self, m: &Manifest, name: &str) -> PathBuf {
        let v = m.volume(name);
        let key = match (
            v["hostPath"]["path"].as_str(),
            v["configMap"]["name"].as_str(),
        ) {
            (Some(p), _) => p.to_owned(),
            (None, Some(cm)) => format!("configMap:{cm}"),
            _ => panic!("volume {name}: neither hostPath nor configMap: {v}"),
        };
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| {
                panic!("the manifest mounts {key}, which this test does not provide")
            })
    }

    /// A container's mounts, as `ctr run` bind mounts.
    fn mounts(&self, m: &Manifest, container: &Value) -> Vec<(PathBuf, String)> {
        Manifest::mounts(container)
            .into_iter()
            .map(|(volume, at)| (self.of_volume(m, &volume), at))
            .collect()
    }
}

/// The manifest's environment for a container on node `node` (pod `pod`).
fn env_of(container: &Value, node: &str, pod: &str, namespace: &str) -> Vec<(String, String)> {
    Manifest::env(container)
        .into_iter()
        .map(|(k, v)| {
            let v = match v.as_str() {
                "fieldRef:spec.nodeName" => node.to_owned(),
                "fieldRef:metadata.name" => pod.to_owned(),
                "fieldRef:metadata.namespace" => namespace.to_owned(),
                other if other.starts_with("fieldRef:") => panic!("{k}: {other} not provided"),
                _ => v,
            };
            (k, v)
        })
        .collect()
}

fn archive() -> PathBuf {
    let path = std::env::var_os("FLANNEL_IMAGE_ARCHIVE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "FLANNEL_IMAGE_ARCHIVE is not set: build the image with ci/image.sh and set \
                 FLANNEL_IMAGE_ARCHIVE to the path it prints (ci/test.sh does both)"
            )
        });
    assert!(
        path.is_file(),
        "FLANNEL_IMAGE_ARCHIVE={} does not exist: build it with ci/image.sh",
        path.display()
    );
    path
}

fn mkdir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    p.to_owned()
}

fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// The bearer token and the CA (PEM) of the stand-in's kubeconfig.
fn token_and_ca(kubeconfig: &Path) -> (String, Vec<u8>) {
    use base64::Engine as _;
    let yaml = std::fs::read_to_string(kubeconfig)
        .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
    // The stand-in writes each value as a JSON string on its own line.
    let value = |key: &str| -> String {
        let line = yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {}:\n{yaml}", kubeconfig.display()));
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{key} {line}: {e}"))
    };
    let ca = base64::engine::general_purpose::STANDARD
        .decode(value("certificate-authority-data:"))
        .expect("kubeconfig's CA is base64");
    (value("token:"), ca)
}

#[test]
fn flanneld_and_the_plugin_from_the_image_join_a_native_cluster() {
    require_root();
    let archive = archive();
    let t0 = Instant::now();
    let mut c = Cluster::builder()
        .nodes(3)
        .store(StoreKind::Kube)
        .start(false)
        .build();
    c.start(0);
    c.start(1);

    let m = Manifest::load();
    let flanneld = m.flanneld();
    assert_eq!(
        flanneld["image"], IMAGE,
        "the manifest runs the image ci/image.sh builds"
    );
    let cni_conf = m.config_file("cni-conf.json");
    let healthz_port = m.flanneld()["readinessProbe"]["httpGet"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("the readiness probe's port");

    // Node 2's host: its /run/flannel is its node dir (subnet.env); the
    // other host paths and the ConfigMap are directories under it.
    let node_dir = c.node(2).dir.clone();
    let host = mkdir(&node_dir.join("host"));
    let cni_bin_dir = mkdir(&host.join("opt/cni/bin"));
    let cni_conf_dir = mkdir(&host.join("etc/cni/net.d"));
    let cfg = mkdir(&host.join("kube-flannel-cfg"));
    for key in ["cni-conf.json", "net-conf.json"] {
        write(&cfg.join(key), m.config_file(key));
    }
    let sa = mkdir(&host.join("serviceaccount"));
    let (token, ca) = token_and_ca(c.kube().kubeconfig());
    write(&sa.join("token"), &token);
    std::fs::write(sa.join("ca.crt"), ca).expect("write ca.crt");
    write(&sa.join("namespace"), "kube-flannel");
    let xtables_lock = host.join("xtables.lock");
    write(&xtables_lock, "");
    let paths = HostPaths(vec![
        ("/run/flannel".into(), node_dir.clone()),
        ("/opt/cni/bin".into(), cni_bin_dir.clone()),
        ("/etc/cni/net.d".into(), cni_conf_dir.clone()),
        ("/run/xtables.lock".into(), xtables_lock.clone()),
        ("configMap:kube-flannel-cfg".into(), cfg.clone()),
    ]);

    // Declared after the cluster: dropped (containers, containerd) first.
    let mut ctrd = Containerd::start(&c.dir().join("ctrd"));
    let t_import = Instant::now();
    let names = ctrd.import(&archive);
    assert!(
        names.iter().any(|n| n == IMAGE),
        "{} brought {names:?}, not {IMAGE}",
        archive.display()
    );
    eprintln!("image imported in {:?}", t_import.elapsed());

    // The init containers, in order, as the manifest writes them.
    let inits = m.pod_spec()["initContainers"]
        .as_array()
        .expect("init containers")
        .clone();
    for init in &inits {
        let id = init["name"].as_str().expect("init container name");
        assert_eq!(init["image"], IMAGE, "{id}");
        let spec = RunSpec {
            mounts: paths.mounts(&m, init),
            ..RunSpec::default()
        };
        let argv = Manifest::command_line(init);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = ctrd.run(id, IMAGE, &spec, &argv);
        assert!(out.success(), "init container {id}: {out}");
        eprintln!("init container {id}: {}", out.stderr.trim());
    }
    let plugin = cni_bin_dir.join("flannel");
    let conflist = cni_conf_dir.join("10-flannel.conflist");
    assert_eq!(
        std::fs::read_to_string(&conflist).expect("read the installed conflist"),
        cni_conf
    );

    // flanneld from the image on node 2.
    let node2 = c.node(2).name.clone();
    let caps = flanneld["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_ne!(flanneld["securityContext"]["privileged"], true);
    let mut mounts = paths.mounts(&m, flanneld);
    // In a cluster, the kubelet mounts the service account's token.
    mounts.push((sa.clone(), SERVICE_ACCOUNT.into()));
    let mut env = env_of(
        flanneld,
        &node2,
        &format!("kube-flannel-rs-ds-{node2}"),
        "kube-flannel",
    );
    // ... and sets where the API is.
    env.push(("KUBERNETES_SERVICE_HOST".into(), UNDERLAY_GATEWAY.into()));
    env.push(("KUBERNETES_SERVICE_PORT".into(), KUBE_API_PORT.to_string()));
    let spec = RunSpec {
        netns: Some(c.node(2).ns.path().to_owned()),
        cap_add: caps,
        mounts,
        env,
    };
    let argv = Manifest::command_line(flanneld);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let log = host.join("kube-flannel.log");
    ctrd.spawn("kube-flannel", IMAGE, &spec, &argv, &log);
    let container_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let subnet_env = c.node(2).subnet_file();
    let deadline = Instant::now() + CONVERGE;
    while !subnet_env.exists() {
        assert!(
            ctrd.is_running("kube-flannel"),
            "flanneld's container exited; its log:\n{}",
            container_log()
        );
        assert!(
            Instant::now() < deadline,
            "no {} within {CONVERGE:?}; the container's log:\n{}",
            subnet_env.display(),
            container_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_ready(0);
    c.wait_ready(1);
    eventually(CONVERGE, "node 2's /readyz 200", || {
        match http_status(&c.node(2).ns, healthz_port, "/readyz")? {
            200 => Ok(()),
            other => Err(format!("/readyz {other}; log:\n{}", container_log())),
        }
    });
    eprintln!("node 2 ready from the image after {:?}", t0.elapsed());
    // --ip-masq: the image's nft wrote the table, under NET_ADMIN alone.
    let table = c
        .node(2)
        .ns
        .exec("nft", &["list", "table", "ip", "flannel-rs"]);
    assert!(
        table.success() && table.stdout.contains("masquerade"),
        "no masquerade table on node 2: {table}\ncontainer log:\n{}",
        container_log()
    );

    // Pods: nodes 0 and 1 by the cluster's plugin, node 2 by the installed
    // one with the installed conflist's flannel entry.
    let list: Value = serde_json::from_str(cni_conf).expect("conflist JSON");
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["subnetFile"] = Value::from(subnet_env.to_string_lossy().into_owned());
    conf["dataDir"] = Value::from(c.node(2).data_dir().to_string_lossy().into_owned());
    let pod = Pod::new();
    let out = CniCall::new(&plugin, Some(&c.node(2).ns))
        .command("ADD")
        .env("CNI_PATH", REFERENCE_CNI_PATH)
        .pod(&pod)
        .config(&conf)
        .run();
    assert_eq!(out.code(), Some(0), "ADD by the installed plugin: {out}");
    let result: Value = serde_json::from_str(out.stdout()).expect("ADD result JSON");
    let installed = ClusterPod::from_result(2, pod, result).expect("ADD result's IP");
    let pods: Vec<ClusterPod> = vec![c.add_pod(0), c.add_pod(1), installed];
    c.wait_all_converged(CONVERGE);
    for a in &pods {
        for b in &pods {
            if a.node != b.node {
                c.wait_ping(a, b.ip, CONVERGE);
                c.wait_tcp(a, b, CONVERGE);
            }
        }
    }
    assert!(
        ctrd.is_running("kube-flannel"),
        "flanneld's container exited; its log:\n{}",
        container_log()
    );
    eprintln!("every pod reaches every other after {:?}", t0.elapsed());

    // SIGTERM, as the kubelet stops it; --rm removes the container.
    ctrd.stop("kube-flannel", Duration::from_secs(10));
    drop(pods);
    let ctrd_dir = c.dir().join("ctrd");
    drop(ctrd);
    assert_eq!(
        mounts_under(&ctrd_dir),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    assert!(!ctrd_dir.exists(), "{} left", ctrd_dir.display());
}
