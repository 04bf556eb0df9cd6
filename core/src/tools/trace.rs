//! `vcoord scenario from-trace`: a simulator scenario from a public VM trace (per-VM CPU and
//! memory use sampled every few minutes), on a host sized by the user.
//!
//! Three formats are read:
//! - **GWA-T-12** (the Grid Workloads Archive's Bitbrains trace): one file per VM, fields
//!   separated by `;` and a tab, a header line; the timestamp in seconds despite its header;
//!   rows of zeros while the VM is off. The columns used: `Timestamp`, `CPU cores`,
//!   `CPU usage [%]` (of the VM's capacity, all its cores), `Memory capacity provisioned [KB]`,
//!   `Memory usage [KB]`.
//! - **Azure** `vm_cpu_readings` (Azure Public Dataset V1/V2): `timestamp,vmid,min,max,avg` with
//!   no header, CPU in percent of the VM's capacity, no memory. Every VM gets the size
//!   `azure_vcpus` x `azure_memory_mib` and a used memory that follows its CPU (the stated
//!   model, [`azure_used_mib`]).
//! - **Plain CSV**: a header `vm,time_s,vcpus,memory_mib,cpu_pct,used_mib`, then one row per VM
//!   and sample (`cpu_pct` of the VM's capacity).
//!
//! How a trace becomes a scenario: samples are resampled at the trace's typical interval (the
//! median gap) by linear interpolation, so uneven intervals and late starts line up; a VM
//! starts at its first running sample and stops after its last one when that is before the end;
//! zero rows between running ones are an idle VM (no demand, memory as before). Each vCPU's
//! demand is the VM's CPU share (usage over capacity); a VM with more vCPUs than the host has
//! pCPUs gets the host's pCPUs, its per-vCPU demand raised to keep the VM's demand (at most
//! 100%). Memory sizes are the most provisioned; use is capped at the size. When a VM is larger
//! than 90% of the memory the host gives guests (it could not boot), every VM's memory (size and
//! use) is scaled by one factor so the largest fits in that. VMs boot at a startup size: one share of their
//! size for all, so that together they fill 90% of the guests' memory (at least 10% + 64 MiB
//! above their first sample's use, at most their size), as an operator overcommitting a host
//! boots them below their maximum; a policy grows them from there.  Time is divided by
//! `time_scale` (a week at scale 5 runs in 33.6 simulated hours).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::backend::sim::MAX_DURATION_S;

/// Largest trace file read, bytes (a GWA-T-12 VM-month is about 1 MiB).
pub const TRACE_MAX_BYTES: u64 = 256 << 20;

/// A trace that cannot be used, with the place at fault.
#[derive(Debug, Error)]
pub enum TraceError {
    /// A file cannot be read (or is not a regular file, or too large).
    #[error("{}: cannot read: {why}", path.display())]
    Read {
        /// File path.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A file's content is wrong at a place.
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        /// File path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (bytes).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The options or the trace as a whole cannot make a scenario.
    #[error("{0}")]
    Whole(String),
}

impl TraceError {
    fn at(path: &Path, line: usize, column: usize, message: String) -> Self {
        TraceError::At {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// The format of the trace files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// GWA-T-12 (Bitbrains): one file per VM.
    Gwa,
    /// Azure Public Dataset `vm_cpu_readings`.
    Azure,
    /// This project's plain CSV.
    Csv,
}

/// How the scenario is made.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Format of the files.
    pub format: TraceFormat,
    /// Scenario name.
    pub name: String,
    /// Take at most this many VMs (in file order, then VM order).
    pub vms: Option<usize>,
    /// Skip this many VMs first.
    pub skip: usize,
    /// Take this much of the trace from its start, seconds of trace time.
    pub length_s: Option<f64>,
    /// Trace seconds per simulated second.
    pub time_scale: f64,
    /// pCPUs of the host, or ...
    pub pcpus: Option<u32>,
    /// ... the VMs' vCPUs over this ratio.
    pub cpu_overcommit: f64,
    /// Memory of the host, MiB, or ...
    pub memory_mib: Option<u64>,
    /// ... the VMs' provisioned memory over this ratio (plus the host's own).
    pub memory_overcommit: f64,
    /// Memory the host keeps for itself, MiB.
    pub host_used_mib: u64,
    /// Swap of each guest, MiB.
    pub swap_mib: u64,
    /// Seed of the scenario (compare varies it from there).
    pub seed: u64,
    /// Azure: vCPUs of every VM.
    pub azure_vcpus: u32,
    /// Azure: memory of every VM, MiB.
    pub azure_memory_mib: u64,
    /// The shortest share of a sample interval a memory change takes (1: linear).
    pub burst: f64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            format: TraceFormat::Gwa,
            name: "trace".into(),
            vms: None,
            skip: 0,
            length_s: None,
            time_scale: 1.0,
            pcpus: None,
            cpu_overcommit: 4.0,
            memory_mib: None,
            memory_overcommit: 1.5,
            host_used_mib: 1024,
            swap_mib: 0,
            seed: 1,
            azure_vcpus: 2,
            azure_memory_mib: 4096,
            burst: BURST,
        }
    }
}

/// What the seed varies in a trace scenario (written into it; see docs/comparing.md).
pub const CPU_NOISE_PCT: f64 = 5.0;
/// +- percent of a VM's memory use, drawn each simulated second.
pub const MEMORY_NOISE_PCT: f64 = 0.5;
/// Shortest share of a sample interval a memory change takes, by default.
pub const BURST: f64 = 0.5;
/// Balloon speed spread between guests (256 MiB/s +- half).
pub const BALLOON_RATE_SPREAD: f64 = 0.5;
/// Guest report timing jitter, s.
pub const REPORT_JITTER_S: f64 = 0.5;

/// One sample of one VM: trace time, CPU share of the VM's capacity (percent), memory used
/// (MiB); `None` while the VM is off.
type Point = (f64, Option<(f64, f64)>);

/// One VM of a trace.
#[derive(Clone, Debug)]
struct TracedVm {
    name: String,
    vcpus: u32,
    memory_mib: f64,
    points: Vec<Point>,
}

/// Reads the trace files and writes the scenario's TOML text.
pub fn scenario_from_trace(
    files: &[PathBuf],
    options: &TraceOptions,
) -> Result<String, TraceError> {
    let whole = |m: String| TraceError::Whole(m);
    if !(options.time_scale.is_finite() && (0.001..=3600.0).contains(&options.time_scale)) {
        return Err(whole(format!(
            "--time-scale {} is out of range [0.001, 3600]",
            options.time_scale
        )));
    }
    if !(options.burst.is_finite() && (0.01..=1.0).contains(&options.burst)) {
        return Err(whole(format!(
            "--burst {} is out of range [0.01, 1]",
            options.burst
        )));
    }
    for (flag, v) in [
        ("--cpu-overcommit", options.cpu_overcommit),
        ("--memory-overcommit", options.memory_overcommit),
    ] {
        if !(v.is_finite() && (0.01..=1000.0).contains(&v)) {
            return Err(whole(format!("{flag} {v} is out of range [0.01, 1000]")));
        }
    }
    let mut vms = Vec::new();
    for path in files {
        let text = crate::trust::read_regular(path, TRACE_MAX_BYTES, false).map_err(|r| {
            TraceError::Read {
                path: path.clone(),
                why: match r {
                    crate::trust::ReadRefusal::Io(e) => e.to_string(),
                    crate::trust::ReadRefusal::Untrusted(why) => why,
                },
            }
        })?;
        match options.format {
            TraceFormat::Gwa => vms.push(parse_gwa(path, &text)?),
            TraceFormat::Azure => vms.extend(parse_azure(path, &text, options)?),
            TraceFormat::Csv => vms.extend(parse_csv(path, &text)?),
        }
    }
    let vms: Vec<TracedVm> = vms
        .into_iter()
        .filter(|vm| vm.points.iter().any(|p| p.1.is_some()))
        .collect();
    // The VMs that run in the window taken, then --skip and --vms among them.
    let t0 = vms
        .iter()
        .filter_map(|vm| vm.points.iter().find(|p| p.1.is_some()).map(|p| p.0))
        .fold(f64::INFINITY, f64::min);
    let length = options.length_s.unwrap_or(DEFAULT_LENGTH_S);
    let vms: Vec<TracedVm> = vms
        .into_iter()
        .filter(|vm| vm.points.iter().any(|p| p.1.is_some() && p.0 - t0 < length))
        .skip(options.skip)
        .take(options.vms.unwrap_or(usize::MAX))
        .collect();
    if vms.is_empty() {
        return Err(whole(
            "no VM of the trace ever runs (every row is zero, or --skip/--vms left none)".into(),
        ));
    }
    build_scenario(&vms, options)
}

/// The fields of `line` separated by `separator`, each trimmed, with the byte offset where its
/// text starts (GWA-T-12: `;` then a tab; CSV: `,`; neither quotes).
fn fields(line: &str, separator: char) -> Vec<(usize, &str)> {
    let mut start = 0;
    let mut out = Vec::new();
    for part in line.split(separator) {
        let lead = part.len() - part.trim_start().len();
        out.push((start + lead, part.trim()));
        start += part.len() + separator.len_utf8();
    }
    out
}

/// A number in a field, or an error naming its place and column.
fn number(
    path: &Path,
    line: usize,
    (at, text): (usize, &str),
    column: &str,
) -> Result<f64, TraceError> {
    let fail = |message: String| TraceError::at(path, line, at + 1, message);
    let v: f64 = text.parse().map_err(|_| {
        fail(format!(
            "column `{column}`: `{}` is not a number",
            crate::source::shorten(text)
        ))
    })?;
    if !v.is_finite() {
        return Err(fail(format!(
            "column `{column}`: {text} is not a finite number"
        )));
    }
    if v < 0.0 {
        return Err(fail(format!("column `{column}`: {text} is negative")));
    }
    Ok(v)
}

/// Reads one GWA-T-12 file.
fn parse_gwa(path: &Path, text: &str) -> Result<TracedVm, TraceError> {
    let at =
        |line: usize, column: usize, message: String| TraceError::at(path, line, column, message);
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(at(
            1,
            1,
            "empty file: a GWA-T-12 file starts with a header line".into(),
        ));
    };
    let names: Vec<(usize, &str)> = fields(header, ';');
    if names.len() < 2 {
        return Err(at(
            1,
            1,
            format!(
                "no `;` separator in the header: GWA-T-12 fields are separated by `;` and a tab (is this another format? see --format){}",
                if header.contains(',') { "; found `,`" } else { "" }
            ),
        ));
    }
    let find = |want: &str| -> Result<usize, TraceError> {
        names
            .iter()
            .position(|(_, n)| {
                n.to_ascii_lowercase()
                    .starts_with(&want.to_ascii_lowercase())
            })
            .ok_or_else(|| at(1, 1, format!("the header has no `{want}` column")))
    };
    let c_time = find("Timestamp")?;
    let c_cores = find("CPU cores")?;
    let c_cpu = find("CPU usage [%]")?;
    let c_mem = find("Memory capacity provisioned")?;
    let c_used = find("Memory usage")?;
    let wanted = [c_time, c_cores, c_cpu, c_mem, c_used];
    let last = wanted.iter().copied().max().unwrap_or(0);
    let mut points = Vec::new();
    let mut vcpus = 0u32;
    let mut memory_kib = 0.0f64;
    let mut previous_time = f64::NEG_INFINITY;
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields = fields(line, ';');
        if fields.len() <= last {
            return Err(at(
                n,
                line.len() + 1,
                format!(
                    "{} fields, the header has {} (the `{}` column is missing)",
                    fields.len(),
                    names.len(),
                    names[last].1
                ),
            ));
        }
        let get = |c: usize| number(path, n, fields[c], names[c].1);
        let (t, cores, cpu, mem, used) = (
            get(c_time)?,
            get(c_cores)?,
            get(c_cpu)?,
            get(c_mem)?,
            get(c_used)?,
        );
        if t <= previous_time {
            return Err(at(
                n,
                fields[c_time].0 + 1,
                format!(
                    "column `{}`: {t} is not after the row before ({previous_time})",
                    names[c_time].1
                ),
            ));
        }
        previous_time = t;
        let off = cores == 0.0 && cpu == 0.0 && mem == 0.0 && used == 0.0;
        if off {
            points.push((t, None));
            continue;
        }
        if !(1.0..=4096.0).contains(&cores) || cores.fract() != 0.0 {
            return Err(at(
                n,
                fields[c_cores].0 + 1,
                format!(
                    "column `{}`: {cores} is not a vCPU count in [1, 4096]",
                    names[c_cores].1
                ),
            ));
        }
        if mem < 1024.0 {
            return Err(at(
                n,
                fields[c_mem].0 + 1,
                format!("column `{}`: {mem} KB is below 1 MiB", names[c_mem].1),
            ));
        }
        vcpus = vcpus.max(cores as u32);
        memory_kib = memory_kib.max(mem);
        points.push((t, Some((cpu, used / 1024.0))));
    }
    if points.is_empty() {
        return Err(at(1, 1, "no rows after the header".into()));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    Ok(TracedVm {
        name: format!("vm-{}", sanitize(&stem)),
        vcpus: vcpus.max(1),
        memory_mib: (memory_kib / 1024.0).ceil(),
        points,
    })
}

/// A domain-name-safe form of a file stem or VM id.
fn sanitize(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        "vm".into()
    } else {
        s
    }
}

/// Used memory of an Azure VM (no memory in that trace): a fifth of its size, plus half of its
/// size times its CPU share. Stated, not measured: busy VMs hold more.
pub fn azure_used_mib(memory_mib: f64, cpu_pct: f64) -> f64 {
    memory_mib * (0.2 + 0.5 * (cpu_pct / 100.0).clamp(0.0, 1.0))
}

/// Reads an Azure `vm_cpu_readings` file.
fn parse_azure(
    path: &Path,
    text: &str,
    options: &TraceOptions,
) -> Result<Vec<TracedVm>, TraceError> {
    let mut by_vm: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let memory = options.azure_memory_mib as f64;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields = fields(line, ',');
        if fields.len() != 5 {
            return Err(TraceError::at(
                path,
                n,
                1,
                format!(
                    "{} fields; an Azure vm_cpu_readings row has 5 (timestamp,vmid,min,max,avg cpu)",
                    fields.len()
                ),
            ));
        }
        let t = number(path, n, fields[0], "timestamp")?;
        let avg = number(path, n, fields[4], "avg cpu")?;
        let id = fields[1].1.to_owned();
        if id.is_empty() {
            return Err(TraceError::at(
                path,
                n,
                fields[1].0 + 1,
                "column `vmid` is empty".into(),
            ));
        }
        let points = by_vm.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Vec::new()
        });
        if points.last().is_some_and(|p| p.0 >= t) {
            return Err(TraceError::at(
                path,
                n,
                1,
                format!("column `timestamp`: {t} is not after this VM's row before"),
            ));
        }
        points.push((t, Some((avg.min(100.0), azure_used_mib(memory, avg)))));
    }
    if order.is_empty() {
        return Err(TraceError::at(
            path,
            1,
            1,
            "empty file: no vm_cpu_readings rows".into(),
        ));
    }
    Ok(order
        .into_iter()
        .enumerate()
        .map(|(i, id)| TracedVm {
            name: format!("az-{}-{}", i + 1, sanitize(&id[..id.len().min(8)])),
            vcpus: options.azure_vcpus.max(1),
            memory_mib: memory,
            points: by_vm.remove(&id).unwrap_or_default(),
        })
        .collect())
}

/// The plain CSV's header.
pub const CSV_HEADER: &str = "vm,time_s,vcpus,memory_mib,cpu_pct,used_mib";

/// Reads a plain CSV trace.
fn parse_csv(path: &Path, text: &str) -> Result<Vec<TracedVm>, TraceError> {
    let at =
        |line: usize, column: usize, message: String| TraceError::at(path, line, column, message);
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or("");
    if header.is_empty() {
        return Err(at(
            1,
            1,
            format!("empty file: a plain CSV trace starts with the header `{CSV_HEADER}`"),
        ));
    }
    let names: Vec<&str> = fields(header, ',').into_iter().map(|f| f.1).collect();
    let expected: Vec<&str> = CSV_HEADER.split(',').collect();
    if names != expected {
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !names.contains(e))
            .collect();
        return Err(at(
            1,
            1,
            if missing.is_empty() {
                format!("the header must be exactly `{CSV_HEADER}`")
            } else {
                format!(
                    "the header lacks {} (it must be exactly `{CSV_HEADER}`)",
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ));
    }
    let mut vms: Vec<TracedVm> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields = fields(line, ',');
        if fields.len() != expected.len() {
            return Err(at(
                n,
                1,
                format!("{} fields, the header has {}", fields.len(), expected.len()),
            ));
        }
        let name = fields[0].1;
        if name.is_empty() {
            return Err(at(n, 1, "column `vm` is empty".into()));
        }
        let get = |c: usize| number(path, n, fields[c], expected[c]);
        let (t, vcpus, memory, cpu, used) = (get(1)?, get(2)?, get(3)?, get(4)?, get(5)?);
        if !(1.0..=4096.0).contains(&vcpus) || vcpus.fract() != 0.0 {
            return Err(at(
                n,
                fields[2].0 + 1,
                format!("column `vcpus`: {vcpus} is not a vCPU count in [1, 4096]"),
            ));
        }
        if memory < 1.0 {
            return Err(at(
                n,
                fields[3].0 + 1,
                format!("column `memory_mib`: {memory} is below 1 MiB"),
            ));
        }
        let k = *index.entry(name.to_owned()).or_insert_with(|| {
            vms.push(TracedVm {
                name: sanitize(name),
                vcpus: 1,
                memory_mib: 1.0,
                points: Vec::new(),
            });
            vms.len() - 1
        });
        let vm = &mut vms[k];
        if vm.points.last().is_some_and(|p| p.0 >= t) {
            return Err(at(
                n,
                fields[1].0 + 1,
                format!("column `time_s`: {t} is not after VM {name}'s row before"),
            ));
        }
        vm.vcpus = vm.vcpus.max(vcpus as u32);
        vm.memory_mib = vm.memory_mib.max(memory.ceil());
        vm.points.push((t, Some((cpu, used))));
    }
    if vms.is_empty() {
        return Err(at(1, 1, "no rows after the header".into()));
    }
    Ok(vms)
}

/// The median gap between consecutive samples of all VMs.
fn typical_step(vms: &[TracedVm]) -> f64 {
    let mut gaps: Vec<f64> = vms
        .iter()
        .flat_map(|vm| vm.points.windows(2).map(|w| w[1].0 - w[0].0))
        .filter(|g| *g > 0.0)
        .collect();
    if gaps.is_empty() {
        return 300.0;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// One VM resampled: when it starts and stops (trace seconds from the trace's start), and its
/// CPU share and memory use at each step from its start.
struct Resampled {
    start_s: f64,
    stop_s: Option<f64>,
    cpu_pct: Vec<f64>,
    used_mib: Vec<f64>,
}

fn resample(vm: &TracedVm, t0: f64, step: f64, end: f64) -> Option<Resampled> {
    let running: Vec<(f64, f64, f64)> = vm
        .points
        .iter()
        .filter_map(|&(t, p)| p.map(|(c, u)| (t - t0, c, u)))
        .filter(|p| p.0 < end)
        .collect();
    let first = running.first()?.0;
    let last = running.last()?.0;
    // Idle stretches (zero rows between running ones) are no demand and unchanged memory.
    let mut series: Vec<(f64, f64, f64)> = Vec::new();
    let mut memory = running[0].2;
    for &(t, p) in &vm.points {
        let t = t - t0;
        if t < first || t > last {
            continue;
        }
        match p {
            Some((c, u)) => {
                memory = u;
                series.push((t, c, u));
            }
            None => series.push((t, 0.0, memory)),
        }
    }
    let mut cpu_pct = Vec::new();
    let mut used_mib = Vec::new();
    let mut j = 0;
    let mut t = first;
    while t <= last + 1e-9 && t < end {
        while j + 1 < series.len() && series[j + 1].0 <= t {
            j += 1;
        }
        let (a, b) = (series[j], series.get(j + 1).copied().unwrap_or(series[j]));
        let f = if b.0 > a.0 {
            ((t - a.0) / (b.0 - a.0)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        cpu_pct.push(a.1 + (b.1 - a.1) * f);
        used_mib.push((a.2 + (b.2 - a.2) * f).min(vm.memory_mib));
        t += step;
    }
    let stop = first + step * cpu_pct.len() as f64;
    Some(Resampled {
        start_s: first,
        stop_s: (stop < end - step).then_some(stop),
        cpu_pct,
        used_mib,
    })
}

/// The largest share of the guests' memory one VM may have: a larger VM could not boot, so
/// every VM's memory is scaled by one factor to bring it there.
pub const LARGEST_VM_SHARE: f64 = 0.9;

/// The share of the guests' memory the VMs fill when they boot: each boots at the same share of
/// its size, so that together they fit with this margin.
pub const STARTUP_FILL: f64 = 0.9;
/// ... but with at least this much free above what it uses at its first sample, MiB.
pub const STARTUP_MIN_FREE_MIB: f64 = 64.0;

/// Trace time taken when no length is asked for: a week (the traces' usual cut).
pub const DEFAULT_LENGTH_S: f64 = 7.0 * 86_400.0;

fn build_scenario(all: &[TracedVm], o: &TraceOptions) -> Result<String, TraceError> {
    let t0 = all
        .iter()
        .filter_map(|vm| vm.points.iter().find(|p| p.1.is_some()).map(|p| p.0))
        .fold(f64::INFINITY, f64::min);
    let step = typical_step(all);
    let length = o.length_s.unwrap_or(DEFAULT_LENGTH_S);
    // Only the VMs that run within the window taken.
    let vms: Vec<&TracedVm> = all
        .iter()
        .filter(|vm| vm.points.iter().any(|p| p.1.is_some() && p.0 - t0 < length))
        .collect();
    let t_end = vms
        .iter()
        .filter_map(|vm| vm.points.iter().rev().find(|p| p.1.is_some()).map(|p| p.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (t_end - t0 + step).min(length);
    let duration = (span / o.time_scale).min(MAX_DURATION_S);
    if duration < 1.0 {
        return Err(TraceError::Whole(format!(
            "the trace spans {span:.0} s: under 1 simulated second at --time-scale {}",
            o.time_scale
        )));
    }
    let end = duration * o.time_scale;
    let total_vcpus: u64 = vms.iter().map(|vm| u64::from(vm.vcpus)).sum();
    let provisioned: f64 = vms.iter().map(|vm| vm.memory_mib).sum();
    let pcpus = o
        .pcpus
        .unwrap_or_else(|| ((total_vcpus as f64 / o.cpu_overcommit).ceil() as u32).max(1))
        .clamp(1, crate::backend::sim::MAX_PCPUS);
    let host_memory = o
        .memory_mib
        .unwrap_or_else(|| (provisioned / o.memory_overcommit).ceil() as u64 + o.host_used_mib);
    if host_memory <= o.host_used_mib {
        return Err(TraceError::Whole(format!(
            "a host of {host_memory} MiB keeps nothing for guests beside its own {} MiB",
            o.host_used_mib
        )));
    }
    let guest_memory = (host_memory - o.host_used_mib) as f64;
    // Every VM boots at one share of its size, so that all fit with a margin (a startup size).
    let startup_share = (STARTUP_FILL * guest_memory / provisioned).min(1.0);
    let largest = vms.iter().map(|vm| vm.memory_mib).fold(0.0, f64::max);
    let scale = if largest > LARGEST_VM_SHARE * guest_memory {
        LARGEST_VM_SHARE * guest_memory / largest
    } else {
        1.0
    };
    let sim_step = step / o.time_scale;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `vcoord scenario from-trace`: do not edit by hand."
    );
    let _ = writeln!(out, "name = {:?}", o.name);
    let _ = writeln!(
        out,
        "description = {:?}",
        format!(
            "{} VMs of a trace, {:.1} days at time scale {} (a sample every {:.0} s of trace, {:.1} s simulated); host: {pcpus} pCPUs ({total_vcpus} vCPUs), {host_memory} MiB ({:.0} MiB provisioned){}",
            vms.len(),
            span / 86_400.0,
            o.time_scale,
            step,
            sim_step,
            provisioned,
            if scale < 1.0 { format!("; VM memory scaled by {scale:.3} to fit") } else { String::new() }
        )
    );
    let _ = writeln!(out, "duration_s = {}", round3(duration));
    let _ = writeln!(out, "seed = {}", o.seed);
    let _ = writeln!(
        out,
        "\n[host]\npcpus = {pcpus}\nmemory_mib = {host_memory}\nhost_used_mib = {}",
        o.host_used_mib
    );
    let _ = writeln!(
        out,
        "balloon_rate_spread = {BALLOON_RATE_SPREAD}\nguest_report_jitter_s = {REPORT_JITTER_S}"
    );
    for vm in vms {
        let Some(r) = resample(vm, t0, step, end) else {
            continue;
        };
        let vcpus = vm.vcpus.min(pcpus);
        // The VM's demand in pCPUs, spread over the vCPUs it keeps.
        let per_vcpu = f64::from(vm.vcpus) / f64::from(vcpus);
        let memory = ((vm.memory_mib * scale).ceil() as u64).max(64);
        let first_use = r.used_mib.first().copied().unwrap_or(0.0) * scale;
        let startup = ((startup_share * memory as f64)
            .max(first_use * 1.1 + STARTUP_MIN_FREE_MIB)
            .ceil() as u64)
            .clamp(1, memory);
        let _ = writeln!(out, "\n[[vm]]\nname = {:?}\nvcpus = {vcpus}", vm.name);
        let _ = writeln!(
            out,
            "max_memory_mib = {memory}\nmemory_mib = {startup}\nbase_used_mib = 0\nswap_mib = {}",
            o.swap_mib
        );
        let _ = writeln!(
            out,
            "cpu_noise_pct = {CPU_NOISE_PCT}\nmemory_noise_pct = {MEMORY_NOISE_PCT}"
        );
        let _ = writeln!(out, "start_s = {}", round3(r.start_s / o.time_scale));
        if let Some(stop) = r.stop_s {
            let stop = (stop / o.time_scale).min(duration);
            if stop > r.start_s / o.time_scale {
                let _ = writeln!(out, "stop_s = {}", round3(stop));
            }
        }
        let _ = writeln!(
            out,
            "[vm.trace]\nstep_s = {}\nburst = {}",
            round3(sim_step),
            o.burst
        );
        let cpu = r.cpu_pct.iter().map(|c| (c * per_vcpu).min(100.0));
        let _ = writeln!(out, "cpu_pct = [{}]", join(cpu));
        let used = r.used_mib.iter().map(|u| (u * scale).min(memory as f64));
        let _ = writeln!(out, "used_mib = [{}]", join(used));
    }
    Ok(out)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn join(values: impl Iterator<Item = f64>) -> String {
    let mut s = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}", (v * 10.0).round() / 10.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

    fn row(t: u64, cores: u32, pct: f64, mem_kb: f64, used_kb: f64) -> String {
        format!(
            "{t};\t{cores};\t5000.0;\t100.0;\t{pct};\t{mem_kb};\t{used_kb};\t0.0;\t0.0;\t0.0;\t0.0"
        )
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vcoord-trace-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::SeqCst)
    }

    #[test]
    fn a_gwa_trace_with_its_quirks_becomes_a_valid_scenario() {
        let dir = temp();
        // VM 1: from the start, uneven intervals, usage above one core on 4 cores.
        let a = [
            row(1000, 4, 150.0 / 4.0, 4_194_304.0, 1_048_576.0),
            row(1302, 4, 10.0, 4_194_304.0, 2_097_152.0),
            row(1598, 4, 10.0, 4_194_304.0, 524_288.0),
            row(1900, 4, 10.0, 4_194_304.0, 524_288.0),
        ];
        // VM 2: off (zeros) for two rows, then late start.
        let b = [
            row(1000, 0, 0.0, 0.0, 0.0),
            row(1300, 0, 0.0, 0.0, 0.0),
            row(1600, 1, 50.0, 1_048_576.0, 262_144.0),
            row(1900, 1, 50.0, 1_048_576.0, 262_144.0),
        ];
        let fa = write(&dir, "1.csv", &format!("{HEADER}\n{}\n", a.join("\n")));
        let fb = write(&dir, "2.csv", &format!("{HEADER}\n{}\n", b.join("\n")));
        let options = TraceOptions {
            pcpus: Some(2),
            memory_overcommit: 1.0,
            ..TraceOptions::default()
        };
        let text = scenario_from_trace(&[fa, fb], &options).unwrap();
        let s = crate::backend::sim::Scenario::parse(&text, Path::new("t.toml")).unwrap();
        assert_eq!(s.vms.len(), 2);
        let (v1, v2) = (&s.vms[0], &s.vms[1]);
        // 4 vCPUs on a 2-pCPU host: 2 vCPUs, each with twice the share.
        assert_eq!(v1.vcpus, 2);
        assert_eq!(v1.max_memory_mib, 4096);
        let t1 = v1.trace.as_ref().unwrap();
        assert_eq!(t1.step_s, 300.0);
        assert!((t1.cpu_pct[0] - 75.0).abs() < 0.1, "{:?}", t1.cpu_pct);
        assert!((t1.used_mib[0] - 1024.0).abs() < 0.1);
        // Resampled at 300 s: the second point is between the rows at 302 s and 598 s.
        assert!(
            t1.used_mib[1] > 2000.0 && t1.used_mib[1] < 2048.0,
            "{:?}",
            t1.used_mib
        );
        assert_eq!(v2.start_s, 600.0);
        assert_eq!(v2.trace.as_ref().unwrap().cpu_pct, vec![50.0, 50.0]);
        // Host memory: provisioned 5120, plus the host's 1024; each VM boots at the share of
        // its size that fills 90% of the memory for guests.
        assert_eq!(s.host.memory_mib, 5120 + 1024);
        assert_eq!(v1.memory_mib, 3687);
        assert_eq!(v2.memory_mib, 922);
    }

    #[test]
    fn time_scale_compresses_and_bad_files_are_refused_at_their_place() {
        let dir = temp();
        let good = write(
            &dir,
            "g.csv",
            &format!(
                "{HEADER}\n{}\n{}\n",
                row(0, 1, 5.0, 1_048_576.0, 1000.0),
                row(300, 1, 5.0, 1_048_576.0, 1000.0)
            ),
        );
        let options = TraceOptions {
            time_scale: 60.0,
            ..TraceOptions::default()
        };
        let s = crate::backend::sim::Scenario::parse(
            &scenario_from_trace(&[good], &options).unwrap(),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(s.vms[0].trace.as_ref().unwrap().step_s, 5.0);
        assert_eq!(s.duration_s, 10.0);
        let cases: [(&str, String, &str); 6] = [
            (
                "comma.csv",
                "a,b,c\n1,2,3\n".into(),
                ":1:1: no `;` separator",
            ),
            (
                "cols.csv",
                "Timestamp [ms];\tCPU cores\n1;\t2\n".into(),
                "no `CPU usage [%]` column",
            ),
            (
                "neg.csv",
                format!("{HEADER}\n{}\n", row(0, 1, -5.0, 1_048_576.0, 1000.0)),
                ":2:",
            ),
            (
                "nan.csv",
                format!("{HEADER}\n{}\n", row(0, 1, f64::NAN, 1_048_576.0, 1000.0)),
                "not a finite number",
            ),
            ("empty.csv", String::new(), "empty file"),
            ("short.csv", format!("{HEADER}\n0;\t1;\t5\n"), ":2:"),
        ];
        for (name, text, want) in cases {
            let f = write(&dir, name, &text);
            let err = scenario_from_trace(&[f], &TraceOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        }
        let neg = scenario_from_trace(&[dir.join("neg.csv")], &TraceOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            neg.contains("CPU usage [%]") && neg.contains("negative"),
            "{neg}"
        );
    }

    #[test]
    fn plain_csv_and_azure_readings_are_read() {
        let dir = temp();
        let csv = write(&dir, "p.csv", &format!("{CSV_HEADER}\na,0,2,2048,50,512\nb,0,1,1024,10,100\na,60,2,2048,20,1024\nb,60,1,1024,10,100\n"));
        let s = crate::backend::sim::Scenario::parse(
            &scenario_from_trace(
                &[csv],
                &TraceOptions {
                    format: TraceFormat::Csv,
                    memory_overcommit: 1.0,
                    ..TraceOptions::default()
                },
            )
            .unwrap(),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(s.vms.len(), 2);
        assert_eq!(
            s.vms[0].trace.as_ref().unwrap().used_mib,
            vec![512.0, 1024.0]
        );
        let az = write(
            &dir,
            "az.csv",
            "0,vmA,1,9,40\n0,vmB,1,9,0\n300,vmA,1,9,60\n300,vmB,1,9,0\n",
        );
        let s = crate::backend::sim::Scenario::parse(
            &scenario_from_trace(
                &[az],
                &TraceOptions {
                    format: TraceFormat::Azure,
                    pcpus: Some(4),
                    ..TraceOptions::default()
                },
            )
            .unwrap(),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(s.vms.len(), 2);
        assert_eq!(s.vms[0].vcpus, 2);
        let used = s.vms[0].trace.as_ref().unwrap().used_mib[0];
        assert!((used - azure_used_mib(4096.0, 40.0)).abs() < 0.1, "{used}");
    }
}
