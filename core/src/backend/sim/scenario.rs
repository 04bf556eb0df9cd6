//! Simulator scenarios: a host and VMs with workloads over time, read from TOML.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::params::show_number;
use crate::source::{find_key, Located};

/// A scenario file that cannot be used, with the place and key at fault.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("scenario {}: cannot read", path.display())]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{0}")]
    Invalid(Located),
}

/// Largest scenario file read, bytes (a week of a hundred traced VMs fits many times over).
pub const SCENARIO_MAX_BYTES: u64 = 256 << 20;

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// How long a run lasts unless told otherwise.
    pub duration_s: f64,
    /// Seed of the workload noise.
    #[serde(default)]
    pub seed: u64,
    /// Initial pinning of VMs that do not list their own `pins`.
    pub pinning: Option<Spanned<Pinning>>,
    /// The host.
    pub host: SimHost,
    /// The VMs.
    #[serde(rename = "vm", default)]
    pub vms: Vec<SimVm>,
}

/// Initial pinning of a scenario's VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pinning {
    /// Every vCPU may run on every pCPU.
    #[default]
    Unpinned,
    /// vCPU k (counting over all VMs in order) on pCPU k mod n.
    RoundRobin,
    /// Every vCPU on one pCPU.
    AllOn(u32),
    /// Each vCPU on a pCPU drawn from the seed.
    Random,
}

impl<'de> Deserialize<'de> for Pinning {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "unpinned" => Ok(Pinning::Unpinned),
            "round-robin" => Ok(Pinning::RoundRobin),
            "random" => Ok(Pinning::Random),
            other => other
                .strip_prefix("all-on-")
                .and_then(|n| n.parse().ok())
                .map(Pinning::AllOn)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown pinning `{other}` (expected unpinned, round-robin, random or all-on-N)"
                    ))
                }),
        }
    }
}

/// The simulated host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimHost {
    /// Number of pCPUs.
    pub pcpus: u32,
    /// SMT threads per core (pCPU ids of one core are consecutive).
    #[serde(default = "one")]
    pub threads_per_core: u32,
    /// NUMA nodes (pCPUs split evenly, in id order).
    #[serde(default = "one")]
    pub numa_nodes: u32,
    /// Host memory in total.
    pub memory_mib: u64,
    /// Memory the host itself uses, not available to guests.
    #[serde(default)]
    pub host_used_mib: u64,
    /// How fast a balloon moves toward its target.
    #[serde(default = "default_balloon_rate")]
    pub balloon_rate_mib_s: f64,
    /// How long a new balloon target takes to start moving the balloon.
    #[serde(default = "default_balloon_delay")]
    pub balloon_delay_s: f64,
    /// How often a guest with a statistics period delivers its figures (at least its period;
    /// real guests asked for every second deliver every ~2 s). The figures stay as delivered
    /// until the next delivery. 0: figures are read live at every sample (an idealised guest).
    #[serde(default = "default_guest_report")]
    pub guest_report_s: f64,
    /// How long after a balloon moves its new size is read (libvirt's `balloon.current` lags
    /// the guest's own figures by about a second).
    #[serde(default = "default_balloon_read_lag")]
    pub balloon_read_lag_s: f64,
    /// How much duty-cycle vCPUs sharing a pCPU collide: 1 = as if their phases were
    /// independent (two 50% vCPUs get 75% between them), 0 = never. Measured on the test guests:
    /// two 50% vCPUs got 81%, a 70% and a 20% one 80% (63 + 17): 0.72.
    #[serde(default = "default_collision")]
    pub cpu_collision: f64,
    /// How fast a guest plugs virtio-mem blocks (measured on the test guests under TCG: 256
    /// MiB within the 1 s between two reads).
    #[serde(default = "default_plug_rate")]
    pub virtio_mem_plug_mib_s: f64,
    /// How fast it unplugs them (measured in the loop on a guest that had just freed its
    /// memory: 128 MiB steps read back unplugged 2 s after the request, so 64-128 MiB/s; a
    /// quiet guest did 192 MiB in 1.6 s).
    #[serde(default = "default_unplug_rate")]
    pub virtio_mem_unplug_mib_s: f64,
    /// Load outside the VMs (host daemons, another tenant), each bound to one pCPU.
    #[serde(default)]
    pub other_load: Vec<OtherLoad>,
    /// How much balloon speed differs between guests, as a share of `balloon_rate_mib_s`: each
    /// VM's rate is drawn from the seed in `rate x [1 - spread, 1 + spread]` (0: all alike).
    #[serde(default)]
    pub balloon_rate_spread: f64,
    /// How irregular guest reports are: each delivery comes up to this much earlier or later
    /// than the period says, and a guest's first report at a time drawn in its first period
    /// (drawn from the seed; 0: like clockwork, all guests in step).
    #[serde(default)]
    pub guest_report_jitter_s: f64,
    /// ksmd's CPU time per page it scans, ns (see `KSM_NS_PER_PAGE`).
    #[serde(default = "default_ksm_ns_per_page")]
    pub ksm_ns_per_page: f64,
}

/// ksmd's CPU time per page scanned, ns: measured on this project's hosts from 1,500 (a first
/// scan) to 13,000 (rescanning pages merged hundreds of times over), 3,000 to 7,000 while
/// merging (docs/ksm.md).
pub const KSM_NS_PER_PAGE: f64 = 3000.0;

fn default_ksm_ns_per_page() -> f64 {
    KSM_NS_PER_PAGE
}

/// A host process bound to one pCPU (like `taskset -c N`), with its demand over time: it
/// shares its pCPU with the vCPUs there as one more task, max-min fairly.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtherLoad {
    /// The pCPU it runs on.
    pub pcpu: u32,
    /// Its demand from the start of the run, phase by phase.
    pub cpu: Vec<CpuPhase>,
    /// How long its bursts run against a vCPU's, when they are not preempted (a host process
    /// with a duty cycle of long bursts): a vCPU that wakes during one waits for it to end, so
    /// beside it each vCPU waits `burst_ratio` x its own run time x the process's share of the
    /// pCPU. The vCPU's work is done all the same; only its run-queue wait, and so its demand
    /// as measured, depends on where it is. 0 (the default): a vCPU's wakeup preempts it.
    #[serde(default)]
    pub burst_ratio: f64,
}

fn default_plug_rate() -> f64 {
    256.0
}

fn default_unplug_rate() -> f64 {
    80.0
}

fn default_balloon_read_lag() -> f64 {
    0.9
}

fn default_collision() -> f64 {
    0.72
}

fn one() -> u32 {
    1
}

fn default_balloon_rate() -> f64 {
    256.0
}

fn default_balloon_delay() -> f64 {
    0.3
}

fn default_guest_report() -> f64 {
    2.0
}

/// One phase of a vCPU's demand.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuPhase {
    /// Demand in percent of one pCPU.
    pub pct: f64,
    /// How long the phase lasts; the last phase lasts forever.
    pub for_s: Option<f64>,
}

/// One phase of a guest's memory use (what its workload holds, beyond `base_used_mib`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemPhase {
    /// Hold this much at once.
    pub use_mib: Option<f64>,
    /// Grow at this rate ...
    pub grow_mib_s: Option<f64>,
    /// ... until this much is held.
    pub to_mib: Option<f64>,
    /// Keep what is held for this long.
    pub hold_s: Option<f64>,
    /// Release everything.
    #[serde(default)]
    pub free: bool,
}

/// A simulated VM (or `count` alike VMs).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimVm {
    /// Domain name; with `count` > 1, the VMs are named `<name>1`, `<name>2`, ...
    pub name: String,
    /// How many alike VMs this entry stands for.
    #[serde(default = "one")]
    pub count: u32,
    /// vCPUs per VM.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Most memory (balloon fully deflated).
    pub max_memory_mib: u64,
    /// Memory at start.
    pub memory_mib: u64,
    /// Guest memory used by its kernel and base system.
    #[serde(default = "default_base_used")]
    pub base_used_mib: f64,
    /// Guest swap space.
    #[serde(default)]
    pub swap_mib: f64,
    /// Whether the guest has a balloon driver (and so reports memory statistics).
    #[serde(default = "yes")]
    pub balloon: bool,
    /// Initial pCPU of each vCPU (overrides the scenario's `pinning`).
    pub pins: Option<Spanned<Vec<u32>>>,
    /// Demand of every vCPU over time.
    #[serde(default)]
    pub cpu: Vec<CpuPhase>,
    /// Demand per vCPU over time (overrides `cpu` for the vCPUs it lists).
    #[serde(default)]
    pub vcpu_cpu: Vec<Vec<CpuPhase>>,
    /// Random noise added to the demand each tick, in +- percent points.
    #[serde(default)]
    pub cpu_noise_pct: f64,
    /// Memory use of the workload over time.
    #[serde(default)]
    pub memory: Vec<MemPhase>,
    /// When the VM starts.
    #[serde(default)]
    pub start_s: f64,
    /// When the VM stops, if it does.
    pub stop_s: Option<f64>,
    /// Size of its virtio-mem device (0: none), plugged beside `max_memory_mib` of boot memory.
    #[serde(default)]
    pub virtio_mem_mib: u64,
    /// The device's block size.
    #[serde(default = "default_block")]
    pub virtio_mem_block_mib: u64,
    /// Whether the guest has a virtio-mem driver (without one, it never plugs).
    #[serde(default = "yes")]
    pub virtio_mem_driver: bool,
    /// Demand and memory use read from a trace (points at a fixed step, joined between).
    pub trace: Option<TraceSeries>,
    /// Noise on the workload's memory, in +- percent of what it holds, drawn each simulated
    /// second from the seed (page cache and allocator churn around the trend).
    #[serde(default)]
    pub memory_noise_pct: f64,
    /// Share of the memory its guest uses that another guest holds the same (guests booted from
    /// one image share their kernel, libraries and much of their page cache): what KSM can
    /// merge away, percent.
    #[serde(default)]
    pub ksm_shareable_pct: f64,
    /// Times `[from_s, to_s]` during which a job runs on the VM (a migration, a dump): a
    /// balloon change then fails (libvirt waits for the job's lock, then gives up).
    #[serde(default)]
    pub jobs: Vec<[f64; 2]>,
}

/// A VM's CPU demand and memory use as a series of points `step_s` apart from the VM's start
/// (a trace, as `vcoord scenario from-trace` writes it). Between two points CPU demand moves
/// linearly; memory moves from one point's value to the next within a window of the interval
/// (see `burst`). After the last point the values stay.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSeries {
    /// Time between points.
    pub step_s: f64,
    /// Demand of each vCPU, percent of one pCPU, at each point (empty: none from the trace).
    #[serde(default)]
    pub cpu_pct: Vec<f64>,
    /// Memory the workload holds (beyond `base_used_mib`) at each point, MiB (empty: none).
    #[serde(default)]
    pub used_mib: Vec<f64>,
    /// The shortest share of an interval a memory change takes. 1: changes are linear over
    /// the interval; below 1, each interval's change happens within a window whose length the
    /// seed draws in `[burst, 1]` of the interval and whose start it draws in what is left (a
    /// trace sampled every few minutes does not say how fast use moved in between).
    #[serde(default = "one_f64")]
    pub burst: f64,
}

fn one_f64() -> f64 {
    1.0
}

/// Most points of one trace series.
pub const MAX_TRACE_POINTS: usize = 1_000_000;

fn default_block() -> u64 {
    2
}

fn default_base_used() -> f64 {
    60.0
}

fn yes() -> bool {
    true
}

impl Scenario {
    /// Initial pinning of VMs without `pins`.
    pub fn initial_pinning(&self) -> Pinning {
        self.pinning
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_default()
    }

    /// Reads and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = crate::trust::read_regular(path, SCENARIO_MAX_BYTES, false).map_err(|r| {
            ScenarioError::Read {
                path: path.to_path_buf(),
                source: match r {
                    crate::trust::ReadRefusal::Io(e) => e,
                    crate::trust::ReadRefusal::Untrusted(why) => std::io::Error::other(why),
                },
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates scenario text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Invalid(Located::from_toml(path, text, &e)))?;
        scenario.validate(path, text)?;
        Ok(scenario)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ScenarioError> {
        let invalid = |span: Option<std::ops::Range<usize>>, key: &str, msg: String| {
            let span = span.or_else(|| find_key(text, key));
            ScenarioError::Invalid(Located::new(path, text, span, key, msg))
        };
        // A finite number in [lo, hi], or an error about `key` stating the range.
        let within = |key: &str, v: f64, lo: f64, hi: f64, unit: &str| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(invalid(
                    None,
                    key,
                    format!(
                        "{} is out of range [{}, {}] {unit}",
                        show_number(v),
                        show_number(lo),
                        show_number(hi)
                    ),
                ))
            }
        };
        let h = &self.host;
        within("duration_s", self.duration_s, 1.0, MAX_DURATION_S, "s")?;
        within(
            "host.pcpus",
            f64::from(h.pcpus),
            1.0,
            f64::from(MAX_PCPUS),
            "pCPUs",
        )?;
        within(
            "host.memory_mib",
            h.memory_mib as f64,
            1.0,
            MAX_MEMORY_MIB,
            "MiB",
        )?;
        within(
            "host.host_used_mib",
            h.host_used_mib as f64,
            0.0,
            h.memory_mib as f64 - 1.0,
            "MiB (below host.memory_mib)",
        )?;
        within(
            "host.balloon_rate_mib_s",
            h.balloon_rate_mib_s,
            0.001,
            1e7,
            "MiB/s",
        )?;
        within("host.balloon_delay_s", h.balloon_delay_s, 0.0, 600.0, "s")?;
        for (i, load) in h.other_load.iter().enumerate() {
            let key = |k: &str| format!("host.other_load[{i}].{k}");
            if load.pcpu >= h.pcpus {
                return Err(invalid(
                    None,
                    &key("pcpu"),
                    format!(
                        "pCPU {} does not exist (the host has {})",
                        load.pcpu, h.pcpus
                    ),
                ));
            }
            within(
                &key("burst_ratio"),
                load.burst_ratio,
                0.0,
                100.0,
                "(a ratio)",
            )?;
            for phase in &load.cpu {
                within(&key("cpu"), phase.pct, 0.0, 100.0, "percent")?;
                if let Some(f) = phase.for_s {
                    within(&key("cpu"), f, 0.001, MAX_DURATION_S, "s (a phase's for_s)")?;
                }
            }
        }
        within("host.guest_report_s", h.guest_report_s, 0.0, 3600.0, "s")?;
        within(
            "host.balloon_read_lag_s",
            h.balloon_read_lag_s,
            0.0,
            60.0,
            "s",
        )?;
        within("host.cpu_collision", h.cpu_collision, 0.0, 1.0, "(a share)")?;
        within(
            "host.balloon_rate_spread",
            h.balloon_rate_spread,
            0.0,
            0.9,
            "(a share)",
        )?;
        within(
            "host.guest_report_jitter_s",
            h.guest_report_jitter_s,
            0.0,
            60.0,
            "s",
        )?;
        within("host.ksm_ns_per_page", h.ksm_ns_per_page, 0.0, 1e6, "ns")?;
        if h.threads_per_core == 0 || !h.pcpus.is_multiple_of(h.threads_per_core) {
            return Err(invalid(
                None,
                "host.threads_per_core",
                "must divide host.pcpus".into(),
            ));
        }
        if h.numa_nodes == 0 || !h.pcpus.is_multiple_of(h.numa_nodes) {
            return Err(invalid(
                None,
                "host.numa_nodes",
                "must divide host.pcpus".into(),
            ));
        }
        if let Some(Pinning::AllOn(cpu)) = self.pinning.as_ref().map(|p| p.get_ref()) {
            if *cpu >= h.pcpus {
                return Err(invalid(
                    self.pinning.as_ref().map(|p| p.span()),
                    "pinning",
                    format!("pCPU {cpu} does not exist (host has {})", h.pcpus),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut total_vcpus: u64 = 0;
        for (i, vm) in self.vms.iter().enumerate() {
            let key = |k: &str| format!("vm[{i}].{k}");
            within(
                &key("count"),
                f64::from(vm.count),
                1.0,
                f64::from(MAX_VMS),
                "VMs",
            )?;
            within(
                &key("vcpus"),
                f64::from(vm.vcpus),
                1.0,
                f64::from(MAX_VCPUS_PER_VM),
                "vCPUs",
            )?;
            total_vcpus += u64::from(vm.count) * u64::from(vm.vcpus);
            if total_vcpus > MAX_TOTAL_VCPUS {
                return Err(invalid(
                    None,
                    &key("count"),
                    format!("the scenario has over {MAX_TOTAL_VCPUS} vCPUs in all"),
                ));
            }
            let max = vm.max_memory_mib as f64;
            within(&key("max_memory_mib"), max, 1.0, MAX_MEMORY_MIB, "MiB")?;
            if vm.memory_mib > vm.max_memory_mib || vm.memory_mib == 0 {
                return Err(invalid(
                    None,
                    &key("memory_mib"),
                    format!(
                        "{} is out of range [1, max_memory_mib = {}] MiB",
                        vm.memory_mib, vm.max_memory_mib
                    ),
                ));
            }
            if vm.virtio_mem_mib > 0 {
                within(
                    &key("virtio_mem_block_mib"),
                    vm.virtio_mem_block_mib as f64,
                    1.0,
                    1024.0,
                    "MiB",
                )?;
                if vm.virtio_mem_mib % vm.virtio_mem_block_mib != 0 {
                    return Err(invalid(
                        None,
                        &key("virtio_mem_mib"),
                        format!(
                            "{} is not a multiple of virtio_mem_block_mib ({})",
                            vm.virtio_mem_mib, vm.virtio_mem_block_mib
                        ),
                    ));
                }
                within(
                    &key("virtio_mem_mib"),
                    vm.virtio_mem_mib as f64,
                    0.0,
                    MAX_MEMORY_MIB,
                    "MiB",
                )?;
            }
            within(
                &key("base_used_mib"),
                vm.base_used_mib,
                0.0,
                vm.memory_mib as f64,
                "MiB (within memory_mib)",
            )?;
            within(&key("swap_mib"), vm.swap_mib, 0.0, MAX_MEMORY_MIB, "MiB")?;
            within(
                &key("cpu_noise_pct"),
                vm.cpu_noise_pct,
                0.0,
                100.0,
                "percent points",
            )?;
            within(
                &key("start_s"),
                vm.start_s,
                0.0,
                self.duration_s,
                "s (within duration_s)",
            )?;
            if let Some(stop) = vm.stop_s {
                within(
                    &key("stop_s"),
                    stop,
                    vm.start_s,
                    self.duration_s.max(vm.start_s),
                    "s (after start_s)",
                )?;
                if stop <= vm.start_s {
                    return Err(invalid(
                        None,
                        &key("stop_s"),
                        format!("{stop} is not after start_s ({})", vm.start_s),
                    ));
                }
            }
            for (j, [from, to]) in vm.jobs.iter().enumerate() {
                let job_key = key(&format!("jobs[{j}]"));
                within(
                    &job_key,
                    *from,
                    0.0,
                    self.duration_s,
                    "s (within duration_s)",
                )?;
                if !(to.is_finite() && to > from) {
                    return Err(invalid(
                        None,
                        &job_key,
                        format!("ends at {to}, not after it starts ({from})"),
                    ));
                }
            }
            if let Some(pins) = &vm.pins {
                if pins.get_ref().len() != vm.vcpus as usize {
                    return Err(invalid(
                        Some(pins.span()),
                        &key("pins"),
                        format!(
                            "lists {} pCPUs for {} vCPUs",
                            pins.get_ref().len(),
                            vm.vcpus
                        ),
                    ));
                }
                if let Some(bad) = pins.get_ref().iter().find(|&&c| c >= h.pcpus) {
                    return Err(invalid(
                        Some(pins.span()),
                        &key("pins"),
                        format!("pCPU {bad} does not exist (host has {})", h.pcpus),
                    ));
                }
            }
            if vm.vcpu_cpu.len() > vm.vcpus as usize {
                return Err(invalid(
                    None,
                    &key("vcpu_cpu"),
                    format!("lists {} vCPUs, the VM has {}", vm.vcpu_cpu.len(), vm.vcpus),
                ));
            }
            let cpu_phases = vm.cpu.iter().map(|p| ("cpu", p));
            let vcpu_phases = vm.vcpu_cpu.iter().flatten().map(|p| ("vcpu_cpu", p));
            for (field, phase) in cpu_phases.chain(vcpu_phases) {
                within(&key(field), phase.pct, 0.0, 100.0, "percent")?;
                if let Some(f) = phase.for_s {
                    within(&key(field), f, 0.001, MAX_DURATION_S, "s (a phase's for_s)")?;
                }
            }
            let most = max + vm.virtio_mem_mib as f64;
            within(
                &key("memory_noise_pct"),
                vm.memory_noise_pct,
                0.0,
                100.0,
                "percent",
            )?;
            within(
                &key("ksm_shareable_pct"),
                vm.ksm_shareable_pct,
                0.0,
                100.0,
                "percent",
            )?;
            if let Some(trace) = &vm.trace {
                within(
                    &key("trace.step_s"),
                    trace.step_s,
                    0.001,
                    MAX_DURATION_S,
                    "s",
                )?;
                within(&key("trace.burst"), trace.burst, 0.01, 1.0, "(a share)")?;
                for (field, series, hi, unit) in [
                    ("cpu_pct", &trace.cpu_pct, 100.0, "percent"),
                    (
                        "used_mib",
                        &trace.used_mib,
                        most,
                        "MiB (within max_memory_mib + virtio_mem_mib)",
                    ),
                ] {
                    let tkey = key(&format!("trace.{field}"));
                    if series.len() > MAX_TRACE_POINTS {
                        return Err(invalid(
                            None,
                            &tkey,
                            format!("{} points; at most {MAX_TRACE_POINTS}", series.len()),
                        ));
                    }
                    if let Some((j, &v)) = series
                        .iter()
                        .enumerate()
                        .find(|(_, v)| !(v.is_finite() && (0.0..=hi).contains(*v)))
                    {
                        return Err(invalid(
                            None,
                            &tkey,
                            format!(
                                "point {j} ({}) is out of range [0, {}] {unit}",
                                show_number(v),
                                show_number(hi)
                            ),
                        ));
                    }
                }
                if !trace.used_mib.is_empty() && !vm.memory.is_empty() {
                    return Err(invalid(
                        None,
                        &key("trace.used_mib"),
                        "a VM's memory comes from `memory` phases or from its trace, not both"
                            .into(),
                    ));
                }
            }
            for (j, phase) in vm.memory.iter().enumerate() {
                let mkey = key(&format!("memory[{j}]"));
                let set = [
                    phase.use_mib.is_some(),
                    phase.grow_mib_s.is_some(),
                    phase.hold_s.is_some(),
                    phase.free,
                ];
                if set.iter().filter(|&&s| s).count() != 1
                    || phase.grow_mib_s.is_some() != phase.to_mib.is_some()
                {
                    return Err(invalid(
                        None,
                        &mkey,
                        "a phase is one of {use_mib}, {grow_mib_s, to_mib}, {hold_s} or {free = true}"
                            .into(),
                    ));
                }
                if let Some(v) = phase.use_mib {
                    within(
                        &mkey,
                        v,
                        0.0,
                        most,
                        "MiB (use_mib, within max_memory_mib + virtio_mem_mib)",
                    )?;
                }
                if let Some(v) = phase.grow_mib_s {
                    within(&mkey, v, 0.001, 1e6, "MiB/s (grow_mib_s)")?;
                }
                if let Some(v) = phase.to_mib {
                    within(
                        &mkey,
                        v,
                        0.0,
                        most,
                        "MiB (to_mib, within max_memory_mib + virtio_mem_mib)",
                    )?;
                }
                if let Some(v) = phase.hold_s {
                    within(&mkey, v, 0.001, MAX_DURATION_S, "s (hold_s)")?;
                }
            }
            for n in vm.instance_names() {
                if !names.insert(n.clone()) {
                    return Err(invalid(
                        None,
                        &key("name"),
                        format!("VM name {n} is used twice"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Longest scenario: 7 simulated days (a run ticks once per simulated second).
pub const MAX_DURATION_S: f64 = 7.0 * 86_400.0;
/// Most pCPUs of a simulated host.
pub const MAX_PCPUS: u32 = 4096;
/// Most VMs of one `[[vm]]` entry.
pub const MAX_VMS: u32 = 10_000;
/// Most vCPUs of one VM.
pub const MAX_VCPUS_PER_VM: u32 = 1024;
/// Most vCPUs of a whole scenario.
pub const MAX_TOTAL_VCPUS: u64 = 100_000;
/// Largest memory size, MiB (64 TiB).
pub const MAX_MEMORY_MIB: f64 = 64.0 * 1024.0 * 1024.0;

impl SimVm {
    /// Names of the VMs this entry stands for.
    pub fn instance_names(&self) -> Vec<String> {
        if self.count <= 1 {
            vec![self.name.clone()]
        } else {
            (1..=self.count)
                .map(|i| format!("{}{i}", self.name))
                .collect()
        }
    }
}
