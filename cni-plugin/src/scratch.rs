//! The per-pod file upstream's flannel CNI plugin keeps: the delegate
//! config it handed to `bridge` on ADD, at `/var/lib/cni/flannel/<containerID>`.
//! Its DEL reads that file and hands it to `bridge` again; without the file
//! it deletes nothing and succeeds, so the pod's address stays taken in the
//! host-local store for good.
//!
//! flannel-rs writes the same file on ADD, so that after a node is rolled
//! back to upstream flannel, upstream's plugin releases the pods flannel-rs
//! made; its DEL removes the file (also the ones upstream left for its own
//! pods). The directory is `flannel` next to `dataDir` (so
//! `/var/lib/cni/flannel` for the default `/var/lib/cni/networks`), and the
//! saved IPAM section names `dataDir`, so the reference DEL finds the
//! address in the store flannel-rs used.
//!
//! Owns the files in that directory. flannel-rs's DEL needs nothing from
//! them (GC reads one only to see which network it belongs to), and this
//! module touches neither the IPAM store nor the kernel. It writes through a temporary name of its own
//! (`.<containerID>.tmp`, not `common::files`), so that DEL and GC can
//! find and remove what a killed ADD left.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::SubnetEnv;
use serde_json::{json, Value};

use crate::error::{CniError, Code, Result};
use crate::spec::NetConf;

/// The directory of the per-pod files: `<dataDir>/../flannel`.
pub fn dir(conf: &NetConf) -> Option<PathBuf> {
    conf.data_dir.parent().map(|p| p.join("flannel"))
}

/// The delegate config upstream's plugin builds from `conf` and `senv`
/// (its `doCmdAdd`): the delegate's keys, `name`, `type: bridge`,
/// `ipMasq`, `mtu`, `isGateway`, `cniVersion`, and host-local IPAM over
/// FLANNEL_SUBNET's network with a route to FLANNEL_NETWORK.
pub fn delegate_config(conf: &NetConf, senv: &SubnetEnv, mtu: u32, masq: bool) -> Value {
    let d = &conf.delegate;
    // One range set and one route per family, IPv4 first, as upstream.
    let families = senv.families();
    let mut v = json!({
        "cniVersion": conf.version.as_str(),
        "name": conf.name,
        "type": "bridge",
        "bridge": d.bridge,
        "hairpinMode": d.hairpin_mode,
        "isDefaultGateway": d.is_default_gateway,
        "isGateway": d.is_gateway,
        "ipMasq": masq,
        "mtu": mtu,
        "ipam": {
            "type": "host-local",
            "ranges": families.iter().map(|f| json!([{"subnet": f.pod_subnet().to_string()}])).collect::<Vec<_>>(),
            "routes": families.iter().map(|f| json!({"dst": f.network.to_string()})).collect::<Vec<_>>(),
            "dataDir": conf.data_dir,
        },
    });
    if d.promisc_mode {
        v["promiscMode"] = true.into();
    }
    v
}

fn io_error(op: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(Code::Io, format!("{op} {}: {e}", path.display()))
}

/// Writes `<dir>/<container_id>` (mode 0600, the directory 0700 as
/// upstream makes it) whole or not at all: a temporary file renamed over
/// it. Not synced: a crash may leave an empty file, which upstream's DEL
/// takes for an unparsable one and skips, as it would a missing one.
/// A container ID longer than a file name allows (the spec sets no limit)
/// gets no file: upstream could not have made that pod either.
pub fn save(conf: &NetConf, container_id: &str, delegate: &Value) -> Result<()> {
    let Some(dir) = dir(conf).filter(|_| fits(container_id)) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io_error("create directory", &dir, e))?;
    let path = dir.join(container_id);
    let tmp = dir.join(temp_name(container_id));
    let text = delegate.to_string();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| io_error("write", &tmp, e))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| io_error("rename to", &path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The temporary name `save` writes first (one ADD per container at a
/// time, so no two writers share it); DEL and GC remove what a killed ADD
/// left under it.
fn temp_name(container_id: &str) -> String {
    format!(".{container_id}.tmp")
}

/// Whether both names of `container_id` fit a file name (NAME_MAX, 255).
fn fits(container_id: &str) -> bool {
    temp_name(container_id).len() <= 255
}

fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("remove {}: {e}", path.display()),
    }
}

/// Removes `<dir>/<container_id>` (and a killed ADD's temporary file); a
/// missing one is fine, and a failure is only logged (the file is a
/// rollback aid, never worth a failed DEL).
pub fn remove(conf: &NetConf, container_id: &str) {
    let Some(dir) = dir(conf).filter(|_| fits(container_id)) else {
        return;
    };
    remove_file(&dir.join(container_id));
    remove_file(&dir.join(temp_name(container_id)));
}

/// GC: removes the files of this network (their `name`) whose container
/// is not in `valid`. Files of other networks share the directory, as
/// with upstream, and are left alone.
pub fn gc(conf: &NetConf, valid: &HashSet<&str>) {
    let Some(dir) = dir(conf) else { return };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (cid, temp) = match name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            Some(cid) => (cid, true),
            None => (name, false),
        };
        if valid.contains(cid) {
            continue;
        }
        let path = entry.path();
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["name"] == conf.name.as_str());
        if ours || temp {
            tracing::info!("GC removes {}", path.display());
            remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(data_dir: &Path) -> NetConf {
        let text = json!({
            "cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            "dataDir": data_dir,
        });
        NetConf::parse(text.to_string().as_bytes()).expect("config")
    }

    #[test]
    fn dual_stack_has_upstreams_two_range_sets_and_two_routes() {
        let senv = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\n\
             FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:7::1/64\n\
             FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("subnet.env");
        let v = delegate_config(
            &conf(Path::new("/var/lib/cni/networks")),
            &senv,
            1450,
            false,
        );
        assert_eq!(
            v["ipam"]["ranges"],
            json!([[{"subnet": "10.244.7.0/24"}], [{"subnet": "fd00:10:244:7::/64"}]])
        );
        assert_eq!(
            v["ipam"]["routes"],
            json!([{"dst": "10.244.0.0/16"}, {"dst": "fd00:10:244::/56"}])
        );
    }

    #[test]
    fn the_file_is_upstreams_delegate_next_to_the_store_and_goes_with_del() {
        let senv = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .expect("subnet.env");
        assert_eq!(
            dir(&conf(Path::new("/var/lib/cni/networks"))),
            Some(PathBuf::from("/var/lib/cni/flannel"))
        );
        let tmp = std::env::temp_dir().join(format!("scratch-test-{}", std::process::id()));
        let c = conf(&tmp.join("networks"));
        let v = delegate_config(&c, &senv, 1450, false);
        assert_eq!(
            v,
            json!({
                "cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "bridge": "cni0",
                "hairpinMode": true, "isDefaultGateway": true, "isGateway": true,
                "ipMasq": false, "mtu": 1450,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.7.0/24"}]],
                         "routes": [{"dst": "10.244.0.0/16"}], "dataDir": tmp.join("networks")},
            })
        );
        // Too long for a file name: no file, no error.
        let long = "a".repeat(300);
        save(&c, &long, &v).expect("save");
        remove(&c, &long);
        save(&c, "cid1", &v).expect("save");
        let path = tmp.join("flannel/cid1");
        let back: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(back, v);
        // GC: gone unless valid or another network's; a killed ADD's
        // temporary file goes too.
        save(&c, "cid2", &v).expect("save");
        save(&c, "cid3", &json!({"name": "other"})).expect("save");
        std::fs::write(tmp.join("flannel/.cid4.tmp"), "{").expect("write");
        gc(&c, &HashSet::from(["cid1"]));
        let mut left: Vec<String> = std::fs::read_dir(tmp.join("flannel"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["cid1", "cid3"]);
        remove(&c, "cid3");
        remove(&c, "cid1");
        remove(&c, "cid1");
        assert!(!path.exists());
        let left: Vec<_> = std::fs::read_dir(tmp.join("flannel"))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
