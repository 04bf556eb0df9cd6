//! Figures of merit computed from a run's tick records: how fast and how quietly CPU load was
//! balanced, and how well guests were kept in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::record::TickRecord;

/// How a run balanced CPU load.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuMetrics {
    /// First tick from which the pCPU load stdev stayed within the bound to the end.
    pub ticks_to_balance: Option<u64>,
    /// pCPU load stdev at the last tick, percent points.
    pub final_stdev_pct: f64,
    /// Mean stdev from balance on, percent points.
    pub mean_stdev_after_balance_pct: Option<f64>,
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
}

/// Computes CPU figures; `bound_pct` is the stdev that counts as balanced (5 points).
pub fn cpu_metrics(records: &[TickRecord], bound_pct: f64) -> CpuMetrics {
    // Tick 0 has no loads: judge from the first tick that has some.
    let measured: Vec<&TickRecord> = records
        .iter()
        .filter(|r| {
            r.vms
                .iter()
                .any(|vm| vm.vcpus.iter().any(|v| v.load_pct.is_some()))
        })
        .collect();
    let balanced_from = measured
        .iter()
        .rposition(|r| r.pcpu_stdev_pct > bound_pct)
        .map_or(0, |i| i + 1);
    let ticks_to_balance = measured.get(balanced_from).map(|r| r.tick);
    let after: Vec<f64> = measured[balanced_from.min(measured.len())..]
        .iter()
        .map(|r| r.pcpu_stdev_pct)
        .collect();
    let balance_tick = ticks_to_balance.unwrap_or(u64::MAX);

    let pinned_sets = |r: &TickRecord| -> BTreeMap<u32, BTreeSet<String>> {
        let mut sets: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for vm in &r.vms {
            for v in &vm.vcpus {
                if let Some(cpu) = v.affinity.only() {
                    sets.entry(cpu).or_default().insert(vm.name.clone());
                }
            }
        }
        sets
    };
    let mut pcpu_set_changes = 0;
    let mut pcpu_set_changes_after_balance = 0;
    for pair in records.windows(2) {
        let (before, now) = (pinned_sets(&pair[0]), pinned_sets(&pair[1]));
        let cpus: BTreeSet<u32> = before.keys().chain(now.keys()).copied().collect();
        let changed = cpus.iter().filter(|c| before.get(c) != now.get(c)).count();
        pcpu_set_changes += changed;
        // pair[0]'s actions show up as pair[1]'s affinity.
        if pair[0].tick >= balance_tick {
            pcpu_set_changes_after_balance += changed;
        }
    }
    let waits: Vec<f64> = measured
        .iter()
        .flat_map(|r| {
            r.vms
                .iter()
                .flat_map(|vm| vm.vcpus.iter().filter_map(|v| v.wait_pct))
        })
        .collect();
    CpuMetrics {
        ticks_to_balance,
        final_stdev_pct: records.last().map_or(0.0, |r| r.pcpu_stdev_pct),
        mean_stdev_after_balance_pct: (!after.is_empty())
            .then(|| after.iter().sum::<f64>() / after.len() as f64),
        vcpu_moves: records.iter().map(|r| r.pins.len()).sum(),
        vcpu_moves_after_balance: records
            .iter()
            .filter(|r| r.tick >= balance_tick)
            .map(|r| r.pins.len())
            .sum(),
        pcpu_set_changes,
        pcpu_set_changes_after_balance,
        mean_wait_pct: if waits.is_empty() {
            0.0
        } else {
            waits.iter().sum::<f64>() / waits.len() as f64
        },
    }
}

/// How a run kept guests in memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryMetrics {
    /// OOM kills in guests (where the backend can tell).
    pub oom_events: u64,
    /// Guest swap-out in all.
    pub swap_out_mib: f64,
    /// VM-ticks a VM with fresh statistics had less unused memory than the threshold.
    pub vm_ticks_below_threshold: usize,
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
}

/// Computes memory figures; `threshold_mib` is the unused memory a VM should keep.
pub fn memory_metrics(records: &[TickRecord], threshold_mib: f64) -> MemoryMetrics {
    let mut lowest_unused_mib: BTreeMap<String, f64> = BTreeMap::new();
    let mut below_run: BTreeMap<String, usize> = BTreeMap::new();
    let mut m = MemoryMetrics {
        oom_events: 0,
        swap_out_mib: 0.0,
        vm_ticks_below_threshold: 0,
        longest_below_threshold_ticks: 0,
        lowest_unused_mib: BTreeMap::new(),
        lowest_guest_free_mib: f64::INFINITY,
        lowest_host_free_mib: f64::INFINITY,
        moved_mib: 0.0,
    };
    for r in records {
        m.lowest_guest_free_mib = m.lowest_guest_free_mib.min(r.guest_free_mib);
        m.lowest_host_free_mib = m.lowest_host_free_mib.min(r.host_free_mib);
        for vm in &r.vms {
            m.oom_events += vm.oom_events.unwrap_or(0);
            m.swap_out_mib += vm.swap_out_mib.unwrap_or(0.0);
            let run = below_run.entry(vm.name.clone()).or_default();
            if let Some(unused) = vm.unused_mib {
                let low = lowest_unused_mib.entry(vm.name.clone()).or_insert(unused);
                *low = low.min(unused);
                if unused < threshold_mib {
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
            .map(|b| b.target_kib.abs_diff(b.actual_kib) as f64 / 1024.0)
            .sum::<f64>();
    }
    if m.lowest_guest_free_mib.is_infinite() {
        m.lowest_guest_free_mib = 0.0;
        m.lowest_host_free_mib = 0.0;
    }
    m.lowest_unused_mib = lowest_unused_mib;
    m
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
            let demand = now.map_or(0.0, |x| {
                (x.load_pct.unwrap_or(0.0) + x.wait_pct.unwrap_or(0.0)).min(100.0)
            });
            items.push((at, demand));
        }
    }
    fewest_moves_of(items, pcpus.len(), bound_pct)
}

/// [`fewest_moves`] on `(home pCPU index, demand)` items over `pcpus` pCPUs.
fn fewest_moves_of(mut items: Vec<(usize, f64)>, pcpus: usize, bound_pct: f64) -> Option<usize> {
    // Heaviest first: the search prunes sooner.
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut search = MoveSearch {
        items: &items,
        loads: vec![0.0; pcpus],
        bound: bound_pct,
        visited: 0,
    };
    for budget in 0..=items.len() {
        if search.fits(0, budget) {
            return Some(budget);
        }
        if search.visited > SEARCH_LIMIT {
            return None;
        }
    }
    None
}

struct MoveSearch<'a> {
    items: &'a [(usize, f64)],
    loads: Vec<f64>,
    bound: f64,
    visited: u64,
}

impl MoveSearch<'_> {
    /// Whether items `i..` can be placed, moving at most `moves` of them, into a balanced
    /// placement.
    fn fits(&mut self, i: usize, moves: usize) -> bool {
        self.visited += 1;
        if self.visited > SEARCH_LIMIT {
            return false;
        }
        if i == self.items.len() {
            return crate::snapshot::stdev(&self.loads) <= self.bound;
        }
        let (home, demand) = self.items[i];
        self.loads[home] += demand;
        let ok = self.fits(i + 1, moves);
        self.loads[home] -= demand;
        if ok {
            return true;
        }
        if moves == 0 {
            return false;
        }
        for p in 0..self.loads.len() {
            if p == home {
                continue;
            }
            self.loads[p] += demand;
            let ok = self.fits(i + 1, moves - 1);
            self.loads[p] -= demand;
            if ok {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment of `items` to `m` pCPUs: the fewest moves among balanced ones.
    fn brute_force(items: &[(usize, f64)], m: usize, bound: f64) -> Option<usize> {
        let n = items.len();
        let mut best: Option<usize> = None;
        for code in 0..m.pow(n as u32) {
            let mut loads = vec![0.0; m];
            let mut moves = 0;
            let mut c = code;
            for &(home, demand) in items {
                let at = c % m;
                c /= m;
                loads[at] += demand;
                moves += usize::from(at != home);
            }
            if crate::snapshot::stdev(&loads) <= bound && best.is_none_or(|b| moves < b) {
                best = Some(moves);
            }
        }
        best
    }

    #[test]
    fn exact_search_equals_brute_force_on_random_small_instances() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let m = 2 + (next() % 3) as usize;
            let n = 1 + (next() % 7) as usize;
            let items: Vec<(usize, f64)> = (0..n)
                .map(|_| ((next() % m as u64) as usize, (next() % 101) as f64))
                .collect();
            let bound = [5.0, 15.0, 40.0][(next() % 3) as usize];
            assert_eq!(
                fewest_moves_of(items.clone(), m, bound),
                brute_force(&items, m, bound),
                "{items:?} on {m} pCPUs, bound {bound}"
            );
        }
    }

    #[test]
    fn t2_needs_six_moves() {
        let items = vec![(0, 100.0); 8];
        assert_eq!(fewest_moves_of(items, 4, 5.0), Some(6));
    }
}
