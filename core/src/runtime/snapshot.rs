//! Snapshots from samples: utilizations from counter deltas between two consecutive samples,
//! freshness of guest statistics, what guests may still be given. The snapshot types
//! themselves are vcoord-api's, re-exported here.

use std::collections::HashMap;

use vcoord_api::VmControl;

pub use vcoord_api::snapshot::{
    CpuTune, GuardLimits, HostPressure, HostView, InvalidSnapshot, MemoryView, PcpuView, Snapshot,
    Stall, VcpuView, VmView,
};
pub use vcoord_api::stats::{mean, stdev};

use crate::model::{PsiSample, Sample, VmSample};
use crate::vmcontrol::{resolve, Source, VmRule};

/// Settings the snapshot builder needs from the host configuration.
#[derive(Clone, Debug, Default)]
pub struct SnapshotSettings {
    /// Guest memory budget, if any.
    pub guest_budget_kib: Option<u64>,
    /// Guest statistics older than this are stale.
    pub stats_max_age_s: f64,
    /// The guard's limits, shown to policies.
    pub limits: GuardLimits,
    /// The operator's `[[host.vm]]` rules.
    pub vm_rules: Vec<VmRule>,
    /// Whether each pCPU's non-VM load is measured and shown (`cpu_capacity = "measured"`).
    pub measure_other_load: bool,
    /// Whether plans may change KSM (`ksm = "auto"`).
    pub ksm_managed: bool,
}

/// Builds snapshots from consecutive samples, remembering the previous one.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    settings: SnapshotSettings,
    previous: Option<Sample>,
    tick: u64,
    /// Each VM's memory outside what its guest counts as available (by UUID), measured with
    /// the balloon standing still.
    unavailable: HashMap<String, u64>,
    /// Each pCPU's non-VM load at the last snapshot, measured even where policies are not
    /// shown it (for the record: what a run with `cpu_capacity = "whole"` did not see).
    other: Vec<Option<f64>>,
    /// Each pCPU's non-VM run-queue wait measured for the last snapshot, likewise.
    other_wait: Vec<Option<f64>>,
    /// VMs whose settings contradict each other (by UUID), with what was said of them.
    contradicted: HashMap<String, String>,
    /// Each VM's last guest statistics report (by UUID), for rates over reports.
    reports: HashMap<String, GuestReport>,
}

/// A guest's statistics report as the rates need it: when, its counters, and the rates it
/// gave against the report before it.
#[derive(Clone, Copy, Debug)]
struct GuestReport {
    at_s: i64,
    swap_kib: u64,
    faults: u64,
    /// (major faults a second, KiB swapped a second).
    rates: Option<(f64, f64)>,
}

impl SnapshotBuilder {
    /// A builder with no previous sample.
    pub fn new(settings: SnapshotSettings) -> Self {
        Self {
            settings,
            previous: None,
            tick: 0,
            unavailable: HashMap::new(),
            other: Vec::new(),
            other_wait: Vec::new(),
            contradicted: HashMap::new(),
            reports: HashMap::new(),
        }
    }

    /// Whether the guest statistics in `mem` are recent enough to act on at `wall_s`.
    fn fresh(&self, mem: &crate::model::MemorySample, wall_s: f64) -> bool {
        mem.unused_kib.is_some()
            && mem
                .stats_updated_s
                .is_some_and(|updated| wall_s - updated as f64 <= self.settings.stats_max_age_s)
    }

    /// `vm`'s fault and swap rates over the interval between its guest's last two reports
    /// (held from one report to the next); `None` while its statistics are stale.
    fn guest_rates(&mut self, vm: &VmSample, wall_s: f64) -> Option<(f64, f64)> {
        let m = &vm.memory;
        let (Some(at_s), Some(faults)) = (m.stats_updated_s, m.major_faults_total) else {
            return None;
        };
        let swap_kib = m.swap_in_total_kib.unwrap_or(0) + m.swap_out_total_kib.unwrap_or(0);
        let now = GuestReport {
            at_s,
            swap_kib,
            faults,
            rates: None,
        };
        let report = match self.reports.get(&vm.uuid) {
            Some(before) if before.at_s == at_s => *before,
            // A counter that went backwards (the guest rebooted) starts over.
            Some(before)
                if before.at_s < at_s && faults >= before.faults && swap_kib >= before.swap_kib =>
            {
                let seconds = (at_s - before.at_s) as f64;
                GuestReport {
                    rates: Some((
                        (faults - before.faults) as f64 / seconds,
                        (swap_kib - before.swap_kib) as f64 / seconds,
                    )),
                    ..now
                }
            }
            _ => now,
        };
        self.reports.insert(vm.uuid.clone(), report);
        report.rates.filter(|_| self.fresh(m, wall_s))
    }

    /// The operator's control of `vm`: its rules, then its metadata. Where they end up in a
    /// contradiction (a metadata minimum above a rule's maximum, say) the VM is left alone
    /// entirely, as for metadata vcoord cannot understand, and that is said once.
    fn control_of(&mut self, vm: &VmSample) -> VmControl {
        match resolve(&self.settings.vm_rules, &vm.name, vm.metadata.as_ref()) {
            Ok(control) => {
                if self.contradicted.remove(&vm.uuid).is_some() {
                    tracing::info!(vm = %crate::show::shown(&vm.name), "the VM's settings agree again: managing it");
                }
                control
            }
            Err(c) => {
                let name = |s: Source| match s {
                    Source::Rule(i) => format!(
                        "rule host.vm[{i}] (match = \"{}\")",
                        crate::show::shown(&self.settings.vm_rules[i].pattern)
                    ),
                    Source::Metadata => "the domain's metadata".into(),
                };
                let why = c.describe(&vm.name, &name);
                if self.contradicted.get(&vm.uuid) != Some(&why) {
                    tracing::error!(vm = %crate::show::shown(&vm.name), error = %why, "the VM's settings contradict each other: leaving it alone");
                    self.contradicted.insert(vm.uuid.clone(), why);
                }
                VmControl {
                    cpu_managed: false,
                    memory_managed: false,
                    ..VmControl::default()
                }
            }
        }
    }

    /// Each pCPU's non-VM load measured for the last snapshot (in its pCPU order), whether or
    /// not the snapshot shows it.
    pub fn measured_other_loads(&self) -> &[Option<f64>] {
        &self.other
    }

    /// Each pCPU's non-VM run-queue wait measured for the last snapshot (in its pCPU order),
    /// whether or not the snapshot shows it.
    pub fn measured_other_waits(&self) -> &[Option<f64>] {
        &self.other_wait
    }

    /// Takes new settings from the next snapshot on.
    pub fn set_settings(&mut self, settings: SnapshotSettings) {
        self.settings = settings;
    }

    /// Turns the next sample into a snapshot; a sample that cannot make one (a backend that
    /// reports a VM twice, say) is an error naming what is wrong.
    pub fn build(&mut self, sample: Sample) -> Result<Snapshot, InvalidSnapshot> {
        self.build_with_pending(sample, 0)
    }

    /// Turns the next sample into a snapshot; `pending_grants_kib` is memory already granted
    /// but not yet taken by the guests (targets above their actual size).
    pub fn build_with_pending(
        &mut self,
        sample: Sample,
        pending_grants_kib: u64,
    ) -> Result<Snapshot, InvalidSnapshot> {
        let controls: Vec<VmControl> = sample.vms.iter().map(|vm| self.control_of(vm)).collect();
        let rates: Vec<Option<(f64, f64)>> = sample
            .vms
            .iter()
            .map(|vm| self.guest_rates(vm, sample.wall_s))
            .collect();
        let here = |uuid: &String| sample.vms.iter().any(|vm| &vm.uuid == uuid);
        self.contradicted.retain(|uuid, _| here(uuid));
        self.reports.retain(|uuid, _| here(uuid));
        let previous: HashMap<&str, &VmSample> = self
            .previous
            .iter()
            .flat_map(|prev| prev.vms.iter())
            .map(|vm| (vm.name.as_str(), vm))
            .collect();
        let interval_ns = self
            .previous
            .as_ref()
            .map(|prev| sample.taken_ns.saturating_sub(prev.taken_ns))
            .unwrap_or(0);
        let interval_s = interval_ns as f64 / 1e9;

        let prev_wall_s = self.previous.as_ref().map(|p| p.wall_s);
        let mut unavailable = HashMap::new();
        let vms: Vec<VmView> = sample
            .vms
            .iter()
            .zip(controls.into_iter().zip(rates))
            .map(|(vm, (control, rates))| {
                // A VM that restarted under the same name is a new VM.
                let prev = previous
                    .get(vm.name.as_str())
                    .copied()
                    .filter(|prev| prev.uuid == vm.uuid);
                // What the VM has outside the guest's own total: measured from a report made
                // while the balloon stood still, else the last such measurement. Still: the
                // same size and the same guest total as at the previous sample, with a report
                // newer than that sample (libvirt reads the balloon size about a second after
                // the guest's figures show a move, so a size alone can be stale).
                let m = &vm.memory;
                let still = prev.is_some_and(|p| {
                    p.memory.actual_kib.abs_diff(m.actual_kib) < 1024
                        && p.memory
                            .available_kib
                            .zip(m.available_kib)
                            .is_some_and(|(a, b)| a.abs_diff(b) < 1024)
                });
                let report_after_prev = m
                    .stats_updated_s
                    .zip(prev_wall_s)
                    .is_some_and(|(at, prev)| at as f64 >= prev);
                let measured = match m.available_kib {
                    Some(available) if still && report_after_prev => {
                        Some(m.actual_kib.saturating_sub(available))
                    }
                    _ => self.unavailable.get(&vm.uuid).copied(),
                };
                if let Some(u) = measured {
                    unavailable.insert(vm.uuid.clone(), u);
                }
                let mut view =
                    self.vm_view(vm, prev, interval_ns, sample.wall_s, measured, control);
                view.memory.major_fault_rate = rates.map(|r| r.0);
                view.memory.swap_rate_kib_s = rates.map(|r| r.1);
                view
            })
            .collect();
        self.unavailable = unavailable;

        let guests_actual_kib: u64 = vms.iter().map(|vm| vm.memory.actual_kib).sum();
        let guest_free_kib = match self.settings.guest_budget_kib {
            Some(budget) => sample
                .host
                .mem_free_kib
                .min(budget.saturating_sub(guests_actual_kib)),
            None => sample.host.mem_free_kib,
        }
        .saturating_sub(pending_grants_kib);

        let before = self.previous.as_ref().map(|p| &p.host.pressure);
        let pressure = HostPressure {
            cpu: stall(
                sample.host.pressure.cpu,
                before.and_then(|b| b.cpu),
                interval_ns,
            ),
            memory: stall(
                sample.host.pressure.memory,
                before.and_then(|b| b.memory),
                interval_ns,
            ),
            io: stall(
                sample.host.pressure.io,
                before.and_then(|b| b.io),
                interval_ns,
            ),
        };
        let ksm = sample.host.ksm.as_ref().map(|k| {
            let was = self.previous.as_ref().and_then(|p| p.host.ksm.as_ref());
            ksm_view(k, was, interval_ns, self.settings.ksm_managed)
        });
        let mut host = HostView {
            ksm,
            guest_free_kib,
            guest_budget_kib: self.settings.guest_budget_kib,
            limits: self.settings.limits,
            pressure,
            ..HostView::new(
                sample.host.pcpus.clone(),
                sample.host.mem_total_kib,
                sample.host.mem_free_kib,
            )
        };
        let others = self
            .previous
            .as_ref()
            .map(|before| other_loads(before, &sample.host, &vms, interval_ns))
            .unwrap_or_default();
        self.other = host
            .pcpus
            .iter()
            .map(|p| others.get(&p.pcpu.id).copied())
            .collect();
        let waits = self
            .previous
            .as_ref()
            .map(|before| other_waits(&before.host, &sample.host, interval_ns))
            .unwrap_or_default();
        self.other_wait = host
            .pcpus
            .iter()
            .map(|p| waits.get(&p.pcpu.id).copied())
            .collect();
        if self.settings.measure_other_load {
            for ((p, other), wait) in host.pcpus.iter_mut().zip(&self.other).zip(&self.other_wait) {
                p.other_pct = *other;
                p.other_wait_pct = other.and(*wait);
            }
        }
        // A pCPU delivers at most 100%: the builder caps the sums. Sums above that are
        // measurement error: libvirt reads each domain's counters at a different moment of one
        // slow bulk call (seen: 114% for two vCPUs pinned to one pCPU on a loaded host), and a
        // vCPU that moved is counted where it ended.
        let built = Snapshot::builder(host)
            .tick(self.tick)
            .interval_s(interval_s)
            .wall_s(sample.wall_s)
            .vms(vms)
            .loads_from_vcpus()
            .build();
        self.tick += 1;
        self.previous = Some(sample);
        built
    }

    fn vm_view(
        &self,
        vm: &VmSample,
        prev: Option<&VmSample>,
        interval_ns: u64,
        wall_s: f64,
        unavailable_kib: Option<u64>,
        control: VmControl,
    ) -> VmView {
        let vcpus = vm
            .vcpus
            .iter()
            .map(|vcpu| {
                let prev_vcpu = prev.and_then(|p| p.vcpus.iter().find(|v| v.id == vcpu.id));
                let load_pct = prev_vcpu.and_then(|p| {
                    percent_of_interval(p.run_time_ns, vcpu.run_time_ns, interval_ns)
                });
                let wait_pct = prev_vcpu.and_then(|p| match (p.wait_time_ns, vcpu.wait_time_ns) {
                    (Some(before), Some(now)) => percent_of_interval(before, now, interval_ns),
                    _ => None,
                });
                VcpuView {
                    id: vcpu.id,
                    load_pct,
                    wait_pct,
                    pcpu: vcpu.pcpu,
                    affinity: vcpu.affinity.clone(),
                }
            })
            .collect();

        let mem = &vm.memory;
        let prev_mem = prev.map(|p| &p.memory);
        let stats_fresh = self.fresh(mem, wall_s);
        let delta = |now: Option<u64>, before: Option<Option<u64>>| match (now, before.flatten()) {
            (Some(now), Some(before)) => Some(now.saturating_sub(before)),
            _ => None,
        };
        let memory = MemoryView {
            max_kib: mem.max_kib,
            actual_kib: mem.actual_kib,
            unused_kib: mem.unused_kib.filter(|_| stats_fresh),
            available_kib: mem.available_kib.filter(|_| stats_fresh),
            unavailable_kib,
            usable_kib: mem.usable_kib.filter(|_| stats_fresh),
            swap_in_kib: delta(mem.swap_in_total_kib, prev_mem.map(|p| p.swap_in_total_kib)),
            swap_out_kib: delta(
                mem.swap_out_total_kib,
                prev_mem.map(|p| p.swap_out_total_kib),
            ),
            major_faults: delta(
                mem.major_faults_total,
                prev_mem.map(|p| p.major_faults_total),
            ),
            stats_fresh,
            last_report_s: mem.stats_updated_s.map(|s| s as f64),
            virtio_mem: mem.virtio_mem.clone(),
            free_page_reporting: mem.free_page_reporting,
            stall: stall(mem.pressure, prev_mem.and_then(|p| p.pressure), interval_ns),
            major_fault_rate: None,
            swap_rate_kib_s: None,
        };
        VmView {
            name: vm.name.clone(),
            uuid: vm.uuid.clone(),
            vcpus,
            memory,
            oom_events: delta(vm.oom_events, prev.map(|p| p.oom_events)),
            control,
            cputune: vm.cputune.clone(),
        }
    }
}

/// Percentage of the interval that a cumulative counter grew by; `None` when the counter went
/// backwards (a reset) or there is no interval. Clamped to 100: timing jitter between the
/// counter and the clock must not make a vCPU look busier than a whole pCPU.
/// Each pCPU's busy time outside the vCPUs of `vms` between the sample `before` and the host
/// sample `now`, percent of the interval (0 to 100): its busy time less the run time of the
/// vCPUs placed on it. A pCPU is left out for the tick where that cannot be told apart: a
/// vCPU there moved in the interval (its time is counted where it ended), is new (no run time
/// yet), or belonged to a VM that has gone since.
pub fn other_loads(
    before: &Sample,
    now: &crate::model::HostSample,
    vms: &[VmView],
    interval_ns: u64,
) -> HashMap<u32, f64> {
    let place = |v: &crate::model::VcpuSample| v.pcpu.or_else(|| v.affinity.only());
    let mut was: HashMap<(&str, u32), Option<u32>> = before
        .vms
        .iter()
        .flat_map(|vm| {
            vm.vcpus
                .iter()
                .map(move |v| ((vm.uuid.as_str(), v.id), place(v)))
        })
        .collect();
    let mut unsure: std::collections::HashSet<u32> = std::collections::HashSet::new();
    let mut vcpus: HashMap<u32, f64> = HashMap::new();
    for vm in vms {
        for v in &vm.vcpus {
            let at = v.placed_on();
            let earlier = was.remove(&(vm.uuid.as_str(), v.id)).flatten();
            match (v.load_pct, at) {
                (Some(load), Some(cpu)) if earlier == Some(cpu) => {
                    *vcpus.entry(cpu).or_default() += load;
                }
                _ => unsure.extend(at.into_iter().chain(earlier)),
            }
        }
    }
    // VMs gone since: their last run time is in the busy time of where they were.
    unsure.extend(was.into_values().flatten());
    let busy_before: HashMap<u32, u64> = before.host.pcpu_busy_ns.iter().copied().collect();
    now.pcpu_busy_ns
        .iter()
        .filter(|(cpu, _)| !unsure.contains(cpu))
        .filter_map(|&(cpu, busy)| {
            let busy_pct = percent_of_interval(*busy_before.get(&cpu)?, busy, interval_ns)?;
            let vcpu_pct = vcpus.get(&cpu).copied().unwrap_or(0.0);
            Some((cpu, (busy_pct - vcpu_pct).clamp(0.0, 100.0)))
        })
        .collect()
}

/// KSM as a snapshot shows it: pages in KiB, ksmd's CPU over the interval from its run time
/// then and `before`, and whether plans may change it.
fn ksm_view(
    now: &crate::model::KsmSample,
    before: Option<&crate::model::KsmSample>,
    interval_ns: u64,
    managed: bool,
) -> vcoord_api::KsmView {
    let kib = |pages: u64| pages.saturating_mul(now.page_kib);
    vcoord_api::KsmView {
        running: now.run == 1,
        saved_kib: kib(now.pages_sharing),
        shared_kib: kib(now.pages_shared),
        unshared_kib: kib(now.pages_unshared),
        volatile_kib: kib(now.pages_volatile),
        full_scans: now.full_scans,
        pages_to_scan: now.pages_to_scan,
        sleep_ms: now.sleep_millisecs,
        advisor: now.advisor_mode.clone(),
        ksmd_cpu_pct: before
            .and_then(|b| b.ksmd_run_ns)
            .zip(now.ksmd_run_ns)
            .and_then(|(was, is)| percent_of_interval(was, is, interval_ns)),
        managed,
    }
}

/// The run-queue wait of the host's threads outside the vCPUs on each pCPU over the interval,
/// percent of it (at most 100), by pCPU id, where both samples have it.
pub fn other_waits(
    before: &crate::model::HostSample,
    now: &crate::model::HostSample,
    interval_ns: u64,
) -> HashMap<u32, f64> {
    let was: HashMap<u32, u64> = before.pcpu_other_wait_ns.iter().copied().collect();
    now.pcpu_other_wait_ns
        .iter()
        .filter_map(|&(cpu, ns)| {
            Some((cpu, percent_of_interval(*was.get(&cpu)?, ns, interval_ns)?))
        })
        .collect()
}

fn percent_of_interval(before_ns: u64, now_ns: u64, interval_ns: u64) -> Option<f64> {
    if interval_ns == 0 || now_ns < before_ns {
        return None;
    }
    let pct = (now_ns - before_ns) as f64 / interval_ns as f64 * 100.0;
    Some(pct.min(100.0))
}

/// One resource's stall from its counters now and at the previous sample, `interval_ns` ago.
fn stall(now: Option<PsiSample>, before: Option<PsiSample>, interval_ns: u64) -> Option<Stall> {
    let now = now?;
    let us_to_ns = |us: u64| us.saturating_mul(1000);
    let share = |n: Option<u64>, b: Option<u64>| {
        percent_of_interval(us_to_ns(b?), us_to_ns(n?), interval_ns)
    };
    Some(Stall {
        some_pct: share(Some(now.some_total_us), before.map(|b| b.some_total_us)),
        full_pct: share(now.full_total_us, before.and_then(|b| b.full_total_us)),
        some_avg10_pct: now.some_avg10_pct,
    })
}

/// A synthetic snapshot, for benchmarks and tests: `vcpus` single-vCPU VMs on `pcpus` pCPUs with loads and placements from a
/// fixed pseudo-random sequence: half the vCPUs crowd the first quarter of the pCPUs, which run
/// at about 90% while the others run at about 30% (no pCPU saturated, so every balancing
/// policy has work to do).
pub fn synthetic_snapshot(vcpus: usize, pcpus: usize, seed: u64) -> Snapshot {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let vms: Vec<VmView> = (0..vcpus)
        .map(|i| {
            // Half the vCPUs crowd the first quarter of the pCPUs.
            let pcpu = if i % 2 == 0 {
                (next() % (pcpus as u64 / 4).max(1)) as u32
            } else {
                (next() % pcpus as u64) as u32
            };
            // Mean load 45 x pCPUs / vCPUs: ~90% on the crowded quarter, ~30% elsewhere.
            let mean = 45.0 * pcpus as f64 / vcpus as f64;
            let l = mean * 2.0 * (next() % 1000) as f64 / 1000.0;
            VmView {
                cputune: Default::default(),
                name: format!("vm{i:05}"),
                uuid: format!("u{i}"),
                vcpus: vec![VcpuView {
                    id: 0,
                    load_pct: Some(l),
                    wait_pct: Some(0.0),
                    pcpu: Some(pcpu),
                    affinity: crate::cpuset::CpuSet::single(pcpu),
                }],
                memory: MemoryView {
                    max_kib: 1 << 20,
                    actual_kib: 1 << 19,
                    unused_kib: Some(1 << 18),
                    available_kib: Some((1 << 19) - (30 << 10)),
                    unavailable_kib: Some(30 << 10),
                    usable_kib: Some(1 << 18),
                    swap_in_kib: Some(0),
                    swap_out_kib: Some(0),
                    major_faults: Some(0),
                    major_fault_rate: Some(0.0),
                    swap_rate_kib_s: Some(0.0),
                    stats_fresh: true,
                    last_report_s: Some(1.0),
                    ..MemoryView::default()
                },
                oom_events: None,
                control: Default::default(),
            }
        })
        .collect();
    let host = HostView::new(
        (0..pcpus as u32).map(crate::model::Pcpu::plain).collect(),
        1 << 40,
        1 << 39,
    );
    Snapshot::builder(host)
        .tick(1)
        .interval_s(1.0)
        .wall_s(1.0)
        .vms(vms)
        .loads_from_vcpus()
        .build()
        .expect("synthetic snapshots are well formed")
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::CpuSet;
    use crate::model::{HostSample, MemorySample, Pcpu, VcpuSample};

    fn build(b: &mut SnapshotBuilder, sample: Sample) -> Snapshot {
        b.build(sample).unwrap()
    }

    fn vm(name: &str, run_ns: &[u64], pcpus: &[u32]) -> VmSample {
        VmSample {
            cputune: Default::default(),
            name: name.into(),
            uuid: format!("uuid-{name}"),
            vcpus: run_ns
                .iter()
                .zip(pcpus)
                .enumerate()
                .map(|(i, (&run, &cpu))| VcpuSample {
                    id: i as u32,
                    run_time_ns: run,
                    wait_time_ns: Some(run / 2),
                    pcpu: Some(cpu),
                    affinity: CpuSet::single(cpu),
                })
                .collect(),
            memory: MemorySample {
                max_kib: 2 << 20,
                actual_kib: 512 << 10,
                unused_kib: Some(300 << 10),
                stats_updated_s: Some(100),
                ..Default::default()
            },
            oom_events: None,
            metadata: None,
        }
    }

    fn sample(taken_ns: u64, vms: Vec<VmSample>) -> Sample {
        Sample {
            taken_ns,
            wall_s: 100.0,
            host: HostSample {
                pcpus: (0..2).map(Pcpu::plain).collect(),
                mem_total_kib: 8 << 20,
                mem_free_kib: 4 << 20,
                pressure: Default::default(),
                pcpu_busy_ns: Vec::new(),
                pcpu_other_wait_ns: Vec::new(),
                ksm: None,
            },
            vms,
        }
    }

    #[test]
    fn non_vm_load_is_busy_time_less_the_vcpus_run_there() {
        let settings = |measure| SnapshotSettings {
            stats_max_age_s: 2.0,
            measure_other_load: measure,
            ..Default::default()
        };
        let with_busy = |taken_ns, vms, busy: [u64; 2]| {
            let mut s = sample(taken_ns, vms);
            s.host.pcpu_busy_ns = vec![(0, busy[0]), (1, busy[1])];
            s
        };
        for measure in [true, false] {
            let mut b = SnapshotBuilder::new(settings(measure));
            build(
                &mut b,
                with_busy(0, vec![vm("a", &[0, 0], &[0, 1])], [0, 0]),
            );
            // a/0 ran 30% on pCPU 0, which was busy 90%: 60% is not the VM's. pCPU 1 was busy
            // 20% with a/1 running 25% there (read a moment apart): none, not below zero.
            let snap = build(
                &mut b,
                with_busy(
                    1_000_000_000,
                    vec![vm("a", &[300_000_000, 250_000_000], &[0, 1])],
                    [900_000_000, 200_000_000],
                ),
            );
            let others = snap.pcpu_other_loads();
            if measure {
                assert!((others[0].unwrap() - 60.0).abs() < 1e-9, "{others:?}");
                assert_eq!(others[1], Some(0.0));
                assert!((snap.host().pcpus[0].capacity_pct() - 40.0).abs() < 1e-9);
            } else {
                assert_eq!(others, vec![None, None], "switched off");
                assert_eq!(snap.host().pcpus[0].capacity_pct(), 100.0);
            }
            // Measured either way, for the record.
            let measured = b.measured_other_loads();
            assert!((measured[0].unwrap() - 60.0).abs() < 1e-9, "{measured:?}");
            if !measure {
                continue;
            }
            // a/1 moves to pCPU 0 and a new VM b starts on pCPU 1: whose time is whose cannot
            // be told this tick on either pCPU.
            let snap = build(
                &mut b,
                with_busy(
                    2_000_000_000,
                    vec![
                        vm("a", &[600_000_000, 500_000_000], &[0, 0]),
                        vm("b", &[100_000_000], &[1]),
                    ],
                    [1_800_000_000, 400_000_000],
                ),
            );
            assert_eq!(snap.pcpu_other_loads(), vec![None, None]);
            // Then a VM that ran on pCPU 1 leaves: pCPU 1 unknown, pCPU 0 known again.
            let snap = build(
                &mut b,
                with_busy(
                    3_000_000_000,
                    vec![vm("a", &[900_000_000, 800_000_000], &[0, 0])],
                    [2_700_000_000, 500_000_000],
                ),
            );
            let others = snap.pcpu_other_loads();
            assert!((others[0].unwrap() - 30.0).abs() < 1e-9, "{others:?}");
            assert_eq!(others[1], None);
        }
    }

    #[test]
    fn first_sample_has_no_utilization() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        let snap = build(&mut b, sample(0, vec![vm("a", &[0], &[0])]));
        assert_eq!(snap.vms()[0].vcpus[0].load_pct, None);
        assert_eq!(snap.pcpu_loads(), vec![0.0, 0.0]);
        assert!(!snap.has_cpu_loads());
    }

    #[test]
    fn utilization_from_deltas_and_pcpu_sums() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        build(
            &mut b,
            sample(0, vec![vm("a", &[1_000, 0], &[0, 1]), vm("b", &[0], &[0])]),
        );
        let snap = build(
            &mut b,
            sample(
                1_000_000_000,
                vec![
                    vm("a", &[1_000 + 500_000_000, 250_000_000], &[0, 1]),
                    vm("b", &[300_000_000], &[0]),
                ],
            ),
        );
        let a = snap.vm("a").unwrap();
        assert!((a.vcpus[0].load_pct.unwrap() - 50.0).abs() < 1e-9);
        assert!((a.vcpus[1].load_pct.unwrap() - 25.0).abs() < 1e-9);
        // wait is half of run in the fixture
        assert!((a.vcpus[1].wait_pct.unwrap() - 12.5).abs() < 1e-9);
        // pCPU0 carries a/0 (50) + b/0 (30); pCPU1 carries a/1 (25)
        assert!((snap.pcpu_loads()[0] - 80.0).abs() < 1e-9);
        assert!((snap.pcpu_loads()[1] - 25.0).abs() < 1e-9);
        assert!((snap.interval_s() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pcpu_load_is_capped_at_one_pcpu() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        build(
            &mut b,
            sample(0, vec![vm("a", &[0], &[0]), vm("b", &[0], &[0])]),
        );
        // 60% + 55% measured on pCPU0: jitter, not a pCPU doing 115%
        let snap = build(
            &mut b,
            sample(
                1_000_000_000,
                vec![vm("a", &[600_000_000], &[0]), vm("b", &[550_000_000], &[0])],
            ),
        );
        assert_eq!(snap.pcpu_loads(), vec![100.0, 0.0]);
    }

    #[test]
    fn counter_reset_gives_no_value_and_a_restart_starts_over() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        build(&mut b, sample(0, vec![vm("a", &[900_000_000], &[0])]));
        let snap = build(&mut b, sample(1_000_000_000, vec![vm("a", &[100], &[0])]));
        assert_eq!(snap.vms()[0].vcpus[0].load_pct, None);

        let mut restarted = vm("a", &[5], &[0]);
        restarted.uuid = "other".into();
        let snap = build(&mut b, sample(2_000_000_000, vec![restarted]));
        assert_eq!(
            snap.vms()[0].vcpus[0].load_pct,
            None,
            "a restarted VM starts over"
        );
    }

    #[test]
    fn vanished_vms_are_dropped_and_load_is_clamped() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        build(
            &mut b,
            sample(0, vec![vm("a", &[0], &[0]), vm("b", &[0], &[1])]),
        );
        let snap = build(
            &mut b,
            sample(1_000_000_000, vec![vm("b", &[1_100_000_000], &[1])]),
        );
        assert_eq!(snap.vms().len(), 1);
        assert_eq!(snap.vms()[0].vcpus[0].load_pct, Some(100.0));
    }

    /// Guest counters that move every second tick (the fast path reads them every 2 s) give
    /// one steady rate, not twice it at one tick and zero at the next.
    #[test]
    fn fault_and_swap_rates_are_over_the_guests_reports_not_the_ticks() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 5.0,
            ..Default::default()
        });
        let mut seen = Vec::new();
        for tick in 0..8u64 {
            let report = tick / 2; // a new report every other 1 s tick
            let mut v = vm("a", &[tick * 1_000_000], &[0]);
            v.memory.stats_updated_s = Some(100 + 2 * report as i64);
            v.memory.major_faults_total = Some(1_000 + 400 * report);
            v.memory.swap_out_total_kib = Some(64 * report);
            let mut s = sample(tick * 1_000_000_000, vec![v]);
            s.wall_s = 100.0 + tick as f64;
            let snap = build(&mut b, s);
            let m = &snap.vms()[0].memory;
            seen.push((m.major_faults, m.major_fault_rate, m.swap_rate_kib_s));
        }
        // The per-tick deltas jump between a report's worth and nothing ...
        assert_eq!(seen[2].0, Some(400));
        assert_eq!(seen[3].0, Some(0));
        // ... the rates hold 200 faults and 32 KiB a second from the second report on.
        assert_eq!(seen[1].1, None, "one report gives no rate");
        for (tick, s) in seen.iter().enumerate().skip(2) {
            assert_eq!((s.1, s.2), (Some(200.0), Some(32.0)), "tick {tick}");
        }
        // A counter reset (a reboot) starts over; stale statistics give no rate.
        let mut v = vm("a", &[9_000_000], &[0]);
        v.memory.stats_updated_s = Some(120);
        v.memory.major_faults_total = Some(5);
        let mut s = sample(9_000_000_000, vec![v]);
        s.wall_s = 120.0;
        assert_eq!(build(&mut b, s).vms()[0].memory.major_fault_rate, None);
        let mut v = vm("a", &[10_000_000], &[0]);
        v.memory.stats_updated_s = Some(122);
        v.memory.major_faults_total = Some(25);
        let mut s = sample(10_000_000_000, vec![v]);
        s.wall_s = 130.0;
        assert_eq!(
            build(&mut b, s).vms()[0].memory.major_fault_rate,
            None,
            "stale"
        );
    }

    #[test]
    fn stale_guest_stats_are_hidden() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        let mut s = sample(0, vec![vm("a", &[0], &[0])]);
        s.wall_s = 103.0; // stats updated at 100: 3 s old
        let snap = build(&mut b, s);
        assert!(!snap.vms()[0].memory.stats_fresh);
        assert_eq!(snap.vms()[0].memory.unused_kib, None);
    }

    #[test]
    fn budget_limits_guest_free() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            guest_budget_kib: Some(1536 << 10),
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        let snap = build(
            &mut b,
            sample(0, vec![vm("a", &[0], &[0]), vm("b", &[0], &[1])]),
        );
        // budget 1536 MiB - 2 x 512 MiB actual = 512 MiB, less than the 4 GiB really free
        assert_eq!(snap.host().guest_free_kib, 512 << 10);
    }

    #[test]
    fn grants_in_flight_are_not_grantable_again() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            guest_budget_kib: Some(1536 << 10),
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        let s = sample(0, vec![vm("a", &[0], &[0]), vm("b", &[0], &[1])]);
        // 512 MiB under the budget, of which 100 MiB already granted and still deflating
        let snap = b.build_with_pending(s, 100 << 10).unwrap();
        assert_eq!(snap.host().guest_free_kib, 412 << 10);
    }

    #[test]
    fn host_pressure_is_the_share_of_the_interval_stalled_and_absent_stays_absent() {
        let mut b = SnapshotBuilder::new(SnapshotSettings {
            stats_max_age_s: 2.0,
            ..Default::default()
        });
        let psi = |some_us: u64, full_us: Option<u64>| PsiSample {
            some_total_us: some_us,
            full_total_us: full_us,
            some_avg10_pct: 3.0,
        };
        let mut first = sample(0, Vec::new());
        first.host.pressure.memory = Some(psi(1_000_000, Some(500_000)));
        first.host.pressure.cpu = Some(psi(0, None));
        let s = b.build(first).unwrap();
        let memory = s.host().pressure.memory.unwrap();
        assert_eq!((memory.some_pct, memory.some_now_pct()), (None, 3.0));
        // 2 s later: 100 ms more of some stall (5%), 20 ms of full (1%).
        let mut second = sample(2_000_000_000, Vec::new());
        second.host.pressure.memory = Some(psi(1_100_000, Some(520_000)));
        second.host.pressure.cpu = Some(psi(400_000, None));
        let s = b.build(second).unwrap();
        let memory = s.host().pressure.memory.unwrap();
        assert!((memory.some_pct.unwrap() - 5.0).abs() < 1e-9, "{memory:?}");
        assert!((memory.full_pct.unwrap() - 1.0).abs() < 1e-9, "{memory:?}");
        let cpu = s.host().pressure.cpu.unwrap();
        assert!((cpu.some_pct.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(cpu.full_pct, None);
        assert_eq!(s.host().pressure.io, None);
    }
}
