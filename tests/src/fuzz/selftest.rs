//! Tests of the fuzz machinery itself: the mutations really mutate, keep
//! no marker of their own in the output, and the corpus replay reports
//! every file that breaks the promise of its name.

use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};

use super::{json as fjson, replay_dir, text};
use flannel_cluster::TempDir;

/// 512 values of `strategy`, the same on every run.
fn sample<S: Strategy>(strategy: S) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..512)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

#[test]
fn json_mutations_mutate_and_leave_no_marker() {
    let seed = json!({"cniVersion": "1.0.0", "name": "cbr0", "delegate": {"mtu": 1450}});
    let out = sample(fjson::mutated(seed.clone()));
    let parsed: Vec<Value> = out
        .iter()
        .filter_map(|b| serde_json::from_slice(b).ok())
        .collect();
    let changed = parsed.iter().filter(|v| **v != seed).count();
    assert!(
        parsed.len() > out.len() / 3,
        "{} of {} are JSON",
        parsed.len(),
        out.len()
    );
    assert!(
        changed > parsed.len() * 3 / 4,
        "{changed} of {} changed",
        parsed.len()
    );
    assert!(
        out.len() - parsed.len() > out.len() / 20,
        "too few are broken JSON"
    );
    let text: Vec<String> = out
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        !text.iter().any(|t| t.contains("flannel-fuzz-raw")),
        "a marker leaked"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("1e400") || t.contains("[[[[")),
        "no raw text"
    );
}

#[test]
fn line_edits_edit_lines() {
    assert_eq!(
        text::mutate_lines("A=1\nB=2\n", &[text::LineEdit::Crlf]),
        "A=1\r\nB=2\r\n"
    );
    let doc = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n";
    let out: Vec<String> = sample(text::line_edits(4))
        .iter()
        .map(|edits| text::mutate_lines(doc, edits))
        .collect();
    assert!(out.iter().all(|o| o.ends_with('\n')));
    assert!(out.iter().filter(|o| o.as_str() != doc).count() > out.len() * 3 / 4);
}

#[test]
fn replay_reports_every_broken_promise() {
    let dir = TempDir::new("fuzz-selftest");
    for (name, text) in [
        ("ok-a", "no"),
        ("ok-b", "yes"),
        ("bad-c", "yes"),
        ("d", "no"),
    ] {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let parse = |_: &str, b: &[u8]| {
        if b == b"yes" {
            Ok(())
        } else {
            Err("no".to_string())
        }
    };
    let panic = catch_unwind(AssertUnwindSafe(|| replay_dir(dir.path(), parse)))
        .expect_err("two files broke their promise");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("ok-a: rejected") && msg.contains("bad-c: accepted"),
        "{msg}"
    );
    assert!(!msg.contains("ok-b") && !msg.contains("/d:"), "{msg}");
    let panics = |b: &[u8]| -> Result<(), String> { panic!("boom {}", b.len()) };
    let panic = catch_unwind(AssertUnwindSafe(|| {
        replay_dir(dir.path(), |_, b| panics(b))
    }))
    .expect_err("every file panics");
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(msg.matches("panicked: boom").count(), 4, "{msg}");
}
