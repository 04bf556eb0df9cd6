//! What a host's CPU policy has learned that a restart should not forget
//! ([`CpuPolicy::learned`](vcoord_api::CpuPolicy::learned): a prediction error, say), kept in
//! a small TOML file per host in the state directory and given back to the policy of the next
//! process on that host.
//!
//! Only a daemon that acts on a real host keeps one: a dry run or a simulated host neither
//! reads nor writes it (a dry run may run beside the acting daemon; a simulation must not
//! depend on the machine it runs on). The file is written only when what was learned changes,
//! whole (a temporary file renamed over it), so a stop at any moment leaves the last one. It
//! names the policy that wrote it: another policy starts as new. It is a cache: an unreadable
//! one is said once and ignored, and deleting it only costs what it held.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use vcoord_api::params::{Table, Value};

/// Where state goes unless `$VCOORD_STATE_DIR` or systemd's `$STATE_DIRECTORY` says otherwise.
pub const STATE_DIR: &str = "/var/lib/vcoord";

/// Largest learned-state file read, bytes.
const MAX_BYTES: u64 = 64 << 10;

/// The state directory: `$VCOORD_STATE_DIR`, else the first of systemd's
/// `$STATE_DIRECTORY` (a unit's `StateDirectory=`), else [`STATE_DIR`].
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VCOORD_STATE_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var("STATE_DIRECTORY")
        .ok()
        .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(STATE_DIR))
}

/// One host's learned-state file.
#[derive(Debug)]
pub struct LearnedFile {
    path: PathBuf,
    /// The label of the CPU policy whose learning it keeps.
    policy: String,
    /// What it holds now (as far as this process wrote or read it).
    written: Option<Table>,
}

impl LearnedFile {
    /// The file of the host `uri` reaches, in `dir`, for the CPU policy labelled `policy`.
    pub fn new(dir: &Path, uri: &str, policy: &str) -> Self {
        Self {
            path: dir.join(format!(
                "{}.learned.toml",
                crate::backend::host_file_name(uri)
            )),
            policy: policy.to_owned(),
            written: None,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The CPU policy is now the one labelled `policy`: what it learns replaces the last one's.
    pub fn set_policy(&mut self, policy: &str) {
        self.policy = policy.to_owned();
    }

    /// What the policy learned in a process before: `Ok(None)` when there is no file or it is
    /// another policy's; an error (naming the file, and the line where TOML says one) when it
    /// cannot be read.
    pub fn read(&mut self) -> Result<Option<Table>, String> {
        let text = match crate::trust::read_regular(&self.path, MAX_BYTES, false) {
            Ok(text) => text,
            Err(crate::trust::ReadRefusal::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(crate::trust::ReadRefusal::Io(e)) => {
                return Err(format!("{}: {e}", self.path.display()))
            }
            Err(crate::trust::ReadRefusal::Untrusted(why)) => {
                return Err(format!("{}: {why}", self.path.display()))
            }
        };
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let at = line.map(|l| format!(", line {l}")).unwrap_or_default();
            format!("{}{at}: {}", self.path.display(), e.message())
        })?;
        let Some(Value::Table(cpu)) = table.get("cpu") else {
            return Ok(None);
        };
        if cpu.get("policy").and_then(Value::as_str) != Some(self.policy.as_str()) {
            return Ok(None);
        }
        match cpu.get("learned") {
            Some(Value::Table(learned)) => {
                self.written = Some(learned.clone());
                Ok(Some(learned.clone()))
            }
            Some(_) => Err(format!("{}: cpu.learned: not a table", self.path.display())),
            None => Ok(None),
        }
    }

    /// Keeps `learned` (the policy's, this tick) at `now_s` (wall clock): writes the file when
    /// it changed. `Ok(true)` when it wrote.
    pub fn keep(&mut self, learned: Option<Table>, now_s: f64) -> Result<bool, String> {
        if learned == self.written {
            return Ok(false);
        }
        let mut cpu = Table::new();
        cpu.insert("policy".into(), Value::String(self.policy.clone()));
        if let Some(l) = &learned {
            cpu.insert("learned".into(), Value::Table(l.clone()));
        }
        let mut top = Table::new();
        top.insert("saved_at_s".into(), Value::Float(now_s));
        top.insert("cpu".into(), Value::Table(cpu));
        let text = format!(
            "# What vcoord's CPU policy learned of this host, given back to it after a restart.\n\
             # Written by vcoord; deleting it only costs what it holds.\n{top}"
        );
        self.write(&text)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.written = learned;
        Ok(true)
    }

    /// Writes `text` whole: a temporary file beside it, synced, renamed over it.
    fn write(&self, text: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vcoord-learned-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn table(points: f64) -> Table {
        let mut t = Table::new();
        t.insert("points".into(), Value::Float(points));
        t
    }

    #[test]
    fn what_one_process_learned_the_next_reads_back_for_the_same_policy_only() {
        let d = dir("roundtrip");
        let mut first = LearnedFile::new(&d, "qemu:///system", "stable-balance");
        assert_eq!(first.read(), Ok(None), "no file yet");
        assert_eq!(first.keep(None, 1.0), Ok(false), "nothing to keep");
        assert_eq!(first.keep(Some(table(3.5)), 2.0), Ok(true));
        assert_eq!(first.keep(Some(table(3.5)), 3.0), Ok(false), "unchanged");
        // The same host by another spelling of its URI: the same file.
        let mut next = LearnedFile::new(&d, "qemu+unix:///system", "stable-balance");
        assert_eq!(next.path(), first.path());
        assert_eq!(next.read(), Ok(Some(table(3.5))));
        assert_eq!(
            next.keep(Some(table(3.5)), 4.0),
            Ok(false),
            "read is written"
        );
        let mode = std::fs::metadata(next.path()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Another policy starts as new, and what it learns replaces the file.
        let mut other = LearnedFile::new(&d, "qemu:///system", "group-balance");
        assert_eq!(other.read(), Ok(None));
        assert_eq!(other.keep(Some(table(1.0)), 5.0), Ok(true));
        assert_eq!(next.read(), Ok(None));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unreadable_file_is_said_with_its_path_and_line() {
        let d = dir("bad");
        let mut f = LearnedFile::new(&d, "qemu:///system", "stable-balance");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(f.path(), "saved_at_s = 1\n[cpu\npolicy = 2\n").unwrap();
        let e = f.read().unwrap_err();
        assert!(e.contains(".learned.toml, line 2: "), "{e}");
        std::fs::write(
            f.path(),
            "[cpu]\npolicy = \"stable-balance\"\nlearned = 3\n",
        )
        .unwrap();
        assert!(f.read().unwrap_err().contains("cpu.learned: not a table"));
        std::fs::remove_file(f.path()).unwrap();
        std::fs::create_dir(f.path()).unwrap();
        assert!(f.read().unwrap_err().contains("directory"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
