//! LIST: the `resourceVersion` / `resourceVersionMatch` rules, `limit` +
//! `continue` pagination over one consistent snapshot (the continue token
//! carries the version of the first page, as etcd-backed lists do), and
//! the list body with `metadata.resourceVersion`, `continue` and
//! `remainingItemCount`.
//!
//! | resourceVersion | match         | limit | read                          |
//! |-----------------|---------------|-------|-------------------------------|
//! | unset           | -             | any   | latest, paginated             |
//! | `0`             | unset/NotOlderThan | ignored | latest, all at once (the watch cache) |
//! | `N`             | NotOlderThan  | any   | latest (504 if N is newer)    |
//! | `N`             | Exact         | any   | at N (410 if compacted)       |
//! | `N`             | unset         | unset | latest (504 if N is newer)    |
//! | `N`             | unset         | set   | at N (410 if compacted)       |
//!
//! It reads the store's snapshot; it never writes an object.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::object::Kind;
use super::respond::ApiError;
use super::routes::Query;
use super::selector::Filter;
use super::store::{Keyed, ReadAt, Store};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Token {
    v: String,
    rv: u64,
    start: String,
}

fn encode_token(rv: u64, last_key: &str) -> String {
    let t = Token {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: format!("{last_key}\u{0}"),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_token(s: &str) -> Result<Token, ApiError> {
    let bad = |why: String| ApiError::bad_request(format!("invalid continue token {s:?}: {why}"));
    let raw = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| bad(e.to_string()))?;
    let t: Token = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    if t.v != "meta.k8s.io/v1" || t.rv == 0 {
        return Err(bad("unknown version or no resourceVersion".into()));
    }
    Ok(t)
}

/// Parses an unsigned resourceVersion parameter.
pub fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {s:?}: not a resource version this server made"
        ))
    })
}

/// Answers `GET` on a collection (not a watch).
pub fn list(store: &Store, kind: Kind, ns: Option<&str>, q: &Query) -> Result<Bytes, ApiError> {
    let filter = q.filter(kind, ns)?;
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let n = s
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?;
            (n > 0).then_some(n as usize)
        }
    };
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let cont = q.get("continue").filter(|s| !s.is_empty());
    if let Some(m) = rv_match {
        if m != "Exact" && m != "NotOlderThan" {
            return Err(ApiError::invalid_options(&format!(
                "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
        if rv.is_none() {
            return Err(ApiError::invalid_options(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if cont.is_some() {
            return Err(ApiError::invalid_options(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    let (at, start, limit) = match (cont, rv) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ))
        }
        (Some(c), None) => {
            let t = decode_token(c)?;
            (ReadAt::Exact(t.rv), t.start, limit)
        }
        (None, None) => (ReadAt::Latest, String::new(), limit),
        (None, Some("0")) => {
            if rv_match == Some("Exact") {
                return Err(ApiError::invalid_options(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
            (ReadAt::Latest, String::new(), None)
        }
        (None, Some(s)) => {
            let n = parse_rv(s)?;
            let exact = rv_match == Some("Exact") || (rv_match.is_none() && limit.is_some());
            if exact {
                (ReadAt::Exact(n), String::new(), limit)
            } else {
                let cur = store.resource_version();
                if n > cur {
                    return Err(ApiError::too_large_rv(n, cur));
                }
                (ReadAt::Latest, String::new(), limit)
            }
        }
    };
    let start = match (&filter.namespace, start.is_empty()) {
        (Some(ns), true) => format!("{ns}/"),
        _ => start,
    };
    let (read_rv, items) = match store.read(kind, at, &start) {
        Ok(r) => r,
        Err(mut e) if e.code == 410 && cont.is_some() => {
            e.message = "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter, or use the continue token \
                         in this response to retrieve the remainder of the results. Continuing with the \
                         provided token results in an inconsistent list - objects that were created, \
                         modified, or deleted between the time the first chunk was returned and now may \
                         show up in the list."
                .into();
            let last = start.trim_end_matches('\u{0}');
            let fresh = encode_token(store.resource_version(), last);
            e.metadata = Some(json!({"continue": fresh}));
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    Ok(page(kind, &filter, read_rv, items, limit))
}

/// The list body for the matching items from `items`, at most `limit`.
fn page(kind: Kind, filter: &Filter, rv: u64, items: Vec<Keyed>, limit: Option<usize>) -> Bytes {
    let ns_prefix = filter.namespace.as_ref().map(|ns| format!("{ns}/"));
    let in_ns = |k: &str| ns_prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str()));
    let mut matching = items.iter().filter(|(k, o)| in_ns(k) && filter.matches(o));
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(4096);
    let mut last_key = None;
    out.push(b'[');
    let mut n = 0;
    for (k, o) in matching.by_ref() {
        if n > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &**o);
        last_key = Some(k.as_str());
        n += 1;
        if n == limit {
            break;
        }
    }
    out.push(b']');
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if n == limit {
        let remaining = if filter.selects_all_in_namespace() {
            matching.count()
        } else {
            usize::from(matching.next().is_some())
        };
        if remaining > 0 {
            if let Some(k) = last_key {
                meta["continue"] = encode_token(rv, k).into();
            }
            if filter.selects_all_in_namespace() {
                meta["remainingItemCount"] = remaining.into();
            }
        }
    }
    let mut body = Vec::with_capacity(out.len() + 256);
    body.extend_from_slice(
        format!(
            "{{\"kind\":\"{}\",\"apiVersion\":\"v1\",\"metadata\":{meta},\"items\":",
            kind.list_kind()
        )
        .as_bytes(),
    );
    body.extend_from_slice(&out);
    body.push(b'}');
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = decode_token(&encode_token(42, "node-7")).expect("decode");
        assert_eq!((t.rv, t.start.as_str()), (42, "node-7\u{0}"));
        assert_eq!(decode_token("!!").map_err(|e| e.code), Err(400));
        assert_eq!(decode_token("e30").map_err(|e| e.code), Err(400));
    }
}
