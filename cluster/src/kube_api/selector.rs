//! Label and field selectors as the apiserver parses and applies them.
//!
//! Labels: `k=v`, `k==v`, `k!=v` (also matches objects without `k`), `k`,
//! `!k`, `k in (a,b)`, `k notin (a,b)` (also matches objects without `k`),
//! `k>N`, `k<N`; requirements joined by `,` must all hold. Fields:
//! `f=v`, `f==v`, `f!=v` over the fields the apiserver supports for the
//! kind (see [`super::object::field_value`]); others are a 400.
//!
//! Parsing and matching only; it reads no store.

use serde_json::Value;

use super::object::{self, Kind};

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed `labelSelector`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_req(term).map_err(|e| format!("unable to parse requirement: {e}"))?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = object::meta(obj)
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_req(term: &str) -> Result<Req, String> {
    if let Some(k) = term.strip_prefix('!') {
        return Ok(Req::NotExists(key(k.trim())?));
    }
    if let Some(open) = term.find('(') {
        let close = term
            .rfind(')')
            .filter(|&c| c > open && term[c + 1..].trim().is_empty())
            .ok_or_else(|| format!("{term:?}: unclosed '('"))?;
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let values = term[open + 1..close]
            .split(',')
            .map(|v| value(v.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return match head.as_slice() {
            [k, "in"] => Ok(Req::In(key(k)?, values)),
            [k, "notin"] => Ok(Req::NotIn(key(k)?, values)),
            _ => Err(format!(
                "{term:?}: expected `key in (...)` or `key notin (...)`"
            )),
        };
    }
    for (op, ctor) in [
        ("!=", Req::NotEq as fn(String, String) -> Req),
        ("==", Req::Eq),
        ("=", Req::Eq),
    ] {
        if let Some((k, v)) = term.split_once(op) {
            return Ok(ctor(key(k.trim())?, value(v.trim())?));
        }
    }
    for (op, gt) in [('>', true), ('<', false)] {
        if let Some((k, v)) = term.split_once(op) {
            let n = v
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{term:?}: for '{op}', the value must be an integer"))?;
            let k = key(k.trim())?;
            return Ok(if gt { Req::Gt(k, n) } else { Req::Lt(k, n) });
        }
    }
    Ok(Req::Exists(key(term)?))
}

/// A label key: `[prefix/]name`, name ≤ 63 of `[A-Za-z0-9._-]`.
fn key(k: &str) -> Result<String, String> {
    let name = k.rsplit_once('/').map_or(k, |(_, n)| n);
    let ok = !name.is_empty()
        && name.len() <= 63
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(k.to_owned())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

/// A label value: ≤ 63 of `[A-Za-z0-9._-]` (may be empty).
fn value(v: &str) -> Result<String, String> {
    if v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(v.to_owned())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

/// A parsed `fieldSelector`: (field, equal?, value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(kind: Kind, s: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if object::field_value(kind, &Value::Null, field).is_none() {
                return Err(format!(
                    "field label not supported: {field} (for {})",
                    kind.plural()
                ));
            }
            reqs.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, kind: Kind, obj: &Value) -> bool {
        self.0.iter().all(|(f, eq, v)| {
            let got = object::field_value(kind, obj, f).unwrap_or_default();
            (got == *v) == *eq
        })
    }
}

/// What a list or watch is restricted to: a namespace and both selectors.
#[derive(Debug, Clone)]
pub struct Filter {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn new(
        kind: Kind,
        namespace: Option<&str>,
        labels: &str,
        fields: &str,
    ) -> Result<Filter, String> {
        Ok(Filter {
            kind,
            namespace: namespace.map(str::to_owned),
            labels: LabelSelector::parse(labels)?,
            fields: FieldSelector::parse(kind, fields)?,
        })
    }

    /// True when it lets everything of its kind through.
    pub fn is_everything(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn selects_all_in_namespace(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if object::namespace(obj) != Some(ns.as_str()) {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(self.kind, obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {}})
    }

    #[test]
    fn label_requirements() {
        let n = node(json!({"role": "worker", "zone": "a", "gen": "5"}));
        let m = |s: &str| LabelSelector::parse(s).expect(s).matches(&n);
        assert!(m("role=worker"));
        assert!(m("role==worker,zone=a"));
        assert!(!m("role=master"));
        assert!(m("role!=master"));
        assert!(m("missing!=x"), "!= matches an absent label");
        assert!(m("role") && !m("missing") && m("!missing") && !m("!role"));
        assert!(m("zone in (a, b)") && !m("zone in (b)"));
        assert!(m("zone notin (b,c)") && m("missing notin (b)"));
        assert!(m("gen>4") && !m("gen<5"));
        assert!(m("") && m("role=worker,"));
        assert!(LabelSelector::parse("zone in (a").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_requirements() {
        let n = node(json!({}));
        let f = FieldSelector::parse(Kind::Node, "metadata.name=n1").expect("parse");
        assert!(f.matches(Kind::Node, &n));
        let f = FieldSelector::parse(Kind::Node, "metadata.name!=n1").expect("parse");
        assert!(!f.matches(Kind::Node, &n));
        let f = FieldSelector::parse(Kind::Node, "spec.unschedulable=false").expect("parse");
        assert!(f.matches(Kind::Node, &n));
        assert!(FieldSelector::parse(Kind::Node, "spec.podCIDR=x").is_err());
        assert!(FieldSelector::parse(Kind::Node, "metadata.name").is_err());
        assert!(FieldSelector::parse(Kind::Pod, "spec.nodeName=n1").is_ok());
    }
}
