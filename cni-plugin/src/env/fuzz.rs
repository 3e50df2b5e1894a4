//! Fuzz target `cni-env`: the CNI environment (`CniEnv::from_lookup`:
//! CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS) and the
//! rules for interface names and container IDs, checked against
//! independent statements of them. Corpus: `fuzz/corpus/cni-env/` (each
//! file a JSON object of variables).

use std::collections::HashMap;

use flannel_tests::fuzz::{self, text::nasty_string};
use flannel_tests::fuzz_test;
use proptest::prelude::*;

use super::*;
use crate::error::Code;

const VARS: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// The kernel's `dev_valid_name` (isspace: \t \n \v \f \r, space, 0xa0),
/// plus this plugin's extra refusals: `%`, control characters, and
/// Unicode whitespace (which the IPAM record would lose).
fn ifname_ok(name: &str) -> bool {
    let space = |b: u8| matches!(b, 9..=13 | b' ' | 0xa0);
    let refused = |b: u8| space(b) || matches!(b, b'/' | b':' | b'%' | 0x7f) || b < 0x20;
    let unicode_space = name.chars().any(|c| c.is_whitespace());
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.bytes().any(refused)
        && !unicode_space
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`
fn id_pattern(id: &str) -> bool {
    let rest = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    id.starts_with(|c: char| c.is_ascii_alphanumeric()) && id.chars().all(rest)
}

fn lookup(vars: &HashMap<String, String>) -> Result<CniEnv> {
    CniEnv::from_lookup(|k| vars.get(k).cloned())
}

/// Errors are code 4 and name a variable; what is accepted keeps every rule.
fn check_env(vars: &HashMap<String, String>) -> Result<(), TestCaseError> {
    let get = |k: &str| vars.get(k).map(String::as_str);
    match lookup(vars) {
        Err(e) => {
            prop_assert_eq!(e.code, Code::InvalidEnv);
            prop_assert!(e.msg.contains("CNI_"), "{}", e);
        }
        Ok(env) if matches!(env.command, Command::Add | Command::Del | Command::Check) => {
            prop_assert_eq!(Some(env.container_id.as_str()), get("CNI_CONTAINERID"));
            prop_assert!(id_pattern(&env.container_id));
            prop_assert_eq!(Some(env.ifname.as_str()), get("CNI_IFNAME"));
            prop_assert!(ifname_ok(&env.ifname), "{:?}", env.ifname);
            match &env.netns {
                Some(p) => prop_assert!(p.is_absolute()),
                None => prop_assert!(
                    env.command == Command::Del && get("CNI_NETNS").unwrap_or("").is_empty()
                ),
            }
            let segments = get("CNI_ARGS")
                .unwrap_or("")
                .split(';')
                .filter(|s| !s.is_empty())
                .count();
            prop_assert_eq!(env.args.len(), segments);
        }
        Ok(env) => {
            prop_assert!(matches!(
                get("CNI_COMMAND"),
                Some("VERSION" | "STATUS" | "GC")
            ));
            prop_assert!(env.container_id.is_empty() && env.ifname.is_empty());
            prop_assert!(env.netns.is_none() && env.args.is_empty());
        }
    }
    Ok(())
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => nasty_string(),
        1 => prop::sample::select(vec!["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "eth0",
            "abc123", "/var/run/netns/x", "K8S_POD_NAME=a;IgnoreUnknown=1", "dummy"])
            .prop_map(String::from),
    ]
}

fuzz_test! {
    fn any_environment(vars in prop::collection::hash_map(
        prop::sample::select(VARS.to_vec()).prop_map(String::from),
        value(),
        0..=6,
    )) {
        check_env(&vars)?;
    }
}

fuzz_test! {
    fn add_with_one_nasty_variable((var, v) in (prop::sample::select(VARS.to_vec()), value())) {
        let mut vars: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/x"), ("CNI_ARGS", "A=b"),
        ].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.insert(var.to_string(), v);
        check_env(&vars)?;
    }
}

fuzz_test! {
    fn ifnames_follow_the_rules(name in nasty_string()) {
        prop_assert_eq!(validate_ifname(&name).is_ok(), ifname_ok(&name), "{:?}", name);
    }
}

fuzz_test! {
    fn container_ids_follow_the_pattern(id in nasty_string()) {
        prop_assert_eq!(validate_container_id(&id).is_ok(), id_pattern(&id), "{:?}", id);
    }
}

fuzz_test! {
    fn cni_args_round_trip(pairs in prop::collection::vec(("[^;=]{1,12}", "[^;]{0,12}"), 0..6)) {
        let raw: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parsed = parse_args(&raw.join(";")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, pairs);
    }
}

fuzz_test! {
    fn any_cni_args(raw in nasty_string()) {
        let segments: Vec<&str> = raw.split(';').filter(|s| !s.is_empty()).collect();
        match parse_args(&raw) {
            Ok(args) => {
                prop_assert_eq!(args.len(), segments.len());
                for ((k, v), seg) in args.iter().zip(&segments) {
                    prop_assert_eq!(format!("{k}={v}"), *seg);
                    prop_assert!(!k.contains('='));
                }
            }
            Err(e) => {
                prop_assert_eq!(e.code, Code::InvalidEnv);
                prop_assert!(segments.iter().any(|s| !s.contains('=')));
            }
        }
    }
}

#[test]
fn corpus_replay() {
    fuzz::replay("cni-env", |name, bytes| {
        let vars: HashMap<String, String> = serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("{name}: not a JSON object of strings: {e}"));
        check_env(&vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        lookup(&vars).map(drop).map_err(|e| e.to_string())
    });
}
