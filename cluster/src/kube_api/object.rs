//! The kinds of object the stand-in serves (Nodes, cluster-scoped; Pods,
//! namespaced) and what the server owns in them: URL and list names, store
//! keys, the system fields it stamps (uid, creationTimestamp,
//! resourceVersion), name validation, which subresource may change which
//! part, and the values field selectors compare.
//!
//! Rules and values only: no HTTP, no store.

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::respond::ApiError;

/// A resource type of the core/v1 group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Node,
    Pod,
}

impl Kind {
    /// Its name in URLs (`nodes`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Pod => "pods",
        }
    }

    /// `kind` of one object (`Node`).
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
        }
    }

    /// `kind` of a list (`NodeList`).
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Node => "NodeList",
            Kind::Pod => "PodList",
        }
    }

    pub fn namespaced(self) -> bool {
        self == Kind::Pod
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Kind::Node => 0,
            Kind::Pod => 1,
        }
    }
}

/// Which endpoint of an object a write came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `nodes/NAME`: may change metadata and spec; status is kept.
    Main,
    /// `nodes/NAME/status`: may change metadata and status; spec is kept.
    Status,
}

/// The store key: `name`, or `namespace/name` for namespaced kinds.
pub fn key(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// The key of a stored object of `kind`.
pub fn key_of(kind: Kind, obj: &Value) -> String {
    let ns = if kind.namespaced() {
        Some(namespace(obj).unwrap_or("default"))
    } else {
        None
    };
    key(ns, name(obj))
}

/// `metadata` of `obj`, created when missing (callers check first that
/// `obj` is an object; anything else is replaced by one).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let Value::Object(map) = obj else {
        unreachable!("made an object above")
    };
    let m = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    match m {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

pub fn set_resource_version(obj: &mut Value, rv: u64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// A name as the apiserver accepts it for Nodes and Pods: a lowercase
/// RFC 1123 subdomain (at most 253 characters of `a-z 0-9 - .`, each
/// dot-separated label starting and ending alphanumeric).
pub fn validate_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() {
        return Err("name or generateName is required".into());
    }
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a new object's shape and stamps what the server owns: kind,
/// apiVersion, namespace (from the URL), name (from generateName), uid,
/// creationTimestamp and `rv`. Returns its store key.
pub fn prepare_create(
    kind: Kind,
    url_ns: Option<&str>,
    obj: &mut Value,
    rv: u64,
) -> Result<String, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            kind.kind()
        )));
    }
    check_type_meta(kind, obj)?;
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), kind.kind().into());
    }
    let m = meta_mut(obj);
    if m.get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
            let generated = format!("{prefix}{}", random_suffix());
            m.insert("name".into(), generated.into());
        }
    }
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    validate_name(&name)
        .map_err(|e| ApiError::invalid(kind, &name, &format!("metadata.name: {e}")))?;
    if kind.namespaced() {
        let ns = match (url_ns, m.get("namespace").and_then(Value::as_str)) {
            (Some(u), Some(b)) if u != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(u), _) => u.to_owned(),
            (None, Some(b)) => b.to_owned(),
            (None, None) => "default".to_owned(),
        };
        m.insert("namespace".into(), ns.into());
    } else {
        m.remove("namespace");
    }
    m.insert("uid".into(), new_uid().into());
    m.insert("creationTimestamp".into(), now_rfc3339().into());
    m.insert("resourceVersion".into(), rv.to_string().into());
    m.remove("deletionTimestamp");
    Ok(key_of(kind, obj))
}

/// `kind`/`apiVersion` in a body, when present, must be this kind's.
pub fn check_type_meta(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != kind.kind() {
            return Err(ApiError::bad_request(format!(
                "the kind of the body ({k}) is not {} as the URL says",
                kind.kind()
            )));
        }
    }
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str) {
        if v != "v1" {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the body ({v}) is not v1"
            )));
        }
    }
    Ok(())
}

/// Copies what an update may not change from the stored object `old` into
/// `new`: kind, apiVersion, name, namespace, uid, creationTimestamp; and,
/// by subresource, spec (status writes) or status (main writes).
pub fn carry_server_fields(sub: Subresource, old: &Value, new: &mut Value) {
    let keep = match sub {
        Subresource::Main => "status",
        Subresource::Status => "spec",
    };
    if let (Some(n), Some(o)) = (new.as_object_mut(), old.as_object()) {
        match o.get(keep) {
            Some(v) => n.insert(keep.into(), v.clone()),
            None => n.remove(keep),
        };
    }
    carry_identity(old, new);
}

/// Copies kind, apiVersion, name, namespace, uid, creationTimestamp and
/// deletionTimestamp from `old` into `new`.
pub fn carry_identity(old: &Value, new: &mut Value) {
    if let (Some(n), Some(o)) = (new.as_object_mut(), old.as_object()) {
        for field in ["apiVersion", "kind"] {
            match o.get(field) {
                Some(v) => n.insert(field.into(), v.clone()),
                None => n.remove(field),
            };
        }
    }
    let old_meta = meta(old).cloned().unwrap_or_default();
    let m = meta_mut(new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
}

/// The value a field selector compares for `field`, or `None` when the
/// apiserver does not support selecting on it for this kind.
pub fn field_value(kind: Kind, obj: &Value, field: &str) -> Option<String> {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match (kind, field) {
        (_, "metadata.name") => Some(name(obj).to_owned()),
        (_, "metadata.namespace") => Some(namespace(obj).unwrap_or("").to_owned()),
        (Kind::Node, "spec.unschedulable") => Some(
            obj.pointer("/spec/unschedulable")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                .to_string(),
        ),
        (Kind::Pod, "spec.nodeName") => Some(s("/spec/nodeName")),
        (Kind::Pod, "spec.restartPolicy") => Some(s("/spec/restartPolicy")),
        (Kind::Pod, "spec.schedulerName") => Some(s("/spec/schedulerName")),
        (Kind::Pod, "spec.serviceAccountName") => Some(s("/spec/serviceAccountName")),
        (Kind::Pod, "status.phase") => Some(s("/status/phase")),
        (Kind::Pod, "status.podIP") => Some(s("/status/podIP")),
        _ => None,
    }
}

/// Now as RFC 3339 in UTC, to the second (`2024-05-01T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A random-looking version-4 UUID (unique within the process).
pub fn new_uid() -> String {
    let (a, b) = (next_random(), next_random());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// Five characters of `[a-z0-9]`, as generateName appends.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = next_random();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize];
            r /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// SplitMix64 over a process-wide counter seeded from the clock and PID.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id()) << 32;
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_uids() {
        assert!(validate_name("node-1.example").is_ok());
        assert!(validate_name("Node").is_err());
        assert!(validate_name("-a").is_err());
        assert!(validate_name("a..b").is_err());
        let (u1, u2) = (new_uid(), new_uid());
        assert_ne!(u1, u2);
        assert_eq!(u1.len(), 36);
        let ts = now_rfc3339();
        assert!(
            ts.len() == 20 && ts.ends_with('Z') && ts.starts_with("20"),
            "{ts}"
        );
    }
}
