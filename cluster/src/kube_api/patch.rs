//! PATCH bodies by Content-Type: JSON merge patch (RFC 7386: `null`
//! deletes a key, objects merge, anything else replaces), strategic merge
//! patch (merge patch, except that lists with a patchMergeKey merge element
//! by element on that key, `metadata.finalizers` merges as a set, and the
//! `$patch` directives `replace`/`delete` apply; `$setElementOrder/…`,
//! `$retainKeys` and `$deleteFromPrimitiveList/…` are dropped), and JSON
//! patch (RFC 6902, by the `json-patch` crate). Server-side apply is not
//! served (415).
//!
//! Pure functions on JSON values: the store write and the version stamp are
//! the caller's.

use serde_json::{Map, Value};

use super::object::Kind;
use super::respond::ApiError;

/// A PATCH body's type, from its Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    pub fn from_content_type(ct: Option<&str>) -> Result<PatchType, ApiError> {
        let ct = ct.unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/json-patch+json" => Ok(PatchType::Json),
            _ => Err(ApiError::unsupported_media(ct)),
        }
    }
}

/// `current` with the patch `body` of type `pt` applied.
pub fn apply(kind: Kind, pt: PatchType, current: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match pt {
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            if pt == PatchType::Merge {
                merge_patch(&mut doc, &patch);
            } else {
                strategic_merge_patch(kind, &mut doc, &patch);
            }
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::invalid(
                    kind,
                    super::object::name(current),
                    &format!("json patch: {e}"),
                )
            })?;
        }
    }
    Ok(doc)
}

/// RFC 7386 JSON merge patch of `target` by `patch`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// How a list at `path` merges in a strategic merge patch.
enum ListMerge {
    /// Element by element, matched on this key.
    ByKey(&'static str),
    /// A set of scalars.
    Set,
}

fn list_merge(kind: Kind, path: &[&str]) -> Option<ListMerge> {
    use ListMerge::*;
    Some(match (kind, path) {
        (_, ["metadata", "finalizers"]) => Set,
        (_, ["metadata", "ownerReferences"]) => ByKey("uid"),
        (_, ["status", "conditions"]) => ByKey("type"),
        (Kind::Node, ["status", "addresses"]) => ByKey("type"),
        (
            Kind::Pod,
            ["spec", "containers" | "initContainers" | "ephemeralContainers" | "volumes"],
        ) => ByKey("name"),
        (Kind::Pod, ["spec", "containers" | "initContainers", "*", "env"]) => ByKey("name"),
        _ => return None,
    })
}

/// Strategic merge patch of `target` (an object of `kind`) by `patch`.
pub fn strategic_merge_patch(kind: Kind, target: &mut Value, patch: &Value) {
    let mut path = Vec::new();
    merge_map(kind, &mut path, target, patch);
}

fn merge_map<'a>(kind: Kind, path: &mut Vec<&'a str>, target: &mut Value, patch: &'a Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") || !target.is_object() {
        *target = strip_directives(patch);
        return;
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
            continue;
        }
        path.push(k.as_str());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match (v, list_merge(kind, path)) {
            (Value::Array(items), Some(how)) if slot.is_array() => {
                merge_list(kind, path, slot, items, &how);
            }
            (Value::Object(_), _) if slot.is_object() => merge_map(kind, path, slot, v),
            _ => *slot = strip_directives(v),
        }
        path.pop();
    }
}

fn merge_list<'a>(
    kind: Kind,
    path: &mut Vec<&'a str>,
    slot: &mut Value,
    items: &'a [Value],
    how: &ListMerge,
) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *slot = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    }
    let Value::Array(list) = slot else { return };
    match how {
        ListMerge::Set => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListMerge::ByKey(key) => {
            for item in items {
                let Some(id) = item.get(*key) else {
                    list.push(strip_directives(item));
                    continue;
                };
                let pos = list.iter().position(|e| e.get(*key) == Some(id));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        path.push("*");
                        merge_map(kind, path, &mut list[i], item);
                        path.pop();
                    }
                    (None, false) => list.push(strip_directives(item)),
                }
            }
        }
    }
}

/// `v` without `$…` keys at any depth (what is stored when a patch value
/// replaces or is appended).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_conditions_by_type() {
        let mut node = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "MemoryPressure", "status": "False"}
        ]}, "metadata": {"finalizers": ["a"]}});
        let patch = json!({
            "$setElementOrder/conditions": [{"type": "Ready"}],
            "status": {"conditions": [
                {"type": "NetworkUnavailable", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "X"}
            ]},
            "metadata": {"finalizers": ["b", "a"]}
        });
        strategic_merge_patch(Kind::Node, &mut node, &patch);
        assert_eq!(
            node["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "False", "reason": "X"},
                {"type": "MemoryPressure", "status": "False"},
                {"type": "NetworkUnavailable", "status": "False"}
            ])
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["a", "b"]));
        assert!(node.get("$setElementOrder/conditions").is_none());
        let del = json!({"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}});
        strategic_merge_patch(Kind::Node, &mut node, &del);
        assert_eq!(
            node["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );
        let rep = json!({"status": {"$patch": "replace", "phase": "Running"}});
        strategic_merge_patch(Kind::Node, &mut node, &rep);
        assert_eq!(node["status"], json!({"phase": "Running"}));
    }
}
