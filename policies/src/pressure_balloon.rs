//! `pressure-balloon`: a memory policy that feeds growing guests ahead of their growth and takes
//! back idle memory gradually.
//!
//! - Rate-aware grants: each VM's memory use is tracked tick to tick; its growth rate (rising
//!   at once, falling slowly) times `lead_s` (statistics lag plus the time a grant takes to
//!   land) is added to the unused memory it must keep above `threshold_mib`. A VM short of that
//!   gets what it lacks, at most `max_grant_mib` a tick.
//! - Pressure signals: swap-in/out or more than `fault_threshold` major faults in a tick mark a
//!   VM as pressured: it must keep one more threshold, and it is never a donor.
//! - Gradual reclaim with a dead band: a VM that is not growing and keeps more than
//!   `band_factor` thresholds unused gives back `release_ratio` of the excess a tick (at least
//!   8 MiB, at most `max_release_mib`).
//! - Host levels: when what the host can still give (above `host_reserve_mib`) falls under
//!   `pressure_pct` of guest memory, idle VMs give back twice as fast; when grants do not fit,
//!   or it falls under `critical_pct`, every VM that is not needy gives back all it holds above
//!   its own need (donors first), and what the host has is shared among the needy by `shares`.
//! - Per-VM `min_mib`, `max_mib` and `shares` tables; `guest_floor_mib` for all.
//! - Stuck balloons: a VM whose size has not moved toward its target over two ticks is no
//!   longer asked to give memory back, and is named in the plan's reason.
//! - Lag: a VM given memory is not asked to give any back for 5 ticks, nor while a grant is
//!   still landing; a reading with more unused memory than the VM has (guest figures newer
//!   than the balloon size) is skipped.

use std::collections::HashMap;

use vcoord_api::units::KIB_PER_MIB_F64 as MIB;
use vcoord_api::{
    BalloonTarget, MemoryPlan, MemoryPolicy, Mib, ParamError, PerVm, Policy, Snapshot, VmView,
};

/// A balloon counts as moving when it gets this much closer to its target.
const PROGRESS_KIB: f64 = 8.0 * MIB;
/// A VM given memory is not asked to give any back for this many ticks (its figures lag).
const SETTLE_TICKS: u32 = 5;

vcoord_api::params! {
    /// Parameters of `pressure-balloon`. The guest floor and the host reserve are the guard's
    /// (`[host.guard]`), seen in each snapshot.
    pub struct PressureBalloonParams {
        /// unused memory every VM keeps at least
        pub threshold_mib: Mib = Mib(100.0), unit "MiB", range 1.0..=1e7;
        /// growth covered ahead: a growing VM also keeps rate x lead_s unused
        pub lead_s: f64 = 4.0, unit "s", range 0.0..=600.0;
        /// an idle VM keeps up to this many thresholds unused
        pub band_factor: f64 = 2.0, unit "thresholds", range 1.0..=100.0;
        /// share of the excess above the band given back per tick
        pub release_ratio: f64 = 0.25, unit "ratio", range 0.01..=1.0;
        /// most a VM gives back per tick
        pub max_release_mib: Mib = Mib(128.0), unit "MiB", range 1.0..=1e7;
        /// most a VM gets per tick
        pub max_grant_mib: Mib = Mib(512.0), unit "MiB", range 1.0..=1e7;
        /// host under pressure below this much grantable memory (share of guest memory): idle VMs give back twice as fast
        pub pressure_pct: f64 = 20.0, unit "percent", range 0.0..=100.0;
        /// host critical below this: every VM that is not needy gives back its excess
        pub critical_pct: f64 = 5.0, unit "percent", range 0.0..=100.0;
        /// major faults in a tick that mark a VM as pressured
        pub fault_threshold: f64 = 100.0, unit "faults per tick", range 0.0..=1e9;
        /// per-VM minimum size, e.g. { web = 1024 }
        pub min_mib: PerVm<Mib> = PerVm::default(), unit "MiB", range 0.0..=1e8;
        /// per-VM maximum size (below the domain's own maximum)
        pub max_mib: PerVm<Mib> = PerVm::default(), unit "MiB", range 0.0..=1e8;
        /// per-VM weight when memory is short (default 1)
        pub shares: PerVm<f64> = PerVm::default(), unit "weight", range 0.001..=1e6;
    }
}

/// The policy with its parameters and what it remembers of each VM.
#[derive(Clone, Debug, Default)]
pub struct PressureBalloon {
    /// Its parameters.
    pub params: PressureBalloonParams,
    seen: HashMap<String, VmState>,
}

impl Policy for PressureBalloon {
    const NAME: &'static str = "pressure-balloon";
    const DESCRIPTION: &'static str = "grants sized to each VM's growth rate, gradual reclaim, pressure signals, host levels, per-VM min/max/shares";
    type Params = PressureBalloonParams;

    fn new(params: PressureBalloonParams) -> Result<Self, ParamError> {
        if params.critical_pct > params.pressure_pct {
            return Err(ParamError::new(
                "critical_pct",
                format!(
                    "{} is above pressure_pct ({})",
                    params.critical_pct, params.pressure_pct
                ),
            ));
        }
        if let Some((vm, min)) = params.min_mib.iter().find(|(vm, min)| {
            params
                .max_mib
                .get(vm.as_str())
                .is_some_and(|max| max.get() < min.get())
        }) {
            return Err(ParamError::new(
                format!("min_mib.{vm}"),
                format!("{} is above max_mib.{vm}", min.get()),
            ));
        }
        Ok(Self {
            params,
            seen: HashMap::new(),
        })
    }
}

#[derive(Clone, Debug)]
struct VmState {
    uuid: String,
    used_kib: f64,
    /// The guest's unused memory at its last new reading, and when that was.
    unused_kib: f64,
    read_at_s: f64,
    actual_kib: f64,
    rate_kib_s: f64,
    /// Target this policy last asked for, with the distance to it then.
    asked: Option<(f64, f64)>,
    no_progress: u32,
    /// Ticks since this VM was last given memory.
    since_grant: u32,
}

/// One VM's decision inputs this tick.
struct Need<'a> {
    vm: &'a VmView,
    used: f64,
    actual: f64,
    /// Unused memory it must keep.
    keep: f64,
    lo: f64,
    hi: f64,
    growing: bool,
    pressured: bool,
    stuck: bool,
    /// Given memory in the last few ticks, or a grant still landing: not a donor yet.
    settling: bool,
}

impl PressureBalloon {
    /// The smallest and largest size `vm` may be given; `floor_kib` is the guard's floor.
    /// The operator's per-VM settings come first, then this policy's per-VM tables.
    fn bounds(&self, vm: &VmView, floor_kib: f64) -> (f64, f64) {
        let operator = &vm.control;
        let max_kib = operator
            .max_kib
            .map(|k| k as f64)
            .or_else(|| self.params.max_mib.get(&vm.name).map(|m| m.kib()));
        let min_kib = operator
            .min_kib
            .map(|k| k as f64)
            .or_else(|| self.params.min_mib.get(&vm.name).map(|m| m.kib()));
        let max = (vm.memory.max_kib as f64).min(max_kib.unwrap_or(f64::INFINITY));
        let min = min_kib.unwrap_or(0.0).max(floor_kib).min(max);
        (min, max)
    }

    /// A VM's weight when memory is short.
    fn shares(&self, vm: &VmView) -> f64 {
        vm.control
            .shares
            .or_else(|| self.params.shares.get(&vm.name).copied())
            .unwrap_or(1.0)
    }

    /// Updates the memory of each VM with fresh statistics and says what it needs.
    fn needs<'a>(&mut self, snapshot: &'a Snapshot) -> Vec<Need<'a>> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for vm in snapshot.vms() {
            // Guest figures newer than the balloon size can report more unused than the VM
            // has: such a reading says nothing; the VM keeps what it has this tick.
            let consistent = vm
                .memory
                .unused_kib
                .is_some_and(|u| u < vm.memory.actual_kib);
            // A VM whose memory the operator left alone is neither given nor asked anything.
            let (Some(used), true, true) = (
                vm.memory.used_kib().filter(|_| consistent),
                vm.memory.stats_fresh,
                vm.control.memory_managed,
            ) else {
                if let Some(s) = self.seen.remove(&vm.name) {
                    if s.uuid == vm.uuid {
                        seen.insert(vm.name.clone(), s);
                    }
                }
                continue;
            };
            let used = used as f64;
            let actual = vm.memory.actual_kib as f64;
            let mut state = match self.seen.remove(&vm.name) {
                Some(s) if s.uuid == vm.uuid => s,
                _ => VmState {
                    uuid: vm.uuid.clone(),
                    used_kib: used,
                    unused_kib: -1.0,
                    read_at_s: snapshot.wall_s(),
                    actual_kib: actual,
                    rate_kib_s: 0.0,
                    asked: None,
                    no_progress: 0,
                    since_grant: u32::MAX,
                },
            };
            // Guest statistics arrive every period (2 s or so on real hosts), not every tick:
            // the growth rate is measured between new readings only.
            let unused = vm.memory.unused_kib.unwrap_or(0) as f64;
            let dt = snapshot.wall_s() - state.read_at_s;
            if unused != state.unused_kib && dt > 0.0 {
                let inst = (used - state.used_kib) / dt;
                // While a balloon inflates, the guest's figures and the balloon size are read at
                // different moments, so use seems to grow by what the balloon took: an increase
                // seen then is not believed.
                let inflating = actual < state.actual_kib - MIB
                    || state
                        .asked
                        .is_some_and(|(target, _)| target < actual - PROGRESS_KIB);
                // Rise at once, fall slowly (a working set grows fast and shrinks lazily).
                state.rate_kib_s = if inst > state.rate_kib_s && !inflating {
                    inst
                } else {
                    0.7 * state.rate_kib_s + 0.3 * inst.min(state.rate_kib_s)
                };
                state.used_kib = used;
                state.read_at_s = snapshot.wall_s();
            } else if unused != state.unused_kib {
                state.used_kib = used;
                state.read_at_s = snapshot.wall_s();
            }
            state.unused_kib = unused;
            state.actual_kib = actual;
            state.since_grant = state.since_grant.saturating_add(1);
            // Stuck: no progress toward the last target over two ticks.
            if let Some((target, gap_then)) = state.asked {
                let gap = (target - actual).abs();
                if state.no_progress >= 20 {
                    // Stuck for long: forget, and try it again as a donor.
                    state.asked = None;
                    state.no_progress = 0;
                } else if gap > PROGRESS_KIB && gap > gap_then - PROGRESS_KIB {
                    state.no_progress += 1;
                } else {
                    state.no_progress = 0;
                    state.asked = (gap > PROGRESS_KIB).then_some((target, gap));
                }
            }
            let pressured = vm.memory.swap_in_kib.unwrap_or(0) > 0
                || vm.memory.swap_out_kib.unwrap_or(0) > 0
                || vm.memory.major_faults.unwrap_or(0) as f64 > self.params.fault_threshold;
            let growth = state.rate_kib_s.max(0.0) * self.params.lead_s;
            let keep = self.params.threshold_mib.kib() * if pressured { 2.0 } else { 1.0 } + growth;
            let (lo, hi) = self.bounds(vm, snapshot.host().limits.guest_floor_kib as f64);
            out.push(Need {
                vm,
                used,
                actual,
                keep,
                lo,
                hi,
                growing: state.rate_kib_s > 1.0 * MIB,
                pressured,
                stuck: state.no_progress >= 2,
                settling: state.since_grant < SETTLE_TICKS
                    || state
                        .asked
                        .is_some_and(|(target, _)| target > actual + PROGRESS_KIB),
            });
            seen.insert(vm.name.clone(), state);
        }
        // VMs that are gone are forgotten.
        self.seen = seen;
        out
    }
}

impl MemoryPolicy for PressureBalloon {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let needs = self.needs(snapshot);
        if needs.is_empty() {
            return MemoryPlan {
                targets: Vec::new(),
                reason: "no VM with fresh statistics".into(),
            };
        }
        let host = snapshot.host();
        let available = host.guest_free_kib as f64 - host.limits.host_reserve_kib as f64;
        let guest_total: f64 =
            needs.iter().map(|n| n.actual).sum::<f64>() + snapshot.host().guest_free_kib as f64;
        let share = 100.0 * available / guest_total.max(1.0);
        let level = if share < self.params.critical_pct {
            "critical"
        } else if share < self.params.pressure_pct {
            "pressure"
        } else {
            "comfortable"
        };

        // What each needy VM asks for.
        let asks: Vec<f64> = needs
            .iter()
            .map(|n| {
                let unused = n.actual - n.used;
                if unused >= n.keep && n.actual >= n.lo {
                    return 0.0;
                }
                let want = (n.used + n.keep).clamp(n.lo, n.hi);
                (want - n.actual).clamp(0.0, self.params.max_grant_mib.kib())
            })
            .collect();
        let asked: f64 = asks.iter().sum();
        let short = asked > available.max(0.0);
        let claim_all = short || level == "critical";

        let mut targets: Vec<Option<(f64, String)>> = vec![None; needs.len()];
        // Donors first.
        let mut stuck = Vec::new();
        for (i, n) in needs.iter().enumerate() {
            if asks[i] > 0.0 || n.pressured || n.settling {
                continue;
            }
            if n.stuck {
                stuck.push(n.vm.name.as_str());
                continue;
            }
            let unused = n.actual - n.used;
            let floor = (n.used + n.keep).max(n.lo);
            let target = if claim_all && !n.growing {
                floor
            } else {
                let band = self.params.threshold_mib.kib() * self.params.band_factor;
                if n.growing || unused <= band + PROGRESS_KIB {
                    continue;
                }
                let ratio = self.params.release_ratio * if level == "pressure" { 2.0 } else { 1.0 };
                let cap =
                    self.params.max_release_mib.kib() * if level == "pressure" { 2.0 } else { 1.0 };
                let give = (ratio * (unused - band)).clamp(PROGRESS_KIB, cap);
                (n.actual - give).max(n.used + band).max(n.lo)
            };
            let target = target.min(n.hi);
            if n.actual - target >= PROGRESS_KIB {
                let why = if claim_all {
                    format!(
                        "{level}: gives back all above its need ({:.0} MiB unused)",
                        unused / MIB
                    )
                } else {
                    format!("idle: {:.0} MiB unused", unused / MIB)
                };
                targets[i] = Some((target, why));
            }
        }
        // Then the needy, within what the host has: all of it when it fits, else by shares.
        let grants = if short {
            let weights: Vec<f64> = needs.iter().map(|n| self.shares(n.vm)).collect();
            share_out(&asks, &weights, available.max(0.0))
        } else {
            asks.clone()
        };
        for (i, n) in needs.iter().enumerate() {
            if grants[i] >= 1.0 * MIB {
                if let Some(state) = self.seen.get_mut(&n.vm.name) {
                    state.since_grant = 0;
                }
                let rate = self
                    .seen
                    .get(&n.vm.name)
                    .map_or(0.0, |s| s.rate_kib_s.max(0.0));
                targets[i] = Some((
                    (n.actual + grants[i]).min(n.hi),
                    format!(
                        "needs {:.0} MiB unused (growing {:.0} MiB/s{}), has {:.0}",
                        n.keep / MIB,
                        rate / MIB,
                        if n.pressured {
                            ", swapping or faulting"
                        } else {
                            ""
                        },
                        (n.actual - n.used) / MIB
                    ),
                ));
            }
        }
        // Record what was asked, to spot balloons that do not move.
        for (n, t) in needs.iter().zip(&targets) {
            if let (Some((target, _)), Some(state)) = (t, self.seen.get_mut(&n.vm.name)) {
                // Asking again for about the same keeps counting ticks without progress.
                let same = state
                    .asked
                    .is_some_and(|(old, _)| (old - target).abs() < PROGRESS_KIB);
                if !same {
                    state.asked = Some((*target, (target - n.actual).abs()));
                    state.no_progress = 0;
                }
            }
        }
        let plan_targets: Vec<BalloonTarget> = needs
            .iter()
            .zip(targets)
            .filter_map(|(n, t)| {
                let (target, reason) = t?;
                Some(BalloonTarget {
                    vm: n.vm.name.clone(),
                    target_kib: target.round() as i64,
                    reason,
                })
            })
            .collect();
        let mut reason = format!(
            "host {level}: {:.0} MiB grantable, {:.0} MiB asked",
            available.max(0.0) / MIB,
            asked / MIB
        );
        if !stuck.is_empty() {
            reason.push_str(&format!(
                "; stuck balloons (not donors): {}",
                stuck.join(", ")
            ));
        }
        MemoryPlan {
            targets: plan_targets,
            reason,
        }
    }
}

/// Shares `pool` out by weight, never more than each ask; what a VM cannot take goes to the
/// others.
fn share_out(asks: &[f64], weights: &[f64], pool: f64) -> Vec<f64> {
    let mut out = vec![0.0; asks.len()];
    let mut left = pool;
    let mut open: Vec<usize> = (0..asks.len()).filter(|&i| asks[i] > 0.0).collect();
    while left > 1.0 && !open.is_empty() {
        let total: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut given = 0.0;
        for &i in &open {
            let add = (left * weights[i] / total).min(asks[i] - out[i]);
            out[i] += add;
            given += add;
        }
        left -= given;
        open.retain(|&i| asks[i] - out[i] > 1.0);
        if given < 1.0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{at, mem_vm, snapshot};
    use proptest::prelude::{prop_assert, Strategy};

    fn target_of(plan: &MemoryPlan, vm: &str) -> Option<f64> {
        plan.targets
            .iter()
            .find(|t| t.vm == vm)
            .map(|t| t.target_kib as f64 / MIB)
    }

    #[test]
    fn a_steady_grower_is_fed_ahead_of_its_rate() {
        let mut p = PressureBalloon::default();
        // 20 MiB/s growth: used 400 -> 420 MiB in a second.
        let s1 = snapshot(1, vec![mem_vm("g", 2048, 600, Some(200))], 4096);
        p.decide(&s1);
        let s2 = at(
            1.0,
            snapshot(1, vec![mem_vm("g", 2048, 600, Some(180))], 4096),
        );
        let plan = p.decide(&s2);
        // Keeps 100 + 20 x 4 = 180 unused: it has 180, so nothing yet...
        assert_eq!(target_of(&plan, "g"), None, "{plan:?}");
        let s3 = at(
            2.0,
            snapshot(1, vec![mem_vm("g", 2048, 600, Some(160))], 4096),
        );
        let plan = p.decide(&s3);
        // ...then it gets what it lacks: used 440 + 180.
        assert_eq!(target_of(&plan, "g"), Some(620.0), "{plan:?}");
    }

    #[test]
    fn idle_memory_comes_back_gradually_down_to_the_band() {
        let mut p = PressureBalloon::default();
        let s = snapshot(1, vec![mem_vm("i", 2048, 1024, Some(924))], 4096);
        let plan = p.decide(&s);
        // excess over the 200 MiB band is 724: a quarter, capped at 128 MiB.
        assert_eq!(target_of(&plan, "i"), Some(1024.0 - 128.0));
        let s = snapshot(1, vec![mem_vm("i", 2048, 340, Some(240))], 4096);
        let plan = PressureBalloon::default().decide(&s);
        // 40 MiB over the band: a quarter of it.
        assert_eq!(target_of(&plan, "i"), Some(330.0));
        // Within 8 MiB of the band nothing moves.
        let s = snapshot(1, vec![mem_vm("i", 2048, 305, Some(205))], 4096);
        let plan = PressureBalloon::default().decide(&s);
        assert_eq!(target_of(&plan, "i"), None);
    }

    #[test]
    fn the_operators_settings_come_first() {
        let mut ignored = mem_vm("ignored", 2048, 1024, Some(924));
        ignored.control.memory_managed = false;
        let mut kept = mem_vm("kept", 2048, 1024, Some(924));
        kept.control.min_kib = Some(1000 * 1024);
        let plan = PressureBalloon::default().decide(&snapshot(1, vec![ignored, kept], 4096));
        assert_eq!(target_of(&plan, "ignored"), None, "{plan:?}");
        // Idle: would give back 128 MiB, but the operator's min is 1000.
        assert_eq!(target_of(&plan, "kept"), Some(1000.0), "{plan:?}");
    }

    #[test]
    fn stuck_balloons_are_not_asked_again_and_are_reported() {
        let mut p = PressureBalloon::default();
        for _ in 0..3 {
            let s = snapshot(1, vec![mem_vm("s", 2048, 1024, Some(924))], 4096);
            p.decide(&s);
        }
        let s = snapshot(1, vec![mem_vm("s", 2048, 1024, Some(924))], 4096);
        let plan = p.decide(&s);
        assert_eq!(target_of(&plan, "s"), None, "{plan:?}");
        assert!(
            plan.reason.contains("stuck balloons (not donors): s"),
            "{}",
            plan.reason
        );
    }

    #[test]
    fn when_short_donors_give_and_the_needy_share_by_weight() {
        let mut p = PressureBalloon {
            params: PressureBalloonParams {
                shares: [("a".to_string(), 3.0)].into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let vms = || {
            vec![
                mem_vm("a", 4096, 1000, Some(20)),
                mem_vm("b", 4096, 1000, Some(20)),
                mem_vm("idle", 4096, 2000, Some(1500)),
            ]
        };
        p.decide(&snapshot(1, vms(), 300));
        let plan = p.decide(&snapshot(1, vms(), 300));
        // 100 MiB grantable above the reserve, split 3:1.
        assert_eq!(target_of(&plan, "a"), Some(1075.0));
        assert_eq!(target_of(&plan, "b"), Some(1025.0));
        // The idle VM gives back all above its own need (used 500 + 100).
        assert_eq!(target_of(&plan, "idle"), Some(600.0));
    }

    /// One VM's per-VM limits: an optional minimum and an optional maximum, MiB.
    fn limits() -> impl Strategy<Value = (Option<u64>, Option<u64>)> {
        (
            proptest::option::of(0u64..1500),
            proptest::option::of(1500u64..4500),
        )
    }

    /// One VM's figures in one tick: maximum, actual and unused MiB (actual within the maximum,
    /// unused within actual).
    fn figures() -> impl Strategy<Value = (u64, u64, u64)> {
        (512u64..4608, 0u64..4608, 0u64..4708)
            .prop_map(|(max, a, u)| (max, 100 + a % max, u))
            .prop_map(|(max, actual, u)| (max, actual, u % (actual + 1)))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        #[test]
        fn plans_respect_min_max_and_the_reserve_on_random_hosts(
            vm_limits in proptest::collection::vec(limits(), 1..=6),
            ticks in proptest::collection::vec(proptest::collection::vec(figures(), 6), 3),
            free in 0u64..3000,
        ) {
            let mut p = PressureBalloon::default();
            for (i, (min, max)) in vm_limits.iter().enumerate() {
                if let Some(min) = min {
                    p.params.min_mib.insert(format!("vm{i}"), Mib(*min as f64));
                }
                if let Some(max) = max {
                    p.params.max_mib.insert(format!("vm{i}"), Mib(*max as f64));
                }
            }
            let mut plan = MemoryPlan::default();
            let mut snap = None;
            for tick in &ticks {
                let vms: Vec<VmView> = (0..vm_limits.len())
                    .map(|i| {
                        let (max, actual, unused) = tick[i];
                        mem_vm(&format!("vm{i}"), max, actual, Some(unused))
                    })
                    .collect();
                let s = snapshot(1, vms, free);
                plan = p.decide(&s);
                snap = Some(s);
            }
            let s = snap.unwrap();
            let mut granted = 0.0;
            for t in &plan.targets {
                let vm = s.vm(&t.vm).unwrap();
                let (lo, hi) = p.bounds(vm, s.host().limits.guest_floor_kib as f64);
                let target = t.target_kib as f64;
                let actual = vm.memory.actual_kib as f64;
                prop_assert!(target <= hi + 1.0, "{} above max: {} > {}", t.vm, target, hi);
                if target < actual {
                    prop_assert!(target >= lo - 1.0, "{} below min: {} < {}", t.vm, target, lo);
                } else {
                    granted += target - actual;
                }
            }
            let host = s.host();
            let available =
                (host.guest_free_kib as f64 - host.limits.host_reserve_kib as f64).max(0.0);
            prop_assert!(granted <= available + 2.0, "granted {} of {}", granted, available);
        }
    }
}
