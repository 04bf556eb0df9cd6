//! `mom-balloon`: the default balloon rules of oVirt's Memory Overcommitment Manager (MOM,
//! `02-balloon.policy`), re-implemented as a vcoord memory policy from their published
//! behaviour, so that operators can compare what they run today with vcoord's defaults.
//!
//! MOM collects figures every `collect_s` (5 s) and averages the last `samples` (10) of them;
//! every `period_s` (10 s) its policy runs:
//! - the host is under pressure when its free memory is below `pressure_pct` (20%) of its
//!   memory, critical below `critical_pct` (5%);
//! - under pressure every guest shrinks toward what it uses plus a free share: the guests'
//!   20% (`guest_free_pct`) scaled down by how short the host is (`20% x host free / 20%`), or,
//!   when critical, `host free - 5%` (below zero: the guest is pushed into its swap);
//! - without pressure a guest with less than 20% of its balloon free grows;
//! - a step is at most `max_change_pct` (5%) of the balloon's size and is skipped when under
//!   `min_change_pct` (0.25%) of it.
//!
//! What it leaves out: MOM's other controllers (KSM, CPU tune, I/O tune) and its rules
//! language; its engine's guaranteed memory is the operator's `min_mib` here. Like MOM, it
//! reads a guest's unused memory and the host's free memory only: swap and major faults are
//! not looked at.

use std::collections::{HashMap, VecDeque};

use vcoord_plugin::units::KIB_PER_MIB_F64 as MIB;
use vcoord_plugin::{MemoryPlan, MemoryPolicy, ParamError, Policy, Snapshot};

vcoord_plugin::params! {
    /// Parameters of `mom-balloon` (MOM's defaults).
    pub struct MomParams {
        /// host free memory under which the host is under pressure
        pub pressure_pct: f64 = 20.0, unit "percent", range 1.0..=90.0;
        /// host free memory under which the pressure is critical
        pub critical_pct: f64 = 5.0, unit "percent", range 0.0..=90.0;
        /// free share of its balloon an unconstrained guest keeps
        pub guest_free_pct: f64 = 20.0, unit "percent", range 0.0..=90.0;
        /// largest change a step, percent of the balloon's size
        pub max_change_pct: f64 = 5.0, unit "percent", range 0.01..=100.0;
        /// smaller changes are skipped, percent of the balloon's size
        pub min_change_pct: f64 = 0.25, unit "percent", range 0.0..=100.0;
        /// time between policy runs
        pub period_s: f64 = 10.0, unit "s", range 0.0..=3600.0;
        /// time between collections
        pub collect_s: f64 = 5.0, unit "s", range 0.0..=3600.0;
        /// collections averaged
        pub samples: f64 = 10.0, unit "samples", range 1.0..=1000.0;
    }
}

/// One collection of a guest: balloon size and unused memory, KiB.
type Figures = (f64, f64);

/// The policy: its parameters as shares, each guest's last collections and the host's.
pub struct MomBalloon {
    p: MomParams,
    guests: HashMap<String, VecDeque<Figures>>,
    host_free: VecDeque<f64>,
    last_collect_s: Option<f64>,
    last_policy_s: Option<f64>,
}

impl Policy for MomBalloon {
    const NAME: &'static str = "mom-balloon";
    const DESCRIPTION: &'static str =
        "oVirt MOM's balloon rules: shrink under host pressure (20% free), grow guests under 20% free, 5% a step";
    type Params = MomParams;

    fn new(p: MomParams) -> Result<Self, ParamError> {
        Ok(Self {
            p,
            guests: HashMap::new(),
            host_free: VecDeque::new(),
            last_collect_s: None,
            last_policy_s: None,
        })
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The balloon size MOM asks of a guest under host pressure: what it uses plus the free share
/// the host's shortage leaves it, never below `floor`; `None` when it would not shrink.
pub fn shrink_to(
    balloon: f64,
    unused: f64,
    host_free_share: f64,
    p: &MomParams,
    floor: f64,
) -> Option<f64> {
    let (pressure, critical) = (p.pressure_pct / 100.0, p.critical_pct / 100.0);
    let free_share = if host_free_share <= critical {
        host_free_share - 0.05
    } else {
        p.guest_free_pct / 100.0 * host_free_share / pressure
    };
    let used = balloon - unused;
    let wanted = (used + free_share * balloon).max(floor);
    let shrink = (balloon - wanted).min(p.max_change_pct / 100.0 * balloon);
    (shrink > 0.0).then_some(balloon - shrink)
}

impl MemoryPolicy for MomBalloon {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let now = snapshot.wall_s();
        let host = snapshot.host();
        let keep = self.p.samples as usize;
        if self
            .last_collect_s
            .is_none_or(|t| now - t >= self.p.collect_s - 1e-6)
        {
            self.last_collect_s = Some(now);
            push(&mut self.host_free, host.mem_free_kib as f64, keep);
            for vm in snapshot.vms() {
                if let Some(unused) = vm.memory.unused_kib.filter(|_| vm.memory.stats_fresh) {
                    let ring = self.guests.entry(vm.name.clone()).or_default();
                    push(ring, (vm.memory.actual_kib as f64, unused as f64), keep);
                }
            }
            self.guests.retain(|name, _| snapshot.vm(name).is_some());
        }
        if self
            .last_policy_s
            .is_some_and(|t| now - t < self.p.period_s - 1e-6)
        {
            return MemoryPlan::keep("between policy runs");
        }
        self.last_policy_s = Some(now);
        let total = host.mem_total_kib as f64;
        let host_free_share = mean(self.host_free.iter().copied()).unwrap_or(0.0) / total.max(1.0);
        let pressured = host_free_share < self.p.pressure_pct / 100.0;
        let mut plan = MemoryPlan::default();
        let mut changed = 0;
        for vm in snapshot.vms().iter().filter(|vm| vm.control.memory_managed) {
            let Some(ring) = self.guests.get(&vm.name) else {
                continue;
            };
            let (Some(balloon), Some(unused)) = (
                mean(ring.iter().map(|f| f.0)),
                mean(ring.iter().map(|f| f.1)),
            ) else {
                continue;
            };
            let size = vm.memory.max_kib as f64;
            let max = vm.control.max_kib.map_or(size, |k| (k as f64).min(size));
            let floor = vm.control.min_kib.map_or(0.0, |k| k as f64);
            let target = if pressured {
                shrink_to(balloon, unused, host_free_share, &self.p, floor)
            } else if unused < self.p.guest_free_pct / 100.0 * balloon {
                Some((balloon + self.p.max_change_pct / 100.0 * balloon).min(max))
            } else {
                None
            };
            let Some(target) = target else {
                continue;
            };
            if (target - balloon).abs() <= self.p.min_change_pct / 100.0 * balloon {
                continue;
            }
            changed += 1;
            plan.target(
                &vm.name,
                target.round() as i64,
                format!(
                    "balloon {:.0} MiB (mean), unused {:.0} MiB",
                    balloon / MIB,
                    unused / MIB
                ),
            );
        }
        plan.reason = format!(
            "host {:.1}% free ({}): {changed} guests changed",
            100.0 * host_free_share,
            if pressured { "pressure" } else { "no pressure" }
        );
        plan
    }
}

fn push<T>(ring: &mut VecDeque<T>, value: T, keep: usize) {
    ring.push_back(value);
    while ring.len() > keep {
        ring.pop_front();
    }
}

vcoord_plugin::export_plugin! {
    name: "mom-balloon",
    description: "oVirt MOM's balloon rules: shrink under host pressure (20% free), grow guests under 20% free, 5% a step",
    memory: MomBalloon,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MomParams {
        MomParams {
            pressure_pct: 20.0,
            critical_pct: 5.0,
            guest_free_pct: 20.0,
            max_change_pct: 5.0,
            min_change_pct: 0.25,
            period_s: 10.0,
            collect_s: 5.0,
            samples: 10.0,
        }
    }

    #[test]
    fn pressure_shrinks_by_at_most_five_percent_toward_use_plus_a_scaled_free_share() {
        let p = params();
        // 1000 balloon, 900 unused; host 10% free: the guest may keep 10% free, so 200; a step
        // is at most 50.
        assert_eq!(shrink_to(1000.0, 900.0, 0.10, &p, 0.0), Some(950.0));
        // Near its goal: 1000 balloon, 100 unused (900 used) at 10% host free: goal 1000.
        assert_eq!(shrink_to(1000.0, 100.0, 0.10, &p, 0.0), None);
        // Critical: the free share goes negative, the guest is squeezed below its use.
        let squeezed = shrink_to(1000.0, 30.0, 0.02, &p, 0.0).unwrap();
        assert!(squeezed < 970.0, "{squeezed}");
        // Never below the floor.
        assert_eq!(shrink_to(1000.0, 900.0, 0.10, &p, 990.0), Some(990.0));
    }
}
