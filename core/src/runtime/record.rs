//! What each tick saw and did, as one JSON line (`--record FILE`) and as data for tests and
//! comparisons.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::cpuset::CpuSet;
use crate::policy::{VcpuPin, VmTune};
use crate::runtime::guard::{BalloonChange, Rejection};
use crate::runtime::snapshot::{stdev, Snapshot};
use crate::runtime::virtio_mem::DeviceRefusal;
use vcoord_api::snapshot::{CpuTune, MemoryView};

use crate::units::KIB_PER_MIB_F64 as MIB;

/// One vCPU in a tick record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuRecord {
    /// vCPU number.
    pub id: u32,
    /// Load over the last interval, percent of one pCPU.
    pub load_pct: Option<f64>,
    /// Run-queue wait over the last interval, percent.
    pub wait_pct: Option<f64>,
    /// pCPU it last ran on.
    pub pcpu: Option<u32>,
    /// pCPUs it may run on (before this tick's actions).
    pub affinity: CpuSet,
}

/// One VM in a tick record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Domain name.
    pub name: String,
    /// vCPUs.
    pub vcpus: Vec<VcpuRecord>,
    /// Its memory, as the snapshot saw it (KiB; unused only with fresh statistics).
    pub memory: MemoryView,
    /// OOM kills over the last interval, where the backend can tell.
    pub oom_events: Option<u64>,
    /// Its CPU weight, quota and emulator affinity as the snapshot saw them.
    #[serde(default, skip_serializing_if = "CpuTune::is_empty")]
    pub cputune: CpuTune,
}

impl VmRecord {
    /// Most memory it may have, MiB.
    pub fn max_mib(&self) -> f64 {
        self.memory.max_kib as f64 / MIB
    }

    /// Memory it has, MiB.
    pub fn actual_mib(&self) -> f64 {
        self.memory.actual_kib as f64 / MIB
    }

    /// Memory its guest leaves unused, MiB (fresh statistics only).
    pub fn unused_mib(&self) -> Option<f64> {
        self.memory.unused_kib.map(|k| k as f64 / MIB)
    }

    /// Swapped out over the last interval, MiB.
    pub fn swap_out_mib(&self) -> Option<f64> {
        self.memory.swap_out_kib.map(|k| k as f64 / MIB)
    }
}

/// A virtio-mem request sent to a guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlugRequest {
    /// Domain name.
    pub vm: String,
    /// The device's alias.
    pub device: String,
    /// Its request before.
    pub from_kib: u64,
    /// Its request now.
    pub to_kib: u64,
}

/// What shadow policies would have done on one tick: their plans after the guard, never
/// carried out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// The shadow CPU policy, if any.
    pub cpu_policy: Option<String>,
    /// The shadow memory policy, if any.
    pub memory_policy: Option<String>,
    /// Its CPU reason.
    pub cpu_reason: String,
    /// Its memory reason.
    pub memory_reason: String,
    /// Pins it would have carried out (only those that change something).
    pub pins: Vec<VcpuPin>,
    /// CPU tunes it would have carried out (only what changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunes: Vec<VmTune>,
    /// Balloon changes it would have carried out.
    pub balloons: Vec<BalloonChange>,
    /// Its actions the guard would have refused or trimmed.
    pub rejected: Vec<Rejection>,
}

/// The version of the record format this vcoord writes and reads. Bump it whenever a record's
/// fields change in a way an older or newer reader would misread (the snapshot's shape
/// included). Schema 3 keeps each VM's memory as the snapshot's figures (KiB); schema 2 kept
/// a MiB copy of some of them, and is still read (see `upgrade_from_2`).
pub const SCHEMA: u32 = 3;

/// The oldest schema [`read_trace`] reads.
pub const OLDEST_SCHEMA: u32 = 2;

/// Everything about one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    /// Record format version ([`SCHEMA`]); 0 when the line has none (written before versions).
    #[serde(default)]
    pub schema: u32,
    /// Host name.
    pub host: String,
    /// Tick number, from 0.
    pub tick: u64,
    /// Time since the first tick.
    pub time_s: f64,
    /// Load of each pCPU, percent.
    pub pcpu_load_pct: Vec<f64>,
    /// Standard deviation of `pcpu_load_pct`, percent points.
    pub pcpu_stdev_pct: f64,
    /// Each pCPU's load outside the VMs, percent, where measured (same order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcpu_other_pct: Vec<Option<f64>>,
    /// The run-queue wait of that load, percent, where measured (same order; empty where
    /// measured nowhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcpu_other_wait_pct: Vec<Option<f64>>,
    /// Host memory free, KiB.
    pub host_free_kib: u64,
    /// Memory grantable to guests (free, or less under a budget), KiB.
    pub guest_free_kib: u64,
    /// VMs.
    pub vms: Vec<VmRecord>,
    /// Why the CPU policy did what it did.
    pub cpu_reason: String,
    /// Why the memory policy did what it did.
    pub memory_reason: String,
    /// Pins carried out (or that would be, in a dry run).
    pub pins: Vec<VcpuPin>,
    /// CPU weights, quotas and emulator affinities set (only what changed; or that would be,
    /// in a dry run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunes: Vec<VmTune>,
    /// Balloon changes carried out (or that would be, in a dry run).
    pub balloons: Vec<BalloonChange>,
    /// Actions refused or trimmed by the guard.
    pub rejected: Vec<Rejection>,
    /// virtio-mem requests sent (the device part of `balloons`' targets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugs: Vec<PlugRequest>,
    /// virtio-mem requests the guest did not follow, withdrawn this tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem_refusals: Vec<DeviceRefusal>,
    /// Memory KSM's merging saved on the host (`pages_sharing`), KiB, where it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm_saved_kib: Option<u64>,
    /// KSM settings written this tick (or that would be, in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm: Option<vcoord_api::KsmPlan>,
    /// Actions the backend failed to carry out.
    pub failed: Vec<String>,
    /// Whether this tick changed nothing by configuration.
    pub dry_run: bool,
    /// Hypervisor calls made to sample.
    pub sample_calls: u32,
    /// Hypervisor calls made to actuate.
    pub actuate_calls: u32,
    /// Ids of the pCPUs, in the order of `pcpu_load_pct`.
    #[serde(default)]
    pub pcpus: Vec<u32>,
    /// What the shadow policies would have done this tick (never carried out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord>,
    /// The snapshot the policies decided on, when recording for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// Per-pCPU figures as recorded: none at all where no pCPU has one (a host that cannot measure
/// them), so such records stay as they were before the figure existed.
pub(crate) fn measured_only(values: Vec<Option<f64>>) -> Vec<Option<f64>> {
    if values.iter().all(Option::is_none) {
        Vec::new()
    } else {
        values
    }
}

impl TickRecord {
    /// Host memory free, MiB.
    pub fn host_free_mib(&self) -> f64 {
        self.host_free_kib as f64 / MIB
    }

    /// Memory grantable to guests, MiB.
    pub fn guest_free_mib(&self) -> f64 {
        self.guest_free_kib as f64 / MIB
    }

    /// The parts of a record that come from the snapshot alone.
    pub fn from_snapshot(host: &str, snapshot: &Snapshot, start_wall_s: f64) -> Self {
        let vms = snapshot
            .vms()
            .iter()
            .map(|vm| VmRecord {
                cputune: vm.cputune.clone(),
                name: vm.name.clone(),
                vcpus: vm
                    .vcpus
                    .iter()
                    .map(|v| VcpuRecord {
                        id: v.id,
                        load_pct: v.load_pct,
                        wait_pct: v.wait_pct,
                        pcpu: v.pcpu,
                        affinity: v.affinity.clone(),
                    })
                    .collect(),
                memory: vm.memory.clone(),
                oom_events: vm.oom_events,
            })
            .collect();
        Self {
            schema: SCHEMA,
            host: host.to_string(),
            tick: snapshot.tick(),
            time_s: snapshot.wall_s() - start_wall_s,
            pcpu_load_pct: snapshot.pcpu_loads(),
            pcpu_stdev_pct: stdev(&snapshot.pcpu_loads()),
            pcpu_other_pct: snapshot.pcpu_other_loads(),
            pcpu_other_wait_pct: measured_only(
                snapshot
                    .host()
                    .pcpus
                    .iter()
                    .map(|p| p.other_wait_pct)
                    .collect(),
            ),
            host_free_kib: snapshot.host().mem_free_kib,
            guest_free_kib: snapshot.host().guest_free_kib,
            vms,
            cpu_reason: String::new(),
            memory_reason: String::new(),
            pins: Vec::new(),
            tunes: Vec::new(),
            balloons: Vec::new(),
            rejected: Vec::new(),
            plugs: Vec::new(),
            virtio_mem_refusals: Vec::new(),
            ksm_saved_kib: snapshot.host().ksm.as_ref().map(|k| k.saved_kib),
            ksm: None,
            failed: Vec::new(),
            dry_run: false,
            sample_calls: 0,
            actuate_calls: 0,
            pcpus: snapshot.pcpu_ids(),
            shadow: None,
            snapshot: None,
        }
    }
}

/// Writes tick records to a file, one JSON line each, from any number of host threads: each
/// line goes out in one write under a lock, so lines of different hosts never interleave. A
/// file that reaches its size limit is rotated (`FILE` -> `FILE.1` -> ... -> `FILE.<keep>`,
/// the oldest dropped), so a long recording never fills the disk; each file starts on a line.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: Mutex<Output>,
    max_bytes: u64,
    keep: u32,
}

#[derive(Debug)]
struct Output {
    file: BufWriter<File>,
    written: u64,
    /// Why the record stopped, once a write failed: nothing more is written (a record with a
    /// hole in it would replay as if the host had jumped).
    stopped: Option<String>,
}

impl Recorder {
    /// Starts a record at `path`, rotated past `max_bytes`, keeping `keep` older files. A file
    /// already there (a run before this one) is never truncated: it is moved aside as a full
    /// file would be, to `FILE.1` (kept even with `keep` 0: a restart must not lose the run
    /// before it), so each file holds one run. Files are made mode 0640.
    pub fn rotating(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let existing = std::fs::metadata(path).ok();
        if existing.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a directory, not a file",
            ));
        }
        // A device or a FIFO (`/dev/null`, a pipe to another program) is written as it is:
        // never truncated, moved or rotated.
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            return Ok(Self {
                path: path.to_path_buf(),
                out: Mutex::new(Output {
                    file: BufWriter::new(std::fs::OpenOptions::new().write(true).open(path)?),
                    written: 0,
                    stopped: None,
                }),
                max_bytes: u64::MAX,
                keep,
            });
        }
        let earlier = existing.is_some_and(|m| m.len() > 0);
        let recorder = Self {
            path: path.to_path_buf(),
            out: Mutex::new(Output {
                file: BufWriter::new(if earlier {
                    // Opened only to be rotated away at once.
                    File::open(path)?
                } else {
                    Self::create(path)?
                }),
                written: 0,
                stopped: None,
            }),
            max_bytes: max_bytes.max(1),
            keep,
        };
        if earlier {
            let mut out = recorder
                .out
                .lock()
                .map_err(|_| std::io::Error::other("record writer poisoned"))?;
            recorder.shift(keep.max(1))?;
            out.file = BufWriter::new(Self::create(path)?);
        }
        Ok(recorder)
    }

    /// A new, empty record file, readable by its owner and group only.
    fn create(path: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(path)
    }

    /// `FILE.n`.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Moves `FILE` to `FILE.1`, `FILE.1` to `FILE.2` and so on, keeping `keep` of them.
    fn shift(&self, keep: u32) -> std::io::Result<()> {
        for n in (1..keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }

    fn rotate(&self, out: &mut Output) -> std::io::Result<()> {
        out.file.flush()?;
        if self.keep > 0 {
            self.shift(self.keep)?;
        }
        out.file = BufWriter::new(Self::create(&self.path)?);
        out.written = 0;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record. The first write that fails stops the record for good and returns
    /// the error (the caller says so, once); later writes are skipped quietly.
    pub fn write(&self, record: &TickRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("record writer poisoned"))?;
        if out.stopped.is_some() {
            return Ok(());
        }
        let result = self.append(&mut out, &line);
        if let Err(e) = &result {
            out.stopped = Some(format!("stopped at tick {}: {e}", record.tick));
        }
        result
    }

    fn append(&self, out: &mut Output, line: &str) -> std::io::Result<()> {
        if out.written > 0 && out.written + line.len() as u64 > self.max_bytes {
            self.rotate(out)?;
        }
        out.file.write_all(line.as_bytes())?;
        out.written += line.len() as u64;
        Ok(())
    }

    /// Why the record stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.out.lock().ok().and_then(|o| o.stopped.clone())
    }

    /// Writes out what is buffered (nothing, once the record has stopped).
    pub fn flush(&self) -> std::io::Result<()> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("record writer poisoned"))?;
        if out.stopped.is_some() {
            return Ok(());
        }
        let result = out.file.flush();
        if let Err(e) = &result {
            out.stopped = Some(format!("stopped at the last flush: {e}"));
        }
        result
    }
}

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a record this vcoord reads.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Rewrites a schema-2 record's JSON as schema 3: each VM's MiB figures become its memory
/// view in KiB (what schema 2 did not keep stays unknown: no guest total, no faults), the
/// host's MiB figures KiB.
fn upgrade_from_2(value: &mut serde_json::Value) -> Result<(), String> {
    use serde_json::{json, Value};
    let kib = |v: &Value, key: &str| -> Result<Option<u64>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .filter(|m| m.is_finite() && *m >= 0.0)
                .map(|m| Some((m * MIB).round() as u64))
                .ok_or_else(|| format!("`{key}` is not a size in MiB")),
        }
    };
    let need = |v: &Value, key: &str| kib(v, key)?.ok_or_else(|| format!("`{key}` is missing"));
    let host_free = need(value, "host_free_mib")?;
    let guest_free = need(value, "guest_free_mib")?;
    let vms = value
        .get_mut("vms")
        .and_then(Value::as_array_mut)
        .ok_or("`vms` is missing")?;
    for vm in vms.iter_mut() {
        let unused = kib(vm, "unused_mib")?;
        let memory = json!({
            "max_kib": need(vm, "max_mib")?,
            "actual_kib": need(vm, "actual_mib")?,
            "unused_kib": unused,
            "usable_kib": unused,
            "swap_in_kib": kib(vm, "swap_in_mib")?,
            "swap_out_kib": kib(vm, "swap_out_mib")?,
            "major_faults": null,
            "stats_fresh": unused.is_some(),
        });
        let vm = vm.as_object_mut().ok_or("a VM is not an object")?;
        for key in [
            "max_mib",
            "actual_mib",
            "unused_mib",
            "swap_in_mib",
            "swap_out_mib",
        ] {
            vm.remove(key);
        }
        vm.insert("memory".into(), memory);
    }
    let record = value.as_object_mut().ok_or("not an object")?;
    record.remove("host_free_mib");
    record.remove("guest_free_mib");
    record.insert("host_free_kib".into(), host_free.into());
    record.insert("guest_free_kib".into(), guest_free.into());
    record.insert("schema".into(), SCHEMA.into());
    Ok(())
}

/// Reads a recording (`vcoord run --record`): one record per line, each of schema [`SCHEMA`]
/// or [`OLDEST_SCHEMA`] (upgraded as it is read). A last line cut short (the writer was killed
/// mid-line) is skipped with a warning.
pub fn read_trace(path: &Path) -> Result<Vec<TickRecord>, TraceError> {
    let bytes =
        crate::trust::read_regular_bytes(path, u64::MAX, false).map_err(|r| TraceError::Io {
            path: path.to_path_buf(),
            source: match r {
                crate::trust::ReadRefusal::Io(e) => e,
                crate::trust::ReadRefusal::Untrusted(why) => std::io::Error::other(why),
            },
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        TraceError::Line {
            path: path.to_path_buf(),
            line: e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1,
            message: "not a vcoord tick record: not UTF-8 text".into(),
        }
    })?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (k, &(i, line)) in lines.iter().enumerate() {
        let bad = |message: String| TraceError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let mut value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) if e.is_eof() && k + 1 == lines.len() => {
                warn!(file = %path.display(), line = i + 1, "last record cut short (the recording was interrupted); skipped");
                break;
            }
            Err(e) => return Err(bad(format!("not a vcoord tick record: {e}"))),
        };
        match value.get("schema").and_then(|v| v.as_u64()) {
            Some(n) if n == u64::from(SCHEMA) => {}
            Some(n) if n == u64::from(OLDEST_SCHEMA) => upgrade_from_2(&mut value)
                .map_err(|e| bad(format!("not a vcoord tick record of schema {n}: {e}")))?,
            Some(n) => {
                return Err(bad(format!(
                    "record schema {n}; this vcoord reads schemas {OLDEST_SCHEMA} to {SCHEMA} (record and replay with the same version)"
                )))
            }
            None if value.get("tick").is_some() => {
                return Err(bad(format!(
                    "a record from before schema versions; this vcoord reads schema {SCHEMA} (record it again)"
                )))
            }
            None => return Err(bad("not a vcoord tick record".into())),
        }
        let record = serde_json::from_value(value)
            .map_err(|e| bad(format!("not a vcoord tick record of schema {SCHEMA}: {e}")))?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcoord_api::snapshot::HostView;
    use vcoord_api::Pcpu;

    fn line(tick: u64) -> String {
        let snap = Snapshot::builder(HostView::new(vec![Pcpu::plain(0)], 1 << 20, 1 << 19))
            .tick(tick)
            .build()
            .unwrap();
        serde_json::to_string(&TickRecord::from_snapshot("h", &snap, 0.0)).unwrap()
    }

    fn read(text: &str) -> Result<Vec<TickRecord>, TraceError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vcoord-trace-{}-{n}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let out = read_trace(&path);
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn a_long_recording_rotates_and_keeps_whole_lines() {
        let dir = std::env::temp_dir().join(format!("vcoord-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let one = line(0).len() as u64 + 1;
        let r = Recorder::rotating(&path, 3 * one, 2).unwrap();
        let snap = Snapshot::builder(HostView::new(vec![Pcpu::plain(0)], 1 << 20, 1 << 19))
            .build()
            .unwrap();
        for tick in 0..10 {
            let mut rec = TickRecord::from_snapshot("h", &snap, 0.0);
            rec.tick = tick;
            r.write(&rec).unwrap();
        }
        r.flush().unwrap();
        let ticks =
            |p: &Path| -> Vec<u64> { read_trace(p).unwrap().iter().map(|r| r.tick).collect() };
        assert_eq!(ticks(&path), vec![9]);
        assert_eq!(ticks(&r.rotated(1)), vec![6, 7, 8]);
        assert_eq!(ticks(&r.rotated(2)), vec![3, 4, 5]);
        assert!(!r.rotated(3).exists(), "older files are dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_read_back_with_their_schema() {
        let records = read(&format!("{}\n{}\n", line(0), line(1))).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].schema, SCHEMA);
    }

    #[test]
    fn a_cut_last_line_is_skipped_but_a_cut_middle_line_is_an_error() {
        let full = line(1);
        let cut = &full[..full.len() / 2];
        assert_eq!(read(&format!("{}\n{cut}", line(0))).unwrap().len(), 1);
        let err = read(&format!("{cut}\n{}\n", line(0)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1: not a vcoord tick record"), "{err}");
    }

    #[test]
    fn other_schemas_are_refused_by_line() {
        let future = line(0).replace(&format!("\"schema\":{SCHEMA}"), "\"schema\":99");
        let err = read(&format!("{}\n{future}\n", line(0)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2: record schema 99; this vcoord reads schemas 2 to 3"),
            "{err}"
        );
        let old = line(0).replace(&format!("\"schema\":{SCHEMA},"), "");
        let err = read(&old).unwrap_err().to_string();
        assert!(
            err.contains(":1: a record from before schema versions"),
            "{err}"
        );
        let err = read("{\"a\": 1}\n").unwrap_err().to_string();
        assert!(err.ends_with(":1: not a vcoord tick record"), "{err}");
    }

    #[test]
    fn schema_2_records_read_as_schema_3_with_the_same_figures() {
        let old = r#"{"schema":2,"host":"h","tick":4,"time_s":8.0,"pcpu_load_pct":[10.0],"pcpu_stdev_pct":0.0,"host_free_mib":2048.5,"guest_free_mib":1024.0,"vms":[{"name":"a","vcpus":[{"id":0,"load_pct":10.0,"wait_pct":1.0,"pcpu":0,"affinity":[0]}],"max_mib":1024.0,"actual_mib":512.0,"unused_mib":100.25,"swap_out_mib":0.0,"swap_in_mib":null,"oom_events":null},{"name":"b","vcpus":[],"max_mib":256.0,"actual_mib":256.0,"unused_mib":null,"swap_out_mib":null,"swap_in_mib":null,"oom_events":0}],"cpu_reason":"","memory_reason":"","pins":[],"balloons":[],"rejected":[],"failed":[],"dry_run":false,"sample_calls":1,"actuate_calls":0,"pcpus":[0]}"#;
        let records = read(&format!("{old}\n{}\n", line(5))).unwrap();
        let r = &records[0];
        assert_eq!(r.schema, SCHEMA);
        assert_eq!(
            (r.host_free_kib, r.guest_free_kib),
            (2048 * 1024 + 512, 1 << 20)
        );
        let a = &r.vms[0];
        assert_eq!((a.max_mib(), a.actual_mib()), (1024.0, 512.0));
        assert_eq!(
            (a.unused_mib(), a.swap_out_mib()),
            (Some(100.25), Some(0.0))
        );
        assert!(a.memory.stats_fresh);
        assert!(!r.vms[1].memory.stats_fresh);
        assert_eq!(r.vms[1].oom_events, Some(0));
        let broken = old.replace("\"actual_mib\":512.0,", "");
        let err = read(&broken).unwrap_err().to_string();
        assert!(
            err.contains(":1: not a vcoord tick record of schema 2: `actual_mib` is missing"),
            "{err}"
        );
    }
}
