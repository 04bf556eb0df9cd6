//! One acting vcoord per host: a lock file per host that a libvirt URI reaches
//! ([`crate::backend::host_identity`]: `qemu:///system` and `qemu+unix:///system` are one
//! lock), taken with `flock`, released by the kernel when the process ends, however it ends.
//! The file holds the holder's pid and URI, so a second instance can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Where lock files go unless `$VCOORD_RUN_DIR` says otherwise.
pub const RUN_DIR: &str = "/run/vcoord";

/// The run directory: `$VCOORD_RUN_DIR`, else [`RUN_DIR`].
pub fn run_dir() -> PathBuf {
    std::env::var_os("VCOORD_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RUN_DIR))
}

/// Why a host lock was not had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another vcoord{} is already coordinating the host {uri} reaches{} (lock {})", holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), holder_uri.as_ref().filter(|h| *h != uri).map(|h| format!(", as {h}")).unwrap_or_default(), path.display())]
    Held {
        /// The URI.
        uri: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
        /// The URI the holder uses, as it wrote it.
        holder_uri: Option<String>,
    },
    /// The lock file cannot be made or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A held host lock; dropping it releases it.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the lock of the host `uri` reaches in `dir`, or says who holds it.
    pub fn acquire(dir: &Path, uri: &str) -> Result<Self, LockError> {
        let path = dir.join(format!("{}.lock", crate::backend::host_file_name(uri)));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut lines = text.lines();
                return Err(LockError::Held {
                    uri: uri.to_owned(),
                    path,
                    holder: lines.next().and_then(|l| l.trim().parse().ok()),
                    holder_uri: lines.next().map(|l| l.trim().to_owned()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}\n{uri}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("vcoord-lock-{}", std::process::id()));
        let first = HostLock::acquire(&dir, "qemu:///system").unwrap();
        assert!(first
            .path()
            .ends_with("qemu_unix__run_libvirt_libvirt-sock.lock"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "readable by its owner and group only");
        // Another spelling of the same host is the same lock, and says who holds it as what.
        let text = HostLock::acquire(&dir, "qemu+unix:///system")
            .unwrap_err()
            .to_string();
        assert!(text.contains(", as qemu:///system"), "{text}");
        let err = HostLock::acquire(&dir, "qemu:///system").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("(pid {})", std::process::id()))
                && text.contains("qemu:///system"),
            "{text}"
        );
        // Another host is another lock.
        let _other = HostLock::acquire(&dir, "qemu+ssh://b/system").unwrap();
        drop(first);
        HostLock::acquire(&dir, "qemu:///system").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
