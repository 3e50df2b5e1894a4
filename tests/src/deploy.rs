//! `deploy/kube-flannel-rs.yml`, read as the tests need it: the objects by
//! kind and name, the ConfigMap's files, the DaemonSet's containers, and
//! the ClusterRole's rules with the RBAC verb of an API request.
//!
//! Tests use it to hold the manifest to what the product really does: the
//! conflist and net-conf.json are what the plugin and flanneld parse, the
//! DaemonSet's arguments are flags flanneld accepts, the ClusterRole allows
//! every request flanneld makes, and the image test runs flanneld with the
//! manifest's own arguments, environment and mounts.
//!
//! It reads the manifest; it never applies it anywhere or rewrites it.

use flannel_cluster::kube_api::RequestRecord;
use serde_json::Value;
use std::path::PathBuf;

/// The manifest's path in this repository.
pub fn manifest_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("kube-flannel-rs.yml")
}

/// The objects of one multi-document YAML file, as JSON values.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub objects: Vec<Value>,
}

/// One ClusterRole rule (core API group only matters here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

/// What RBAC sees of an API request: the resource (with its subresource,
/// `nodes/status`), the verb, and the API group (`""` for core).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub api_group: String,
    pub resource: String,
    pub verb: String,
}

impl Manifest {
    /// Reads and parses `deploy/kube-flannel-rs.yml`; panics with the reason.
    #[track_caller]
    pub fn load() -> Manifest {
        let path = manifest_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Manifest::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| format!("parse YAML: {e}"))?;
        Ok(Manifest {
            objects: docs.into_iter().filter(|d| !d.is_null()).collect(),
        })
    }

    /// The object of `kind` named `name`.
    #[track_caller]
    pub fn object(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the manifest has no {kind} {name}"))
    }

    /// The only object of `kind`.
    #[track_caller]
    pub fn only(&self, kind: &str) -> &Value {
        let all: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(all.len(), 1, "the manifest should have one {kind}");
        all[0]
    }

    /// A file of the ConfigMap `kube-flannel-cfg`.
    #[track_caller]
    pub fn config_file(&self, key: &str) -> &str {
        self.object("ConfigMap", "kube-flannel-cfg")["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap kube-flannel-cfg has no {key}"))
    }

    /// The DaemonSet's pod spec.
    pub fn pod_spec(&self) -> &Value {
        &self.only("DaemonSet")["spec"]["template"]["spec"]
    }

    /// The container (or init container) called `name`.
    #[track_caller]
    pub fn container(&self, name: &str) -> &Value {
        let spec = self.pod_spec();
        ["containers", "initContainers"]
            .iter()
            .filter_map(|k| spec[*k].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no container {name}"))
    }

    /// The flanneld container.
    pub fn flanneld(&self) -> &Value {
        self.container("kube-flannel")
    }

    /// A container's command and args, in order.
    pub fn command_line(container: &Value) -> Vec<String> {
        ["command", "args"]
            .iter()
            .filter_map(|k| container[*k].as_array())
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// A container's environment: name → the literal value, or the
    /// downward-API field path as `fieldRef:<path>`.
    pub fn env(container: &Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                let value = match (
                    e["value"].as_str(),
                    e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                ) {
                    (Some(v), _) => v.to_owned(),
                    (None, Some(p)) => format!("fieldRef:{p}"),
                    (None, None) => String::new(),
                };
                (name, value)
            })
            .collect()
    }

    /// A container's mounts: volume name → mount path.
    pub fn mounts(container: &Value) -> Vec<(String, String)> {
        container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_owned(),
                    m["mountPath"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The pod's volume called `name`.
    #[track_caller]
    pub fn volume(&self, name: &str) -> &Value {
        self.pod_spec()["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no volume {name}"))
    }

    /// The ClusterRole `flannel`'s rules.
    pub fn rules(&self) -> Vec<Rule> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        self.object("ClusterRole", "flannel")["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Rule {
                api_groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
            })
            .collect()
    }

    /// Does the ClusterRole allow `access`?
    pub fn allows(&self, access: &Access) -> bool {
        self.rules().iter().any(|r| {
            r.api_groups
                .iter()
                .any(|g| g == &access.api_group || g == "*")
                && r.resources
                    .iter()
                    .any(|x| x == &access.resource || x == "*")
                && r.verbs.iter().any(|v| v == &access.verb || v == "*")
        })
    }
}

/// The RBAC view of a request to the API, as the API server's request-info
/// resolver derives it: `GET` of a collection is `list` (`watch` with
/// `watch=true`), of one object `get`; `PATCH` is `patch`, and so on.
/// `None` for paths that are not resource requests (`/version`, ...).
pub fn access_of(r: &RequestRecord) -> Option<Access> {
    let path = r.path_only();
    let (api_group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        (String::new(), rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let mut it = rest.splitn(3, '/');
        let group = it.next()?.to_owned();
        let _version = it.next()?;
        (group, it.next()?)
    };
    let mut parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.first() == Some(&"namespaces") && parts.len() >= 3 {
        parts.drain(..2);
    }
    let (resource, named) = match parts.as_slice() {
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => return None,
    };
    let watch = r
        .query_param("watch")
        .is_some_and(|w| w == "true" || w == "1");
    let verb = match (r.method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => return None,
    };
    Some(Access {
        api_group,
        resource,
        verb: verb.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> RequestRecord {
        RequestRecord {
            method: method.into(),
            path: path.into(),
            content_type: None,
            user_agent: None,
            body: String::new(),
            status: 200,
        }
    }

    fn access(group: &str, resource: &str, verb: &str) -> Option<Access> {
        Some(Access {
            api_group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
        })
    }

    #[test]
    fn requests_map_to_rbac_verbs_as_the_api_server_resolves_them() {
        let cases = [
            (
                "GET",
                "/api/v1/nodes?limit=500",
                access("", "nodes", "list"),
            ),
            (
                "GET",
                "/api/v1/nodes?watch=true&resourceVersion=5",
                access("", "nodes", "watch"),
            ),
            ("GET", "/api/v1/nodes/n1", access("", "nodes", "get")),
            (
                "PATCH",
                "/api/v1/nodes/n1/status",
                access("", "nodes/status", "patch"),
            ),
            (
                "GET",
                "/api/v1/namespaces/kube-flannel/pods/p1",
                access("", "pods", "get"),
            ),
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/y",
                access("coordination.k8s.io", "leases", "get"),
            ),
            ("GET", "/version", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(access_of(&req(method, path)), want, "{method} {path}");
        }
    }

    #[test]
    fn the_cluster_role_allows_only_what_it_lists() {
        let m = Manifest::load();
        assert!(m.allows(&Access {
            api_group: String::new(),
            resource: "nodes/status".into(),
            verb: "patch".into()
        }));
        for (res, verb) in [("nodes", "patch"), ("nodes", "update"), ("pods", "list")] {
            assert!(
                !m.allows(&Access {
                    api_group: String::new(),
                    resource: res.into(),
                    verb: verb.into()
                }),
                "{res} {verb} should not be granted"
            );
        }
    }
}
