//! `proportional-share`: a memory policy in the manner of Proxmox's auto-ballooning. Each VM
//! wants what it uses plus a headroom; when the host can give every VM what it wants, it does;
//! when it cannot, the memory guests may have is shared out by weight (`shares`), each VM first
//! getting its minimum and never more than it wants. Moves are limited per tick and small ones
//! are skipped, so balloons glide instead of jumping.

use std::collections::HashMap;

use vcoord_plugin::units::KIB_PER_MIB_F64 as MIB;
use vcoord_plugin::{MemoryPlan, MemoryPolicy, Mib, ParamError, PerVm, Policy, Snapshot, VmView};

vcoord_plugin::params! {
    /// Parameters of `proportional-share`. The host reserve is the guard's.
    pub struct ProportionalShareParams {
        /// what each VM wants above what it uses
        pub headroom_mib: Mib = Mib(256.0), unit "MiB", range 0.0..=1e6;
        /// no VM is shared less than this
        pub min_mib: Mib = Mib(256.0), unit "MiB", range 0.0..=1e6;
        /// most a balloon moves per tick
        pub max_step_mib: Mib = Mib(128.0), unit "MiB", range 1.0..=1e6;
        /// smaller moves are skipped
        pub deadband_mib: Mib = Mib(16.0), unit "MiB", range 0.0..=1e5;
        /// per-VM weight when memory is short (default 1)
        pub shares: PerVm<f64> = PerVm::default(), unit "weight", range 0.01..=1e4;
    }
}

/// Parameters, in KiB.
pub struct ProportionalShare {
    headroom_kib: f64,
    min_kib: f64,
    max_step_kib: f64,
    deadband_kib: f64,
    shares: HashMap<String, f64>,
}

impl Policy for ProportionalShare {
    const NAME: &'static str = "proportional-share";
    const DESCRIPTION: &'static str =
        "used + headroom per VM; when short, shared by weight above a minimum";
    type Params = ProportionalShareParams;

    fn new(params: ProportionalShareParams) -> Result<Self, ParamError> {
        Ok(Self {
            headroom_kib: params.headroom_mib.kib(),
            min_kib: params.min_mib.kib(),
            max_step_kib: params.max_step_mib.kib(),
            deadband_kib: params.deadband_mib.kib(),
            shares: params.shares.0.into_iter().collect(),
        })
    }
}

impl MemoryPolicy for ProportionalShare {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        // Only VMs with fresh statistics whose memory the operator did not set aside take part;
        // the others keep what they have.
        let vms: Vec<_> = snapshot
            .vms()
            .iter()
            .filter(|vm| vm.memory.stats_fresh && vm.control.memory_managed)
            .filter_map(|vm| Some((vm, vm.memory.used_kib()? as f64)))
            .collect();
        if vms.is_empty() {
            return MemoryPlan::keep("no VM with fresh statistics");
        }
        // The operator's per-VM bounds come first.
        let max = |vm: &VmView| {
            (vm.memory.max_kib as f64).min(vm.control.max_kib.map_or(f64::INFINITY, |k| k as f64))
        };
        let min = |vm: &VmView| {
            vm.control
                .min_kib
                .map_or(self.min_kib, |k| k as f64)
                .min(max(vm))
        };
        let want: Vec<f64> = vms
            .iter()
            .map(|(vm, used)| (used + self.headroom_kib).clamp(min(vm), max(vm)))
            .collect();
        // What these VMs may hold in all: what they have now plus what the host can still give.
        let held: f64 = vms.iter().map(|(vm, _)| vm.memory.actual_kib as f64).sum();
        let host = snapshot.host();
        let pool =
            (held + host.guest_free_kib as f64 - host.limits.host_reserve_kib as f64).max(0.0);
        let targets = if want.iter().sum::<f64>() <= pool {
            want.clone()
        } else {
            let weights: Vec<f64> = vms
                .iter()
                .map(|(vm, _)| {
                    vm.control
                        .shares
                        .or_else(|| self.shares.get(vm.name.as_str()).copied())
                        .unwrap_or(1.0)
                })
                .collect();
            let floors: Vec<f64> = vms.iter().map(|(vm, _)| min(vm)).collect();
            water_fill(&floors, &want, &weights, pool)
        };

        let mut plan = MemoryPlan::default();
        for (((vm, used), target), want) in vms.iter().zip(&targets).zip(&want) {
            let actual = vm.memory.actual_kib as f64;
            let step = (target - actual).clamp(-self.max_step_kib, self.max_step_kib);
            if step.abs() < self.deadband_kib {
                continue;
            }
            plan.target(
                &vm.name,
                (actual + step).round() as i64,
                format!(
                    "uses {:.0} MiB, wants {:.0}, share {:.0}",
                    used / MIB,
                    want / MIB,
                    target / MIB
                ),
            );
        }
        plan.reason = format!(
            "{} VMs want {:.0} MiB of {:.0} available",
            vms.len(),
            want.iter().sum::<f64>() / MIB,
            pool / MIB
        );
        plan
    }
}

/// Shares `pool` out: each gets its floor, then the rest by weight, never above its cap; what a
/// capped VM cannot take goes to the others. Floors are met first even if they exceed the pool.
fn water_fill(floors: &[f64], caps: &[f64], weights: &[f64], pool: f64) -> Vec<f64> {
    let mut out: Vec<f64> = floors.to_vec();
    let mut left = pool - floors.iter().sum::<f64>();
    let mut open: Vec<usize> = (0..out.len()).filter(|&i| caps[i] > out[i]).collect();
    while left > 1.0 && !open.is_empty() {
        let total: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut given = 0.0;
        for &i in &open {
            let add = (left * weights[i] / total).min(caps[i] - out[i]);
            out[i] += add;
            given += add;
        }
        left -= given;
        open.retain(|&i| caps[i] - out[i] > 1.0);
        if given < 1.0 {
            break;
        }
    }
    out
}

vcoord_plugin::export_plugin! {
    name: "proportional-share",
    description: "used + headroom per VM; when short, shared by weight above a minimum",
    memory: ProportionalShare,
}

#[cfg(test)]
mod tests {
    use super::water_fill;

    #[test]
    fn water_fill_shares_by_weight_and_respects_caps() {
        let out = water_fill(
            &[100.0, 100.0, 100.0],
            &[200.0, 1000.0, 1000.0],
            &[1.0, 1.0, 2.0],
            900.0,
        );
        assert!((out[0] - 200.0).abs() < 1.0, "{out:?}");
        // 600 left after floors; 100 went to the capped VM, 500 split 1:2.
        assert!((out[1] - 266.7).abs() < 1.0, "{out:?}");
        assert!((out[2] - 433.3).abs() < 1.0, "{out:?}");
        assert!((out.iter().sum::<f64>() - 900.0).abs() < 2.0);
    }

    #[test]
    fn water_fill_gives_floors_even_when_short() {
        let out = water_fill(&[300.0, 300.0], &[500.0, 500.0], &[1.0, 1.0], 400.0);
        assert_eq!(out, vec![300.0, 300.0]);
    }
}
