//! What each tick saw and did, as one JSON line (`--record FILE`) and as data for tests and
//! comparisons.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::cpuset::CpuSet;
use crate::policy::VcpuPin;
use crate::runtime::guard::{BalloonChange, Rejection};
use crate::runtime::snapshot::{stdev, Snapshot};

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
    /// Most memory it may have.
    pub max_mib: f64,
    /// Memory it has.
    pub actual_mib: f64,
    /// Memory its guest leaves unused (fresh statistics only).
    pub unused_mib: Option<f64>,
    /// Swapped out over the last interval.
    pub swap_out_mib: Option<f64>,
    /// Swapped in over the last interval.
    pub swap_in_mib: Option<f64>,
    /// OOM kills over the last interval, where the backend can tell.
    pub oom_events: Option<u64>,
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
    /// Balloon changes it would have carried out.
    pub balloons: Vec<BalloonChange>,
    /// Its actions the guard would have refused or trimmed.
    pub rejected: Vec<Rejection>,
}

/// The version of the record format this vcoord writes and reads. Bump it whenever a record's
/// fields change in a way an older or newer reader would misread (the snapshot's shape
/// included).
pub const SCHEMA: u32 = 2;

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
    /// Host memory free.
    pub host_free_mib: f64,
    /// Memory grantable to guests (free, or less under a budget).
    pub guest_free_mib: f64,
    /// VMs.
    pub vms: Vec<VmRecord>,
    /// Why the CPU policy did what it did.
    pub cpu_reason: String,
    /// Why the memory policy did what it did.
    pub memory_reason: String,
    /// Pins carried out (or that would be, in a dry run).
    pub pins: Vec<VcpuPin>,
    /// Balloon changes carried out (or that would be, in a dry run).
    pub balloons: Vec<BalloonChange>,
    /// Actions refused or trimmed by the guard.
    pub rejected: Vec<Rejection>,
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

impl TickRecord {
    /// The parts of a record that come from the snapshot alone.
    pub fn from_snapshot(host: &str, snapshot: &Snapshot, start_wall_s: f64) -> Self {
        let vms = snapshot
            .vms()
            .iter()
            .map(|vm| VmRecord {
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
                max_mib: vm.memory.max_kib as f64 / MIB,
                actual_mib: vm.memory.actual_kib as f64 / MIB,
                unused_mib: vm.memory.unused_kib.map(|k| k as f64 / MIB),
                swap_out_mib: vm.memory.swap_out_kib.map(|k| k as f64 / MIB),
                swap_in_mib: vm.memory.swap_in_kib.map(|k| k as f64 / MIB),
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
            host_free_mib: snapshot.host().mem_free_kib as f64 / MIB,
            guest_free_mib: snapshot.host().guest_free_kib as f64 / MIB,
            vms,
            cpu_reason: String::new(),
            memory_reason: String::new(),
            pins: Vec::new(),
            balloons: Vec::new(),
            rejected: Vec::new(),
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
    /// Creates (or truncates) `path`, rotated past `max_bytes`, keeping `keep` older files.
    pub fn rotating(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(Output {
                file: BufWriter::new(File::create(path)?),
                written: 0,
                stopped: None,
            }),
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    /// `FILE.n`.
    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self, out: &mut Output) -> std::io::Result<()> {
        out.file.flush()?;
        if self.keep == 0 {
            out.file = BufWriter::new(File::create(&self.path)?);
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            out.file = BufWriter::new(File::create(&self.path)?);
        }
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

/// Reads a recording (`vcoord run --record`): one record per line, each of schema [`SCHEMA`].
/// A last line cut short (the writer was killed mid-line) is skipped with a warning.
pub fn read_trace(path: &Path) -> Result<Vec<TickRecord>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
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
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) if e.is_eof() && k + 1 == lines.len() => {
                warn!(file = %path.display(), line = i + 1, "last record cut short (the recording was interrupted); skipped");
                break;
            }
            Err(e) => return Err(bad(format!("not a vcoord tick record: {e}"))),
        };
        match value.get("schema").and_then(|v| v.as_u64()) {
            Some(n) if n == u64::from(SCHEMA) => {}
            Some(n) => {
                return Err(bad(format!(
                    "record schema {n}; this vcoord reads schema {SCHEMA} (record and replay with the same version)"
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
            err.contains(":2: record schema 99; this vcoord reads schema 2"),
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
}
