//! The install mode (`flannel install-plugin`, `flannel install-conflist`):
//! what the image's init containers run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flannel_cluster::TempDir;

fn bin() -> PathBuf {
    flannel_cluster::cni::plugin_under_test(env!("CARGO_BIN_EXE_flannel"))
}

fn run(bin: &Path, args: &[&Path]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "failed: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert_eq!(stderr.lines().count(), 1, "one log line: {stderr}");
    stderr
}

#[track_caller]
fn fails(out: &Output, mentioning: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status, stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    for m in mentioning {
        assert!(stderr.contains(m), "{stderr:?} lacks {m:?}");
    }
    stderr
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// No temp file left next to DEST.
#[track_caller]
fn only(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names, "files in {}", dir.display());
}

#[test]
fn install_plugin_replaces_a_running_copy() {
    let bin = bin();
    let dir = TempDir::new("inst");
    let dest = dir.join("flannel");
    // The old copy, running: `cp` onto it would fail with ETXTBSY.
    // Copied by `cp`, not in this process: a test thread forking meanwhile
    // would inherit our write descriptor, and the exec below would then
    // fail with ETXTBSY.
    let copied = Command::new("cp")
        .arg("/bin/sleep")
        .arg(&dest)
        .status()
        .expect("run cp");
    assert!(copied.success(), "cp /bin/sleep {}", dest.display());
    let mut old = Command::new(&dest).arg("30").spawn().expect("run old copy");
    let out = run(&bin, &[Path::new("install-plugin"), &dest]);
    let _ = old.kill();
    let _ = old.wait();
    let log = ok(&out);
    assert!(log.contains(&dest.display().to_string()), "{log}");
    let want = std::fs::read(&bin).expect("read plugin");
    assert!(
        std::fs::read(&dest).expect("read dest") == want,
        "DEST is not the plugin"
    );
    assert_eq!(mode(&dest), 0o755);
    only(dir.path(), &["flannel"]);
    // The installed copy is a working plugin.
    let version = Command::new(&dest)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::null())
        .output()
        .expect("run installed copy");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("supportedVersions"),
        "{version:?}"
    );
}

#[test]
fn install_plugin_creates_the_directory_and_names_dest_on_failure() {
    let bin = bin();
    let dir = TempDir::new("inst");
    let dest = dir.join("opt/cni/bin/flannel");
    ok(&run(&bin, &[Path::new("install-plugin"), &dest]));
    assert_eq!(mode(&dest), 0o755);
    // DEST's directory is a file: nothing can be written there.
    let blocked = dir.join("file/flannel");
    std::fs::write(dir.join("file"), "x").expect("write");
    fails(
        &run(&bin, &[Path::new("install-plugin"), &blocked]),
        &["install plugin to", &blocked.display().to_string()],
    );
}

const GOOD: &str = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[
  {"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

#[test]
fn install_conflist_copies_a_good_one_and_replaces_the_old() {
    let bin = bin();
    let dir = TempDir::new("inst");
    let src = dir.join("cni-conf.json");
    let dest = dir.join("net.d/10-flannel.conflist");
    std::fs::write(&src, GOOD).expect("write src");
    std::fs::create_dir(dir.join("net.d")).expect("mkdir");
    std::fs::write(&dest, "old").expect("write old");
    let log = ok(&run(&bin, &[Path::new("install-conflist"), &src, &dest]));
    assert!(log.contains("cbr0"), "{log}");
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), GOOD);
    assert_eq!(mode(&dest), 0o644);
    only(&dir.join("net.d"), &["10-flannel.conflist"]);
}

#[test]
fn a_bad_conflist_leaves_dest_untouched() {
    let bin = bin();
    let dir = TempDir::new("inst");
    let src = dir.join("cni-conf.json");
    let dest = dir.join("10-flannel.conflist");
    std::fs::write(&dest, GOOD).expect("write old");
    let bad = [
        (
            r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","#,
            "not JSON",
        ),
        (
            r#"{"name":"cbr0","cniVersion":"0.3.1","type":"flannel"}"#,
            "plugins",
        ),
        (
            r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"bridge":""}}]}"#,
            "plugins[0] (flannel)",
        ),
    ];
    for (conflist, why) in bad {
        std::fs::write(&src, conflist).expect("write src");
        let src_s = src.display().to_string();
        let dest_s = dest.display().to_string();
        fails(
            &run(&bin, &[Path::new("install-conflist"), &src, &dest]),
            &["install CNI conflist", &src_s, &dest_s, why],
        );
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), GOOD);
        only(dir.path(), &["10-flannel.conflist", "cni-conf.json"]);
    }
    // A missing SRC: the same, naming it.
    std::fs::remove_file(&src).expect("rm");
    fails(
        &run(&bin, &[Path::new("install-conflist"), &src, &dest]),
        &["read", &src.display().to_string()],
    );
    assert_eq!(std::fs::read_to_string(&dest).expect("read"), GOOD);
}

#[test]
fn wrong_arguments_print_the_usage() {
    let bin = bin();
    for args in [
        &["install-plugin"][..],
        &["frob", "x"],
        &["install-conflist", "a"],
    ] {
        let out = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
        assert!(out.stdout.is_empty());
    }
}
