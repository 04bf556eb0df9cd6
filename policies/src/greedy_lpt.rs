//! `greedy-lpt`: the original design's vCPU pinning. When the standard deviation of pCPU loads
//! exceeds a share of their mean, sort all vCPUs by load (largest first) and put each on the
//! pCPU with the least load so far (longest processing time first). Every vCPU ends up pinned
//! to exactly one pCPU.
//!
//! Kept faithful on purpose, weaknesses included: it recomputes the placement from scratch, so
//! equal groups can trade places, and its relative trigger is below ordinary measurement noise at
//! low load, so it keeps re-pinning there.

use vcoord_api::stats::{mean, stdev};
use vcoord_api::{CpuPlan, CpuPolicy, CpuSet, ParamError, Policy, Snapshot, VcpuPin};

vcoord_api::params! {
    /// Parameters of `greedy-lpt`.
    pub struct GreedyLptParams {
        /// re-pin when the stdev of pCPU loads exceeds this share of their mean
        pub trigger_rel: f64 = 0.05, unit "ratio of mean load", range 0.0..=10.0;
        /// when set, the stdev must also exceed this many points (off by default)
        pub trigger_abs_points: Option<f64> = None, unit "percent points", range 0.0..=100.0;
    }
}

/// The policy with its parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GreedyLpt {
    /// Its parameters.
    pub params: GreedyLptParams,
}

impl Policy for GreedyLpt {
    const NAME: &'static str = "greedy-lpt";
    const DESCRIPTION: &'static str = "original design: when pCPU load stdev > 5% of mean, re-pin all vCPUs largest-first onto the least-loaded pCPU";
    type Params = GreedyLptParams;

    fn new(params: GreedyLptParams) -> Result<Self, ParamError> {
        Ok(Self { params })
    }
}

/// Assigns loads longest-first onto `bins` bins; returns the bin of each item. Ties go to the
/// lowest bin; items are taken in the order given when their loads are equal.
pub fn lpt_assign(loads: &[f64], bins: usize) -> Vec<usize> {
    lpt_assign_over(loads, &vec![0.0; bins])
}

/// [`lpt_assign`] onto bins that hold `base` already.
pub fn lpt_assign_over(loads: &[f64], base: &[f64]) -> Vec<usize> {
    let bins = base.len();
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]).then(a.cmp(&b)));
    let mut bin_load = base.to_vec();
    let mut assignment = vec![0; loads.len()];
    for item in order {
        let bin = (0..bins)
            .min_by(|&x, &y| bin_load[x].total_cmp(&bin_load[y]).then(x.cmp(&y)))
            .unwrap_or(0);
        bin_load[bin] += loads[item];
        assignment[item] = bin;
    }
    assignment
}

impl CpuPolicy for GreedyLpt {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        let loads = &snapshot.pcpu_loads();
        if !snapshot.has_cpu_loads() || loads.is_empty() {
            return CpuPlan {
                tunes: Vec::new(),
                pins: Vec::new(),
                reason: "no vCPU loads yet".into(),
            };
        }
        let sd = stdev(loads);
        let m = mean(loads);
        let threshold =
            (self.params.trigger_rel * m).max(self.params.trigger_abs_points.unwrap_or(0.0));
        if sd <= threshold {
            return CpuPlan {
                tunes: Vec::new(),
                pins: Vec::new(),
                reason: format!("balanced: stdev {sd:.1} <= {threshold:.1} (mean {m:.1})"),
            };
        }
        // vCPUs without a load yet count as idle; VMs are in name order, so ties are stable.
        // vCPUs of VMs the operator left alone stay, their load counted where they are.
        let mut base = vec![0.0; snapshot.host().pcpus.len()];
        let mut vcpus: Vec<(&str, u32, f64)> = Vec::new();
        for vm in snapshot.vms() {
            for v in &vm.vcpus {
                let load = v.load_pct.unwrap_or(0.0);
                if vm.control.cpu_managed {
                    vcpus.push((vm.name.as_str(), v.id, load));
                } else if let Some(i) = v.placed_on().and_then(|p| snapshot.pcpu_index(p)) {
                    base[i] += load;
                }
            }
        }
        let item_loads: Vec<f64> = vcpus.iter().map(|v| v.2).collect();
        let assignment = lpt_assign_over(&item_loads, &base);
        let pins = vcpus
            .iter()
            .zip(assignment)
            .map(|(&(vm, vcpu, _), bin)| VcpuPin {
                vm: vm.to_string(),
                vcpu,
                cpus: CpuSet::single(snapshot.host().pcpus[bin].pcpu.id),
            })
            .collect();
        CpuPlan {
            tunes: Vec::new(),
            pins,
            reason: format!("rebalance: stdev {sd:.1} > {threshold:.1} (mean {m:.1})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cpu_snapshot, pins_of};

    #[test]
    fn lpt_assignment_exact() {
        // 7,6,5,4,3 on 2 bins: 7->0, 6->1, 5->1 (6<7), 4->0 (7<11), 3->0 or 1: loads 11 vs 11 -> 0
        assert_eq!(
            lpt_assign(&[3.0, 7.0, 5.0, 6.0, 4.0], 2),
            vec![0, 0, 1, 1, 0]
        );
    }

    #[test]
    fn balanced_host_is_left_alone() {
        // 2 pCPUs each carrying 100: stdev 0
        let snap = cpu_snapshot(2, &[(100.0, 0), (100.0, 1)]);
        let plan = GreedyLpt::default().decide(&snap);
        assert!(plan.pins.is_empty());
        assert!(plan.reason.starts_with("balanced"));
    }

    #[test]
    fn all_on_one_pcpu_is_spread_two_per_pcpu() {
        // 4 vCPUs of 25% each, all measured on pCPU0 of a 2-pCPU host.
        let snap = cpu_snapshot(2, &[(25.0, 0), (25.0, 0), (25.0, 0), (25.0, 0)]);
        let plan = GreedyLpt::default().decide(&snap);
        assert_eq!(pins_of(&plan), vec![0, 1, 0, 1]);
    }

    #[test]
    fn heavy_and_light_are_paired() {
        // two heavy (90) and two light (10) on 2 pCPUs -> one of each per pCPU
        let snap = cpu_snapshot(2, &[(90.0, 0), (90.0, 0), (10.0, 1), (10.0, 1)]);
        let plan = GreedyLpt::default().decide(&snap);
        assert_eq!(pins_of(&plan), vec![0, 1, 0, 1]);
    }

    #[test]
    fn relative_trigger_fires_on_small_noise_unless_absolute_is_set() {
        // mean 30, stdev 2: over 5% of mean (1.5) but under 5 points
        let snap = cpu_snapshot(2, &[(28.0, 0), (32.0, 1)]);
        assert!(!GreedyLpt::default().decide(&snap).pins.is_empty());
        let mut with_abs = GreedyLpt {
            params: GreedyLptParams {
                trigger_abs_points: Some(5.0),
                ..Default::default()
            },
        };
        assert!(with_abs.decide(&snap).pins.is_empty());
    }
}
