//! Structure-aware mutations of JSON documents: a valid document (from a
//! corpus) with members dropped, values of the wrong type, numbers past
//! every integer type, deep nesting, unicode and NULs, very long strings,
//! keys in another case, duplicate keys, and damaged text.
//!
//! Generators only: they run nothing and read no file.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Number, Value};

use super::text::nasty_string;

/// A JSON number no field expects: huge, negative, fractional, `-0`.
pub fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(576),
            json!(1450),
            json!(65535),
            json!(65536),
            json!(16_777_216),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(9_007_199_254_740_993u64),
            json!(0.5),
            json!(-0.0),
            json!(24.0),
            json!(1e308),
        ]),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

/// Any JSON value, a few levels deep, built from nasty leaves.
pub fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        nasty_number(),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// One edit of a JSON value, at a node picked by its `Index` among all.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Drops the member or element (not the root).
    Remove(Index),
    /// Puts another value, most often of another type, in its place.
    Replace(Index, Value),
    /// Wraps it in `n` arrays.
    Nest(Index, usize),
    /// Adds a member to the object it is in (or is).
    Insert(Index, String, Value),
    /// Renames its member key to upper or lower case.
    KeyCase(Index, bool),
    /// Puts raw JSON text there, which no `Value` can hold: `1e400`,
    /// 20-digit integers, a lone surrogate escape, 10 000 nested arrays.
    Raw(Index, String),
}

/// Damage done to the serialized text.
#[derive(Debug, Clone)]
pub enum Damage {
    None,
    Truncate(Index),
    Trailing(Vec<u8>),
    Bom,
    Flip(Index, u8),
    /// The root object's first key once more, first, with another value.
    DuplicateKey(Value),
}

/// What [`Edit::Raw`] number `n` leaves in the value until [`render`] puts the raw text in.
fn raw_marker(n: usize) -> String {
    format!("\u{0}flannel-fuzz-raw-{n}\u{0}")
}

fn raw_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "-0",
            "1.0",
            "0.1e1",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "\"a\\u0000b\"",
            "NaN",
            "tru",
            "[]",
            "{}",
        ])
        .prop_map(str::to_string),
        (1usize..20_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..20_000).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
    ]
}

/// Up to `max` edits.
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    let idx = any::<Index>;
    let edit = prop_oneof![
        3 => idx().prop_map(Edit::Remove),
        4 => (idx(), any_json()).prop_map(|(i, v)| Edit::Replace(i, v)),
        1 => (idx(), 1usize..300).prop_map(|(i, n)| Edit::Nest(i, n)),
        2 => (idx(), nasty_string(), any_json()).prop_map(|(i, k, v)| Edit::Insert(i, k, v)),
        2 => (idx(), any::<bool>()).prop_map(|(i, up)| Edit::KeyCase(i, up)),
        1 => (idx(), raw_text()).prop_map(|(i, r)| Edit::Raw(i, r)),
    ];
    prop::collection::vec(edit, 1..=max)
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        12 => Just(Damage::None),
        1 => any::<Index>().prop_map(Damage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Trailing),
        1 => Just(Damage::Bom),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        1 => any_json().prop_map(Damage::DuplicateKey),
    ]
}

/// `seed` with a few edits and maybe damaged text, serialized compactly or pretty.
pub fn mutated(seed: Value) -> impl Strategy<Value = Vec<u8>> {
    (edits(4), damage(), any::<bool>())
        .prop_map(move |(e, d, pretty)| render(apply(seed.clone(), &e), &e, &d, pretty))
}

/// A mutation of one of `seeds` (JSON documents; the others are skipped).
pub fn mutated_any(seeds: &[Vec<u8>]) -> impl Strategy<Value = Vec<u8>> {
    let values: Vec<Value> = seeds
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    assert!(!values.is_empty(), "no JSON seed");
    (
        prop::sample::select(values),
        edits(4),
        damage(),
        any::<bool>(),
    )
        .prop_map(|(seed, e, d, pretty)| render(apply(seed, &e), &e, &d, pretty))
}

/// A step from a node to one of its children.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Step::At(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::At(i) => v.get_mut(*i),
    })
}

/// Applies `edits` in order; each picks its node among the current ones.
pub fn apply(mut doc: Value, edits: &[Edit]) -> Value {
    for (n, edit) in edits.iter().enumerate() {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let pick = |i: &Index| all[i.index(all.len())].clone();
        match edit {
            Edit::Remove(i) => {
                let path = pick(i);
                if let Some((last, parent)) = path.split_last() {
                    match (node(&mut doc, parent), last) {
                        (Some(Value::Object(m)), Step::Key(k)) => drop(m.remove(k)),
                        (Some(Value::Array(a)), Step::At(n)) => drop(a.remove(*n)),
                        _ => {}
                    }
                }
            }
            Edit::Replace(i, v) => set(&mut doc, &pick(i), v.clone()),
            Edit::Raw(i, _) => set(&mut doc, &pick(i), Value::from(raw_marker(n))),
            Edit::Nest(i, n) => {
                if let Some(at) = node(&mut doc, &pick(i)) {
                    let inner = at.take();
                    *at = (0..*n).fold(inner, |v, _| Value::Array(vec![v]));
                }
            }
            Edit::Insert(i, k, v) => {
                let mut path = pick(i);
                if !matches!(node(&mut doc, &path), Some(Value::Object(_))) {
                    path.pop();
                }
                if let Some(Value::Object(m)) = node(&mut doc, &path) {
                    m.insert(k.clone(), v.clone());
                }
            }
            Edit::KeyCase(i, up) => {
                let path = pick(i);
                if let Some((Step::Key(k), parent)) = path.split_last() {
                    if let Some(Value::Object(m)) = node(&mut doc, parent) {
                        let new = if *up {
                            k.to_uppercase()
                        } else {
                            k.to_lowercase()
                        };
                        if let Some(v) = m.remove(k) {
                            m.insert(new, v);
                        }
                    }
                }
            }
        }
    }
    doc
}

fn set(doc: &mut Value, path: &[Step], v: Value) {
    if let Some(at) = node(doc, path) {
        *at = v;
    }
}

/// Serializes `doc` (the result of [`apply`] with `edits`), puts the raw
/// texts of its [`Edit::Raw`]s in, and damages it.
pub fn render(doc: Value, edits: &[Edit], damage: &Damage, pretty: bool) -> Vec<u8> {
    let mut text = if pretty {
        serde_json::to_string_pretty(&doc)
    } else {
        serde_json::to_string(&doc)
    }
    .unwrap_or_default();
    for (n, edit) in edits.iter().enumerate() {
        if let Edit::Raw(_, raw) = edit {
            let marker = serde_json::to_string(&raw_marker(n)).unwrap_or_default();
            text = text.replace(&marker, raw);
        }
    }
    let mut bytes = text.into_bytes();
    match damage {
        Damage::None => {}
        Damage::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Damage::Trailing(t) => bytes.extend_from_slice(t),
        Damage::Bom => bytes.splice(0..0, [0xef, 0xbb, 0xbf]).for_each(drop),
        Damage::Flip(i, b) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        Damage::Flip(..) => {}
        Damage::DuplicateKey(v) => {
            if let Value::Object(m) = &doc {
                if let Some(k) = m.keys().next() {
                    let member = format!("{}:{},", Value::from(k.as_str()), v);
                    if bytes.first() == Some(&b'{') && !m.is_empty() {
                        bytes.splice(1..1, member.into_bytes()).for_each(drop);
                    }
                }
            }
        }
    }
    bytes
}
