//! Figures of merit computed from a run's tick records: how fast and how quietly CPU load was
//! balanced, and how well guests were kept in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use vcoord_api::vcpu_demand_pct;

use crate::runtime::record::TickRecord;
use crate::units::KIB_PER_MIB_F64;

/// How a run balanced CPU load. Balance is judged on demand (see [`demand_stdev`]):
/// utilization alone reads 100% on a saturated pCPU whatever it carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuMetrics {
    /// First tick from which the pCPU demand stdev stayed within the bound to the end.
    pub ticks_to_balance: Option<u64>,
    /// pCPU load (utilization) stdev at the last tick, percent points.
    pub final_stdev_pct: f64,
    /// pCPU demand stdev at the last tick, percent points.
    pub final_demand_stdev_pct: f64,
    /// Mean demand stdev from balance on, percent points.
    pub mean_stdev_after_balance_pct: Option<f64>,
    /// Fairness: at each measured tick the share of its demand the worst-served busy vCPU
    /// got (utilization / (utilization + run-queue wait)), averaged over ticks, percent.
    pub fairness_pct: f64,
    /// vCPU pin changes carried out in all.
    pub vcpu_moves: usize,
    /// vCPU pin changes carried out from the balance tick on.
    pub vcpu_moves_after_balance: usize,
    /// Times the set of VMs pinned to a pCPU changed, in all.
    pub pcpu_set_changes: usize,
    /// The same, counted from the balance tick on.
    pub pcpu_set_changes_after_balance: usize,
    /// Mean run-queue wait of all vCPUs, percent: demand left unmet.
    pub mean_wait_pct: f64,
    /// CPU ready of the worst-served VM: its vCPUs' run-queue wait averaged over them (as
    /// VMware's CPU ready is) and over the run, percent (0 without measured ticks).
    pub worst_vm_ready_pct: f64,
    /// Run-queue wait of the host's own work (threads outside the VMs' vCPUs), summed over
    /// the pCPUs, mean over measured ticks, percent of one pCPU: what host processes wanted
    /// and did not get (0 where not recorded).
    pub host_wait_pct: f64,
}

/// A vCPU's demand at a tick ([`vcpu_demand_pct`]).
fn vcpu_demand(v: &crate::runtime::record::VcpuRecord) -> Option<f64> {
    vcpu_demand_pct(v.load_pct, v.wait_pct)
}

/// Standard deviation, in percent points, of the demand the pCPUs carry at one tick: each
/// pCPU carries the demand of the work outside the VMs (its run time and run-queue wait, where
/// recorded) and the demand of the vCPUs placed on
/// it (pinned to it alone, else where they last ran), summed without a cap so that an
/// overloaded pCPU shows. Falls back to the utilization
/// stdev when no vCPU's demand and place are known.
pub fn demand_stdev(r: &TickRecord) -> f64 {
    let ids: Vec<u32> = if r.pcpus.is_empty() {
        (0..r.pcpu_load_pct.len() as u32).collect()
    } else {
        r.pcpus.clone()
    };
    // Each pCPU carries the demand of the host's own work (its run and run-queue wait, where
    // recorded) and its vCPUs' demand.
    let recorded = |v: &[Option<f64>], i: usize| v.get(i).copied().flatten().unwrap_or(0.0);
    let mut carried: Vec<f64> = (0..ids.len())
        .map(|i| recorded(&r.pcpu_other_pct, i) + recorded(&r.pcpu_other_wait_pct, i))
        .collect();
    let mut placed = false;
    for v in r.vms.iter().flat_map(|vm| &vm.vcpus) {
        let (Some(d), Some(home)) = (vcpu_demand(v), v.affinity.only().or(v.pcpu)) else {
            continue;
        };
        if let Some(i) = ids.iter().position(|&p| p == home) {
            carried[i] += d;
            placed = true;
        }
    }
    if !placed || carried.is_empty() {
        return r.pcpu_stdev_pct;
    }
    let n = carried.len() as f64;
    let mean = carried.iter().sum::<f64>() / n;
    (carried.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Share of its demand the worst-served busy vCPU (demand of 5% or more) got at one tick,
/// percent; `None` when no vCPU was busy.
fn worst_served_pct(r: &TickRecord) -> Option<f64> {
    r.vms
        .iter()
        .flat_map(|vm| &vm.vcpus)
        .filter_map(|v| {
            // What it wanted, uncapped here: a share served, not a demand to place.
            let load = v.load_pct?;
            let demand = load + v.wait_pct.unwrap_or(0.0);
            (demand >= 5.0).then(|| (100.0 * load / demand).min(100.0))
        })
        .reduce(f64::min)
}

/// Computes CPU figures; `bound_pct` is the demand stdev that counts as balanced (5 points).
pub fn cpu_metrics(records: &[TickRecord], bound_pct: f64) -> CpuMetrics {
    let mut a = Figures::new(bound_pct, 0.0);
    records.iter().for_each(|r| a.push(r));
    a.cpu()
}

/// The VMs pinned to each pCPU (pinned to it alone).
fn pinned_sets(r: &TickRecord) -> BTreeMap<u32, BTreeSet<String>> {
    let mut sets: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for vm in &r.vms {
        for v in &vm.vcpus {
            if let Some(cpu) = v.affinity.only() {
                sets.entry(cpu).or_default().insert(vm.name.clone());
            }
        }
    }
    sets
}

/// A run's figures gathered tick by tick, so that a long run (a traced week) needs no more
/// than a few numbers per tick: the same figures as [`cpu_metrics`] and [`memory_metrics`].
#[derive(Clone, Debug)]
pub struct Figures {
    bound_pct: f64,
    threshold_mib: f64,
    ticks: usize,
    /// (tick, demand stdev) of each measured tick.
    demand: Vec<(u64, f64)>,
    /// (tick, pin changes carried out) of each tick that had some.
    moves: Vec<(u64, usize)>,
    /// (tick before, pCPU set changes) of each pair of ticks that had some.
    set_changes: Vec<(u64, usize)>,
    previous_sets: Option<(u64, BTreeMap<u32, BTreeSet<String>>)>,
    served_sum: f64,
    served_n: usize,
    wait_sum: f64,
    wait_n: usize,
    host_wait_sum: f64,
    host_wait_n: usize,
    /// Per VM: its CPU ready summed over measured ticks, and how many.
    ready: BTreeMap<String, (f64, usize)>,
    last_stdev: f64,
    first: Option<TickRecord>,
    first_measured: Option<TickRecord>,
    memory: MemoryMetrics,
    first_size: BTreeMap<String, f64>,
    below_run: BTreeMap<String, usize>,
}

impl Figures {
    /// Empty figures; `bound_pct` is the balance bound, `threshold_mib` the unused memory a VM
    /// should keep.
    pub fn new(bound_pct: f64, threshold_mib: f64) -> Self {
        Self {
            bound_pct,
            threshold_mib,
            ticks: 0,
            demand: Vec::new(),
            moves: Vec::new(),
            set_changes: Vec::new(),
            previous_sets: None,
            served_sum: 0.0,
            served_n: 0,
            wait_sum: 0.0,
            wait_n: 0,
            host_wait_sum: 0.0,
            host_wait_n: 0,
            ready: BTreeMap::new(),
            last_stdev: 0.0,
            first: None,
            first_measured: None,
            memory: MemoryMetrics {
                oom_events: 0,
                swap_out_mib: 0.0,
                vm_ticks_below_threshold: 0,
                vm_ticks: 0,
                host_short_ticks: 0,
                longest_below_threshold_ticks: 0,
                lowest_unused_mib: BTreeMap::new(),
                lowest_guest_free_mib: f64::INFINITY,
                lowest_host_free_mib: f64::INFINITY,
                moved_mib: 0.0,
                committed_mib: 0.0,
                unmanaged_mib: 0.0,
                provisioned_mib: 0.0,
                ksm_saved_mib: 0.0,
            },
            first_size: BTreeMap::new(),
            below_run: BTreeMap::new(),
        }
    }

    /// Ticks taken in.
    pub fn ticks(&self) -> usize {
        self.ticks
    }

    /// Takes in the next tick's record.
    pub fn push(&mut self, r: &TickRecord) {
        self.ticks += 1;
        if self.first.is_none() {
            self.first = Some(r.clone());
        }
        let measured = r
            .vms
            .iter()
            .any(|vm| vm.vcpus.iter().any(|v| v.load_pct.is_some()));
        if measured {
            if self.first_measured.is_none() {
                self.first_measured = Some(r.clone());
            }
            self.demand.push((r.tick, demand_stdev(r)));
            if let Some(served) = worst_served_pct(r) {
                self.served_sum += served;
                self.served_n += 1;
            }
            self.host_wait_sum += r.pcpu_other_wait_pct.iter().flatten().sum::<f64>();
            self.host_wait_n += 1;
            for w in r
                .vms
                .iter()
                .flat_map(|vm| vm.vcpus.iter().filter_map(|v| v.wait_pct))
            {
                self.wait_sum += w;
                self.wait_n += 1;
            }
            for vm in &r.vms {
                let waits = vm.vcpus.iter().filter_map(|v| v.wait_pct);
                let (sum, n) = waits.fold((0.0, 0usize), |(s, n), w| (s + w, n + 1));
                if n > 0 {
                    // Looked up before it is inserted: no key copied on the tick path.
                    match self.ready.get_mut(&vm.name) {
                        Some(e) => *e = (e.0 + sum / n as f64, e.1 + 1),
                        None => {
                            self.ready.insert(vm.name.clone(), (sum / n as f64, 1));
                        }
                    }
                }
            }
        }
        if !r.pins.is_empty() {
            self.moves.push((r.tick, r.pins.len()));
        }
        let sets = pinned_sets(r);
        if let Some((tick, before)) = &self.previous_sets {
            let cpus: BTreeSet<u32> = before.keys().chain(sets.keys()).copied().collect();
            let changed = cpus.iter().filter(|c| before.get(c) != sets.get(c)).count();
            if changed > 0 {
                self.set_changes.push((*tick, changed));
            }
        }
        self.previous_sets = Some((r.tick, sets));
        self.last_stdev = r.pcpu_stdev_pct;
        self.push_memory(r);
    }

    fn push_memory(&mut self, r: &TickRecord) {
        let m = &mut self.memory;
        for vm in &r.vms {
            let first = *self
                .first_size
                .entry(vm.name.clone())
                .or_insert(vm.actual_mib());
            m.committed_mib += vm.actual_mib();
            m.unmanaged_mib += first;
            m.provisioned_mib += vm.max_mib();
        }
        m.ksm_saved_mib += r.ksm_saved_kib.unwrap_or(0) as f64 / KIB_PER_MIB_F64;
        m.lowest_guest_free_mib = m.lowest_guest_free_mib.min(r.guest_free_mib());
        m.lowest_host_free_mib = m.lowest_host_free_mib.min(r.host_free_mib());
        if r.host_free_mib() < HOST_SHORT_MIB {
            m.host_short_ticks += 1;
        }
        for vm in &r.vms {
            m.oom_events += vm.oom_events.unwrap_or(0);
            m.swap_out_mib += vm.swap_out_mib().unwrap_or(0.0);
            let run = self.below_run.entry(vm.name.clone()).or_default();
            if let Some(unused) = vm.unused_mib() {
                m.vm_ticks += 1;
                let low = m.lowest_unused_mib.entry(vm.name.clone()).or_insert(unused);
                *low = low.min(unused);
                if unused < self.threshold_mib {
                    m.vm_ticks_below_threshold += 1;
                    *run += 1;
                    m.longest_below_threshold_ticks = m.longest_below_threshold_ticks.max(*run);
                } else {
                    *run = 0;
                }
            }
        }
        m.moved_mib += r
            .balloons
            .iter()
            .map(|b| b.target_kib.abs_diff(b.actual_kib) as f64 / KIB_PER_MIB_F64)
            .sum::<f64>();
    }

    /// The CPU figures so far.
    pub fn cpu(&self) -> CpuMetrics {
        let balanced_from = self
            .demand
            .iter()
            .rposition(|&(_, sd)| sd > self.bound_pct)
            .map_or(0, |i| i + 1);
        let ticks_to_balance = self.demand.get(balanced_from).map(|d| d.0);
        let after = &self.demand[balanced_from.min(self.demand.len())..];
        let balance_tick = ticks_to_balance.unwrap_or(u64::MAX);
        let count_from = |v: &[(u64, usize)]| -> usize {
            v.iter().filter(|e| e.0 >= balance_tick).map(|e| e.1).sum()
        };
        CpuMetrics {
            ticks_to_balance,
            final_stdev_pct: self.last_stdev,
            final_demand_stdev_pct: self.demand.last().map_or(0.0, |d| d.1),
            mean_stdev_after_balance_pct: (!after.is_empty())
                .then(|| after.iter().map(|d| d.1).sum::<f64>() / after.len() as f64),
            fairness_pct: if self.served_n == 0 {
                100.0
            } else {
                self.served_sum / self.served_n as f64
            },
            vcpu_moves: self.moves.iter().map(|e| e.1).sum(),
            vcpu_moves_after_balance: count_from(&self.moves),
            pcpu_set_changes: self.set_changes.iter().map(|e| e.1).sum(),
            pcpu_set_changes_after_balance: count_from(&self.set_changes),
            mean_wait_pct: if self.wait_n == 0 {
                0.0
            } else {
                self.wait_sum / self.wait_n as f64
            },
            worst_vm_ready_pct: self
                .ready
                .values()
                .map(|&(sum, n)| sum / n as f64)
                .fold(0.0, f64::max),
            host_wait_pct: if self.host_wait_n == 0 {
                0.0
            } else {
                self.host_wait_sum / self.host_wait_n as f64
            },
        }
    }

    /// The memory figures so far.
    pub fn memory(&self) -> MemoryMetrics {
        let mut m = self.memory.clone();
        if self.ticks > 0 {
            m.committed_mib /= self.ticks as f64;
            m.unmanaged_mib /= self.ticks as f64;
            m.provisioned_mib /= self.ticks as f64;
            m.ksm_saved_mib /= self.ticks as f64;
        }
        if m.lowest_guest_free_mib.is_infinite() {
            m.lowest_guest_free_mib = 0.0;
            m.lowest_host_free_mib = 0.0;
        }
        m
    }

    /// The fewest moves that balance the run's start ([`fewest_moves`]).
    pub fn fewest_moves(&self) -> Option<usize> {
        let start = self.first.as_ref()?;
        let measured = self.first_measured.as_ref()?;
        fewest_moves_between(start, measured, self.bound_pct)
    }
}

/// Free host memory under which a tick counts as one where the host ran out, MiB.
pub const HOST_SHORT_MIB: f64 = 1.0;

/// How a run kept guests in memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryMetrics {
    /// OOM kills in guests (where the backend can tell).
    pub oom_events: u64,
    /// Guest swap-out in all.
    pub swap_out_mib: f64,
    /// VM-ticks a VM with fresh statistics had less unused memory than the threshold.
    pub vm_ticks_below_threshold: usize,
    /// VM-ticks with the VM's unused memory known (what the share below is of).
    pub vm_ticks: usize,
    /// Ticks the host had no memory free (under [`HOST_SHORT_MIB`]): its guests held more
    /// than it has.
    pub host_short_ticks: usize,
    /// Longest run of consecutive ticks one VM spent below the threshold.
    pub longest_below_threshold_ticks: usize,
    /// Lowest unused memory of each VM.
    pub lowest_unused_mib: BTreeMap<String, f64>,
    /// Lowest memory grantable to guests over the run.
    pub lowest_guest_free_mib: f64,
    /// Lowest free host memory over the run.
    pub lowest_host_free_mib: f64,
    /// Balloon changes in all (sum of |target - actual| carried out).
    pub moved_mib: f64,
    /// Memory the guests had, summed over the VMs, mean over the ticks.
    pub committed_mib: f64,
    /// The same with every VM at the size it was first seen at: what the guests keep with no
    /// memory policy (nothing else moves a balloon).
    pub unmanaged_mib: f64,
    /// The same with every VM at its maximum (what it was provisioned).
    pub provisioned_mib: f64,
    /// Memory KSM's merging saved on the host, mean over the ticks (0 where not read).
    pub ksm_saved_mib: f64,
}

impl MemoryMetrics {
    /// Memory saved against no memory policy, percent of what the guests would have kept
    /// (negative when the policy gave more than it took).
    pub fn saved_pct(&self) -> f64 {
        if self.unmanaged_mib > 0.0 {
            100.0 * (1.0 - self.committed_mib / self.unmanaged_mib)
        } else {
            0.0
        }
    }

    /// Memory saved against the VMs' maximum sizes, percent of those (never negative: a VM
    /// holds at most its maximum).
    pub fn saved_of_max_pct(&self) -> f64 {
        if self.provisioned_mib > 0.0 {
            100.0 * (1.0 - self.committed_mib / self.provisioned_mib)
        } else {
            0.0
        }
    }

    /// VM-ticks below the threshold, percent of the VM-ticks measured.
    pub fn below_threshold_pct(&self) -> f64 {
        if self.vm_ticks > 0 {
            100.0 * self.vm_ticks_below_threshold as f64 / self.vm_ticks as f64
        } else {
            0.0
        }
    }
}

/// Computes memory figures; `threshold_mib` is the unused memory a VM should keep.
pub fn memory_metrics(records: &[TickRecord], threshold_mib: f64) -> MemoryMetrics {
    let mut a = Figures::new(0.0, threshold_mib);
    records.iter().for_each(|r| a.push(r));
    a.memory()
}

/// Largest search (placements visited) [`fewest_moves`] makes before giving up.
const SEARCH_LIMIT: u64 = 4_000_000;

/// The fewest vCPU pin changes that would balance the start of a run: the least number of
/// vCPUs to place elsewhere than they were at the first tick (before any action) so that the
/// pCPU loads predicted from each vCPU's demand at the first measured tick (load + run-queue
/// wait, at most 100 per vCPU, summed without a cap so that an overloaded pCPU shows) have a
/// standard deviation within `bound_pct`. A vCPU stays, at no cost, where it is pinned (or last
/// ran, when not pinned to one pCPU). Exact, by iterative deepening over the number of moves;
/// `None` when the instance is too large to search exhaustively.
pub fn fewest_moves(records: &[TickRecord], bound_pct: f64) -> Option<usize> {
    let start = records.first()?;
    let measured = records.iter().find(|r| {
        r.vms
            .iter()
            .any(|vm| vm.vcpus.iter().any(|v| v.load_pct.is_some()))
    })?;
    fewest_moves_between(start, measured, bound_pct)
}

/// [`fewest_moves`] from the first record and the first measured one.
fn fewest_moves_between(
    start: &TickRecord,
    measured: &TickRecord,
    bound_pct: f64,
) -> Option<usize> {
    let pcpus: Vec<u32> = if start.pcpus.is_empty() {
        (0..start.pcpu_load_pct.len() as u32).collect()
    } else {
        start.pcpus.clone()
    };
    let mut items: Vec<(usize, f64)> = Vec::new();
    for vm in &start.vms {
        for v in &vm.vcpus {
            let home = v.affinity.only().or(v.pcpu)?;
            let at = pcpus.iter().position(|&p| p == home)?;
            let now = measured
                .vms
                .iter()
                .find(|m| m.name == vm.name)
                .and_then(|m| m.vcpus.iter().find(|x| x.id == v.id));
            let demand = now.and_then(vcpu_demand).unwrap_or(0.0);
            items.push((at, demand));
        }
    }
    fewest_moves_of(items, pcpus.len(), bound_pct)
}

/// [`fewest_moves`] on `(home pCPU index, demand)` items over `pcpus` pCPUs.
fn fewest_moves_of(items: Vec<(usize, f64)>, pcpus: usize, bound_pct: f64) -> Option<usize> {
    match crate::placement::fewest_moves(&items, pcpus, bound_pct, SEARCH_LIMIT) {
        crate::placement::Search::Found { moves, .. } => Some(moves),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own work counts on its pCPU by what it wanted: a process that ran 40% and
    /// waited 40% beside one 80% vCPU makes the two pCPUs even, not 40 points apart.
    #[test]
    fn the_demand_spread_counts_the_host_work_by_its_run_and_wait() {
        let record = |wait: serde_json::Value| -> TickRecord {
            serde_json::from_value(serde_json::json!({
                "schema": crate::runtime::record::SCHEMA, "host": "h", "tick": 1, "time_s": 1.0,
                "pcpu_load_pct": [80.0, 80.0], "pcpu_stdev_pct": 0.0,
                "pcpu_other_pct": [40.0, 0.0], "pcpu_other_wait_pct": wait,
                "host_free_kib": 0, "guest_free_kib": 0, "pcpus": [0, 1],
                "cpu_reason": "", "memory_reason": "", "pins": [], "balloons": [], "rejected": [],
                "failed": [], "dry_run": false, "sample_calls": 0, "actuate_calls": 0,
                "vms": [{"name": "a", "memory": vcoord_api::snapshot::MemoryView::default(), "vcpus": [
                    {"id": 0, "load_pct": 80.0, "wait_pct": 0.0, "pcpu": 1, "affinity": [1]}
                ]}]
            }))
            .unwrap()
        };
        assert_eq!(demand_stdev(&record(serde_json::json!([40.0, 0.0]))), 0.0);
        // Not recorded (an older record, or a host that cannot measure it): run time only.
        assert_eq!(demand_stdev(&record(serde_json::json!([]))), 20.0);
    }
}
