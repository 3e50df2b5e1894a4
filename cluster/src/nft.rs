//! Reading nftables state inside a namespace.
//!
//! It reads only; it never loads a ruleset.

use crate::netns::NetNs;
use serde_json::Value;

/// One set element: its value and its comment, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetElem {
    pub val: String,
    pub comment: Option<String>,
}

impl NetNs {
    /// `nft <args>` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> crate::cmd::Output {
        self.exec("nft", args)
    }

    /// `nft list table <family> <table>` as text, or `None` when the table is absent.
    pub fn nft_table_text(&self, family: &str, table: &str) -> Option<String> {
        let out = self.nft(&["list", "table", family, table]);
        out.success().then_some(out.stdout)
    }

    /// The elements of set `<family> <table> <set>`; `None` when the set (or
    /// table) does not exist.
    pub fn nft_set_elements(&self, family: &str, table: &str, set: &str) -> Option<Vec<SetElem>> {
        let out = self.nft(&["-j", "list", "set", family, table, set]);
        if !out.success() {
            return None;
        }
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        let items = v["nftables"].as_array()?;
        let s = items.iter().find_map(|i| i.get("set"))?;
        let elems = match s.get("elem") {
            Some(Value::Array(a)) => a.clone(),
            _ => vec![],
        };
        Some(elems.iter().map(parse_elem).collect())
    }
}

fn parse_elem(e: &Value) -> SetElem {
    match e {
        Value::String(s) => SetElem {
            val: s.clone(),
            comment: None,
        },
        Value::Object(o) if o.contains_key("elem") => {
            let inner = &o["elem"];
            SetElem {
                val: match &inner["val"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                comment: inner["comment"].as_str().map(str::to_owned),
            }
        }
        other => SetElem {
            val: other.to_string(),
            comment: None,
        },
    }
}
