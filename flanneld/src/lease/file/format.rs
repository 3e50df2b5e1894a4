//! The on-disk form of the embedded store: file names, lease files, atomic
//! writes and the directory lock. The format is described in the parent
//! module's documentation.
//!
//! Owns the bytes and the file operations; it does not decide which
//! subnet to take or when a lease is renewed.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::files::{lock_exclusive, write_atomic, WriteOpts};
use nix::fcntl::Flock;
use serde::{Deserialize, Serialize};

use super::FileError;
use crate::lease::{skip, Lease, LeaseAttrs, LeaseError};

/// The lock file every read-modify-write holds `flock(LOCK_EX)` on.
pub(crate) const LOCK_FILE: &str = ".lock";

/// One lease file: flannel's lease value with `Expiration` appended.
#[derive(Serialize, Deserialize)]
struct LeaseFile {
    #[serde(rename = "PublicIP")]
    public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType")]
    backend_type: String,
    /// Omitted when null (an IPv6-only lease), as in the etcd value.
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "serde_json::Value::is_null"
    )]
    backend_data: serde_json::Value,
    #[serde(
        rename = "BackendV6Data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    backend_v6_data: Option<serde_json::Value>,
    /// RFC 3339, UTC (`Z`), any number of fractional digits.
    #[serde(rename = "Expiration")]
    expiration: String,
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LeaseError {
    let path = path.to_path_buf();
    move |source| LeaseError::Io { op, path, source }
}

pub(crate) use crate::lease::parse_subnet_key as parse_name;

/// A lease file's name: its IPv4 subnet, and the IPv6 one of a dual-stack
/// lease (`10.244.1.0-24&fd00::-64`, etcd's key suffix).
pub(crate) type Name = crate::lease::LeaseKey;

pub(crate) fn file_name((subnet, ipv6): Name) -> String {
    crate::lease::subnet_key(subnet, ipv6)
}

pub(crate) fn lease_path(dir: &Path, name: Name) -> PathBuf {
    dir.join(file_name(name))
}

/// `now + ttl`, cut to whole milliseconds so that what is written is
/// exactly what is read back.
pub(crate) fn expiry_after(ttl: Duration) -> SystemTime {
    let t = SystemTime::now() + ttl;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64),
        Err(_) => t,
    }
}

pub(crate) fn encode(lease: &Lease) -> Result<Vec<u8>, serde_json::Error> {
    let file = LeaseFile {
        public_ip: lease.attrs.public_ip,
        public_ipv6: lease.attrs.public_ipv6,
        backend_type: lease.attrs.backend_type.clone(),
        backend_data: lease.attrs.backend_data.clone(),
        backend_v6_data: lease.attrs.backend_v6_data.clone(),
        expiration: humantime::format_rfc3339_millis(lease.expiration).to_string(),
    };
    let mut bytes = serde_json::to_vec(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Why a lease file's content is not a lease (the files are skipped, so
/// the reasons are kept as text: serde's and humantime's errors are not
/// `Eq`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadLeaseFile {
    #[error("{0}")]
    Json(String),
    #[error("Expiration {text:?}: {why}")]
    Expiration { text: String, why: String },
}

pub(crate) fn decode((subnet, ipv6_subnet): Name, bytes: &[u8]) -> Result<Lease, BadLeaseFile> {
    let file: LeaseFile =
        serde_json::from_slice(bytes).map_err(|e| BadLeaseFile::Json(e.to_string()))?;
    let expiration =
        humantime::parse_rfc3339(file.expiration.trim()).map_err(|e| BadLeaseFile::Expiration {
            text: file.expiration.clone(),
            why: e.to_string(),
        })?;
    Ok(Lease {
        subnet,
        ipv6_subnet,
        attrs: LeaseAttrs {
            public_ip: file.public_ip,
            public_ipv6: file.public_ipv6,
            backend_type: file.backend_type,
            backend_data: file.backend_data,
            backend_v6_data: file.backend_v6_data,
        },
        expiration,
    })
}

/// Reads one lease file. A missing file is `None`; so is a malformed one,
/// which is logged and otherwise treated as absent.
pub(crate) fn read_lease(dir: &Path, name: Name) -> Result<Option<Lease>, LeaseError> {
    let path = lease_path(dir, name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // Named like a lease but not a file (a directory, say): not a
        // lease, and no reason to stop the node.
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) || !is_file(&path) => {
            skip::skipped(&path.display().to_string(), "not a regular file");
            return Ok(None);
        }
        Err(e) => return Err(io_err("read lease", &path)(e)),
    };
    match decode(name, &bytes) {
        Ok(lease) => Ok(Some(lease)),
        Err(reason) => {
            skip::skipped(
                &path.display().to_string(),
                &format!("malformed lease: {reason}"),
            );
            Ok(None)
        }
    }
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Writes a lease file atomically: a dot-named temp file in the same
/// directory, fsync, rename over the lease file.
pub(crate) fn write_lease(dir: &Path, lease: &Lease) -> Result<(), LeaseError> {
    let name = (lease.subnet, lease.ipv6_subnet);
    let path = lease_path(dir, name);
    let bytes = match encode(lease) {
        Ok(bytes) => bytes,
        Err(source) => return Err(FileError::Encode { path, source }.into()),
    };
    let opts = WriteOpts {
        mode: 0o644,
        sync: true,
    };
    write_atomic(&path, &bytes, opts).map_err(|e| LeaseError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

/// Deletes a lease file; a file already gone is fine.
pub(crate) fn remove_lease(dir: &Path, name: Name) -> Result<(), LeaseError> {
    let path = lease_path(dir, name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove lease", &path)(e)),
        _ => Ok(()),
    }
}

/// Creates the lease directory (and its parents) if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), LeaseError> {
    fs::create_dir_all(dir).map_err(io_err("create lease directory", dir))
}

/// Takes `flock(LOCK_EX)` on `<dir>/.lock`, held until the guard drops.
/// The file is opened read-only, so closing it wakes no watcher.
pub(crate) fn lock_dir(dir: &Path) -> Result<Flock<File>, LeaseError> {
    ensure_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(io_err("create lock file", &path))?;
            File::open(&path).map_err(io_err("open lock file", &path))?
        }
        Err(e) => return Err(io_err("open lock file", &path)(e)),
    };
    lock_exclusive(file, &path).map_err(|e| LeaseError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod fuzz;
