//! The embedded simulator: a deterministic host model that a scenario drives and policies act
//! on, through the same `Backend` interface as a real host.
//!
//! CPU: a pCPU delivers at most 100%; the vCPUs placed on one pCPU share it max-min fairly and
//! what a vCPU wanted but did not get accumulates as run-queue wait. vCPUs allowed on several
//! pCPUs are spread the way an OS balancer would: heaviest first, each to the least-committed
//! allowed pCPU. Duty-cycle vCPUs sharing a pCPU collide (when both want it at once, one
//! waits), so together they run less than the sum of their demands.
//!
//! Memory: a new balloon target starts moving the balloon after a delay, then at a fixed rate;
//! the balloon cannot take memory the guest uses (it stalls instead, as a real driver does),
//! except into guest swap. Guest use above its memory goes to swap; above memory + swap it is an
//! OOM kill, which frees the workload's memory and ends its current phase.
//!
//! KSM: while ksmd runs, it scans guest memory at its scan rate and merges what one guest holds
//! the same as another (each VM's `ksm_shareable_pct` of its used memory), half of what is left
//! to merge per full scan (the first scan of a page only finds it, the next merges it); what
//! it merged is free on the host, until the guest writes it (merged memory never exceeds what
//! is shareable now). ksmd's time is counted per page scanned (`ksm_ns_per_page`), which also
//! slows its rate (a wakeup scans, then sleeps); it is reported, not taken from the vCPUs.
//!
//! Timing as on real hosts: a guest delivers its statistics every `guest_report_s` (or its
//! period, if longer) with the time of the report; between deliveries, and for an idle guest,
//! they stay the same, while the balloon size is read live, so the two are from different
//! moments.

mod scenario;

pub use scenario::{
    CpuPhase, MemPhase, Pinning, Scenario, ScenarioError, SimHost, SimVm, TraceSeries,
    MAX_DURATION_S, MAX_PCPUS, MAX_TRACE_POINTS,
};

use std::path::Path;
use std::time::Duration;

use crate::backend::{Backend, BackendError};
use crate::cpuset::CpuSet;
use crate::model::{
    HostSample, MemorySample, Pcpu, PressureSample, PsiSample, Sample, VcpuSample, VmSample,
};

use crate::units::{KIB_PER_MIB, KIB_PER_MIB_F64 as MIB};
use vcoord_api::VirtioMemView;
/// Wall-clock time the simulation starts at (any fixed value keeps runs identical).
const EPOCH_S: f64 = 1_700_000_000.0;
/// Model step: workloads and balloons move in steps this long.
const STEP_NS: u64 = 100_000_000;
/// Memory a guest kernel keeps for itself out of what the balloon leaves it (it shows as used,
/// beyond `base_used_mib`).
pub const GUEST_RESERVED_MIB: f64 = 30.0;
/// How fast a traced workload killed by the OOM killer takes its memory back once it restarts
/// (at the next trace point): a service reloading its data.
const RESTART_MIB_S: f64 = 50.0;
/// How fast swapped-out guest memory comes back once there is room.
const SWAP_IN_MIB_S: f64 = 100.0;

/// A small deterministic random generator (SplitMix64).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[derive(Debug)]
struct VcpuState {
    phases: Vec<CpuPhase>,
    affinity: CpuSet,
    last_pcpu: Option<u32>,
    run_ns: f64,
    wait_ns: f64,
    demand_pct: f64,
    /// Noise drawn for the current simulated second.
    jitter_pct: f64,
}

#[derive(Debug)]
struct VmState {
    name: String,
    uuid: String,
    spec: SimVm,
    vcpus: Vec<VcpuState>,
    rng: Rng,
    running: bool,
    /// The balloon's part: memory of the boot memory the guest has.
    actual_mib: f64,
    target_mib: f64,
    /// virtio-mem: what the guest was asked to plug, and has plugged.
    requested_mib: f64,
    plugged_mib: f64,
    /// What the workload holds now.
    app_mib: f64,
    /// Guest memory currently in swap.
    swapped_mib: f64,
    phase: usize,
    phase_started_s: f64,
    swap_in_total_mib: f64,
    swap_out_total_mib: f64,
    major_faults: u64,
    oom_events: u64,
    stats_period_s: u32,
    stats_updated_s: Option<f64>,
    /// When the next report is delivered (none before statistics are asked for).
    next_report_s: Option<f64>,
    /// Where in its first period the guest's first report falls, a share drawn from the seed.
    report_phase: f64,
    /// This guest's balloon speed (the host's, varied by `balloon_rate_spread`).
    balloon_rate_mib_s: f64,
    /// Draws of the variations beyond CPU noise (a stream apart from `rng`, so a scenario
    /// without them draws exactly what it always did).
    vary: Rng,
    /// Seed of this VM's trace windows.
    trace_seed: u64,
    /// Memory noise of the current simulated second, a factor around 1.
    memory_noise: f64,
    /// After an OOM kill, a traced workload holds nothing until this trace point, then grows
    /// back to its trace at [`RESTART_MIB_S`].
    trace_dead_until: usize,
    /// The guest's figures as last delivered.
    report: Option<GuestReport>,
    /// Balloon targets sent and not yet acting: (when they act, target MiB).
    pending: Vec<(f64, f64)>,
    /// Recent balloon sizes (time, MiB), for reading the size with the host's lag.
    sizes: std::collections::VecDeque<(f64, f64)>,
    /// CPU weight, quota and emulator affinity as set (the emulator has no load here).
    cputune: vcoord_api::CpuTune,
}

/// What a guest reports of its memory, frozen at delivery.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GuestReport {
    unused_mib: f64,
    available_mib: f64,
    swap_in_mib: f64,
    swap_out_mib: f64,
    major_faults: u64,
}

impl VmState {
    /// All the memory it has: the balloon's part and what virtio-mem plugged.
    fn total_mib(&self) -> f64 {
        self.actual_mib + self.plugged_mib
    }

    fn used_mib(&self) -> f64 {
        self.spec.base_used_mib + self.app_mib
    }

    /// Guest memory resident in RAM (used minus what sits in swap).
    fn resident_mib(&self) -> f64 {
        (self.used_mib() - self.swapped_mib).max(0.0)
    }

    /// The balloon size as it was at `at_s` (as read with the host's lag).
    fn size_read_at(&self, at_s: f64) -> f64 {
        self.sizes
            .iter()
            .rev()
            .find(|(t, _)| *t <= at_s + 1e-6)
            .or(self.sizes.front())
            .map_or(self.total_mib(), |&(_, mib)| mib)
    }

    /// What the guest would report now.
    fn figures(&self) -> GuestReport {
        let available = self.total_mib() - GUEST_RESERVED_MIB;
        GuestReport {
            unused_mib: (available - self.resident_mib()).max(0.0),
            available_mib: available,
            swap_in_mib: self.swap_in_total_mib,
            swap_out_mib: self.swap_out_total_mib,
            major_faults: self.major_faults,
        }
    }
}

/// The simulator as a backend.
#[derive(Debug)]
pub struct SimBackend {
    scenario: Scenario,
    pcpus: Vec<Pcpu>,
    vms: Vec<VmState>,
    now_ns: u64,
    realtime: bool,
    /// Host memory pressure: time some task stalled (µs) and the 10 s average (percent).
    memory_stall_us: f64,
    memory_stall_avg10_pct: f64,
    /// Each pCPU's busy time since the start, ns (vCPUs and other load).
    busy_ns: Vec<f64>,
    /// The host processes' run-queue wait on each pCPU since the start, ns.
    other_wait_ns: Vec<f64>,
    /// What the last step gave every task, while it holds (see `step_cpu`).
    cpu_shares: Option<CpuShares>,
    /// The host's same-page merging.
    ksm: SimKsm,
}

/// The kernel's same-page merging as the simulator models it (see the module documentation).
#[derive(Clone, Debug)]
struct SimKsm {
    /// ksmd's settings (the kernel's defaults until a plan changes them).
    settings: vcoord_api::KsmPlan,
    /// Memory merging saves now, MiB.
    saved_mib: f64,
    /// Full scans done (fractional).
    full_scans: f64,
    /// ksmd's CPU time, ns.
    run_ns: f64,
}

impl Default for SimKsm {
    fn default() -> Self {
        Self {
            settings: vcoord_api::KsmPlan {
                run: false,
                pages_to_scan: 100,
                sleep_ms: 20,
            },
            saved_mib: 0.0,
            full_scans: 0.0,
            run_ns: 0.0,
        }
    }
}

/// Pages KSM counts in, KiB.
const KSM_PAGE_KIB: u64 = 4;

/// One step's CPU shares and what they were worked out from.
#[derive(Debug)]
struct CpuShares {
    /// (VM, vCPU, demand) of every running vCPU.
    entries: Vec<(usize, usize, f64)>,
    /// Demand of each host process.
    loads: Vec<f64>,
    /// (VM or `usize::MAX` for a host process, vCPU or process, pCPU index, got, waited).
    shares: Vec<(usize, usize, usize, f64, f64)>,
}

/// Free host memory under which the simulated kernel reclaims and tasks stall: this share of
/// host memory, at least [`RECLAIM_LOW_MIN_MIB`].
const RECLAIM_LOW_SHARE: f64 = 0.02;
/// The smallest reclaim watermark, MiB.
const RECLAIM_LOW_MIN_MIB: f64 = 128.0;
/// Share of the time some task stalls on memory when the host has none free.
const STALL_AT_ZERO_FREE: f64 = 0.5;

/// The share of time some task stalls on memory with `free_mib` of `total_mib` free: none above
/// the reclaim watermark, rising linearly to [`STALL_AT_ZERO_FREE`] at nothing free.
fn memory_stall_share(free_mib: f64, total_mib: f64) -> f64 {
    let low = (RECLAIM_LOW_SHARE * total_mib).max(RECLAIM_LOW_MIN_MIB);
    ((low - free_mib) / low).clamp(0.0, 1.0) * STALL_AT_ZERO_FREE
}

impl SimBackend {
    /// Loads a scenario file.
    pub fn from_file(path: &Path, realtime: bool) -> Result<Self, BackendError> {
        Ok(Self::new(Scenario::from_file(path)?, realtime))
    }

    /// Builds the simulated host of a scenario, at time 0.
    pub fn new(scenario: Scenario, realtime: bool) -> Self {
        let host = &scenario.host;
        let host_pcpus = host.pcpus as usize;
        let cpus_per_node = host.pcpus / host.numa_nodes;
        let pcpus = (0..host.pcpus)
            .map(|id| Pcpu {
                id,
                core_id: Some(id / host.threads_per_core),
                socket_id: Some(id / cpus_per_node),
                node_id: Some(id / cpus_per_node),
            })
            .collect();
        let all: CpuSet = (0..host.pcpus).collect();
        let mut pin_rng = Rng(scenario.seed ^ 0x005e_ed0f_91a5);
        let mut next_rr = 0u32;
        let pinning = scenario.initial_pinning();
        let mut vms = Vec::new();
        for (entry_index, spec) in scenario.vms.iter().enumerate() {
            for (instance, name) in spec.instance_names().into_iter().enumerate() {
                let vcpus = (0..spec.vcpus)
                    .map(|v| {
                        let affinity = match (&spec.pins, &pinning) {
                            (Some(pins), _) => CpuSet::single(pins.get_ref()[v as usize]),
                            (None, Pinning::Unpinned) => all.clone(),
                            (None, Pinning::RoundRobin) => {
                                let cpu = next_rr % host.pcpus;
                                next_rr += 1;
                                CpuSet::single(cpu)
                            }
                            (None, Pinning::AllOn(cpu)) => CpuSet::single(*cpu),
                            (None, Pinning::Random) => {
                                CpuSet::single((pin_rng.next_u64() % host.pcpus as u64) as u32)
                            }
                        };
                        let phases = spec
                            .vcpu_cpu
                            .get(v as usize)
                            .cloned()
                            .unwrap_or_else(|| spec.cpu.clone());
                        VcpuState {
                            phases,
                            affinity,
                            last_pcpu: None,
                            run_ns: 0.0,
                            wait_ns: 0.0,
                            demand_pct: 0.0,
                            jitter_pct: 0.0,
                        }
                    })
                    .collect();
                let seed = scenario.seed
                    ^ ((entry_index as u64) << 32)
                    ^ (instance as u64).wrapping_mul(0x9e37_79b9);
                let mut vary = Rng(seed ^ 0x7a11_0f5e_ed5a_17ed);
                let report_phase = if host.guest_report_jitter_s > 0.0 {
                    (vary.symmetric() + 1.0) / 2.0
                } else {
                    0.0
                };
                let balloon_rate_mib_s = if host.balloon_rate_spread > 0.0 {
                    host.balloon_rate_mib_s * (1.0 + host.balloon_rate_spread * vary.symmetric())
                } else {
                    host.balloon_rate_mib_s
                };
                vms.push(VmState {
                    uuid: format!("00000000-0000-4000-8000-{:012x}", vms.len() + 1),
                    name,
                    spec: spec.clone(),
                    vcpus,
                    rng: Rng(seed),
                    running: false,
                    actual_mib: spec.memory_mib as f64,
                    requested_mib: 0.0,
                    plugged_mib: 0.0,
                    target_mib: spec.memory_mib as f64,
                    app_mib: 0.0,
                    swapped_mib: 0.0,
                    phase: 0,
                    phase_started_s: spec.start_s,
                    swap_in_total_mib: 0.0,
                    swap_out_total_mib: 0.0,
                    major_faults: 0,
                    oom_events: 0,
                    stats_period_s: 0,
                    stats_updated_s: None,
                    next_report_s: None,
                    report_phase,
                    balloon_rate_mib_s,
                    vary,
                    trace_seed: seed ^ 0x0007_ace5_eed0,
                    memory_noise: 1.0,
                    trace_dead_until: 0,
                    report: None,
                    pending: Vec::new(),
                    sizes: std::collections::VecDeque::new(),
                    cputune: vcoord_api::CpuTune::default(),
                });
            }
        }
        let mut sim = Self {
            scenario,
            pcpus,
            vms,
            now_ns: 0,
            realtime,
            memory_stall_us: 0.0,
            memory_stall_avg10_pct: 0.0,
            busy_ns: vec![0.0; host_pcpus],
            other_wait_ns: vec![0.0; host_pcpus],
            cpu_shares: None,
            ksm: SimKsm::default(),
        };
        sim.update_lifecycle();
        sim.start_phases();
        sim
    }

    /// The scenario being simulated.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    fn now_s(&self) -> f64 {
        self.now_ns as f64 / 1e9
    }

    fn vm_mut(&mut self, name: &str) -> Result<&mut VmState, BackendError> {
        self.vms
            .iter_mut()
            .find(|vm| vm.running && vm.name == name)
            .ok_or_else(|| BackendError::VmGone { vm: name.into() })
    }

    fn update_lifecycle(&mut self) {
        let now = self.now_s();
        for vm in &mut self.vms {
            let should_run = now >= vm.spec.start_s && vm.spec.stop_s.is_none_or(|stop| now < stop);
            if should_run && !vm.running && vm.phase == 0 && now > 0.0 {
                // A VM starting late runs its first instant phases (use, free) as it starts.
                apply_instant_phases(vm, now);
            }
            vm.running = should_run;
        }
    }

    fn start_phases(&mut self) {
        let now = self.now_s();
        for vm in self.vms.iter_mut().filter(|vm| vm.running) {
            apply_instant_phases(vm, now);
        }
    }

    fn guests_actual_mib(&self) -> f64 {
        self.vms
            .iter()
            .filter(|vm| vm.running)
            .map(|vm| vm.total_mib())
            .sum()
    }

    /// Advances the model by one step.
    fn step(&mut self, dt_s: f64) {
        let now = self.now_s();
        let new_second = self.now_ns.is_multiple_of(1_000_000_000);
        self.step_cpu(now, dt_s);
        let host = &self.scenario.host;
        for vm in self.vms.iter_mut().filter(|vm| vm.running) {
            // Targets whose delay has passed start acting, in the order they were sent.
            while let Some(&(due, target)) = vm.pending.first() {
                if due > now + 1e-9 {
                    break;
                }
                vm.target_mib = target;
                vm.pending.remove(0);
            }
            step_balloon(vm, dt_s);
            step_virtio_mem(vm, host, dt_s);
            if new_second && vm.spec.memory_noise_pct > 0.0 {
                vm.memory_noise = 1.0 + vm.spec.memory_noise_pct / 100.0 * vm.vary.symmetric();
            }
            step_memory(vm, now, dt_s);
            vm.sizes.push_back((now + dt_s, vm.total_mib()));
            while vm.sizes.len() > 2 && vm.sizes[1].0 <= now + dt_s - host.balloon_read_lag_s + 1e-6
            {
                vm.sizes.pop_front();
            }
            if vm.spec.balloon && vm.stats_period_s > 0 {
                let period = f64::from(vm.stats_period_s).max(host.guest_report_s);
                let next = *vm
                    .next_report_s
                    .get_or_insert(now + vm.report_phase * period);
                if now + dt_s >= next - 1e-9 {
                    vm.stats_updated_s = Some(now + dt_s);
                    vm.report = Some(vm.figures());
                    let jitter = if host.guest_report_jitter_s > 0.0 {
                        host.guest_report_jitter_s * vm.vary.symmetric()
                    } else {
                        0.0
                    };
                    vm.next_report_s = Some(now + dt_s + (period + jitter).max(dt_s));
                }
            }
        }
        self.step_ksm(dt_s);
        let total = self.scenario.host.memory_mib as f64;
        let stall = memory_stall_share(self.free_mib(), total);
        self.memory_stall_us += stall * dt_s * 1e6;
        self.memory_stall_avg10_pct +=
            (100.0 * stall - self.memory_stall_avg10_pct) * (1.0 - (-dt_s / 10.0).exp());
        self.now_ns += (dt_s * 1e9).round() as u64;
        self.update_lifecycle();
    }

    /// Host memory free now, MiB: what the host and the guests do not hold, and what merging
    /// saves of theirs.
    fn free_mib(&self) -> f64 {
        let host = &self.scenario.host;
        let held = host.host_used_mib as f64 + self.guests_actual_mib() - self.ksm.saved_mib;
        (host.memory_mib as f64 - held).max(0.0)
    }

    /// One step of ksmd: scan at its rate, merge half of what is left to merge per full scan.
    fn step_ksm(&mut self, dt_s: f64) {
        let running = || self.vms.iter().filter(|vm| vm.running);
        let shareable: f64 = running()
            .map(|vm| vm.spec.ksm_shareable_pct / 100.0 * vm.resident_mib())
            .sum();
        let mergeable = self.guests_actual_mib();
        let ksm = &mut self.ksm;
        if ksm.settings.run && mergeable > 0.0 {
            // Each wakeup scans its pages, then sleeps: the scan's own time slows the rate.
            let per_wakeup = ksm.settings.pages_to_scan as f64;
            let busy_s = per_wakeup * self.scenario.host.ksm_ns_per_page / 1e9;
            let wakeup_s = ksm.settings.sleep_ms as f64 / 1000.0 + busy_s;
            let pages = per_wakeup / wakeup_s * dt_s;
            let scans = pages * KSM_PAGE_KIB as f64 / MIB / mergeable;
            ksm.full_scans += scans;
            ksm.run_ns += pages * self.scenario.host.ksm_ns_per_page;
            let left = (shareable - ksm.saved_mib).max(0.0);
            ksm.saved_mib += left * (1.0 - 0.5f64.powf(scans));
        }
        ksm.saved_mib = ksm.saved_mib.min(shareable);
    }

    fn step_cpu(&mut self, now: f64, dt_s: f64) {
        let n = self.pcpus.len();
        // Demand of every running vCPU this step.
        // Noise is drawn once per simulated second: load varies from second to second, as
        // measured on real hosts, rather than averaging out within a tick.
        let new_second = self.now_ns.is_multiple_of(1_000_000_000);
        let mut entries: Vec<(usize, usize, f64)> = Vec::new();
        for (vi, vm) in self.vms.iter_mut().enumerate().filter(|(_, vm)| vm.running) {
            let age = now - vm.spec.start_s;
            let noise = vm.spec.cpu_noise_pct;
            let traced = vm.spec.trace.as_ref().filter(|t| !t.cpu_pct.is_empty());
            // A traced demand moves once a simulated second, as its noise does.
            let traced_pct =
                traced.map(|t| trace_value(&t.cpu_pct, t.step_s, age.floor(), |_| (0.0, 1.0)));
            for (ci, vcpu) in vm.vcpus.iter_mut().enumerate() {
                let base = traced_pct.unwrap_or_else(|| demand_at(&vcpu.phases, age));
                if new_second && noise > 0.0 {
                    vcpu.jitter_pct = vm.rng.symmetric() * noise;
                }
                let demand = if base > 0.0 {
                    (base + vcpu.jitter_pct).clamp(0.0, 100.0)
                } else {
                    0.0
                };
                // A quota caps what a vCPU can run; the rest of its demand waits (a throttled
                // thread stays queued: the kernel counts the time as run-queue delay).
                let demand = match vm.cputune.cap_pct(1) {
                    Some(cap) if demand > cap => {
                        vcpu.wait_ns += (demand - cap) / 100.0 * dt_s * 1e9;
                        cap
                    }
                    _ => demand,
                };
                vcpu.demand_pct = demand;
                entries.push((vi, ci, demand));
            }
        }
        // What every task got is the same as the step before when the demands, the places and
        // the weights are: then it is taken again, not worked out anew.
        let loads: Vec<f64> = self
            .scenario
            .host
            .other_load
            .iter()
            .map(|load| demand_at(&load.cpu, now))
            .collect();
        if let Some(cache) = &self.cpu_shares {
            if cache.entries == entries && cache.loads == loads {
                for &(vi, ci, p, got, wait) in &cache.shares {
                    self.busy_ns[p] += got / 100.0 * dt_s * 1e9;
                    if vi == usize::MAX {
                        self.other_wait_ns[p] += wait / 100.0 * dt_s * 1e9;
                        continue;
                    }
                    let vcpu = &mut self.vms[vi].vcpus[ci];
                    vcpu.run_ns += got / 100.0 * dt_s * 1e9;
                    vcpu.wait_ns += wait / 100.0 * dt_s * 1e9;
                }
                return;
            }
        }
        let mut given: Vec<(usize, usize, usize, f64, f64)> = Vec::with_capacity(entries.len());
        let mut moved = false;
        // Host processes bound to their pCPUs, entered as tasks with no VM (`usize::MAX`).
        let mut committed = vec![0.0f64; n];
        let mut placement: Vec<(usize, usize, usize, f64)> = Vec::with_capacity(entries.len());
        for (li, load) in self.scenario.host.other_load.iter().enumerate() {
            if let Some(p) = self.pcpu_index(load.pcpu) {
                let demand = loads[li];
                committed[p] += demand;
                placement.push((usize::MAX, li, p, demand));
            }
        }
        // Place: pinned vCPUs first, then flexible ones heaviest first to the least-committed
        // allowed pCPU (ties: the pCPU they ran on last, then the lowest id).
        let mut flexible = Vec::new();
        for &(vi, ci, demand) in &entries {
            let vcpu = &self.vms[vi].vcpus[ci];
            match vcpu.affinity.only().and_then(|c| self.pcpu_index(c)) {
                Some(p) => {
                    committed[p] += demand;
                    placement.push((vi, ci, p, demand));
                }
                None => flexible.push((vi, ci, demand)),
            }
        }
        flexible.sort_by(|a, b| b.2.total_cmp(&a.2));
        // The least-committed pCPUs, for vCPUs allowed everywhere (most on a large host): a
        // heap instead of a scan of every pCPU per vCPU.
        let mut least: std::collections::BinaryHeap<std::cmp::Reverse<(Committed, usize)>> = (0..n)
            .map(|p| std::cmp::Reverse((Committed(committed[p]), p)))
            .collect();
        for (vi, ci, demand) in flexible {
            let vcpu = &self.vms[vi].vcpus[ci];
            let last = vcpu.last_pcpu.and_then(|c| self.pcpu_index(c));
            // pCPU ids are 0..n and pinning refuses others: n of them is all.
            let everywhere = vcpu.affinity.is_empty() || vcpu.affinity.len() >= n;
            let best = if everywhere {
                // An entry is stale once its pCPU took more (a fresh one was pushed then).
                loop {
                    let Some(std::cmp::Reverse((Committed(c), p))) = least.pop() else {
                        break 0;
                    };
                    if c != committed[p] {
                        continue;
                    }
                    // Ties go to the pCPU the vCPU ran on last.
                    let pick = match last {
                        Some(l) if l != p && committed[l] == c => {
                            least.push(std::cmp::Reverse((Committed(c), p)));
                            l
                        }
                        _ => p,
                    };
                    break pick;
                }
            } else {
                (0..n)
                    .filter(|&p| vcpu.affinity.contains(self.pcpus[p].id))
                    .min_by(|&a, &b| {
                        committed[a]
                            .total_cmp(&committed[b])
                            .then_with(|| (Some(b) == last).cmp(&(Some(a) == last)))
                            .then(a.cmp(&b))
                    })
                    .unwrap_or(0)
            };
            committed[best] += demand;
            if everywhere {
                least.push(std::cmp::Reverse((Committed(committed[best]), best)));
            }
            placement.push((vi, ci, best, demand));
        }
        // Each VM's weight: its `cpu_shares` over the default 1024, per vCPU; host processes 1.
        let shares: Vec<f64> = self
            .vms
            .iter()
            .map(|vm| vm.cputune.cpu_shares.unwrap_or(1024) as f64 / 1024.0)
            .collect();
        let weight = |vi: usize| shares.get(vi).copied().unwrap_or(1.0);
        // Share each pCPU max-min fairly.
        let mut by_pcpu: Vec<Vec<(usize, usize, f64)>> = vec![Vec::new(); n];
        for &(vi, ci, p, d) in &placement {
            by_pcpu[p].push((vi, ci, d));
        }
        for (p, mut on_p) in by_pcpu.into_iter().enumerate() {
            // Colliding duty cycles: the pCPU idles only when no vCPU on it wants to run; with
            // duty cycles in independent phases that is the product of their idle shares, so
            // two 50% vCPUs get 75% between them, not 100%.
            // Measured collisions are a share (`cpu_collision`) of that. Below saturation each
            // vCPU gets its share of what is left in proportion to its demand (as measured);
            // above, max-min fairly.
            let sum: f64 = on_p.iter().map(|e| e.2).sum();
            let independent =
                100.0 * (1.0 - on_p.iter().map(|e| 1.0 - e.2 / 100.0).product::<f64>());
            let mut capacity =
                sum.min(100.0) - self.scenario.host.cpu_collision * (sum.min(100.0) - independent);
            let scale = if sum > 0.0 && sum <= 100.0 {
                capacity / sum
            } else {
                1.0
            };
            // Weighted water-filling: each task's fair part is its weight's share of what is
            // left.
            on_p.sort_by(|a, b| (a.2 / weight(a.0)).total_cmp(&(b.2 / weight(b.0))));
            let mut weights_left: f64 = on_p.iter().map(|e| weight(e.0)).sum();
            let mut got_here = Vec::with_capacity(on_p.len());
            for &(vi, _, demand) in &on_p {
                let w = weight(vi);
                let fair = capacity * w / weights_left;
                let got = (demand * scale).min(fair);
                capacity -= got;
                weights_left -= w;
                got_here.push(got);
            }
            // Host processes whose bursts a vCPU waits behind: per point of its run time, a
            // vCPU waits each one's burst ratio times its share of the pCPU.
            let behind: f64 = on_p
                .iter()
                .zip(&got_here)
                .filter(|(e, _)| e.0 == usize::MAX)
                .map(|(e, got)| self.scenario.host.other_load[e.1].burst_ratio * got / 100.0)
                .sum();
            for ((vi, ci, demand), got) in on_p.into_iter().zip(got_here) {
                // (A thread waits at most the time it does not run.)
                let held = if vi == usize::MAX { 0.0 } else { got * behind };
                let wait = (demand - got + held).min(100.0 - got);
                self.busy_ns[p] += got / 100.0 * dt_s * 1e9;
                given.push((vi, ci, p, got, wait));
                if vi == usize::MAX {
                    self.other_wait_ns[p] += wait / 100.0 * dt_s * 1e9;
                    continue;
                }
                let vcpu = &mut self.vms[vi].vcpus[ci];
                vcpu.run_ns += got / 100.0 * dt_s * 1e9;
                vcpu.wait_ns += wait / 100.0 * dt_s * 1e9;
                if demand > 0.0 || vcpu.last_pcpu.is_none() {
                    let id = Some(self.pcpus[p].id);
                    moved |= vcpu.last_pcpu != id;
                    vcpu.last_pcpu = id;
                }
            }
        }
        // A vCPU that ran elsewhere than before may be placed otherwise next step (placement
        // prefers where it ran): only a step that moved none is taken again.
        self.cpu_shares = (!moved).then_some(CpuShares {
            entries,
            loads,
            shares: given,
        });
    }

    fn pcpu_index(&self, id: u32) -> Option<usize> {
        self.pcpus.iter().position(|p| p.id == id)
    }
}

/// A pCPU's committed demand, ordered as a heap key.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Committed(f64);

impl Eq for Committed {}

impl PartialOrd for Committed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Committed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Demand of a vCPU `age_s` seconds after its VM started.
fn demand_at(phases: &[CpuPhase], age_s: f64) -> f64 {
    let mut start = 0.0;
    for (i, phase) in phases.iter().enumerate() {
        match phase.for_s {
            Some(len) if i + 1 < phases.len() && age_s >= start + len => start += len,
            _ => return phase.pct,
        }
    }
    0.0
}

fn step_balloon(vm: &mut VmState, dt_s: f64) {
    if !vm.spec.balloon {
        return;
    }
    let max_move = vm.balloon_rate_mib_s * dt_s;
    if vm.target_mib > vm.actual_mib {
        vm.actual_mib = (vm.actual_mib + max_move).min(vm.target_mib);
    } else if vm.target_mib < vm.actual_mib {
        // Inflating takes free guest memory first, then pushes used memory into swap while
        // there is swap room; beyond that the balloon stalls.
        let floor = vm.resident_mib() + GUEST_RESERVED_MIB
            - (vm.spec.swap_mib - vm.swapped_mib)
            - vm.plugged_mib;
        let goal = vm.target_mib.max(floor.min(vm.actual_mib));
        let new_actual = (vm.actual_mib - max_move).max(goal);
        let room = new_actual + vm.plugged_mib - GUEST_RESERVED_MIB;
        if vm.resident_mib() > room {
            let pushed = vm.resident_mib() - room;
            vm.swapped_mib += pushed;
            vm.swap_out_total_mib += pushed;
        }
        vm.actual_mib = new_actual;
    }
}

/// The guest follows its virtio-mem request at the measured rates; it unplugs only memory it
/// does not use (online-movable blocks whose pages can move elsewhere in the guest), so an
/// unplug of memory in use stalls where the guest's use is. Without a driver nothing moves.
fn step_virtio_mem(vm: &mut VmState, host: &scenario::SimHost, dt_s: f64) {
    if vm.spec.virtio_mem_mib == 0 || !vm.spec.virtio_mem_driver {
        return;
    }
    if vm.requested_mib > vm.plugged_mib {
        vm.plugged_mib = (vm.plugged_mib + host.virtio_mem_plug_mib_s * dt_s).min(vm.requested_mib);
    } else if vm.requested_mib < vm.plugged_mib {
        let free = (vm.total_mib() - GUEST_RESERVED_MIB - vm.resident_mib()).max(0.0);
        let block = vm.spec.virtio_mem_block_mib as f64;
        let can = (free / block).floor() * block;
        let step = (host.virtio_mem_unplug_mib_s * dt_s)
            .min(vm.plugged_mib - vm.requested_mib)
            .min(can);
        vm.plugged_mib -= step.max(0.0);
    }
}

fn step_memory(vm: &mut VmState, now: f64, dt_s: f64) {
    let traced = vm.spec.trace.as_ref().filter(|t| !t.used_mib.is_empty());
    if let Some(trace) = traced {
        let age = now + dt_s - vm.spec.start_s;
        let point = (age / trace.step_s).floor().max(0.0) as usize;
        let window = |i: usize| burst_window(vm.trace_seed, i, trace.burst);
        let traced = trace_value(&trace.used_mib, trace.step_s, age, window) * vm.memory_noise;
        vm.app_mib = if point < vm.trace_dead_until {
            0.0
        } else if vm.trace_dead_until > 0 {
            // Restarted after a kill: it grows back from nothing.
            let since = age - vm.trace_dead_until as f64 * trace.step_s;
            let back = RESTART_MIB_S * since.max(0.0);
            if back >= traced {
                vm.trace_dead_until = 0;
            }
            traced.min(back)
        } else {
            traced
        };
    }
    if let Some(phase) = vm.spec.memory.get(vm.phase).cloned() {
        let done = if let (Some(rate), Some(to)) = (phase.grow_mib_s, phase.to_mib) {
            vm.app_mib = (vm.app_mib + rate * dt_s).min(to);
            vm.app_mib >= to
        } else if let Some(hold) = phase.hold_s {
            now + dt_s - vm.phase_started_s >= hold - 1e-9
        } else {
            true
        };
        if done {
            vm.phase += 1;
            vm.phase_started_s = now + dt_s;
            apply_instant_phases(vm, now + dt_s);
        }
    }
    // Memory beyond what RAM holds goes to swap; beyond swap it is an OOM kill.
    let room = vm.total_mib() - GUEST_RESERVED_MIB;
    let resident = vm.resident_mib();
    if resident > room {
        let overflow = resident - room;
        let swap_room = vm.spec.swap_mib - vm.swapped_mib;
        if overflow <= swap_room {
            vm.swapped_mib += overflow;
            vm.swap_out_total_mib += overflow;
        } else {
            vm.oom_events += 1;
            vm.app_mib = 0.0;
            vm.swapped_mib = 0.0;
            // A killed traced workload comes back from the next trace point on.
            if let Some(trace) = vm.spec.trace.as_ref() {
                let age = now + dt_s - vm.spec.start_s;
                vm.trace_dead_until = (age / trace.step_s).floor().max(0.0) as usize + 1;
            }
            if vm.spec.memory.get(vm.phase).is_some() {
                vm.phase += 1;
                vm.phase_started_s = now + dt_s;
                apply_instant_phases(vm, now + dt_s);
            }
        }
    } else if vm.swapped_mib > 0.0 {
        let back = (room - resident)
            .min(vm.swapped_mib)
            .min(SWAP_IN_MIB_S * dt_s);
        vm.swapped_mib -= back;
        vm.swap_in_total_mib += back;
        vm.major_faults += (back * 256.0) as u64; // one fault per 4 KiB page
    }
    vm.swapped_mib = vm.swapped_mib.min(vm.used_mib());
}

/// The value of a trace series `age_s` after its start: between points `i` and `i + 1`, the
/// move from one to the other happens within the window `(start, length)` of the interval
/// (shares of it) that `window(i)` gives; after the last point the series stays.
fn trace_value(
    points: &[f64],
    step_s: f64,
    age_s: f64,
    window: impl Fn(usize) -> (f64, f64),
) -> f64 {
    let Some(&last) = points.last() else {
        return 0.0;
    };
    let at = (age_s / step_s).max(0.0);
    let i = at.floor() as usize;
    if i + 1 >= points.len() {
        return last;
    }
    let (start, length) = window(i);
    let f = ((at - i as f64 - start) / length).clamp(0.0, 1.0);
    points[i] + (points[i + 1] - points[i]) * f
}

/// The window of interval `i` within which a traced memory change happens: its length drawn in
/// `[burst, 1]` of the interval, its start in what is left; the whole interval at `burst` 1.
fn burst_window(seed: u64, i: usize, burst: f64) -> (f64, f64) {
    if burst >= 1.0 {
        return (0.0, 1.0);
    }
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let unit = |r: &mut Rng| (r.symmetric() + 1.0) / 2.0;
    let length = burst + (1.0 - burst) * unit(&mut rng);
    (unit(&mut rng) * (1.0 - length), length)
}

/// Runs the phases that take no time (use, free) starting at the current one.
fn apply_instant_phases(vm: &mut VmState, now: f64) {
    while let Some(phase) = vm.spec.memory.get(vm.phase) {
        if let Some(mib) = phase.use_mib {
            vm.app_mib = mib;
        } else if phase.free {
            vm.app_mib = 0.0;
            vm.swapped_mib = vm.swapped_mib.min(vm.used_mib());
        } else {
            return;
        }
        vm.phase += 1;
        vm.phase_started_s = now;
    }
}

fn kib(mib: f64) -> u64 {
    (mib.max(0.0) * MIB).round() as u64
}

impl Backend for SimBackend {
    fn describe(&self) -> String {
        format!("simulator, scenario {}", self.scenario.name)
    }

    fn sample(&mut self) -> Result<Sample, BackendError> {
        let host = &self.scenario.host;
        let wall_s = EPOCH_S + self.now_s();
        let free_mib = self.free_mib();
        let vms = self
            .vms
            .iter()
            .filter(|vm| vm.running)
            .map(|vm| {
                let reports = vm.spec.balloon && vm.stats_updated_s.is_some();
                let guest = |v: f64| reports.then(|| kib(v));
                // Figures as delivered, or live for an idealised guest.
                let live = vm.figures();
                let figures = match vm.report {
                    Some(r) if host.guest_report_s > 0.0 => r,
                    _ => live,
                };
                VmSample {
                    cputune: vm.cputune.clone(),
                    name: vm.name.clone(),
                    uuid: vm.uuid.clone(),
                    vcpus: vm
                        .vcpus
                        .iter()
                        .enumerate()
                        .map(|(i, v)| VcpuSample {
                            id: i as u32,
                            run_time_ns: v.run_ns as u64,
                            wait_time_ns: Some(v.wait_ns as u64),
                            pcpu: v.last_pcpu,
                            affinity: v.affinity.clone(),
                        })
                        .collect(),
                    memory: MemorySample {
                        max_kib: (vm.spec.max_memory_mib + vm.spec.virtio_mem_mib) * KIB_PER_MIB,
                        actual_kib: kib(vm.size_read_at(self.now_s() - host.balloon_read_lag_s)),
                        unused_kib: guest(figures.unused_mib),
                        available_kib: guest(figures.available_mib),
                        usable_kib: guest(figures.unused_mib),
                        swap_in_total_kib: guest(figures.swap_in_mib),
                        swap_out_total_kib: guest(figures.swap_out_mib),
                        major_faults_total: reports.then_some(figures.major_faults),
                        stats_updated_s: vm
                            .stats_updated_s
                            .filter(|_| reports)
                            .map(|t| (EPOCH_S + t).floor() as i64),
                        virtio_mem: (vm.spec.virtio_mem_mib > 0)
                            .then(|| VirtioMemView {
                                alias: "virtiomem0".into(),
                                size_kib: vm.spec.virtio_mem_mib * KIB_PER_MIB,
                                block_kib: vm.spec.virtio_mem_block_mib * KIB_PER_MIB,
                                requested_kib: kib(vm.requested_mib),
                                current_kib: kib(vm.plugged_mib),
                                node: Some(0),
                                held: false,
                            })
                            .into_iter()
                            .collect(),
                        ..MemorySample::default()
                    },
                    oom_events: Some(vm.oom_events),
                    metadata: None,
                }
            })
            .collect();
        let mut sample = Sample {
            taken_ns: self.now_ns,
            wall_s,
            host: HostSample {
                pcpus: self.pcpus.clone(),
                mem_total_kib: host.memory_mib * KIB_PER_MIB,
                mem_free_kib: kib(free_mib),
                pcpu_busy_ns: self
                    .pcpus
                    .iter()
                    .zip(&self.busy_ns)
                    .map(|(p, &ns)| (p.id, ns as u64))
                    .collect(),
                pcpu_other_wait_ns: self
                    .pcpus
                    .iter()
                    .zip(&self.other_wait_ns)
                    .map(|(p, &ns)| (p.id, ns as u64))
                    .collect(),
                ksm: Some(crate::model::KsmSample {
                    run: u64::from(self.ksm.settings.run),
                    pages_shared: 0,
                    pages_sharing: (self.ksm.saved_mib * MIB) as u64 / KSM_PAGE_KIB,
                    pages_unshared: 0,
                    pages_volatile: 0,
                    full_scans: self.ksm.full_scans as u64,
                    pages_to_scan: self.ksm.settings.pages_to_scan,
                    sleep_millisecs: self.ksm.settings.sleep_ms,
                    advisor_mode: None,
                    page_kib: KSM_PAGE_KIB,
                    ksmd_run_ns: Some(self.ksm.run_ns as u64),
                }),
                pressure: PressureSample {
                    memory: Some(PsiSample {
                        some_total_us: self.memory_stall_us.round() as u64,
                        full_total_us: None,
                        some_avg10_pct: self.memory_stall_avg10_pct,
                    }),
                    ..PressureSample::default()
                },
            },
            vms,
        };
        sample.vms.sort_by(|a: &VmSample, b| a.name.cmp(&b.name));
        Ok(sample)
    }

    fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError> {
        let n = self.pcpus.len() as u32;
        if cpus.is_empty() || cpus.iter().any(|c| c >= n) {
            return Err(BackendError::Refused {
                vm: vm.into(),
                op: "pin vCPU",
                message: format!("invalid CPU set {{{cpus}}} on a host with {n} pCPUs"),
            });
        }
        let state = self.vm_mut(vm)?;
        let slot = state
            .vcpus
            .get_mut(vcpu as usize)
            .ok_or_else(|| BackendError::Refused {
                vm: vm.into(),
                op: "pin vCPU",
                message: format!("no vCPU {vcpu}"),
            })?;
        slot.affinity = cpus.clone();
        self.cpu_shares = None;
        Ok(())
    }

    fn set_cputune(&mut self, vm: &str, tune: &vcoord_api::CpuTune) -> Result<(), BackendError> {
        let n = self.pcpus.len() as u32;
        if let Some(set) = tune
            .emulator
            .as_ref()
            .filter(|s| s.is_empty() || s.iter().any(|c| c >= n))
        {
            return Err(BackendError::Refused {
                vm: vm.into(),
                op: "tune CPU",
                message: format!("invalid CPU set {{{set}}} on a host with {n} pCPUs"),
            });
        }
        let state = self.vm_mut(vm)?;
        state.cputune = state.cputune.with(tune);
        self.cpu_shares = None;
        Ok(())
    }

    fn busy(&mut self, vm: &str) -> Option<String> {
        let now = self.now_s();
        let state = self.vm_mut(vm).ok()?;
        state
            .spec
            .jobs
            .iter()
            .any(|[from, to]| (*from..*to).contains(&now))
            .then(|| "a job is running (simulated)".to_owned())
    }

    fn set_balloon_target(&mut self, vm: &str, target_kib: u64) -> Result<(), BackendError> {
        if self.busy(vm).is_some() {
            return Err(BackendError::Refused {
                vm: vm.into(),
                op: "set balloon target",
                message: "Timed out during operation: cannot acquire state change lock".into(),
            });
        }
        let state = self.vm_mut(vm)?;
        let max_kib = state.spec.max_memory_mib * KIB_PER_MIB;
        if target_kib > max_kib {
            return Err(BackendError::Refused {
                vm: vm.into(),
                op: "set balloon target",
                message: format!("{target_kib} KiB exceeds the maximum {max_kib} KiB"),
            });
        }
        let delay = self.scenario.host.balloon_delay_s;
        let due = self.now_ns as f64 / 1e9 + delay;
        let state = self.vm_mut(vm)?;
        let target = target_kib as f64 / MIB;
        if delay > 0.0 {
            state.pending.push((due, target));
        } else {
            state.target_mib = target;
        }
        Ok(())
    }

    fn set_virtio_mem(
        &mut self,
        vm: &str,
        alias: &str,
        requested_kib: u64,
    ) -> Result<(), BackendError> {
        let state = self.vm_mut(vm)?;
        let (size, block) = (state.spec.virtio_mem_mib, state.spec.virtio_mem_block_mib);
        let refuse = |message: String| BackendError::Refused {
            vm: vm.into(),
            op: "set virtio-mem request",
            message,
        };
        if size == 0 || alias != "virtiomem0" {
            return Err(refuse(format!("no virtio-mem device {alias}")));
        }
        if requested_kib > size * KIB_PER_MIB || !requested_kib.is_multiple_of(block * KIB_PER_MIB)
        {
            return Err(refuse(format!(
                "{requested_kib} KiB is beyond {size} MiB or off the {block} MiB block"
            )));
        }
        state.requested_mib = requested_kib as f64 / MIB;
        Ok(())
    }

    fn set_ksm(&mut self, ksm: &vcoord_api::KsmPlan) -> Result<(), BackendError> {
        self.ksm.settings = *ksm;
        Ok(())
    }

    fn set_memory_stats_period(&mut self, vm: &str, period_s: u32) -> Result<(), BackendError> {
        self.vm_mut(vm)?.stats_period_s = period_s;
        Ok(())
    }

    fn wait(&mut self, interval: Duration, sleep: &dyn Fn(Duration)) {
        if self.realtime {
            sleep(interval);
        }
        let mut left = interval.as_nanos() as u64;
        while left > 0 {
            let dt = left.min(STEP_NS);
            self.step(dt as f64 / 1e9);
            left -= dt;
        }
    }

    fn finished(&self) -> bool {
        self.now_s() >= self.scenario.duration_s - 1e-9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "[host]\npcpus = 2\nmemory_mib = 4096\n";

    fn sim(text: &str) -> SimBackend {
        sim_with("", text)
    }

    /// A 2-pCPU host with top-level keys `top` and then `text`.
    fn sim_with(top: &str, text: &str) -> SimBackend {
        let full = format!("name = \"t\"\nduration_s = 10\n{top}\n{text}");
        SimBackend::new(Scenario::parse(&full, Path::new("t.toml")).unwrap(), false)
    }

    #[test]
    fn two_busy_vcpus_share_one_pcpu_and_wait() {
        let mut s = sim_with("pinning = \"all-on-0\"", &format!(
            "{HOST}[[vm]]\nname = \"v\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 100 }}]\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        for vm in &sample.vms {
            let v = &vm.vcpus[0];
            assert_eq!(v.run_time_ns, 500_000_000, "{}", vm.name);
            assert_eq!(v.wait_time_ns, Some(500_000_000));
            assert_eq!(v.pcpu, Some(0));
        }
    }

    #[test]
    fn weights_share_a_pcpu_in_proportion_and_a_quota_caps_with_the_rest_waiting() {
        let mut s = sim_with("pinning = \"all-on-0\"", &format!(
            "{HOST}[[vm]]\nname = \"v\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 100 }}]\n"
        ));
        let heavy = vcoord_api::CpuTune {
            cpu_shares: Some(3072),
            ..Default::default()
        };
        s.set_cputune("v1", &heavy).unwrap();
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let run = |s: &mut SimBackend| -> Vec<u64> {
            let sample = s.sample().unwrap();
            sample
                .vms
                .iter()
                .map(|vm| vm.vcpus[0].run_time_ns)
                .collect()
        };
        // 3072 against 1024: three quarters and one quarter of pCPU 0.
        assert_eq!(run(&mut s), vec![750_000_000, 250_000_000]);
        let sample = s.sample().unwrap();
        assert_eq!(sample.vms[0].cputune.cpu_shares, Some(3072));
        // Alone on pCPU 1 with a quota of 30 ms in 100 ms: 30% runs, 70% waits.
        s.pin_vcpu("v1", 0, &CpuSet::single(1)).unwrap();
        let cap = vcoord_api::CpuTune {
            vcpu_quota_us: Some(30_000),
            vcpu_period_us: Some(100_000),
            ..Default::default()
        };
        s.set_cputune("v1", &cap).unwrap();
        let before = s.sample().unwrap().vms[0].vcpus[0].clone();
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let after = s.sample().unwrap().vms[0].vcpus[0].clone();
        assert_eq!(after.run_time_ns - before.run_time_ns, 300_000_000);
        assert_eq!(
            after.wait_time_ns.unwrap() - before.wait_time_ns.unwrap(),
            700_000_000
        );
        let bad = vcoord_api::CpuTune {
            emulator: Some(CpuSet::single(9)),
            ..Default::default()
        };
        assert!(s.set_cputune("v1", &bad).is_err());
    }

    #[test]
    fn a_host_process_shares_its_pcpu_and_shows_in_busy_time_only() {
        // A busy host process on pCPU 0 from the start; a 100% vCPU pinned there gets half.
        let host = "[host]\npcpus = 2\nmemory_mib = 4096\nother_load = [{ pcpu = 0, cpu = [{ pct = 100 }] }]\n";
        let mut s = sim_with("pinning = \"all-on-0\"", &format!(
            "{host}[[vm]]\nname = \"v\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 100 }}]\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        let v = &sample.vms[0].vcpus[0];
        assert_eq!(
            (v.run_time_ns, v.wait_time_ns),
            (500_000_000, Some(500_000_000))
        );
        // pCPU 0 was busy all the second (vCPU and process), pCPU 1 idle.
        assert_eq!(sample.host.pcpu_busy_ns, vec![(0, 1_000_000_000), (1, 0)]);
    }

    #[test]
    fn a_vcpu_waits_behind_a_host_process_with_long_bursts_and_not_elsewhere() {
        // A 50% process on pCPU 0 with bursts twice a vCPU's: a 20% vCPU beside it runs its
        // 20% and waits as long again (2 x 0.5 of its run); one on pCPU 1 barely waits.
        let host = "[host]\npcpus = 2\nmemory_mib = 4096\ncpu_collision = 0\nother_load = [{ pcpu = 0, cpu = [{ pct = 50 }], burst_ratio = 2 }]\n";
        let mut s = sim_with("pinning = \"round-robin\"", &format!(
            "{host}[[vm]]\nname = \"v\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 20 }}]\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        let by_pcpu = |p: u32| {
            let vm = sample
                .vms
                .iter()
                .find(|vm| vm.vcpus[0].pcpu == Some(p))
                .unwrap();
            (vm.vcpus[0].run_time_ns, vm.vcpus[0].wait_time_ns.unwrap())
        };
        assert_eq!(by_pcpu(0), (200_000_000, 200_000_000));
        assert_eq!(by_pcpu(1), (200_000_000, 0));
        // The process got its 50% (70% wanted of pCPU 0): no wait of its own.
        assert_eq!(sample.host.pcpu_other_wait_ns, vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn a_host_process_squeezed_by_vcpus_waits_for_what_it_did_not_get() {
        // A 60% process beside two 60% vCPUs on pCPU 0: 180% wanted, 100% there; each gets a
        // third, so the process waits its other 26.7 points.
        let host = "[host]\npcpus = 2\nmemory_mib = 4096\ncpu_collision = 0\nother_load = [{ pcpu = 0, cpu = [{ pct = 60 }] }]\n";
        let mut s = sim(&format!(
            "{host}[[vm]]\nname = \"v\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\npins = [0]\ncpu = [{{ pct = 60 }}]\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        let (cpu, wait) = sample.host.pcpu_other_wait_ns[0];
        assert_eq!(cpu, 0);
        assert!(
            (wait as f64 / 1e9 - (0.6 - 1.0 / 3.0)).abs() < 1e-6,
            "{wait} ns"
        );
        assert_eq!(sample.host.pcpu_other_wait_ns[1], (1, 0));
    }

    #[test]
    fn unpinned_vcpus_spread_over_pcpus() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"v\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 100 }}]\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        let cpus: Vec<_> = sample.vms.iter().map(|vm| vm.vcpus[0].pcpu).collect();
        assert_eq!(cpus, vec![Some(0), Some(1)]);
        assert!(sample
            .vms
            .iter()
            .all(|vm| vm.vcpus[0].run_time_ns == 1_000_000_000));
    }

    #[test]
    fn max_min_fair_share() {
        // 30% and 100% on one pCPU: the light one gets all it wants, the heavy one the rest.
        let mut s = sim_with("pinning = \"all-on-1\"", &format!(
            "{HOST}[[vm]]\nname = \"a\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 30 }}]\n[[vm]]\nname = \"b\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 100 }}]\n"
        ));
        s.wait(Duration::from_secs(2), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        assert_eq!(sample.vms[0].vcpus[0].run_time_ns, 600_000_000);
        assert_eq!(sample.vms[1].vcpus[0].run_time_ns, 1_400_000_000);
        assert_eq!(sample.vms[1].vcpus[0].wait_time_ns, Some(600_000_000));
    }

    /// A host whose guests report live and whose balloons act at once.
    const IDEAL: &str =
        "[host]\npcpus = 2\nmemory_mib = 4096\nguest_report_s = 0\nballoon_delay_s = 0\nballoon_read_lag_s = 0\n";

    #[test]
    fn balloon_moves_at_its_rate_and_stats_need_a_period() {
        let mut s = sim(&format!(
            "{IDEAL}[[vm]]\nname = \"a\"\nmax_memory_mib = 2048\nmemory_mib = 512\n"
        ));
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        assert_eq!(s.sample().unwrap().vms[0].memory.unused_kib, None);
        s.set_memory_stats_period("a", 1).unwrap();
        s.set_balloon_target("a", 1024 * 1024).unwrap();
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let m = s.sample().unwrap().vms[0].memory.clone();
        assert_eq!(m.actual_kib, (512 + 256) * 1024);
        // unused = actual - reserved - base used
        assert_eq!(m.unused_kib, Some((768 - 30 - 60) * 1024));
        assert!(s.set_balloon_target("a", 3 * 1024 * 1024).is_err());
    }

    #[test]
    fn a_new_target_acts_after_the_delay() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"a\"\nmax_memory_mib = 2048\nmemory_mib = 512\n"
        ));
        s.set_balloon_target("a", 1024 * 1024).unwrap();
        s.wait(Duration::from_millis(300), &crate::backend::plain_sleep);
        assert_eq!(s.vms[0].actual_mib, 512.0);
        s.wait(Duration::from_millis(700), &crate::backend::plain_sleep);
        // 0.7 s at 256 MiB/s...
        assert!((s.vms[0].actual_mib - (512.0 + 0.7 * 256.0)).abs() < 1.0);
        // ...and read 0.9 s late: at 1.5 s the read size is the one at 0.6 s.
        assert_eq!(s.sample().unwrap().vms[0].memory.actual_kib, 512 * 1024);
        s.wait(Duration::from_millis(500), &crate::backend::plain_sleep);
        let read = s.sample().unwrap().vms[0].memory.actual_kib as f64 / 1024.0;
        assert!((read - (512.0 + 0.3 * 256.0)).abs() < 1.0, "{read}");
    }

    #[test]
    fn guest_figures_arrive_every_two_seconds_and_the_balloon_is_read_live() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"a\"\nmax_memory_mib = 2048\nmemory_mib = 1024\n\
             memory = [{{ hold_s = 3 }}, {{ grow_mib_s = 50, to_mib = 400 }}]\n"
        ));
        s.set_memory_stats_period("a", 1).unwrap();
        let mut readings = Vec::new();
        for i in 0..12 {
            if i == 9 {
                // At 4.5 s: the balloon grows from 4.8 s on (read from 5.7 s on), the next
                // report is at 6.1 s.
                s.set_balloon_target("a", 1536 * 1024).unwrap();
            }
            s.wait(Duration::from_millis(500), &crate::backend::plain_sleep);
            let m = s.sample().unwrap().vms[0].memory.clone();
            readings.push((m.stats_updated_s, m.unused_kib, m.actual_kib));
        }
        // A new report every 2 s (4 samples), never in between.
        let mut times: Vec<i64> = readings.iter().filter_map(|r| r.0).collect();
        times.dedup();
        assert_eq!(times.len(), 3, "{readings:?}");
        assert!(times.windows(2).all(|w| w[1] - w[0] == 2), "{times:?}");
        for w in readings.windows(2) {
            if w[0].0 == w[1].0 {
                assert_eq!(w[0].1, w[1].1, "figures changed between reports");
            }
        }
        // Idle (holding) at first: two reports with the very same figures.
        assert_eq!(readings[0].1, readings[4].1);
        // Then growing: a later report shows less unused.
        assert!(readings[8].1 < readings[4].1, "{readings:?}");
        // The balloon size is read live, while the figures wait for the next report.
        assert_eq!(readings[8].2, 1024 * 1024);
        assert!(readings[11].2 > 1074 * 1024, "{readings:?}");
        assert_eq!(readings[11].1, readings[8].1);
    }

    /// Run and wait seconds of each VM over 10 s of `vms` (`name = pct`) on pCPU 0, with
    /// `collision` (None: the default).
    fn shared_pcpu(vms: &[(&str, u32)], collision: Option<f64>) -> Vec<(f64, f64)> {
        let mut text = String::from("[host]\npcpus = 2\nmemory_mib = 4096\n");
        if let Some(c) = collision {
            text.push_str(&format!("cpu_collision = {c}\n"));
        }
        for (name, pct) in vms {
            text.push_str(&format!(
                "[[vm]]\nname = \"{name}\"\nmax_memory_mib = 1024\nmemory_mib = 512\npins = [0]\ncpu = [{{ pct = {pct} }}]\n"
            ));
        }
        let mut s = sim(&text);
        s.wait(Duration::from_secs(10), &crate::backend::plain_sleep);
        let sample = s.sample().unwrap();
        sample
            .vms
            .iter()
            .map(|v| {
                let c = &v.vcpus[0];
                (
                    c.run_time_ns as f64 / 1e9,
                    c.wait_time_ns.unwrap() as f64 / 1e9,
                )
            })
            .collect()
    }

    #[test]
    fn duty_cycles_sharing_a_pcpu_collide() {
        // Independent phases: two 50% duty cycles on one pCPU get 75% between them, and what
        // is lost is waited.
        let got = shared_pcpu(&[("a", 50), ("b", 50)], Some(1.0));
        let run: f64 = got.iter().map(|g| g.0).sum();
        let wait: f64 = got.iter().map(|g| g.1).sum();
        assert!((run - 7.5).abs() < 0.01, "{got:?}");
        assert!((run + wait - 10.0).abs() < 0.01, "{got:?}");
        let got = shared_pcpu(&[("a", 50), ("b", 50)], Some(0.0));
        assert!(
            got.iter().all(|g| (g.0 - 5.0).abs() < 0.01 && g.1 < 0.01),
            "{got:?}"
        );
        // The default, as measured on the test guests: 50 + 50 -> 81%; 70 + 20 -> 63 + 17.
        let got = shared_pcpu(&[("a", 50), ("b", 50)], None);
        let run: f64 = got.iter().map(|g| g.0).sum();
        assert!((run / 10.0 * 100.0 - 81.0).abs() < 2.0, "{got:?}");
        let got = shared_pcpu(&[("heavy", 70), ("light", 20)], None);
        assert!((got[0].0 * 10.0 - 63.0).abs() < 2.0, "{got:?}");
        assert!((got[1].0 * 10.0 - 17.0).abs() < 2.0, "{got:?}");
        // Saturated: busy vCPUs share the pCPU whole.
        let got = shared_pcpu(&[("a", 100), ("b", 100)], None);
        assert!(got.iter().all(|g| (g.0 - 5.0).abs() < 0.01), "{got:?}");
    }

    #[test]
    fn growth_beyond_memory_is_an_oom_kill() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"a\"\nmax_memory_mib = 2048\nmemory_mib = 512\nmemory = [{{ grow_mib_s = 100, to_mib = 1000 }}, {{ hold_s = 100 }}]\n"
        ));
        s.wait(Duration::from_secs(6), &crate::backend::plain_sleep);
        let vm = &s.sample().unwrap().vms[0];
        assert_eq!(vm.oom_events, Some(1));
        // the workload was killed: only the base system is left in use
        assert_eq!(s.vms[0].app_mib, 0.0);
    }

    #[test]
    fn balloon_cannot_take_used_memory_without_swap() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"a\"\nmax_memory_mib = 2048\nmemory_mib = 1024\nmemory = [{{ use_mib = 600 }}]\n"
        ));
        s.set_balloon_target("a", 300 * 1024).unwrap();
        s.wait(Duration::from_secs(5), &crate::backend::plain_sleep);
        let vm = &s.sample().unwrap().vms[0];
        // stalls at used (660) + reserved (30)
        assert_eq!(vm.memory.actual_kib, 690 * 1024);
        assert_eq!(vm.oom_events, Some(0));
    }

    #[test]
    fn vms_come_and_go_on_schedule() {
        let mut s = sim(&format!(
            "{HOST}[[vm]]\nname = \"late\"\nmax_memory_mib = 1024\nmemory_mib = 512\nstart_s = 2\nstop_s = 4\n"
        ));
        assert!(s.sample().unwrap().vms.is_empty());
        s.wait(Duration::from_secs(2), &crate::backend::plain_sleep);
        assert_eq!(s.sample().unwrap().vms.len(), 1);
        s.wait(Duration::from_secs(2), &crate::backend::plain_sleep);
        assert!(s.sample().unwrap().vms.is_empty());
        assert!(matches!(
            s.set_balloon_target("late", 1024),
            Err(BackendError::VmGone { .. })
        ));
    }

    #[test]
    fn same_seed_same_run() {
        let text = format!(
            "{HOST}[[vm]]\nname = \"v\"\ncount = 3\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 60 }}]\ncpu_noise_pct = 10\n"
        );
        let run = || {
            let mut s = sim_with("seed = 3\npinning = \"random\"", &text);
            s.wait(Duration::from_secs(3), &crate::backend::plain_sleep);
            s.sample().unwrap()
        };
        assert_eq!(run(), run());
    }

    /// A VM's used memory as the guest reports it, MiB.
    fn used(s: &SimBackend, name: &str) -> f64 {
        let vm = s.vms.iter().find(|v| v.name == name).unwrap();
        vm.used_mib()
    }

    #[test]
    fn a_trace_is_followed_point_to_point_and_a_killed_workload_grows_back() {
        let trace = "[vm.trace]\nstep_s = 10\ncpu_pct = [20, 60]\nused_mib = [100, 300, 300]\n";
        let mut s = sim(&format!(
            "{IDEAL}[[vm]]\nname = \"t\"\nmax_memory_mib = 1024\nmemory_mib = 1024\nbase_used_mib = 0\n{trace}"
        ));
        s.wait(Duration::from_secs(5), &crate::backend::plain_sleep);
        // From 5 s to 6 s demand is 40% (a traced demand moves once a second); at 6 s 220 MiB
        // are held (linear: burst 1).
        let before = s.sample().unwrap().vms[0].vcpus[0].run_time_ns;
        s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
        let ran = s.sample().unwrap().vms[0].vcpus[0].run_time_ns - before;
        assert!((ran as f64 / 1e7 - 40.0).abs() < 0.1, "{ran}");
        assert!((used(&s, "t") - 220.0).abs() < 1.0, "{}", used(&s, "t"));
        // After the last point the values stay.
        s.wait(Duration::from_secs(4), &crate::backend::plain_sleep);
        assert!((used(&s, "t") - 300.0).abs() < 1e-6);

        // A guest too small for its trace is killed once, holds nothing until the next point,
        // then grows back at the restart rate.
        let trace = "[vm.trace]\nstep_s = 10\nused_mib = [50, 400, 400, 400]\n";
        let mut s = sim(&format!(
            "{IDEAL}[[vm]]\nname = \"k\"\nmax_memory_mib = 1024\nmemory_mib = 256\nbase_used_mib = 0\n{trace}"
        ));
        s.wait(Duration::from_secs(9), &crate::backend::plain_sleep);
        assert_eq!(s.sample().unwrap().vms[0].oom_events, Some(1));
        assert_eq!(used(&s, "k"), 0.0);
        s.wait(Duration::from_secs(3), &crate::backend::plain_sleep);
        let back = used(&s, "k");
        assert!(back > 50.0 && back < 150.0, "{back}");
        s.set_balloon_target("k", 1024 * 1024).unwrap();
        s.wait(Duration::from_secs(20), &crate::backend::plain_sleep);
        assert_eq!(s.sample().unwrap().vms[0].oom_events, Some(1));
        assert!((used(&s, "k") - 400.0).abs() < 1e-6);
    }

    #[test]
    fn bursts_move_memory_within_a_window_the_seed_draws() {
        // At burst 0.2 a change takes 20-100% of its interval, somewhere in it.
        let trace = "[vm.trace]\nstep_s = 10\nused_mib = [0, 500]\nburst = 0.2\n";
        let text = format!(
            "{IDEAL}[[vm]]\nname = \"b\"\nmax_memory_mib = 1024\nmemory_mib = 1024\nbase_used_mib = 0\n{trace}"
        );
        let curve = |seed: u64| -> Vec<f64> {
            let mut s = sim_with(&format!("seed = {seed}"), &text);
            (0..10)
                .map(|_| {
                    s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
                    used(&s, "b")
                })
                .collect()
        };
        let curves: Vec<Vec<f64>> = (0..6).map(curve).collect();
        for c in &curves {
            assert!(c.windows(2).all(|w| w[1] >= w[0]), "{c:?}");
            assert!((c[9] - 500.0).abs() < 1e-6, "{c:?}");
        }
        assert!(
            curves.iter().any(|c| c != &curves[0]),
            "seeds drew one window"
        );
        assert_eq!(curve(3), curve(3));
    }

    #[test]
    fn seeds_vary_report_timing_balloon_speed_and_memory_noise() {
        let host = "[host]\npcpus = 2\nmemory_mib = 8192\nballoon_rate_spread = 0.5\nguest_report_jitter_s = 0.5\nballoon_delay_s = 0\n";
        let trace = "[vm.trace]\nstep_s = 100\nused_mib = [300, 300]\n";
        let text = format!(
            "{host}[[vm]]\nname = \"v\"\ncount = 4\nmax_memory_mib = 2048\nmemory_mib = 2048\nbase_used_mib = 0\nmemory_noise_pct = 5\n{trace}"
        );
        let observe = |seed: u64| {
            let mut s = sim_with(&format!("seed = {seed}"), &text);
            for vm in &mut s.vms {
                vm.stats_period_s = 1;
            }
            for name in ["v1", "v2", "v3", "v4"] {
                s.set_balloon_target(name, 1024 * 1024).unwrap();
            }
            s.wait(Duration::from_secs(1), &crate::backend::plain_sleep);
            let sample = s.sample().unwrap();
            let sizes: Vec<u64> = sample.vms.iter().map(|v| v.memory.actual_kib).collect();
            let reports: Vec<Option<i64>> = sample
                .vms
                .iter()
                .map(|v| v.memory.stats_updated_s)
                .collect();
            let used: Vec<f64> = s.vms.iter().map(|v| v.used_mib()).collect();
            (sizes, reports, used)
        };
        let (sizes, reports, used) = observe(1);
        // Balloon speeds differ between guests (within 256 MiB/s +- 50%), and so do report
        // times and the noise on use (within +-5% of 300 MiB).
        assert!(sizes.iter().any(|&s| s != sizes[0]), "{sizes:?}");
        assert!(used.iter().all(|u| (285.0..=315.0).contains(u)), "{used:?}");
        assert!(used.iter().any(|&u| u != used[0]), "{used:?}");
        let (_, _, used2) = observe(2);
        assert_ne!(used, used2);
        assert_eq!(observe(1).1, reports);
    }
}
