//! Fuzz target `cni-stdin`: the plugin binary itself, as a runtime calls
//! it, with stdin it must refuse (bytes that are not a JSON object, and
//! the `bad-*` files of `fuzz/corpus/cni-conf/`) under every verb: exit 1
//! and one line of CNI error JSON on stdout, with a code of the spec's set
//! and the version `cniVersion` asked for; VERSION answers whatever stdin
//! holds. The refused configurations never reach the verbs, so nothing
//! on the machine is touched (and no root is needed).

use flannel_cluster::{CniCall, CniOutput};
use flannel_tests::fuzz;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

/// Spawning the plugin costs a few milliseconds: fewer cases by default.
const CASES: u64 = 48;

fn call(verb: &str, stdin: &[u8]) -> CniOutput {
    let bin = flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"));
    CniCall::new(bin, None)
        .command(verb)
        .container_id("fuzz0")
        .ifname("eth0")
        .netns("/nonexistent/flannel-fuzz/netns")
        .stdin_raw(stdin)
        .run()
}

/// The `cniVersion` of `stdin`, when stdin is an object that has one
/// string `cniVersion`.
fn asked_version(stdin: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        version: Option<String>,
    }
    serde_json::from_slice::<Peek>(stdin).ok()?.version
}

/// Exit 1, one line of JSON: cniVersion, a parse error's code, a message.
fn check_refused(verb: &str, stdin: &[u8]) -> Result<(), TestCaseError> {
    let out = call(verb, stdin);
    prop_assert_eq!(out.code(), Some(1), "{}", out);
    let stdout = out.stdout();
    prop_assert!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "{}",
        out
    );
    let reply: Value =
        serde_json::from_str(stdout).map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
    let code = reply["code"].as_u64();
    // Parsing gives 1 (version), 2 (unsupported field), 6 (decode) or 7 (config).
    prop_assert!(matches!(code, Some(1 | 2 | 6 | 7)), "{}", out);
    prop_assert!(
        reply["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        out
    );
    let version = asked_version(stdin).unwrap_or_else(|| "1.1.0".to_string());
    prop_assert_eq!(
        reply["cniVersion"].as_str(),
        Some(version.as_str()),
        "{}",
        out
    );
    Ok(())
}

fn not_an_object() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256).prop_filter("a JSON object", |b| {
        serde_json::from_slice::<serde_json::Map<String, Value>>(b).is_err()
    })
}

#[test]
fn refused_stdin_is_a_cni_error() {
    let verbs = ["ADD", "DEL", "CHECK", "STATUS", "GC"];
    fuzz::check(
        "cni_stdin::refused_stdin_is_a_cni_error",
        file!(),
        CASES,
        (prop::sample::select(verbs.to_vec()), not_an_object()),
        |(verb, stdin)| check_refused(verb, &stdin),
    );
}

#[test]
fn version_answers_any_stdin() {
    fuzz::check(
        "cni_stdin::version_answers_any_stdin",
        file!(),
        CASES,
        prop::collection::vec(any::<u8>(), 0..256),
        |stdin| {
            let out = call("VERSION", &stdin);
            prop_assert_eq!(out.code(), Some(0), "{}", out);
            let reply: Value = serde_json::from_str(out.stdout())
                .map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
            prop_assert!(reply["supportedVersions"].is_array(), "{}", out);
            Ok(())
        },
    );
}

#[test]
fn corpus_bad_configs_are_cni_errors() {
    let bad: Vec<(String, Vec<u8>)> = fuzz::corpus("cni-conf")
        .into_iter()
        .filter(|(name, _)| name.starts_with("bad-"))
        .collect();
    assert!(bad.len() >= 20, "{} bad-* files", bad.len());
    for (name, stdin) in &bad {
        for verb in ["ADD", "STATUS"] {
            check_refused(verb, stdin).unwrap_or_else(|e| panic!("{name} under {verb}: {e}"));
        }
    }
}
