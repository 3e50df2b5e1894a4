//! HTTP routing: which resource a path names, which verb a method is, and
//! the answer for each (list, watch, get, create, replace, patch, delete,
//! on `nodes`, `namespaces/NS/pods`, `pods` and their `status`
//! subresources), plus `/version`, `/api` and the health endpoints.
//!
//! It does not accept connections or apply faults (`http.rs`), and keeps no
//! state of its own beyond the store.

use hyper::Method;
use serde_json::{json, Value};
use std::sync::Arc;

use super::http::Shared;
use super::object::{self, Kind, Subresource};
use super::patch::{self, PatchType};
use super::respond::{self, ApiError, Resp};
use super::selector::Filter;
use super::{list, watch};

/// Query parameters in order; `get` returns the first value, as Go does.
#[derive(Debug, Clone, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The request's `labelSelector` and `fieldSelector` as one filter on
    /// `kind` in `ns` (a list and a watch read them alike).
    pub fn filter(&self, kind: Kind, ns: Option<&str>) -> Result<Filter, ApiError> {
        Filter::new(
            kind,
            ns,
            self.get("labelSelector").unwrap_or(""),
            self.get("fieldSelector").unwrap_or(""),
        )
        .map_err(ApiError::bad_request)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Collection(Kind, Option<&'a str>),
    Item(Kind, Option<&'a str>, &'a str, Subresource),
}

fn parse_path(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/api/v1/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let sub = |s: Option<&&str>| match s {
        None => Some(Subresource::Main),
        Some(&"status") => Some(Subresource::Status),
        Some(_) => None,
    };
    match segs.as_slice() {
        ["nodes"] => Some(Target::Collection(Kind::Node, None)),
        ["pods"] => Some(Target::Collection(Kind::Pod, None)),
        ["nodes", name, tail @ ..] if tail.len() <= 1 => {
            Some(Target::Item(Kind::Node, None, name, sub(tail.first())?))
        }
        ["namespaces", ns, "pods"] => Some(Target::Collection(Kind::Pod, Some(ns))),
        ["namespaces", ns, "pods", name, tail @ ..] if tail.len() <= 1 => {
            Some(Target::Item(Kind::Pod, Some(ns), name, sub(tail.first())?))
        }
        _ => None,
    }
}

/// The answer to one authenticated request.
pub fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Resp {
    match path {
        "/healthz" | "/livez" | "/readyz" if method == Method::GET => {
            return respond::text(200, "ok")
        }
        "/version" if method == Method::GET => return respond::json_value(200, &version()),
        "/api" if method == Method::GET => {
            return respond::json_value(200, &json!({"kind": "APIVersions", "versions": ["v1"]}))
        }
        _ => {}
    }
    let result = match parse_path(path) {
        None => Err(ApiError::path_not_found()),
        Some(t) => {
            if method != Method::GET && q.get("dryRun").is_some() {
                Err(ApiError::bad_request(
                    "dryRun is not supported by this stand-in",
                ))
            } else {
                dispatch(shared, method, t, q, content_type, body)
            }
        }
    };
    result.unwrap_or_else(|e| respond::error(&e))
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    target: Target<'_>,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Resp, ApiError> {
    let store = &shared.store;
    match (target, method.as_str()) {
        (Target::Collection(kind, ns), "GET") => {
            if watch::parse_bool("watch", q.get("watch").unwrap_or(""))? {
                let req = watch::WatchRequest::parse(kind, ns, q)?;
                Ok(watch::start(shared, req))
            } else {
                Ok(respond::json_bytes(200, list::list(store, kind, ns, q)?))
            }
        }
        (Target::Collection(kind, ns), "POST") if ns.is_some() || !kind.namespaced() => {
            let obj = decode(kind, body)?;
            let created = store.create(kind, ns, obj)?;
            Ok(respond::json_value(201, &created))
        }
        (Target::Item(kind, ns, name, _), "GET") => {
            let obj = store
                .get(kind, &object::key(ns, name))
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(respond::json_value(200, &obj))
        }
        (Target::Item(kind, ns, name, sub), "PUT") => {
            let new = decode(kind, body)?;
            check_identity(kind, ns, name, &new)?;
            let updated = store.update(kind, &object::key(ns, name), |cur| {
                let mut new = new;
                object::carry_server_fields(sub, cur, &mut new);
                Ok(new)
            })?;
            Ok(respond::json_value(200, &updated))
        }
        (Target::Item(kind, ns, name, sub), "PATCH") => {
            let pt = PatchType::from_content_type(content_type)?;
            let updated = store.update(kind, &object::key(ns, name), |cur| {
                let mut new = patch::apply(kind, pt, cur, body)?;
                object::check_type_meta(kind, &new)?;
                check_identity(kind, ns, name, &new)?;
                object::carry_server_fields(sub, cur, &mut new);
                Ok(new)
            })?;
            Ok(respond::json_value(200, &updated))
        }
        (Target::Item(kind, ns, name, Subresource::Main), "DELETE") => {
            let last = store.delete(kind, &object::key(ns, name))?;
            Ok(respond::json_value(200, &last))
        }
        (_, m) => Err(ApiError::method_not_allowed(m)),
    }
}

/// A request body holding one object of `kind`.
fn decode(kind: Kind, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "error decoding the {} in the body: {e}",
            kind.kind()
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body must be a {} object",
            kind.kind()
        )));
    }
    object::check_type_meta(kind, &v)?;
    Ok(v)
}

/// The name (and namespace) in a written object must be the URL's.
fn check_identity(kind: Kind, ns: Option<&str>, name: &str, obj: &Value) -> Result<(), ApiError> {
    let got = object::name(obj);
    if got != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({got}) does not match the name on the URL ({name})"
        )));
    }
    if kind.namespaced() {
        if let (Some(url), Some(body)) = (ns, object::namespace(obj)) {
            if url != body {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    }
    Ok(())
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-flannel-rs-standin",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        use Subresource::*;
        assert_eq!(
            parse_path("/api/v1/nodes"),
            Some(Target::Collection(Kind::Node, None))
        );
        assert_eq!(
            parse_path("/api/v1/nodes/n1"),
            Some(Target::Item(Kind::Node, None, "n1", Main))
        );
        assert_eq!(
            parse_path("/api/v1/nodes/n1/status"),
            Some(Target::Item(Kind::Node, None, "n1", Status))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/kube-system/pods/p"),
            Some(Target::Item(Kind::Pod, Some("kube-system"), "p", Main))
        );
        assert_eq!(parse_path("/api/v1/nodes/n1/proxy"), None);
        assert_eq!(parse_path("/api/v1/nodes/"), None);
        assert_eq!(parse_path("/apis/apps/v1/deployments"), None);
        let q = Query::parse(Some("&watch=true&limit=5&limit=6"));
        assert_eq!((q.get("watch"), q.get("limit")), (Some("true"), Some("5")));
    }
}
