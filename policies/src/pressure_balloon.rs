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
//! - Lag: a VM given memory is not asked to give any back for 5 s, nor while a grant is
//!   still landing; a reading with more unused memory than the VM has (guest figures newer
//!   than the balloon size) is skipped.
//! - Time, not changes: a reading is new when the guest's report time moves (or, without one,
//!   when a figure changes or 3 s pass), so a guest reporting the same figures again is a guest
//!   that is not growing: its rate falls with time (halving every 2 s or so) and a free ends it
//!   at once. Stuck balloons, grants and settling are judged in seconds, not ticks.
//! - Caution first: a VM seen for the first time (or after a restart of vcoord) keeps the band
//!   (`band_factor` thresholds) until its growth rate has been measured.

use std::collections::HashMap;

use vcoord_api::units::KIB_PER_MIB_F64 as MIB;
use vcoord_api::{
    BalloonTarget, MemoryPlan, MemoryPolicy, Mib, ParamError, PerVm, Policy, Snapshot, VmView,
};

/// A balloon counts as moving when it gets this much closer to its target.
const PROGRESS_KIB: f64 = 8.0 * MIB;
/// A VM given memory is not asked to give any back for this long (its figures lag), s.
const SETTLE_S: f64 = 5.0;
/// Without report times, unchanged figures for this long count as a reading, s.
const QUIET_S: f64 = 3.0;
/// Time constant of a falling growth rate, s.
const RATE_FALL_S: f64 = 3.0;
/// A drop in use this large between two readings is a free: growth has ended.
const FREED_KIB: f64 = 32.0 * MIB;
/// The time between guest reports `lead_s` allows for, s.
const NOMINAL_GAP_S: f64 = 2.0;
/// A balloon that has not moved toward its target for this long is stuck, s.
const STUCK_S: f64 = 2.5;
/// A stuck balloon is tried again as a donor after this long, s.
const RETRY_S: f64 = 20.0;

/// Earlier behaviours of this policy, each of which failed on real hosts. They are kept only so
/// that regression tests can show each flaw in the simulator; configuration cannot set them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Earlier {
    /// Growth seen while a balloon inflates is believed (the balloon's own inflation read as
    /// guest growth holds back reclaim).
    pub believe_inflation: bool,
    /// Readings with more unused memory than the VM has are used (a grant in flight is clawed
    /// back from a growing guest).
    pub use_inconsistent: bool,
    /// A VM may give memory back right after a grant.
    pub no_settle: bool,
    /// The growth rate changes only when a figure changes (an idle guest that stopped growing
    /// stays "growing" for ever).
    pub rate_on_change_only: bool,
    /// A VM seen for the first time is trusted to need only the threshold.
    pub trust_first_sight: bool,
    /// Use is judged as `actual - unused`, the balloon size read now and the guest's figures
    /// from its last report, even where the host gives the report's own total.
    pub mixed_moments: bool,
    /// Growth is covered `lead_s` ahead however slowly the guest reports.
    pub fixed_lead: bool,
}

vcoord_api::params! {
    /// Parameters of `pressure-balloon`. The guest floor and the host reserve are the guard's
    /// (`[host.guard]`), seen in each snapshot.
    pub struct PressureBalloonParams {
        /// unused memory every VM keeps at least
        pub threshold_mib: Mib = Mib(100.0), unit "MiB", range 1.0..=1e7;
        /// growth covered ahead: a growing VM also keeps rate x lead_s unused (plus what its reports come later than every 2 s)
        pub lead_s: f64 = 4.0, unit "s", range 0.0..=600.0;
        /// an idle VM keeps up to this many thresholds unused
        pub band_factor: f64 = 2.0, unit "thresholds", range 1.0..=100.0;
        /// share of the excess above the band given back per tick
        pub release_ratio: f64 = 0.5, unit "ratio", range 0.01..=1.0;
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
    #[doc(hidden)]
    pub earlier: Earlier,
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
            earlier: Earlier::default(),
        })
    }
}

#[derive(Clone, Debug)]
struct VmState {
    uuid: String,
    used_kib: f64,
    /// The guest's unused memory at its last new reading, and when that was (the guest's
    /// report time where known, else the snapshot's).
    unused_kib: f64,
    read_at_s: f64,
    /// The report time of the last reading, where the host gives one.
    report_s: Option<f64>,
    /// Readings so far: the growth rate is known from the second on.
    readings: u32,
    /// Time between new readings, smoothed: a guest that reports slowly is seen late.
    report_gap_s: f64,
    actual_kib: f64,
    rate_kib_s: f64,
    /// Target this policy last asked for, with the distance to it then.
    asked: Option<(f64, f64)>,
    /// Since when the balloon has not moved toward the target asked for.
    still_since_s: Option<f64>,
    /// When this VM was last given memory.
    granted_at_s: f64,
}

/// One VM's decision inputs this tick.
struct Need<'a> {
    vm: &'a VmView,
    used: f64,
    actual: f64,
    /// Its size as the guest shows it when that is smaller (a shrink libvirt reads late).
    size: f64,
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

    /// Whether `vm`'s use can be judged from one report's figures alone.
    fn one_moment(&self, vm: &VmView) -> bool {
        !self.earlier.mixed_moments
            && vm.memory.available_kib.is_some()
            && vm.memory.unavailable_kib.is_some()
    }

    /// Takes a VM's figures this tick into its state: on a new reading, its growth rate.
    fn read(&self, state: &mut VmState, vm: &VmView, used: f64, actual: f64, now: f64) {
        let unused = vm.memory.unused_kib.unwrap_or(0) as f64;
        let report = vm
            .memory
            .last_report_s
            .filter(|_| !self.earlier.rate_on_change_only);
        let changed = unused != state.unused_kib;
        let new = match (report, state.report_s) {
            (Some(t), Some(previous)) => t > previous,
            (Some(_), None) => true,
            _ if self.earlier.rate_on_change_only => changed,
            (None, _) => changed || now - state.read_at_s >= QUIET_S,
        };
        if !new {
            state.actual_kib = actual;
            return;
        }
        let at = report.unwrap_or(now);
        let dt = at - state.read_at_s;
        if state.readings > 0 && dt > 0.0 {
            state.report_gap_s = 0.7 * state.report_gap_s + 0.3 * dt.min(60.0);
            let inst = (used - state.used_kib) / dt;
            // While a balloon inflates, the guest's figures and the balloon size are read at
            // different moments, so use seems to grow by what the balloon took: an increase
            // seen then is not believed.
            let inflating = !self.earlier.believe_inflation
                && !self.one_moment(vm)
                && (actual < state.actual_kib - MIB
                    || state
                        .asked
                        .is_some_and(|(target, _)| target < actual - PROGRESS_KIB));
            state.rate_kib_s = if inst > state.rate_kib_s && !inflating {
                // Rise at once (a working set grows fast)...
                inst
            } else if self.earlier.rate_on_change_only {
                0.7 * state.rate_kib_s + 0.3 * inst.min(state.rate_kib_s)
            } else if used < state.used_kib - FREED_KIB {
                // ...a free ends growth...
                0.0
            } else {
                // ...and otherwise fall with time, toward what this reading shows.
                let w = 1.0 - (-dt / RATE_FALL_S).exp();
                let toward = inst.clamp(0.0, state.rate_kib_s.max(0.0));
                state.rate_kib_s + w * (toward - state.rate_kib_s)
            };
        }
        state.readings = state.readings.saturating_add(1);
        state.used_kib = used;
        state.unused_kib = unused;
        state.read_at_s = at;
        state.report_s = report;
        state.actual_kib = actual;
    }

    /// Updates the memory of each VM with fresh statistics and says what it needs.
    fn needs<'a>(&mut self, snapshot: &'a Snapshot) -> Vec<Need<'a>> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for vm in snapshot.vms() {
            // Use from one report's own figures (see `MemoryView::used_kib`), or else, where the
            // host cannot tell, from the guest's unused and the balloon's size read at another
            // moment: such figures can report more unused than the VM has, and then say
            // nothing; the VM keeps what it has this tick.
            let one_moment = self.one_moment(vm);
            let consistent = one_moment
                || self.earlier.use_inconsistent
                || vm
                    .memory
                    .unused_kib
                    .is_some_and(|u| u < vm.memory.actual_kib);
            let used = if one_moment {
                vm.memory.used_kib()
            } else {
                vm.memory
                    .unused_kib
                    .map(|u| vm.memory.actual_kib.saturating_sub(u))
            };
            // A VM whose memory the operator left alone is neither given nor asked anything.
            let (Some(used), true, true) = (
                used.filter(|_| consistent),
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
            let now = snapshot.wall_s();
            let mut state = match self.seen.remove(&vm.name) {
                Some(s) if s.uuid == vm.uuid => s,
                _ => VmState {
                    uuid: vm.uuid.clone(),
                    used_kib: used,
                    unused_kib: -1.0,
                    read_at_s: now,
                    report_s: None,
                    readings: 0,
                    report_gap_s: NOMINAL_GAP_S,
                    actual_kib: actual,
                    rate_kib_s: 0.0,
                    asked: None,
                    still_since_s: None,
                    granted_at_s: f64::NEG_INFINITY,
                },
            };
            self.read(&mut state, vm, used, actual, now);
            // libvirt reads the balloon size about a second after the guest's own total shows a
            // move: a balloon counts as where the guest says it is when the guest says it is
            // smaller.
            let guest_size = match (vm.memory.available_kib, vm.memory.unavailable_kib) {
                (Some(a), Some(u)) if self.one_moment(vm) => Some((a + u) as f64),
                _ => None,
            };
            let size = guest_size.map_or(actual, |g| g.min(actual));
            // Stuck: no progress toward the last target for a while.
            if let Some((target, gap_then)) = state.asked {
                let gap = (target - actual).abs().min((target - size).abs());
                if gap <= PROGRESS_KIB || gap <= gap_then - PROGRESS_KIB {
                    state.still_since_s = None;
                    state.asked = (gap > PROGRESS_KIB).then_some((target, gap));
                } else if state
                    .still_since_s
                    .is_some_and(|since| now - since >= RETRY_S)
                {
                    // Stuck for long: forget, and try it again as a donor.
                    state.asked = None;
                    state.still_since_s = None;
                } else if state.still_since_s.is_none() {
                    state.still_since_s = Some(now);
                }
            }
            let pressured = vm.memory.swap_in_kib.unwrap_or(0) > 0
                || vm.memory.swap_out_kib.unwrap_or(0) > 0
                || vm.memory.major_faults.unwrap_or(0) as f64 > self.params.fault_threshold;
            let threshold = self.params.threshold_mib.kib();
            // `lead_s` assumes reports every 2 s or so; a guest reporting more slowly is seen
            // later, and its growth is covered further ahead.
            let late = if self.earlier.fixed_lead {
                0.0
            } else {
                (state.report_gap_s - NOMINAL_GAP_S).max(0.0)
            };
            let lead = self.params.lead_s + late;
            let growth = state.rate_kib_s.max(0.0) * lead;
            let mut keep = threshold * if pressured { 2.0 } else { 1.0 } + growth;
            let measured = state.readings >= 2 || self.earlier.trust_first_sight;
            if !measured {
                // Growth not measured yet: keep the band meanwhile.
                keep = keep.max(threshold * self.params.band_factor);
            }
            let (lo, hi) = self.bounds(vm, snapshot.host().limits.guest_floor_kib as f64);
            out.push(Need {
                vm,
                used,
                actual,
                size,
                keep,
                lo,
                hi,
                growing: state.rate_kib_s > 1.0 * MIB || !measured,
                pressured,
                stuck: state
                    .still_since_s
                    .is_some_and(|since| now - since >= STUCK_S),
                settling: !self.earlier.no_settle
                    && (now - state.granted_at_s < SETTLE_S
                        || state
                            .asked
                            .is_some_and(|(target, _)| target > actual + PROGRESS_KIB)),
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
            // From the size the guest shows, so each shrink builds on the last one it saw.
            let unused = n.size - n.used;
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
                (n.size - give).max(n.used + band).max(n.lo)
            };
            let target = target.min(n.hi);
            if n.size - target >= PROGRESS_KIB {
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
                    state.granted_at_s = snapshot.wall_s();
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
                    state.still_since_s = None;
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

    /// The plan for `vms` after the policy has seen them twice (growth measured: none).
    fn settled(p: &mut PressureBalloon, vms: impl Fn() -> Vec<VmView>, free: u64) -> MemoryPlan {
        p.decide(&at(0.0, snapshot(1, vms(), free)));
        p.decide(&at(2.0, snapshot(1, vms(), free)))
    }

    #[test]
    fn a_steady_grower_is_fed_ahead_of_its_rate() {
        let mut p = PressureBalloon::default();
        // 20 MiB/s growth: used 400 -> 420 MiB in a second.
        let s1 = at(
            0.0,
            snapshot(1, vec![mem_vm("g", 2048, 600, Some(200))], 4096),
        );
        // Not measured yet: it keeps the band (200), which it has.
        assert_eq!(target_of(&p.decide(&s1), "g"), None);
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
    fn a_vm_seen_for_the_first_time_keeps_the_band_until_its_growth_is_known() {
        let mut p = PressureBalloon::default();
        // 120 MiB unused, under the band of 200: topped up to it at once, not reclaimed.
        let plan = p.decide(&at(
            0.0,
            snapshot(1, vec![mem_vm("n", 2048, 600, Some(120))], 4096),
        ));
        assert_eq!(target_of(&plan, "n"), Some(680.0), "{plan:?}");
        // A lot unused: not taken before a second reading...
        let mut p = PressureBalloon::default();
        let vms = || vec![mem_vm("n", 2048, 1024, Some(924))];
        let plan = p.decide(&at(0.0, snapshot(1, vms(), 4096)));
        assert_eq!(target_of(&plan, "n"), None, "{plan:?}");
        // ...and then given back.
        let plan = p.decide(&at(2.0, snapshot(1, vms(), 4096)));
        assert_eq!(target_of(&plan, "n"), Some(1024.0 - 128.0), "{plan:?}");
    }

    #[test]
    fn a_guest_that_stops_growing_and_reports_the_same_figures_stops_growing() {
        let mut p = PressureBalloon::default();
        // Grows 50 MiB/s for 10 s (reports every 2 s), fed as it goes.
        let mut actual = 600;
        let mut used = 400;
        let mut t = 0.0;
        for _ in 0..5 {
            let plan = p.decide(&at(
                t,
                snapshot(
                    1,
                    vec![mem_vm("g", 4096, actual, Some(actual - used))],
                    8192,
                ),
            ));
            if let Some(target) = target_of(&plan, "g") {
                actual = target as u64;
            }
            used += 100;
            t += 2.0;
        }
        let rate = p.seen["g"].rate_kib_s / MIB;
        assert!(rate > 40.0, "{rate}");
        // Then it holds: every report the same figures, while time goes by.
        let mut given_back_at = None;
        for tick in 0..40 {
            let now = t + f64::from(tick);
            // A report every 2 s: the same figures.
            let report = t + f64::from(tick / 2 * 2);
            let mut vm = mem_vm("g", 4096, actual, Some(actual - used));
            vm.memory.last_report_s = Some(report);
            let s = snapshot(1, vec![vm], 8192)
                .to_builder()
                .wall_s(now)
                .build()
                .unwrap();
            let plan = p.decide(&s);
            if let Some(target) = target_of(&plan, "g") {
                if target < actual as f64 && given_back_at.is_none() {
                    given_back_at = Some(tick);
                }
                actual = target as u64;
            }
        }
        // Its rate fell to nothing, and the excess it was fed ahead came back to the band.
        assert!(
            p.seen["g"].rate_kib_s < MIB,
            "{}",
            p.seen["g"].rate_kib_s / MIB
        );
        let given = given_back_at.expect("never given back");
        assert!(
            given <= 20,
            "first given back {given} s after the growth stopped"
        );
        assert!(actual - used <= 208, "unused {} after 40 s", actual - used);
        // The earlier behaviour kept its last rate for ever.
        let mut old = PressureBalloon::default();
        old.earlier.rate_on_change_only = true;
        old.seen = p.seen.clone();
        old.seen.get_mut("g").unwrap().rate_kib_s = 50.0 * MIB;
        for tick in 0..40 {
            let mut vm = mem_vm("g", 4096, actual, Some(actual - used));
            vm.memory.last_report_s = Some(100.0 + f64::from(tick / 2 * 2));
            let s = snapshot(1, vec![vm], 8192)
                .to_builder()
                .wall_s(100.0 + f64::from(tick))
                .build()
                .unwrap();
            old.decide(&s);
        }
        assert!(old.seen["g"].rate_kib_s > 40.0 * MIB);
    }

    #[test]
    fn a_free_ends_growth_at_once() {
        let mut p = PressureBalloon::default();
        for (t, unused) in [(0.0, 500), (2.0, 400), (4.0, 300)] {
            p.decide(&at(
                t,
                snapshot(1, vec![mem_vm("g", 4096, 1000, Some(unused))], 8192),
            ));
        }
        assert!(p.seen["g"].rate_kib_s > 40.0 * MIB);
        p.decide(&at(
            6.0,
            snapshot(1, vec![mem_vm("g", 4096, 1000, Some(800))], 8192),
        ));
        assert_eq!(p.seen["g"].rate_kib_s, 0.0);
    }

    #[test]
    fn idle_memory_comes_back_gradually_down_to_the_band() {
        let mut p = PressureBalloon::default();
        let plan = settled(&mut p, || vec![mem_vm("i", 2048, 1024, Some(924))], 4096);
        // excess over the 200 MiB band is 724: half, capped at 128 MiB.
        assert_eq!(target_of(&plan, "i"), Some(1024.0 - 128.0));
        let plan = settled(
            &mut PressureBalloon::default(),
            || vec![mem_vm("i", 2048, 340, Some(240))],
            4096,
        );
        // 40 MiB over the band: half of it.
        assert_eq!(target_of(&plan, "i"), Some(320.0));
        // Within 8 MiB of the band nothing moves.
        let plan = settled(
            &mut PressureBalloon::default(),
            || vec![mem_vm("i", 2048, 305, Some(205))],
            4096,
        );
        assert_eq!(target_of(&plan, "i"), None);
    }

    #[test]
    fn the_operators_settings_come_first() {
        let vms = || {
            let mut ignored = mem_vm("ignored", 2048, 1024, Some(924));
            ignored.control.memory_managed = false;
            let mut kept = mem_vm("kept", 2048, 1024, Some(924));
            kept.control.min_kib = Some(1000 * 1024);
            vec![ignored, kept]
        };
        let plan = settled(&mut PressureBalloon::default(), vms, 4096);
        assert_eq!(target_of(&plan, "ignored"), None, "{plan:?}");
        // Idle: would give back 128 MiB, but the operator's min is 1000.
        assert_eq!(target_of(&plan, "kept"), Some(1000.0), "{plan:?}");
    }

    #[test]
    fn stuck_balloons_are_not_asked_again_and_are_reported() {
        let mut p = PressureBalloon::default();
        let vms = || vec![mem_vm("s", 2048, 1024, Some(924))];
        // Asked at 2 s; the balloon never moves.
        let plan = settled(&mut p, vms, 4096);
        assert!(target_of(&plan, "s").is_some());
        p.decide(&at(3.0, snapshot(1, vms(), 4096)));
        let plan = p.decide(&at(6.0, snapshot(1, vms(), 4096)));
        assert_eq!(target_of(&plan, "s"), None, "{plan:?}");
        assert!(
            plan.reason.contains("stuck balloons (not donors): s"),
            "{}",
            plan.reason
        );
        // Tried again 20 s later.
        let plan = p.decide(&at(24.0, snapshot(1, vms(), 4096)));
        assert!(target_of(&plan, "s").is_some(), "{plan:?}");
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
        let plan = settled(&mut p, vms, 300);
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
