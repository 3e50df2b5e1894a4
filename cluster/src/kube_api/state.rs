//! The test-facing API of a running stand-in: synchronous, thread-safe
//! reads and writes of its objects (each write is a new resourceVersion
//! and a watch event, as through the HTTP API), the request log, and the
//! faults.
//!
//! It goes through the same store as the HTTP API; it opens no listener and
//! never bypasses the history the watches read.

use serde_json::{Map, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::faults::{DownMode, RequestRecord};
use super::fixtures;
use super::object::{self, Kind};
use super::patch;
use super::server::KubeApiServer;

/// Sets the value at JSON pointer `ptr` in `doc`, creating objects on the
/// way; `null` removes the key.
fn set_pointer(doc: &mut Value, ptr: &str, value: Value) -> Result<(), String> {
    let tokens: Vec<String> = ptr
        .strip_prefix('/')
        .ok_or_else(|| format!("JSON pointer {ptr:?} must start with '/'"))?
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().ok_or("empty JSON pointer")?;
    let mut cur = doc;
    for t in parents {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Object(m) => m.entry(t.clone()).or_insert(Value::Null),
            Value::Array(a) => t
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(|| format!("{ptr}: no element {t}"))?,
            _ => return Err(format!("{ptr}: {t} is inside a scalar")),
        };
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    match cur {
        Value::Object(m) if value.is_null() => {
            m.remove(last);
        }
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let slot = last
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(|| format!("{ptr}: no element {last}"))?;
            *slot = value;
        }
        _ => return Err(format!("{ptr}: the parent is a scalar")),
    }
    Ok(())
}

impl KubeApiServer {
    fn update_with(
        &self,
        kind: Kind,
        key: &str,
        f: impl FnOnce(&mut Value) -> Result<(), String>,
    ) -> Result<Value, String> {
        self.shared
            .store
            .update(kind, key, |cur| {
                let mut new = cur.clone();
                f(&mut new).map_err(super::respond::ApiError::bad_request)?;
                object::carry_identity(cur, &mut new);
                Ok(new)
            })
            .map(|v| (*v).clone())
            .map_err(|e| format!("update {} {key}: {}", kind.plural(), e.message))
    }

    /// Creates Node `node` (kind/apiVersion/uid/creationTimestamp and the
    /// resourceVersion are set here); an error if it exists.
    pub fn create_node(&self, node: Value) -> Result<Value, String> {
        let name = object::name(&node).to_owned();
        self.shared
            .store
            .create(Kind::Node, None, node)
            .map(|v| (*v).clone())
            .map_err(|e| format!("create node {name:?}: {}", e.message))
    }

    /// Creates many Nodes (e.g. [`fixtures::realistic_nodes`]).
    pub fn create_nodes(&self, nodes: Vec<Value>) -> Result<(), String> {
        for n in nodes {
            let name = object::name(&n).to_owned();
            self.shared
                .store
                .create(Kind::Node, None, n)
                .map_err(|e| format!("create node {name:?}: {}", e.message))?;
        }
        Ok(())
    }

    /// Creates `node`, or replaces the Node of that name whatever its
    /// resourceVersion (spec, status and metadata alike).
    pub fn put_node(&self, node: Value) -> Result<Value, String> {
        let name = object::name(&node).to_owned();
        self.shared
            .store
            .put(Kind::Node, node)
            .map(|v| (*v).clone())
            .map_err(|e| format!("put node {name:?}: {}", e.message))
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        KubeApiServer::get_value(self.shared.store.get(Kind::Node, name))
    }

    pub fn node_count(&self) -> usize {
        self.shared.store.count(Kind::Node)
    }

    /// Deletes Node `name`; its last state, or `None` if there was none.
    pub fn delete_node(&self, name: &str) -> Option<Value> {
        self.shared
            .store
            .delete(Kind::Node, name)
            .ok()
            .map(|v| (*v).clone())
    }

    /// A JSON merge patch (RFC 7386) of the whole Node: metadata, spec and
    /// status alike (a controller's write, not an API client's).
    pub fn patch_node(&self, name: &str, merge_patch: &Value) -> Result<Value, String> {
        self.update_with(Kind::Node, name, |n| {
            patch::merge_patch(n, merge_patch);
            Ok(())
        })
    }

    /// Sets the value at JSON pointer `ptr` (`/spec/podCIDR`) in Node
    /// `name`; `null` removes it.
    pub fn set_node_field(&self, name: &str, ptr: &str, value: Value) -> Result<Value, String> {
        self.update_with(Kind::Node, name, |n| set_pointer(n, ptr, value))
    }

    /// Sets (or, with `None`, removes) annotation `key` of Node `name`.
    pub fn set_node_annotation(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<Value, String> {
        let ptr = format!(
            "/metadata/annotations/{}",
            key.replace('~', "~0").replace('/', "~1")
        );
        self.set_node_field(name, &ptr, value.map_or(Value::Null, Value::from))
    }

    /// Creates Pod `ns/name` on `node_name` ([`fixtures::pod`]); an error
    /// if it exists.
    pub fn create_pod(&self, ns: &str, name: &str, node_name: &str) -> Result<Value, String> {
        self.shared
            .store
            .create(Kind::Pod, Some(ns), fixtures::pod(ns, name, node_name))
            .map(|v| (*v).clone())
            .map_err(|e| format!("create pod {ns}/{name}: {}", e.message))
    }

    /// Creates or replaces `pod` (namespace `default` when it names none).
    pub fn put_pod(&self, pod: Value) -> Result<Value, String> {
        let key = object::key_of(Kind::Pod, &pod);
        self.shared
            .store
            .put(Kind::Pod, pod)
            .map(|v| (*v).clone())
            .map_err(|e| format!("put pod {key}: {}", e.message))
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        KubeApiServer::get_value(
            self.shared
                .store
                .get(Kind::Pod, &object::key(Some(ns), name)),
        )
    }

    pub fn delete_pod(&self, ns: &str, name: &str) -> Option<Value> {
        let key = object::key(Some(ns), name);
        self.shared
            .store
            .delete(Kind::Pod, &key)
            .ok()
            .map(|v| (*v).clone())
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.resource_version()
    }

    /// The requests seen (the most recent, up to the log limit), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.all()
    }

    /// Those with `method` whose path (without query) starts with `prefix`.
    pub fn requests_to(&self, method: &str, prefix: &str) -> Vec<RequestRecord> {
        let mut r = self.requests();
        r.retain(|x| x.method == method && x.path_only().starts_with(prefix));
        r
    }

    /// How many requests were seen since start (or the last clear).
    pub fn request_count(&self) -> u64 {
        self.shared.log.total()
    }

    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Ends every open watch stream now, abruptly (the connection is cut
    /// mid-stream, as when an apiserver goes away).
    pub fn drop_watches(&self) {
        self.shared.faults.drop_watches();
    }

    /// Makes every resourceVersion handed out so far too old (a
    /// compaction): a watch or exact list from one gets 410 Expired. Open
    /// watches go on.
    pub fn expire_resource_versions(&self) {
        self.shared.store.compact();
    }

    /// Answers the next `n` requests with 500 InternalError.
    pub fn fail_next(&self, n: u32) {
        self.shared.faults.fail_next(n);
    }

    /// Answers every request with 500 InternalError until `false`.
    pub fn fail_all(&self, on: bool) {
        self.shared.faults.fail_all(on);
    }

    /// Takes the API down (`Some`) or back up (`None`).
    pub fn set_down(&self, mode: Option<DownMode>) {
        self.shared.faults.set_down(mode);
    }

    /// Delays every answer by `d` (zero: none).
    pub fn set_delay(&self, d: Duration) {
        self.shared.faults.set_delay(d);
    }

    /// Pauses (`true`) or resumes the node IPAM controller: while paused,
    /// new Nodes get no podCIDR (as with kube-controller-manager down).
    pub fn pause_node_ipam(&self, paused: bool) {
        self.shared.ipam_paused.send_replace(paused);
    }

    /// Clears failures, delay and downtime.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers() {
        let mut d = json!({"spec": {}, "l": [1]});
        set_pointer(&mut d, "/metadata/annotations/a~1b", json!("x")).expect("set");
        set_pointer(&mut d, "/l/0", json!(2)).expect("set");
        set_pointer(&mut d, "/spec", Value::Null).expect("remove");
        assert_eq!(
            d,
            json!({"metadata": {"annotations": {"a/b": "x"}}, "l": [2]})
        );
        assert!(set_pointer(&mut d, "nope", json!(1)).is_err());
        assert!(set_pointer(&mut d, "/l/5", json!(1)).is_err());
    }
}
