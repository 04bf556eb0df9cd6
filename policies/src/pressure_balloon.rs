//! `pressure-balloon`: a memory policy that feeds growing guests ahead of their growth and takes
//! back idle memory gradually. Three parts, one law:
//!
//! - [`Growth`], the estimator: each VM's memory use at each new guest report, and its growth
//!   rate as an exponentially weighted mean and upside variance (of readings above the mean)
//!   with one half-life ([`HALF_LIFE_S`]); a free ends it. Growth is covered at the mean plus
//!   [`GROWTH_SIGMAS`] of those deviations, so a guest that grows in bursts is fed for its
//!   bursts, not for its average; a first reading counts with its own size as its noise. The
//!   time between reports is smoothed with the same half-life: a guest that reports slowly is seen
//!   late, so its growth is covered further ahead.
//! - [`Balloon`], the tracker: what was last asked of a VM's balloon, and whether it is landing
//!   (a grant in flight), stuck (no progress for [`STUCK_S`]) or settling (given memory less than
//!   [`SETTLE_S`] ago). A stuck or settling balloon is never a donor.
//! - The law, [`law`]: every VM keeps `keep = threshold x (1 + pressured) + cover x lead` unused,
//!   and its target is `clamp(used + keep, lo, hi)`; a VM that is not growing may hold up to a
//!   band of `band_factor` thresholds before it is asked to give back. Grants move at most
//!   `max_grant_mib` a tick and, when the host cannot give them all, are shared by `shares`;
//!   releases move `release_ratio` of the excess a tick (at most `max_release_mib`), twice as
//!   fast when the host is under [`Level::Pressure`], and all at once down to `used + keep` when
//!   it is [`Level::Critical`].
//!
//! Use is read from one guest report (`MemoryView::used_kib`); a VM seen for the first time
//! keeps the band until its rate is measured; swap or major faults above `fault_threshold` a
//! second (each a rate over the guest's last report interval, not over the tick: the guest's
//! counters move only when it reports) mark a VM as pressured. The regression scenarios (`tests/regressions.rs`) each fail
//! with a test-only variant that reads the guest the way an earlier version did.

use std::collections::HashMap;

use crate::ksm::Ksm;

use vcoord_api::units::KIB_PER_MIB_F64 as MIB;
use vcoord_api::{
    BalloonTarget, MemoryPlan, MemoryPolicy, Mib, ParamError, PerVm, Policy, Snapshot, VmView,
};

/// Half-life of every smoothed figure (the growth rate and its noise, the time between
/// reports), s.
pub const HALF_LIFE_S: f64 = 2.0;
/// Growth is covered up to this many standard deviations above its mean rate (2: a reading
/// above it once in 44, one-sided).
pub const GROWTH_SIGMAS: f64 = 2.0;
/// The smallest balloon move told apart from the guest's own churn and rounding: a move smaller
/// than this is not asked for, progress smaller is not progress, a balloon this close to its
/// target has reached it, and an idle VM must hold this much beyond its band to give back.
pub const RESOLUTION_KIB: f64 = 8.0 * MIB;
/// A drop in use this large between two readings is a free: growth has ended.
pub const FREED_KIB: f64 = 32.0 * MIB;
/// A VM growing faster than this is growing: it is not a donor, kib/s.
pub const GROWING_KIB_S: f64 = MIB;
/// A balloon size that fell this much since the last tick is a balloon inflating: the guest's
/// figures then mix two moments, and the growth they seem to show is not believed.
pub const INFLATING_KIB: f64 = MIB;
/// Without report times, unchanged figures for this long count as a new reading, s.
pub const QUIET_S: f64 = 3.0;
/// The time between guest reports that `lead_s` already allows for, s.
pub const NOMINAL_GAP_S: f64 = 2.0;
/// A VM given memory is not asked to give any back for this long (its figures lag), s.
pub const SETTLE_S: f64 = 5.0;
/// A balloon that has not moved toward its target for this long is stuck, s.
pub const STUCK_S: f64 = 2.5;
/// A stuck balloon is forgotten, and tried again as a donor, after this long, s.
pub const RETRY_S: f64 = 20.0;
/// Host memory stall (PSI `some`, share of the last interval) from which the host is under
/// pressure whatever its free memory says: 10 ms a second, the stall Senpai-style sizing aims
/// at as harmless.
pub const STALL_PRESSURE_PCT: f64 = 1.0;
/// ... and critical.
pub const STALL_CRITICAL_PCT: f64 = 10.0;

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
        /// host critical below this (or when grants do not fit): every VM that is not growing gives back all above its need
        pub critical_pct: f64 = 5.0, unit "percent", range 0.0..=100.0;
        /// major faults a second that mark a VM as pressured
        pub fault_threshold: f64 = 100.0, unit "faults per second", range 0.0..=1e9;
        /// per-VM minimum size, e.g. { web = 1024 }
        pub min_mib: PerVm<Mib> = PerVm::default(), unit "MiB", range 0.0..=1e8;
        /// per-VM maximum size (below the domain's own maximum)
        pub max_mib: PerVm<Mib> = PerVm::default(), unit "MiB", range 0.0..=1e8;
        /// per-VM weight when memory is short (default 1)
        pub shares: PerVm<f64> = PerVm::default(), unit "weight", range 0.001..=1e6;
        /// KSM merging stops once the host has been comfortable this long
        pub ksm_cool_s: f64 = 300.0, unit "s", range 0.0..=86400.0;
    }
}

impl PressureBalloonParams {
    /// The smallest and largest size `vm` may be given; `floor_kib` is the guard's floor.
    /// The operator's per-VM settings come first, then this policy's per-VM tables.
    pub fn bounds(&self, vm: &VmView, floor_kib: f64) -> (f64, f64) {
        let operator = &vm.control;
        let max_kib = operator
            .max_kib
            .map(|k| k as f64)
            .or_else(|| self.max_mib.get(&vm.name).map(|m| m.kib()));
        let min_kib = operator
            .min_kib
            .map(|k| k as f64)
            .or_else(|| self.min_mib.get(&vm.name).map(|m| m.kib()));
        let max = (vm.memory.reachable_max_kib() as f64).min(max_kib.unwrap_or(f64::INFINITY));
        let min = min_kib.unwrap_or(0.0).max(floor_kib).min(max);
        (min, max)
    }

    /// A VM's weight when memory is short.
    pub fn shares(&self, vm: &VmView) -> f64 {
        vm.control
            .shares
            .or_else(|| self.shares.get(&vm.name).copied())
            .unwrap_or(1.0)
    }

    /// Whether `vm` swaps or faults more than `fault_threshold` a second (both over the
    /// guest's last report interval), or (where the host tells) its own tasks stall on memory
    /// [`STALL_PRESSURE_PCT`] of the time.
    pub fn pressured(&self, vm: &VmView) -> bool {
        vm.memory.swap_rate_kib_s.is_some_and(|r| r > 0.0)
            || vm
                .memory
                .major_fault_rate
                .is_some_and(|r| r > self.fault_threshold)
            || vm
                .memory
                .stall
                .is_some_and(|s| s.some_now_pct() >= STALL_PRESSURE_PCT)
    }
}

/// How much the host can still give, as a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Grants fit, and idle VMs give back at their own pace.
    Comfortable,
    /// Grantable memory under `pressure_pct` of guest memory, or the host's tasks stalling on
    /// memory [`STALL_PRESSURE_PCT`] of the time: idle VMs give back twice as fast.
    Pressure,
    /// Under `critical_pct`, grants that do not fit, or a memory stall of
    /// [`STALL_CRITICAL_PCT`]: every VM that is not growing gives back all above its need at once.
    Critical,
}

impl Level {
    /// The level for `grantable_pct` (grantable memory as a share of guest memory) when `short`
    /// says whether the grants asked for exceed what the host can give, and the host's tasks
    /// stall on memory `stall_pct` of the time (0 where the host gives no such signal).
    pub fn of(
        params: &PressureBalloonParams,
        grantable_pct: f64,
        short: bool,
        stall_pct: f64,
    ) -> Self {
        if short || grantable_pct < params.critical_pct || stall_pct >= STALL_CRITICAL_PCT {
            Self::Critical
        } else if grantable_pct < params.pressure_pct || stall_pct >= STALL_PRESSURE_PCT {
            Self::Pressure
        } else {
            Self::Comfortable
        }
    }

    /// Its name in plan reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Comfortable => "comfortable",
            Self::Pressure => "pressure",
            Self::Critical => "critical",
        }
    }
}

/// One new reading of a VM's memory, for the estimator.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// When the guest made it (its report time where known, else the snapshot's), s.
    pub at_s: f64,
    /// Memory in use then.
    pub used_kib: f64,
    /// Whether a rise it shows may be believed (not while the balloon inflates and the figures
    /// mix two moments).
    pub believable: bool,
}

/// The estimator: one VM's use at its last reading and its growth rate.
#[derive(Clone, Debug)]
pub struct Growth {
    /// Use at the last reading.
    pub used_kib: f64,
    /// When that reading was made, s.
    pub at_s: f64,
    /// Growth rate, kib/s: the weighted mean of the readings' rates (a free sets it to 0).
    pub rate_kib_s: f64,
    /// The weighted upside variance of the readings' rates (only readings above the mean
    /// count), (kib/s)^2.
    pub rate_var: f64,
    /// Time between readings, smoothed, s.
    pub gap_s: f64,
    /// Readings so far: the rate is known from the second on.
    pub readings: u32,
}

impl Growth {
    /// The estimator before any reading, at `now_s`.
    pub fn new(used_kib: f64, now_s: f64) -> Self {
        Self {
            used_kib,
            at_s: now_s,
            rate_kib_s: 0.0,
            rate_var: 0.0,
            gap_s: NOMINAL_GAP_S,
            readings: 0,
        }
    }

    /// Whether the growth rate has been measured (two readings).
    pub fn measured(&self) -> bool {
        self.readings >= 2
    }

    /// How much later than every [`NOMINAL_GAP_S`] the guest reports, s.
    pub fn late_s(&self) -> f64 {
        (self.gap_s - NOMINAL_GAP_S).max(0.0)
    }

    /// The growth rate covered ahead: the mean plus [`GROWTH_SIGMAS`] standard deviations,
    /// kib/s.
    pub fn cover_kib_s(&self) -> f64 {
        self.rate_kib_s.max(0.0) + GROWTH_SIGMAS * self.rate_var.sqrt()
    }

    /// Takes in a new reading: its rate (never below 0; a rise that may not be believed counts
    /// as no change) is folded into the mean, and its excess over the mean into the variance,
    /// with weight `1 - 0.5^(dt / HALF_LIFE_S)`; the first rate is taken as the mean with its
    /// own size as its noise; a free ends growth.
    pub fn update(&mut self, reading: Reading) {
        let dt = reading.at_s - self.at_s;
        if self.readings > 0 && dt > 0.0 {
            let w = 1.0 - 0.5f64.powf(dt / HALF_LIFE_S);
            self.gap_s += w * (dt.min(60.0) - self.gap_s);
            let inst = ((reading.used_kib - self.used_kib) / dt).max(0.0);
            if reading.used_kib < self.used_kib - FREED_KIB {
                (self.rate_kib_s, self.rate_var) = (0.0, 0.0);
            } else if self.readings == 1 {
                // One reading says little of the next: its noise is taken to be its own size.
                let inst = if reading.believable { inst } else { 0.0 };
                (self.rate_kib_s, self.rate_var) = (inst, inst * inst);
            } else {
                let inst = if reading.believable {
                    inst
                } else {
                    inst.min(self.rate_kib_s)
                };
                let diff = inst - self.rate_kib_s;
                self.rate_kib_s += w * diff;
                // Only readings above the mean widen the cover: a falling rate is no risk.
                self.rate_var = (1.0 - w) * (self.rate_var + w * diff.max(0.0).powi(2));
            }
        }
        self.readings = self.readings.saturating_add(1);
        self.used_kib = reading.used_kib;
        self.at_s = reading.at_s;
    }
}

/// The tracker: what was last asked of one VM's balloon, and how it answered.
#[derive(Clone, Debug, Default)]
pub struct Balloon {
    /// The target last asked for and how far the balloon was from it at its last progress.
    pub asked: Option<(f64, f64)>,
    /// Since when the balloon has not moved toward that target.
    pub still_since_s: Option<f64>,
    /// When this VM was last given memory.
    pub granted_at_s: Option<f64>,
}

impl Balloon {
    /// Follows the balloon this tick: `actual` is its size as libvirt reads it, `size` as the
    /// guest shows it (the smaller of the two when they differ).
    pub fn observe(&mut self, actual: f64, size: f64, now_s: f64) {
        let Some((target, gap_then)) = self.asked else {
            return;
        };
        let gap = (target - actual).abs().min((target - size).abs());
        if gap <= RESOLUTION_KIB || gap <= gap_then - RESOLUTION_KIB {
            self.still_since_s = None;
            self.asked = (gap > RESOLUTION_KIB).then_some((target, gap));
        } else if self.still_since_s.is_some_and(|s| now_s - s >= RETRY_S) {
            self.asked = None;
            self.still_since_s = None;
        } else if self.still_since_s.is_none() {
            self.still_since_s = Some(now_s);
        }
    }

    /// Records a target asked for at `now_s` when the balloon is at `actual`.
    pub fn ask(&mut self, target: f64, actual: f64, now_s: f64) {
        if target >= actual + MIB {
            self.granted_at_s = Some(now_s);
        }
        // Asking again for about the same keeps counting the time without progress.
        if !self
            .asked
            .is_some_and(|(old, _)| (old - target).abs() < RESOLUTION_KIB)
        {
            self.asked = Some((target, (target - actual).abs()));
            self.still_since_s = None;
        }
    }

    /// A grant is still on its way: the target asked for is above the balloon.
    pub fn landing(&self, actual: f64) -> bool {
        self.asked
            .is_some_and(|(target, _)| target > actual + RESOLUTION_KIB)
    }

    /// The balloon is being inflated: the target asked for is below it.
    pub fn inflating(&self, actual: f64) -> bool {
        self.asked
            .is_some_and(|(target, _)| target < actual - RESOLUTION_KIB)
    }

    /// No progress toward the target for [`STUCK_S`].
    pub fn stuck(&self, now_s: f64) -> bool {
        self.still_since_s.is_some_and(|s| now_s - s >= STUCK_S)
    }

    /// Given memory less than [`SETTLE_S`] ago, or a grant still landing: not a donor yet.
    pub fn settling(&self, actual: f64, now_s: f64) -> bool {
        self.landing(actual) || self.granted_at_s.is_some_and(|t| now_s - t < SETTLE_S)
    }
}

/// What the law knows of one VM this tick.
#[derive(Clone, Debug)]
pub struct Need<'a> {
    /// The VM.
    pub vm: &'a VmView,
    /// Memory in use, kib.
    pub used: f64,
    /// The balloon's size as libvirt reads it, kib.
    pub actual: f64,
    /// Its size as the guest shows it when that is smaller (a shrink libvirt reads late), kib.
    pub size: f64,
    /// Growth rate, kib/s.
    pub rate_kib_s: f64,
    /// Growth rate covered ahead (the rate and its noise), kib/s.
    pub cover_kib_s: f64,
    /// How far ahead growth is covered: `lead_s` plus how late the guest reports, s.
    pub lead_s: f64,
    /// Its growth rate is measured.
    pub measured: bool,
    /// It swaps or faults.
    pub pressured: bool,
    /// Its balloon is stuck: not a donor.
    pub stuck: bool,
    /// Its balloon is settling after a grant: not a donor.
    pub settling: bool,
    /// The smallest size it may be given, kib.
    pub lo: f64,
    /// The largest size it may be given, kib.
    pub hi: f64,
}

impl<'a> Need<'a> {
    /// The law's view of `vm` using `used` of `size` (kib), from what `state` knows of it.
    pub fn of(
        params: &PressureBalloonParams,
        snapshot: &Snapshot,
        vm: &'a VmView,
        state: &Tracked,
        used: f64,
        size: f64,
    ) -> Self {
        let (actual, now) = (vm.memory.actual_kib as f64, snapshot.wall_s());
        let (lo, hi) = params.bounds(vm, snapshot.host().limits.guest_floor_kib as f64);
        Self {
            vm,
            used,
            actual,
            size,
            rate_kib_s: state.growth.rate_kib_s,
            cover_kib_s: state.growth.cover_kib_s(),
            lead_s: params.lead_s + state.growth.late_s(),
            measured: state.growth.measured(),
            pressured: params.pressured(vm),
            stuck: state.balloon.stuck(now),
            settling: state.balloon.settling(actual, now),
            lo,
            hi,
        }
    }

    /// Unused memory it must keep: one threshold, two when pressured, plus its growth ahead
    /// (its covered rate over the lead); the band while its growth is not measured yet.
    pub fn keep(&self, params: &PressureBalloonParams) -> f64 {
        let threshold = params.threshold_mib.kib();
        let keep =
            threshold * if self.pressured { 2.0 } else { 1.0 } + self.cover_kib_s * self.lead_s;
        if self.measured {
            keep
        } else {
            keep.max(threshold * params.band_factor)
        }
    }

    fn growing(&self) -> bool {
        self.rate_kib_s > GROWING_KIB_S || !self.measured
    }

    /// What it lacks of `used + keep` (or of its minimum), at most `max_grant_mib`.
    fn ask(&self, params: &PressureBalloonParams) -> f64 {
        let keep = self.keep(params);
        if self.actual - self.used >= keep && self.actual >= self.lo {
            return 0.0;
        }
        let want = (self.used + keep).clamp(self.lo, self.hi);
        (want - self.actual).clamp(0.0, params.max_grant_mib.kib())
    }

    /// Where it is taken down to, if it is a donor at `level`.
    fn release(&self, params: &PressureBalloonParams, level: Level) -> Option<f64> {
        if self.pressured || self.settling || self.stuck || self.growing() {
            return None;
        }
        let unused = self.size - self.used;
        let target = match level {
            Level::Critical => (self.used + self.keep(params)).max(self.lo),
            Level::Comfortable | Level::Pressure => {
                let band = params.threshold_mib.kib() * params.band_factor;
                if unused <= band + RESOLUTION_KIB {
                    return None;
                }
                let speed = if level == Level::Pressure { 2.0 } else { 1.0 };
                let give = (speed * params.release_ratio * (unused - band))
                    .clamp(RESOLUTION_KIB, speed * params.max_release_mib.kib());
                (self.size - give).max(self.used + band).max(self.lo)
            }
        };
        let target = target.min(self.hi);
        (self.size - target >= RESOLUTION_KIB).then_some(target)
    }
}

/// The law: each VM's target from what it needs and what the host can give.
pub fn law(
    params: &PressureBalloonParams,
    snapshot: &Snapshot,
    needs: &[Need],
) -> (MemoryPlan, Level) {
    if needs.is_empty() {
        let plan = MemoryPlan::keep("no VM with fresh statistics");
        return (plan, Level::Comfortable);
    }
    let host = snapshot.host();
    // Below 0 when the guests already eat into the reserve.
    let above_reserve = host.guest_free_kib as f64 - host.limits.host_reserve_kib as f64;
    let grantable = above_reserve.max(0.0);
    let guest_total = needs.iter().map(|n| n.actual).sum::<f64>() + host.guest_free_kib as f64;
    let asks: Vec<f64> = needs.iter().map(|n| n.ask(params)).collect();
    let asked: f64 = asks.iter().sum();
    let short = asked > grantable;
    // No pressure signal is no stall: the level then rests on free memory alone.
    let stall_pct = host.pressure.memory.map_or(0.0, |s| s.some_now_pct());
    let level = Level::of(
        params,
        100.0 * above_reserve / guest_total.max(1.0),
        short,
        stall_pct,
    );
    let grants = if short {
        let weights: Vec<f64> = needs.iter().map(|n| params.shares(n.vm)).collect();
        share_out(&asks, &weights, grantable)
    } else {
        asks.clone()
    };
    let mut targets = Vec::new();
    let mut stuck = Vec::new();
    for ((n, &ask), &grant) in needs.iter().zip(&asks).zip(&grants) {
        let unused = n.actual - n.used;
        let (target, reason) = if grant >= MIB {
            let why = format!(
                "needs {:.0} MiB unused (growing {:.0} MiB/s{}), has {:.0}",
                n.keep(params) / MIB,
                n.rate_kib_s.max(0.0) / MIB,
                if n.pressured {
                    ", swapping or faulting"
                } else {
                    ""
                },
                unused / MIB
            );
            ((n.actual + grant).min(n.hi), why)
        } else if ask > 0.0 {
            continue;
        } else if let Some(target) = n.release(params, level) {
            let why = match level {
                Level::Critical => format!(
                    "critical: gives back all above its need ({:.0} MiB unused)",
                    (n.size - n.used) / MIB
                ),
                _ => format!("idle: {:.0} MiB unused", (n.size - n.used) / MIB),
            };
            (target, why)
        } else {
            if n.stuck && !n.pressured && !n.settling {
                stuck.push(n.vm.name.as_str());
            }
            continue;
        };
        targets.push(BalloonTarget {
            vm: n.vm.name.clone(),
            target_kib: target.round() as i64,
            reason,
        });
    }
    let mut reason = format!(
        "host {}: {:.0} MiB grantable, {:.0} MiB asked",
        level.as_str(),
        grantable / MIB,
        asked / MIB
    );
    if stall_pct >= STALL_PRESSURE_PCT {
        reason.push_str(&format!("; memory stall {stall_pct:.1}%"));
    }
    if !stuck.is_empty() {
        reason.push_str(&format!(
            "; stuck balloons (not donors): {}",
            stuck.join(", ")
        ));
    }
    (
        MemoryPlan {
            targets,
            reason,
            ksm: None,
        },
        level,
    )
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

/// What the policy remembers of one VM.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// Its UUID: a VM of the same name with another one is a new VM.
    pub uuid: String,
    /// Its use and growth.
    pub growth: Growth,
    /// Its balloon.
    pub balloon: Balloon,
    /// The guest's report time at the last reading, where the host gives one.
    pub report_s: Option<f64>,
    /// The guest's unused memory at the last reading.
    pub unused_kib: Option<u64>,
    /// The balloon's size last tick.
    pub actual_kib: f64,
}

impl Tracked {
    /// A VM first seen at `now_s` using `used_kib`.
    pub fn new(vm: &VmView, used_kib: f64, now_s: f64) -> Self {
        Self {
            uuid: vm.uuid.clone(),
            growth: Growth::new(used_kib, now_s),
            balloon: Balloon::default(),
            report_s: None,
            unused_kib: None,
            actual_kib: vm.memory.actual_kib as f64,
        }
    }
}

/// Keeps the state of the VMs in `snapshot` that `read` takes, keyed by name; a VM that is
/// gone, or back with another UUID, is forgotten. `read` gets the VM and its state (`None` the
/// first time) and gives the law's view of it, or `None` to leave it alone this tick (its state
/// kept).
pub fn track<'a>(
    seen: &mut HashMap<String, Tracked>,
    snapshot: &'a Snapshot,
    mut read: impl FnMut(&'a VmView, Option<Tracked>) -> (Option<Tracked>, Option<Need<'a>>),
) -> Vec<Need<'a>> {
    let mut kept = HashMap::new();
    let mut needs = Vec::new();
    for vm in snapshot.vms() {
        let state = seen.remove(&vm.name).filter(|s| s.uuid == vm.uuid);
        let (state, need) = read(vm, state);
        if let Some(state) = state {
            kept.insert(vm.name.clone(), state);
        }
        needs.extend(need);
    }
    *seen = kept;
    needs
}

/// Records the plan's targets in each VM's balloon tracker.
pub fn remember(seen: &mut HashMap<String, Tracked>, snapshot: &Snapshot, plan: &MemoryPlan) {
    for target in &plan.targets {
        if let (Some(state), Some(vm)) = (seen.get_mut(&target.vm), snapshot.vm(&target.vm)) {
            state.balloon.ask(
                target.target_kib as f64,
                vm.memory.actual_kib as f64,
                snapshot.wall_s(),
            );
        }
    }
}

/// The policy with its parameters and what it remembers of each VM.
#[derive(Clone, Debug, Default)]
pub struct PressureBalloon {
    /// Its parameters.
    pub params: PressureBalloonParams,
    seen: HashMap<String, Tracked>,
    ksm: Ksm,
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
            ksm: Ksm::default(),
        })
    }
}

/// The law's view of `vm`, from its figures this tick and its state; `None` when the VM is
/// left alone this tick (not managed, stale statistics, or figures that say nothing).
fn read<'a>(
    params: &PressureBalloonParams,
    snapshot: &Snapshot,
    vm: &'a VmView,
    state: Option<Tracked>,
) -> (Option<Tracked>, Option<Need<'a>>) {
    let memory = &vm.memory;
    // Use from one report's own figures where the host gives them (see `used_kib`); else from
    // the guest's unused and the balloon's size read at another moment, figures that can say
    // there is more unused than the VM has, and then say nothing.
    let one_moment = memory.available_kib.is_some() && memory.unavailable_kib.is_some();
    let used = memory
        .used_kib()
        .filter(|_| one_moment || memory.unused_kib.is_some_and(|u| u < memory.actual_kib));
    let (Some(used), true, true) = (used, memory.stats_fresh, vm.control.memory_managed) else {
        return (state, None);
    };
    let (used, actual, now) = (used as f64, memory.actual_kib as f64, snapshot.wall_s());
    let mut state = state.unwrap_or_else(|| Tracked::new(vm, used, now));
    // A reading is new when the guest's report time moves; without one, when a figure changes
    // or the figures have been quiet for a while.
    let new = match (memory.last_report_s, state.report_s) {
        (Some(t), Some(previous)) => t > previous,
        (Some(_), None) => true,
        (None, _) => memory.unused_kib != state.unused_kib || now - state.growth.at_s >= QUIET_S,
    };
    if new {
        let inflating =
            actual < state.actual_kib - INFLATING_KIB || state.balloon.inflating(actual);
        state.growth.update(Reading {
            at_s: memory.last_report_s.unwrap_or(now),
            used_kib: used,
            believable: one_moment || !inflating,
        });
        state.report_s = memory.last_report_s;
        state.unused_kib = memory.unused_kib;
    }
    state.actual_kib = actual;
    // libvirt reads the balloon size about a second after the guest's own total shows a move:
    // the balloon is where the guest says it is when the guest says it is smaller.
    let size = match (memory.available_kib, memory.unavailable_kib) {
        (Some(a), Some(u)) => ((a + u) as f64).min(actual),
        _ => actual,
    };
    state.balloon.observe(actual, size, now);
    let need = Need::of(params, snapshot, vm, &state, used, size);
    (Some(state), Some(need))
}

impl MemoryPolicy for PressureBalloon {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let params = &self.params;
        let needs = track(&mut self.seen, snapshot, |vm, state| {
            read(params, snapshot, vm, state)
        });
        let (mut plan, level) = law(params, snapshot, &needs);
        remember(&mut self.seen, snapshot, &plan);
        if let Some((ksm, why)) = self.ksm.step(snapshot, level, params.ksm_cool_s) {
            plan.ksm = Some(ksm);
            plan.reason.push_str("; ");
            plan.reason.push_str(&why);
        }
        plan
    }
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
    fn a_vm_whose_own_tasks_stall_on_memory_is_pressured() {
        let params = PressureBalloonParams::default();
        let mut vm = mem_vm("a", 2048, 1024, Some(300));
        assert!(!params.pressured(&vm));
        let stall = |pct: f64| vcoord_api::Stall {
            some_pct: Some(pct),
            full_pct: None,
            some_avg10_pct: 0.0,
        };
        vm.memory.stall = Some(stall(0.5));
        assert!(!params.pressured(&vm));
        vm.memory.stall = Some(stall(STALL_PRESSURE_PCT));
        assert!(params.pressured(&vm));
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
        // One rate reading, 20 MiB/s, with its own size as its noise: covered at 20 + 2 x 20,
        // so it keeps 100 + 60 x 4 = 340 unused: used 420 + 340.
        assert_eq!(target_of(&plan, "g"), Some(760.0), "{plan:?}");
        // Steady readings take the noise away: the cover comes down to the rate.
        let mut actual = 760;
        for k in 2..30u64 {
            let used = 400 + 20 * k;
            let plan = p.decide(&at(
                k as f64,
                snapshot(
                    1,
                    vec![mem_vm("g", 4096, actual, Some(actual - used))],
                    8192,
                ),
            ));
            if let Some(target) = target_of(&plan, "g") {
                assert!(target >= actual as f64, "a grower gives back: {plan:?}");
                actual = target as u64;
            }
            assert!(
                actual - used >= 100,
                "{} MiB unused at {k} s",
                actual - used
            );
        }
        let cover = p.seen["g"].growth.cover_kib_s() / MIB;
        assert!((20.0..21.0).contains(&cover), "covered at {cover} MiB/s");
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
        let rate = p.seen["g"].growth.rate_kib_s / MIB;
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
            p.seen["g"].growth.rate_kib_s < MIB,
            "{}",
            p.seen["g"].growth.rate_kib_s / MIB
        );
        let given = given_back_at.expect("never given back");
        assert!(
            given <= 20,
            "first given back {given} s after the growth stopped"
        );
        assert!(actual - used <= 208, "unused {} after 40 s", actual - used);
    }

    /// A real guest after a restart of vcoord, growing in bursts (reports every 3 s): 31 MiB,
    /// then 29, then 67. The old estimator followed the slow reading down to ~12 MiB/s and the
    /// guest fell to 88 MiB unused at the burst; its noise now keeps it above the threshold.
    #[test]
    fn a_guest_growing_in_bursts_is_fed_for_its_bursts_after_a_restart() {
        let mut p = PressureBalloon::default();
        let mut actual = 519;
        for (t, used) in [(0.0, 353), (2.0, 384), (5.0, 413)] {
            let plan = p.decide(&at(
                t,
                snapshot(
                    1,
                    vec![mem_vm("g", 2048, actual, Some(actual - used))],
                    8192,
                ),
            ));
            if let Some(target) = target_of(&plan, "g") {
                actual = target as u64;
            }
        }
        // The burst: 67 MiB by the next report.
        let unused = actual - (413 + 67);
        assert!(
            unused >= 100,
            "{unused} MiB unused at the burst (balloon {actual})"
        );
    }

    /// A host whose tasks stall on memory is short even when its free memory looks fine:
    /// idle guests give back twice as fast under pressure, and all above their need when the
    /// stall is critical.
    #[test]
    fn a_host_stalling_on_memory_is_short_whatever_its_free_memory_says() {
        use vcoord_api::Stall;
        let give_back = |stall: Option<f64>| {
            let mut p = PressureBalloon::default();
            let vms = || vec![mem_vm("idle", 4096, 1024, Some(824))];
            let with = |t: f64| {
                let mut s = snapshot(1, vms(), 8192);
                let mut host = s.host().clone();
                host.pressure.memory = stall.map(|pct| Stall {
                    some_pct: Some(pct),
                    full_pct: None,
                    some_avg10_pct: pct,
                });
                s = s.to_builder().host(host).build().unwrap();
                at(t, s)
            };
            p.decide(&with(0.0));
            let plan = p.decide(&with(2.0));
            (target_of(&plan, "idle"), plan.reason)
        };
        // 824 unused, band 200: half the excess (312) a tick, at most 128.
        let (calm, why) = give_back(None);
        assert_eq!(calm, Some(1024.0 - 128.0), "{why}");
        assert!(why.starts_with("host comfortable"), "{why}");
        assert_eq!(give_back(Some(0.5)).0, calm, "under the pressure stall");
        let (pressed, why) = give_back(Some(2.0));
        assert_eq!(pressed, Some(1024.0 - 256.0), "{why}");
        assert!(why.contains("memory stall 2.0%"), "{why}");
        // Critical: down to used (200) + keep (100) at once.
        let (critical, why) = give_back(Some(12.0));
        assert_eq!(critical, Some(300.0), "{why}");
        assert!(why.starts_with("host critical"), "{why}");
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
        assert!(p.seen["g"].growth.rate_kib_s > 40.0 * MIB);
        p.decide(&at(
            6.0,
            snapshot(1, vec![mem_vm("g", 4096, 1000, Some(800))], 8192),
        ));
        assert_eq!(p.seen["g"].growth.rate_kib_s, 0.0);
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
                let (lo, hi) = p.params.bounds(vm, s.host().limits.guest_floor_kib as f64);
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
