//! `deploy/kube-flannel-rs.yml` against flanneld itself: every object is a
//! well-typed Kubernetes object, net-conf.json is what flanneld parses, the
//! DaemonSet's arguments and environment are what flanneld accepts, and the
//! probes, mounts and init containers line up with flanneld's flags and
//! defaults. (Offline schema validation: `ci/validate-manifests.sh`; the
//! conflist through the real plugin: cni-plugin/tests/deploy.rs; RBAC
//! against flanneld's real requests: the e2e_kube suite.)

use clap::{CommandFactory, Parser};
use flannel_tests::deploy::Manifest;
use flanneld::cli::Cli;
use flanneld::netconf::NetConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn typed<T: serde::de::DeserializeOwned>(m: &Manifest, kind: &str) -> Vec<T> {
    m.objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap_or_else(|e| panic!("{kind}: {e}\n{o:#}")))
        .collect()
}

#[test]
fn every_object_is_a_well_typed_kubernetes_object() {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    let m = Manifest::load();
    let kinds: Vec<&str> = m
        .objects
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    let ns: Vec<core::Namespace> = typed(&m, "Namespace");
    let labels = ns[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(ns[0].metadata.name.as_deref(), Some("kube-flannel"));
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged")
    );
    let _: Vec<core::ServiceAccount> = typed(&m, "ServiceAccount");
    let _: Vec<rbac::ClusterRole> = typed(&m, "ClusterRole");
    let bindings: Vec<rbac::ClusterRoleBinding> = typed(&m, "ClusterRoleBinding");
    let subject = &bindings[0].subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "flannel")
    );
    assert_eq!(subject.namespace.as_deref(), Some("kube-flannel"));
    assert_eq!(bindings[0].role_ref.name, "flannel");
    let _: Vec<core::ConfigMap> = typed(&m, "ConfigMap");
    let ds: Vec<apps::DaemonSet> = typed(&m, "DaemonSet");
    let spec = ds[0].spec.as_ref().expect("DaemonSet spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("flannel"));
    let tolerates_all_noschedule = pod.tolerations.iter().flatten().any(|t| {
        t.operator.as_deref() == Some("Exists")
            && t.key.is_none()
            && t.effect.as_deref() == Some("NoSchedule")
    });
    assert!(tolerates_all_noschedule, "{:?}", pod.tolerations);
    // The selector selects the template.
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let template = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone());
    let template = template.unwrap_or_default();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(template.get(k), Some(v), "selector {k}={v}");
    }
}

#[test]
fn net_conf_json_is_what_flanneld_parses() {
    let m = Manifest::load();
    let conf = NetConfig::parse(m.config_file("net-conf.json")).expect("net-conf.json parses");
    assert_eq!(
        conf.v4().expect("ipv4").network.to_string(),
        "10.244.0.0/16"
    );
    assert_eq!(conf.v4().expect("ipv4").subnet_len, 24);
}

#[test]
fn the_conflist_names_flannel_and_portmap_as_kube_flannel_yml_does() {
    let m = Manifest::load();
    let conflist: Value =
        serde_json::from_str(m.config_file("cni-conf.json")).expect("cni-conf.json is JSON");
    assert_eq!(conflist["name"], "cbr0");
    let types: Vec<&str> = conflist["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["flannel", "portmap"]);
    assert_eq!(
        conflist["plugins"][1]["capabilities"]["portMappings"],
        Value::Bool(true)
    );
}

/// flanneld's command line as the DaemonSet gives it.
fn flanneld_cli(m: &Manifest) -> Cli {
    let line = Manifest::command_line(m.flanneld());
    assert_eq!(line[0], "/opt/bin/flanneld", "the image's flanneld path");
    Cli::try_parse_from(&line).unwrap_or_else(|e| panic!("flanneld rejects {line:?}: {e}"))
}

#[test]
fn the_daemonsets_args_and_env_are_what_flanneld_accepts() {
    let m = Manifest::load();
    let cli = flanneld_cli(&m);
    assert!(cli.ip_masq && cli.kube_subnet_mgr);
    assert_ne!(cli.healthz_port, 0, "the probes need /healthz and /readyz");

    // Every variable is one flanneld reads: its identity from the downward
    // API, or a FLANNELD_<FLAG>.
    let flags: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let env: BTreeMap<String, String> = Manifest::env(m.flanneld()).into_iter().collect();
    for name in env.keys() {
        assert!(
            ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"].contains(&name.as_str())
                || flags.contains(name),
            "flanneld does not read {name}"
        );
    }
    assert_eq!(
        env.get("NODE_NAME").map(String::as_str),
        Some("fieldRef:spec.nodeName")
    );
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("fieldRef:metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("fieldRef:metadata.namespace")
    );
}

#[test]
fn the_probes_ask_flanneld_where_it_serves() {
    let m = Manifest::load();
    let cli = flanneld_cli(&m);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &m.flanneld()[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], u64::from(cli.healthz_port), "{probe}");
        // Served on loopback only: the probe must ask there.
        assert_eq!(get["host"], cli.healthz_ip.to_string(), "{probe}");
    }
}

#[test]
fn flanneld_is_not_privileged_and_has_only_net_admin_and_net_raw() {
    let m = Manifest::load();
    let sc = &m.flanneld()["securityContext"];
    assert_ne!(sc["privileged"], Value::Bool(true));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert!(m.flanneld()["resources"]["limits"]["memory"].is_string());
    assert!(m.flanneld()["resources"]["requests"]["memory"].is_string());
}

/// The host path a container sees at `path` (the mount that contains it),
/// or the ConfigMap key when the mount is the ConfigMap.
fn source_of(m: &Manifest, container: &Value, path: &str) -> String {
    let (volume, mount) = Manifest::mounts(container)
        .into_iter()
        .filter(|(_, at)| Path::new(path).starts_with(at))
        .max_by_key(|(_, at)| at.len())
        .unwrap_or_else(|| panic!("nothing is mounted over {path}"));
    let rest = Path::new(path)
        .strip_prefix(&mount)
        .expect("prefix")
        .to_string_lossy()
        .into_owned();
    let v = m.volume(&volume);
    if let Some(host) = v["hostPath"]["path"].as_str() {
        if rest.is_empty() {
            return host.to_owned();
        }
        return Path::new(host).join(rest).to_string_lossy().into_owned();
    }
    let cm = v["configMap"]["name"]
        .as_str()
        .expect("hostPath or configMap");
    format!("configMap:{cm}/{rest}")
}

#[test]
fn the_mounts_hold_what_flanneld_reads_and_writes() {
    let m = Manifest::load();
    let cli = flanneld_cli(&m);
    let c = m.flanneld();
    let subnet_file = cli.subnet_file.to_string_lossy();
    assert_eq!(
        source_of(&m, c, &subnet_file),
        "/run/flannel/subnet.env",
        "subnet.env must reach the host, where the plugin reads it"
    );
    let net_conf = cli.net_config_path.to_string_lossy();
    assert_eq!(
        source_of(&m, c, &net_conf),
        "configMap:kube-flannel-cfg/net-conf.json"
    );
    assert_eq!(
        source_of(&m, c, "/run/xtables.lock"),
        "/run/xtables.lock",
        "shared with kube-proxy"
    );
}

#[test]
fn the_init_containers_install_the_plugin_and_the_conflist_on_the_host() {
    let m = Manifest::load();
    let plugin = m.container("install-cni-plugin");
    let line = Manifest::command_line(plugin);
    assert_eq!(line[..2], ["/flannel", "install-plugin"]);
    assert_eq!(source_of(&m, plugin, &line[2]), "/opt/cni/bin/flannel");

    let conf = m.container("install-cni");
    let line = Manifest::command_line(conf);
    assert_eq!(line[..2], ["/flannel", "install-conflist"]);
    assert_eq!(
        source_of(&m, conf, &line[2]),
        "configMap:kube-flannel-cfg/cni-conf.json"
    );
    assert_eq!(
        source_of(&m, conf, &line[3]),
        "/etc/cni/net.d/10-flannel.conflist"
    );
    // One image for all three.
    for c in [plugin, conf] {
        assert_eq!(c["image"], m.flanneld()["image"]);
    }
}

#[test]
fn a_switch_can_apply_the_daemonset_alone_and_steer_it_by_node_label() {
    let m = Manifest::load();
    // `kubectl apply -l app=flannel-rs` picks the DaemonSet and nothing else
    // (upstream's Namespace, ServiceAccount, ClusterRole, ConfigMap stay).
    let picked: Vec<&str> = m
        .objects
        .iter()
        .filter(|o| o["metadata"]["labels"]["app"] == "flannel-rs")
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(picked, ["DaemonSet"]);
    // Linux nodes not labelled flannel-rs=false.
    let terms = &m.pod_spec()["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(
        terms,
        &serde_json::json!([{"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "flannel-rs", "operator": "NotIn", "values": ["false"]},
        ]}])
    );
}
