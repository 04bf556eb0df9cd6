//! `proxmox-balloon`: Proxmox VE's automatic memory allocation ("auto-ballooning", done by
//! `pvestatd`), re-implemented as a vcoord memory policy from its published behaviour, so that
//! operators can compare what they run today with vcoord's defaults on their own workload.
//!
//! What it does, every round of `round_s` (Proxmox: 10 s):
//! - the host aims at `target_used_pct` (Proxmox: 80%) of its memory in use;
//! - the memory the ballooned VMs may hold at that target, beyond their minimums, is shared
//!   between them by weight: each VM's goal is `min + surplus x weight / total weight`, clamped
//!   to `[min, max]` (Proxmox: `shares`, 1000 by default; here the VM's `shares`, 1 by default);
//! - each VM moves toward its goal by at most `max_step_mib` a round (Proxmox: 100 MiB) and not
//!   at all when the move is under `deadband_mib` (10 MiB).
//!
//! What it leaves out: Proxmox lets a VM take part only when its configured minimum is below its
//! memory; here every VM vcoord may manage takes part, its minimum the operator's `min_mib` or
//! `min_pct` of its size. Proxmox reads host use from `/proc/meminfo` (QEMU's resident memory);
//! here from the snapshot (on the simulator: the guests' balloon sizes). It never reads guest
//! memory statistics: a guest using more than its share is not served first, and can run out.

use std::collections::HashMap;

use vcoord_plugin::units::KIB_PER_MIB_F64 as MIB;
use vcoord_plugin::{MemoryPlan, MemoryPolicy, Mib, ParamError, Policy, Snapshot};

vcoord_plugin::params! {
    /// Parameters of `proxmox-balloon` (Proxmox's values by default).
    pub struct ProxmoxParams {
        /// host memory in use the rounds aim at
        pub target_used_pct: f64 = 80.0, unit "percent", range 10.0..=99.0;
        /// a VM's minimum, percent of its size, when the operator set none
        pub min_pct: f64 = 25.0, unit "percent", range 1.0..=100.0;
        /// most a balloon moves per round
        pub max_step_mib: Mib = Mib(100.0), unit "MiB", range 1.0..=1e6;
        /// smaller moves are skipped
        pub deadband_mib: Mib = Mib(10.0), unit "MiB", range 0.0..=1e5;
        /// time between rounds
        pub round_s: f64 = 10.0, unit "s", range 0.0..=3600.0;
    }
}

/// The policy: its parameters in KiB, and when the last round ran.
pub struct ProxmoxBalloon {
    target_used: f64,
    min_share: f64,
    max_step_kib: f64,
    deadband_kib: f64,
    round_s: f64,
    last_round_s: Option<f64>,
}

impl Policy for ProxmoxBalloon {
    const NAME: &'static str = "proxmox-balloon";
    const DESCRIPTION: &'static str =
        "Proxmox VE auto-ballooning: host at 80% used, min + surplus by shares, 100 MiB per 10 s";
    type Params = ProxmoxParams;

    fn new(p: ProxmoxParams) -> Result<Self, ParamError> {
        Ok(Self {
            target_used: p.target_used_pct / 100.0,
            min_share: p.min_pct / 100.0,
            max_step_kib: p.max_step_mib.kib(),
            deadband_kib: p.deadband_mib.kib(),
            round_s: p.round_s,
            last_round_s: None,
        })
    }
}

/// Each VM's goal: `min + surplus x weight / total`, clamped to `[min, max]`, where the surplus
/// is what `pool` leaves beyond the minimums; what a VM at its maximum cannot take goes to the
/// others.
pub fn goals(mins: &[f64], maxes: &[f64], weights: &[f64], pool: f64) -> Vec<f64> {
    let mut out: Vec<f64> = mins.to_vec();
    let mut left = pool - mins.iter().sum::<f64>();
    let mut open: Vec<usize> = (0..out.len()).filter(|&i| maxes[i] > out[i]).collect();
    while left > 1.0 && !open.is_empty() {
        let total: f64 = open.iter().map(|&i| weights[i]).sum();
        let mut given = 0.0;
        for &i in &open {
            let add = (left * weights[i] / total).min(maxes[i] - out[i]);
            out[i] += add;
            given += add;
        }
        left -= given;
        open.retain(|&i| maxes[i] - out[i] > 1.0);
        if given < 1.0 {
            break;
        }
    }
    out
}

impl MemoryPolicy for ProxmoxBalloon {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let now = snapshot.wall_s();
        if self
            .last_round_s
            .is_some_and(|last| now - last < self.round_s - 1e-6)
        {
            return MemoryPlan::keep("between rounds");
        }
        self.last_round_s = Some(now);
        let vms: Vec<_> = snapshot
            .vms()
            .iter()
            .filter(|vm| vm.control.memory_managed)
            .collect();
        if vms.is_empty() {
            return MemoryPlan::keep("no VM to balloon");
        }
        let host = snapshot.host();
        let total = host.mem_total_kib as f64;
        let held: f64 = vms.iter().map(|vm| vm.memory.actual_kib as f64).sum();
        // Memory in use on the host beside these VMs' balloons.
        let others = (total - host.mem_free_kib as f64 - held).max(0.0);
        let pool = (self.target_used * total - others).max(0.0);
        let maxes: Vec<f64> = vms
            .iter()
            .map(|vm| {
                let size = vm.memory.max_kib as f64;
                vm.control.max_kib.map_or(size, |k| (k as f64).min(size))
            })
            .collect();
        let mins: Vec<f64> = vms
            .iter()
            .zip(&maxes)
            .map(|(vm, &max)| {
                vm.control
                    .min_kib
                    .map_or(self.min_share * vm.memory.max_kib as f64, |k| k as f64)
                    .min(max)
            })
            .collect();
        let weights: Vec<f64> = vms
            .iter()
            .map(|vm| vm.control.shares.unwrap_or(1.0))
            .collect();
        let goal = goals(&mins, &maxes, &weights, pool);
        let mut plan = MemoryPlan::default();
        let mut moved: HashMap<bool, usize> = HashMap::new();
        for (vm, goal) in vms.iter().zip(&goal) {
            let actual = vm.memory.actual_kib as f64;
            let step = (goal - actual).clamp(-self.max_step_kib, self.max_step_kib);
            if step.abs() < self.deadband_kib.max(1.0) {
                continue;
            }
            *moved.entry(step > 0.0).or_default() += 1;
            plan.target(
                &vm.name,
                (actual + step).round() as i64,
                format!("goal {:.0} MiB", goal / MIB),
            );
        }
        plan.reason = format!(
            "host {:.0}% used, aiming at {:.0}%: {:.0} MiB for {} VMs ({} grow, {} shrink)",
            100.0 * (total - host.mem_free_kib as f64) / total.max(1.0),
            100.0 * self.target_used,
            pool / MIB,
            vms.len(),
            moved.get(&true).copied().unwrap_or(0),
            moved.get(&false).copied().unwrap_or(0),
        );
        plan
    }
}

vcoord_plugin::export_plugin! {
    name: "proxmox-balloon",
    description: "Proxmox VE auto-ballooning: host at 80% used, min + surplus by shares, 100 MiB per 10 s",
    memory: ProxmoxBalloon,
}

#[cfg(test)]
mod tests {
    use super::goals;

    #[test]
    fn the_surplus_goes_by_weight_within_min_and_max() {
        // 1000 to share: 300 of minimums, 700 over; the first VM is full at 200.
        let out = goals(
            &[100.0, 100.0, 100.0],
            &[200.0, 1000.0, 1000.0],
            &[1.0, 1.0, 2.0],
            1000.0,
        );
        assert!((out[0] - 200.0).abs() < 1.0, "{out:?}");
        // 700 over the minimums: 100 fill the first, the rest goes 1:2.
        assert!((out[1] - 300.0).abs() < 1.0, "{out:?}");
        assert!((out[2] - 500.0).abs() < 1.0, "{out:?}");
        assert!((out.iter().sum::<f64>() - 1000.0).abs() < 2.0, "{out:?}");
    }

    #[test]
    fn a_short_host_leaves_every_vm_at_its_minimum() {
        assert_eq!(
            goals(&[300.0, 300.0], &[900.0, 900.0], &[1.0, 1.0], 100.0),
            vec![300.0, 300.0]
        );
    }
}
