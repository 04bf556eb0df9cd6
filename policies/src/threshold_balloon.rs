//! `threshold-balloon`: the original design's memory coordinator.
//!
//! Every VM should keep about `threshold_mib` of unused memory. Each tick:
//! - a VM with more than `band_factor` x threshold unused gives back `release_ratio` of its
//!   unused memory (never below the guest floor);
//! - a VM at or below the threshold whose unused memory is falling is needy and asks for
//!   `grow_factor` x (threshold - unused);
//! - grants come out of what the host has above its reserve. If that does not cover all the
//!   needs (a crunch), every non-needy VM holding more than the threshold gives back everything
//!   above it, and what the host has is split evenly among the needy (no VM gets more than it
//!   asked; what it does not take goes to the others).
//!
//! Memory given back becomes grantable once the host sees it free, on a later tick.

use std::collections::HashMap;

use vcoord_api::units::KIB_PER_MIB_F64 as MIB;
use vcoord_api::{BalloonTarget, MemoryPlan, MemoryPolicy, Mib, ParamError, Policy, Snapshot};

vcoord_api::params! {
    /// Parameters of `threshold-balloon`. The guest floor and the host reserve are the guard's
    /// (`[host.guard]`), seen in each snapshot.
    pub struct ThresholdBalloonParams {
        /// unused memory every VM should keep
        pub threshold_mib: Mib = Mib(100.0), unit "MiB", range 1.0..=1e7;
        /// idle VMs keep up to this many thresholds unused before giving back
        pub band_factor: f64 = 2.0, unit "x threshold", range 1.0..=100.0;
        /// share of its unused memory an idle VM gives back per tick
        pub release_ratio: f64 = 0.1, unit "ratio of unused", range 0.0..=1.0;
        /// a needy VM gets this many times (threshold - unused)
        pub grow_factor: f64 = 2.0, unit "x shortfall", range 0.0..=100.0;
    }
}

/// The policy with its parameters and the unused memory each VM had last tick.
#[derive(Clone, Debug, Default)]
pub struct ThresholdBalloon {
    /// Its parameters.
    pub params: ThresholdBalloonParams,
    previous_unused_kib: HashMap<String, u64>,
}

impl Policy for ThresholdBalloon {
    const NAME: &'static str = "threshold-balloon";
    const DESCRIPTION: &'static str = "original design: keep 100-200 MiB unused per VM; idle VMs give back 10% of unused, needy ones get 2x their shortfall; host keeps a reserve";
    type Params = ThresholdBalloonParams;

    fn new(params: ThresholdBalloonParams) -> Result<Self, ParamError> {
        Ok(Self {
            params,
            previous_unused_kib: HashMap::new(),
        })
    }
}

struct Candidate<'a> {
    name: &'a str,
    actual_kib: f64,
    unused_kib: f64,
    max_kib: f64,
    falling: bool,
}

impl MemoryPolicy for ThresholdBalloon {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let threshold = self.params.threshold_mib.kib();
        let floor = snapshot.host().limits.guest_floor_kib as f64;
        let candidates: Vec<Candidate> = snapshot
            .vms()
            .iter()
            .filter(|vm| vm.control.memory_managed)
            .filter_map(|vm| {
                let unused = vm.memory.unused_kib?;
                let previous = self.previous_unused_kib.get(&vm.name).copied();
                Some(Candidate {
                    name: &vm.name,
                    actual_kib: vm.memory.actual_kib as f64,
                    unused_kib: unused as f64,
                    max_kib: vm.memory.reachable_max_kib() as f64,
                    falling: previous.is_some_and(|p| unused < p),
                })
            })
            .collect();

        let mut targets = Vec::new();
        let mut needs: Vec<(&Candidate, f64)> = Vec::new();
        for c in &candidates {
            if c.unused_kib <= threshold && c.falling {
                let need = (self.params.grow_factor * (threshold - c.unused_kib))
                    .min(c.max_kib - c.actual_kib);
                if need > 0.0 {
                    needs.push((c, need));
                }
            }
        }
        let available = (snapshot.host().guest_free_kib as f64
            - snapshot.host().limits.host_reserve_kib as f64)
            .max(0.0);
        let total_need: f64 = needs.iter().map(|n| n.1).sum();
        let crunch = total_need > available;
        let needy = |name: &str| needs.iter().any(|n| n.0.name == name);

        for c in &candidates {
            if needy(c.name) {
                continue;
            }
            let give = if crunch && c.unused_kib > threshold {
                c.unused_kib - threshold
            } else if c.unused_kib > self.params.band_factor * threshold {
                self.params.release_ratio * c.unused_kib
            } else {
                0.0
            };
            let target = (c.actual_kib - give).max(floor);
            if give > 0.0 && target < c.actual_kib {
                targets.push(BalloonTarget {
                    vm: c.name.to_string(),
                    target_kib: target as i64,
                    reason: format!(
                        "{}: unused {:.0} MiB > {:.0} MiB, give back {:.0} MiB",
                        if crunch { "crunch claim" } else { "idle" },
                        c.unused_kib / MIB,
                        if crunch {
                            threshold
                        } else {
                            self.params.band_factor * threshold
                        } / MIB,
                        (c.actual_kib - target) / MIB
                    ),
                });
            }
        }

        let grants = if crunch {
            split_evenly(&needs, available)
        } else {
            needs.iter().map(|n| n.1).collect()
        };
        for ((c, need), grant) in needs.iter().zip(grants) {
            if grant < MIB {
                continue;
            }
            targets.push(BalloonTarget {
                vm: c.name.to_string(),
                target_kib: (c.actual_kib + grant) as i64,
                reason: format!(
                    "needy: unused {:.0} MiB <= {:.0} MiB and falling, needs {:.0} MiB, granted {:.0} MiB",
                    c.unused_kib / MIB,
                    threshold / MIB,
                    need / MIB,
                    grant / MIB
                ),
            });
        }

        self.previous_unused_kib = candidates
            .iter()
            .map(|c| (c.name.to_string(), c.unused_kib as u64))
            .collect();
        MemoryPlan {
            targets,
            reason: format!(
                "{} needy asking {:.0} MiB, {:.0} MiB grantable{}",
                needs.len(),
                total_need / MIB,
                available / MIB,
                if crunch { " (crunch)" } else { "" }
            ),
            ksm: None,
        }
    }
}

/// Splits `available` evenly among needs, none getting more than it asked; what a small need
/// leaves goes to the others (water filling).
fn split_evenly(needs: &[(&Candidate, f64)], available: f64) -> Vec<f64> {
    let mut grants = vec![0.0; needs.len()];
    let mut order: Vec<usize> = (0..needs.len()).collect();
    order.sort_by(|&a, &b| needs[a].1.total_cmp(&needs[b].1));
    let mut left = available;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (order.len() - k) as f64;
        grants[i] = needs[i].1.min(share);
        left -= grants[i];
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mem_vm, snapshot};

    fn targets_mib(plan: &MemoryPlan) -> Vec<(String, i64)> {
        plan.targets
            .iter()
            .map(|t| (t.vm.clone(), t.target_kib / 1024))
            .collect()
    }

    #[test]
    fn idle_vm_gives_back_ten_percent_of_unused() {
        let mut p = ThresholdBalloon::default();
        let snap = snapshot(2, vec![mem_vm("a", 2048, 1000, Some(500))], 8192);
        // unused 500 > 200: give back 50
        assert_eq!(targets_mib(&p.decide(&snap)), vec![("a".into(), 950)]);
    }

    #[test]
    fn vm_inside_the_band_is_left_alone() {
        let mut p = ThresholdBalloon::default();
        let snap = snapshot(2, vec![mem_vm("a", 2048, 1000, Some(150))], 8192);
        assert!(p.decide(&snap).targets.is_empty());
    }

    #[test]
    fn idle_release_stops_at_the_floor() {
        let mut p = ThresholdBalloon::default();
        let snap = snapshot(2, vec![mem_vm("a", 2048, 210, Some(205))], 8192);
        // 10% of 205 = 20.5 would go to 189.5 < floor 200
        assert_eq!(targets_mib(&p.decide(&snap)), vec![("a".into(), 200)]);
    }

    #[test]
    fn needy_vm_gets_twice_its_shortfall_once_falling() {
        let mut p = ThresholdBalloon::default();
        // first sight: not known to be falling
        let first = snapshot(2, vec![mem_vm("a", 2048, 600, Some(90))], 8192);
        assert!(p.decide(&first).targets.is_empty());
        let snap = snapshot(2, vec![mem_vm("a", 2048, 600, Some(60))], 8192);
        // 2 x (100 - 60) = 80
        assert_eq!(targets_mib(&p.decide(&snap)), vec![("a".into(), 680)]);
    }

    #[test]
    fn grant_is_capped_at_max() {
        let mut p = ThresholdBalloon::default();
        p.decide(&snapshot(2, vec![mem_vm("a", 650, 600, Some(90))], 8192));
        let snap = snapshot(2, vec![mem_vm("a", 650, 600, Some(40))], 8192);
        assert_eq!(targets_mib(&p.decide(&snap)), vec![("a".into(), 650)]);
    }

    #[test]
    fn crunch_claims_above_threshold_and_splits_evenly() {
        let mut p = ThresholdBalloon::default();
        let vms = |a: u64, b: u64| {
            vec![
                mem_vm("a", 2048, 600, Some(a)),
                mem_vm("b", 2048, 600, Some(b)),
                mem_vm("idle", 2048, 800, Some(180)),
            ]
        };
        p.decide(&snapshot(2, vms(90, 90), 300));
        // host has 300 free, 200 reserve: 100 grantable; a needs 2x(100-20)=160, b 2x(100-40)=120
        let plan = p.decide(&snapshot(2, vms(20, 40), 300));
        assert!(plan.reason.contains("crunch"));
        // idle is inside its band (180 < 200) but gives back everything above 100 in a crunch
        assert_eq!(
            targets_mib(&plan),
            vec![("idle".into(), 720), ("a".into(), 650), ("b".into(), 650)]
        );
    }

    #[test]
    fn no_stats_no_action() {
        let mut p = ThresholdBalloon::default();
        let snap = snapshot(2, vec![mem_vm("a", 2048, 1000, None)], 8192);
        assert!(p.decide(&snap).targets.is_empty());
    }
}
