//! The fuzz targets' shared machinery: a proptest runner bounded by case
//! count or by time, the checked-in regression corpus under
//! `fuzz/corpus/<target>/`, and the generators of nasty input in
//! [`json`] (structure-aware JSON mutations) and [`text`] (strings, lines).
//!
//! Every parser of outside input has a `mod fuzz` of property tests next
//! to it, written with [`fuzz_test!`](crate::fuzz_test). Under `cargo test`
//! each property runs `PROPTEST_CASES` cases (default [`DEFAULT_CASES`]);
//! `ci/fuzz.sh` sets `FLANNEL_FUZZ_SECONDS` to run fresh cases until that
//! many seconds have passed instead (or `PROPTEST_CASES` cases, if fewer).
//! A failure is shrunk, its seed saved under the crate's
//! `proptest-regressions/`, and replayed first on every later run.
//! Tests named `corpus_*` replay the corpus ([`replay`]); `ci/fuzz.sh`
//! gives them no share of its time.

pub mod json;
#[cfg(test)]
mod selftest;
pub mod text;

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseResult, TestRunner};

/// Cases per property under `cargo test` when `PROPTEST_CASES` is unset.
pub const DEFAULT_CASES: u64 = 256;
/// Cases per runner in time-bounded mode: the deadline is checked between batches.
const BATCH: u64 = 64;

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let n = raw
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={raw:?} is not a number"));
    Some(n)
}

/// Defines a `#[test]` that checks a property with [`check`]:
/// `fuzz_test!(fn name(a in strategy, b in other) { prop_assert!(...); })`.
#[macro_export]
macro_rules! fuzz_test {
    ($(#[$meta:meta])* fn $name:ident($($arg:pat in $strategy:expr),+ $(,)?) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::fuzz::check(
                concat!(module_path!(), "::", stringify!($name)),
                file!(),
                $crate::fuzz::DEFAULT_CASES,
                ($($strategy,)+),
                |($($arg,)+)| -> ::proptest::test_runner::TestCaseResult {
                    $body
                    Ok(())
                },
            );
        }
    };
}

/// Runs `test` on values of `strategy`, panicking with the shrunk failing
/// input: `PROPTEST_CASES` cases (else `default_cases`), or as many as
/// `FLANNEL_FUZZ_SECONDS` allows (see the module documentation). Prints
/// one line, `fuzz <name>: <n> cases in <s> s`, which `ci/fuzz.sh` collects.
pub fn check<S>(
    name: &str,
    source_file: &'static str,
    default_cases: u64,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    let budget = env_u64("FLANNEL_FUZZ_SECONDS").map(Duration::from_secs);
    let cap = env_u64("PROPTEST_CASES");
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        let batch = match budget {
            None => cap.unwrap_or(default_cases),
            Some(_) => BATCH.min(cap.unwrap_or(u64::MAX) - done),
        };
        let config = Config {
            cases: u32::try_from(batch).unwrap_or(u32::MAX),
            source_file: Some(source_file),
            failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
                "proptest-regressions",
            ))),
            max_shrink_time: 60_000,
            ..Config::default()
        };
        if let Err(e) = TestRunner::new(config).run(&strategy, &test) {
            panic!("fuzz {name}: failed ({done} cases passed before this run): {e}");
        }
        done += batch;
        let out_of_time = budget.is_none_or(|b| start.elapsed() >= b);
        if out_of_time || cap.is_some_and(|c| done >= c) {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("fuzz {name}: {done} cases in {secs:.1} s");
}

/// `fuzz/corpus/<target>/` of this repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file of the target's corpus as (file name, contents), by name.
/// Panics if the directory is missing or empty: a corpus that silently
/// vanished would make its replay test pass on nothing.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    files_of(&corpus_dir(target))
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name.unwrap_or_default(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// The `ok-*` files of the target's corpus: the valid seeds mutations start from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target)
        .into_iter()
        .filter(|(name, _)| name.starts_with("ok-"))
        .map(|(_, bytes)| bytes)
        .collect();
    assert!(!seeds.is_empty(), "corpus {target} has no ok-* file");
    seeds
}

/// Feeds every corpus file to `parse` (`Ok` = accepted, `Err(reason)` =
/// rejected) and checks what its name promises: `ok-*` is accepted,
/// `bad-*` rejected, any other name only must not panic. Panics listing
/// every file that broke its promise; returns how many files were replayed.
pub fn replay(target: &str, parse: impl Fn(&str, &[u8]) -> Result<(), String>) -> usize {
    replay_dir(&corpus_dir(target), parse)
}

/// [`replay`] of the files in `dir`.
pub fn replay_dir(dir: &Path, parse: impl Fn(&str, &[u8]) -> Result<(), String>) -> usize {
    let files = files_of(dir);
    let target = dir.file_name().unwrap_or_default().to_string_lossy();
    let mut broken = Vec::new();
    for (name, bytes) in &files {
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(name, bytes)));
        let problem = match outcome {
            Err(panic) => Some(format!("panicked: {}", panic_text(&panic))),
            Ok(Err(reason)) if name.starts_with("ok-") => Some(format!("rejected: {reason}")),
            Ok(Ok(())) if name.starts_with("bad-") => Some("accepted".to_string()),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            broken.push(format!("{target}/{name}: {p}"));
        }
    }
    assert!(broken.is_empty(), "corpus replay:\n{}", broken.join("\n"));
    files.len()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
