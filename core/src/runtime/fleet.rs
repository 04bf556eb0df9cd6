//! What a fleet balancer cannot compute from raw usage: how contended each VM is, whether the
//! host can satisfy its guests at all, and which VMs would relieve it most if moved.
//!
//! - A VM's **CPU wait ratio** is the share of the CPU time its vCPUs wanted that they spent
//!   waiting for a pCPU (run-queue wait over run time plus wait, this tick).
//! - A VM is **short of memory** by what it lacks of its use plus [`HEADROOM_KIB`] (never above
//!   its maximum), or by the grant the guard cut for lack of host memory, whichever is more.
//! - Its **contention score** is the larger of its wait ratio and its shortfall as a share of
//!   the headroom, from 0 (content) to 1.
//! - The host is in **CPU deficit** while its vCPUs' demand (run time plus wait, each at most one
//!   pCPU) exceeds its pCPUs, and in **memory deficit** while its VMs' shortfalls exceed what it
//!   can grant above its reserve. A deficit that lasts [`HOLD_S`] without a break means the host
//!   **cannot satisfy** its guests: only moving a VM away helps. While a deficit lasts, each VM's
//!   **relief** is the share of it that moving that VM would remove (1: all of it).

use serde::{Deserialize, Serialize};
use vcoord_api::{vcpu_demand_pct, Kind, MemoryPlan, Snapshot};

use super::guard::{GuardedPlan, Refusal};

/// Unused memory every VM should be able to keep (the classic coordinators' 100 MiB), KiB.
pub const HEADROOM_KIB: u64 = 100 * 1024;

/// A deficit that lasts this long without a break means the host cannot satisfy its guests, s.
pub const HOLD_S: f64 = 60.0;

/// One VM's contention this tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmContention {
    /// Domain name.
    pub vm: String,
    /// Run-queue wait over run time plus wait of its vCPUs, 0 to 1 (0 while unknown).
    pub cpu_wait_ratio: f64,
    /// CPU ready: the share of the tick its vCPUs waited runnable for a pCPU, averaged over
    /// its vCPUs (as VMware's CPU ready is), percent; `None` while no vCPU's wait is known.
    #[serde(default)]
    pub cpu_ready_pct: Option<f64>,
    /// For a VM of the dedicated class: the pCPU of each of its vCPUs, or why it is left
    /// shared. `None` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<Result<Vec<u32>, String>>,
    /// Memory it lacks, KiB.
    pub memory_short_kib: u64,
    /// The larger of the wait ratio and the shortfall as a share of [`HEADROOM_KIB`], 0 to 1.
    pub score: f64,
    /// While the host is in CPU deficit: the share of it moving this VM would remove.
    pub cpu_relief: Option<f64>,
    /// While the host is in memory deficit: the share of it moving this VM would remove.
    pub memory_relief: Option<f64>,
}

impl VmContention {
    /// Its relief of `kind`.
    pub fn relief(&self, kind: Kind) -> Option<f64> {
        match kind {
            Kind::Cpu => self.cpu_relief,
            Kind::Memory => self.memory_relief,
        }
    }
}

/// A VM's CPU ready: its vCPUs' run-queue wait, percent of the interval, averaged over the
/// vCPUs whose wait is known (`None` when none is).
pub fn cpu_ready_pct(vm: &vcoord_api::VmView) -> Option<f64> {
    let waits: Vec<f64> = vm.vcpus.iter().filter_map(|v| v.wait_pct).collect();
    (!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64)
}

/// One kind of deficit on the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deficit {
    /// How much is missing: percent of one pCPU for CPU, KiB for memory (0: none).
    pub amount: f64,
    /// How long it has lasted without a break, s.
    pub lasted_s: f64,
    /// It has lasted [`HOLD_S`]: the host cannot satisfy its guests.
    pub cannot_satisfy: bool,
}

/// The fleet's view of one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSignals {
    /// Each VM, in the snapshot's order.
    pub vms: Vec<VmContention>,
    /// CPU: demand over the pCPUs.
    pub cpu: Deficit,
    /// Memory: shortfalls over what the host can grant.
    pub memory: Deficit,
}

impl FleetSignals {
    /// The deficit of `kind`.
    pub fn deficit(&self, kind: Kind) -> &Deficit {
        match kind {
            Kind::Cpu => &self.cpu,
            Kind::Memory => &self.memory,
        }
    }
}

/// Follows how long each deficit has lasted.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    cpu_since_s: Option<f64>,
    memory_since_s: Option<f64>,
}

impl Fleet {
    /// The signals of a tick: its snapshot, the memory policy's plan and what the guard let
    /// through of it.
    pub fn signals(
        &mut self,
        snapshot: &Snapshot,
        memory_plan: &MemoryPlan,
        guarded: &GuardedPlan,
    ) -> FleetSignals {
        let now = snapshot.wall_s();
        let host = snapshot.host();
        let dedication = vcoord_api::dedicated::dedicate(snapshot);
        let mut vms = Vec::with_capacity(snapshot.vms().len());
        let mut cpu_demand = Vec::with_capacity(snapshot.vms().len());
        let mut sizes_kib = Vec::with_capacity(snapshot.vms().len());
        for vm in snapshot.vms() {
            let (mut ran, mut waited, mut demand) = (0.0, 0.0, 0.0);
            for v in &vm.vcpus {
                if let Some(d) = vcpu_demand_pct(v.load_pct, v.wait_pct) {
                    ran += v.load_pct.unwrap_or(0.0);
                    waited += v.wait_pct.unwrap_or(0.0);
                    demand += d;
                }
            }
            let cpu_ready_pct = cpu_ready_pct(vm);
            let cpu_wait_ratio = if ran + waited > 0.0 {
                (waited / (ran + waited)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let m = &vm.memory;
            let lacks = m.used_kib().filter(|_| m.stats_fresh).map_or(0, |used| {
                (used + HEADROOM_KIB)
                    .min(m.max_kib)
                    .saturating_sub(m.actual_kib)
            });
            let cut = grant_cut_kib(&vm.name, m.actual_kib, memory_plan, guarded);
            let memory_short_kib = lacks.max(cut);
            let score =
                cpu_wait_ratio.max((memory_short_kib as f64 / HEADROOM_KIB as f64).min(1.0));
            let dedicated = match dedication.of(&vm.name) {
                Some(pcpus) => Some(Ok(pcpus.to_vec())),
                None => dedication
                    .left_shared
                    .iter()
                    .find(|(name, _)| *name == vm.name)
                    .map(|(_, why)| Err(why.clone())),
            };
            vms.push(VmContention {
                vm: vm.name.clone(),
                cpu_wait_ratio,
                cpu_ready_pct,
                dedicated,
                memory_short_kib,
                score,
                cpu_relief: None,
                memory_relief: None,
            });
            cpu_demand.push(demand);
            sizes_kib.push(m.actual_kib + memory_short_kib);
        }
        let cpu_missing = cpu_demand.iter().sum::<f64>() - 100.0 * host.pcpus.len() as f64;
        let grantable_kib = host
            .guest_free_kib
            .saturating_sub(host.limits.host_reserve_kib) as f64;
        let memory_missing =
            vms.iter().map(|v| v.memory_short_kib as f64).sum::<f64>() - grantable_kib;
        let mut cpu = follow(&mut self.cpu_since_s, cpu_missing, now);
        // A dedicated VM left shared: only moving a VM away gives it its pCPUs.
        cpu.cannot_satisfy |= !dedication.left_shared.is_empty();
        let memory = follow(&mut self.memory_since_s, memory_missing, now);
        for (i, v) in vms.iter_mut().enumerate() {
            let relief =
                |moved: f64, d: &Deficit| (d.amount > 0.0).then(|| (moved / d.amount).min(1.0));
            v.cpu_relief = relief(cpu_demand[i], &cpu);
            v.memory_relief = relief(sizes_kib[i] as f64, &memory);
        }
        FleetSignals { vms, cpu, memory }
    }
}

/// How much of a grant the plan asked for `vm` the guard cut for lack of host memory, KiB.
fn grant_cut_kib(vm: &str, actual_kib: u64, plan: &MemoryPlan, guarded: &GuardedPlan) -> u64 {
    let cut = guarded
        .rejected
        .iter()
        .any(|r| r.reason == Refusal::HostReserve && r.vm == vm);
    let asked = plan.targets.iter().find(|t| t.vm == vm);
    let (true, Some(asked)) = (cut, asked) else {
        return 0;
    };
    let allowed = guarded
        .balloons
        .iter()
        .find(|b| b.vm == vm)
        .map_or(actual_kib, |b| b.target_kib);
    u64::try_from(asked.target_kib)
        .unwrap_or(0)
        .saturating_sub(allowed.max(actual_kib))
}

/// The deficit `missing` (none when not above 0) at `now_s`, which began at `since_s`.
fn follow(since_s: &mut Option<f64>, missing: f64, now_s: f64) -> Deficit {
    if missing <= 0.0 {
        *since_s = None;
        return Deficit::default();
    }
    let lasted_s = (now_s - *since_s.get_or_insert(now_s)).max(0.0);
    Deficit {
        amount: missing,
        lasted_s,
        cannot_satisfy: lasted_s >= HOLD_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::guard::{BalloonChange, Rejection};
    use vcoord_api::{BalloonTarget, Pcpu};
    use vcoord_api::{CpuSet, HostView, MemoryView, VcpuView, VmControl, VmView};

    const MIB: u64 = 1024;

    fn vm(name: &str, vcpus: &[(f64, f64)], actual_mib: u64, unused_mib: u64) -> VmView {
        VmView {
            cputune: Default::default(),
            name: name.into(),
            uuid: format!("uuid-{name}"),
            vcpus: vcpus
                .iter()
                .enumerate()
                .map(|(i, &(load, wait))| VcpuView {
                    id: i as u32,
                    load_pct: Some(load),
                    wait_pct: Some(wait),
                    pcpu: None,
                    affinity: CpuSet::new(),
                })
                .collect(),
            memory: MemoryView {
                max_kib: 4096 * MIB,
                actual_kib: actual_mib * MIB,
                unused_kib: Some(unused_mib * MIB),
                available_kib: Some(actual_mib * MIB),
                unavailable_kib: Some(0),
                stats_fresh: true,
                ..Default::default()
            },
            oom_events: None,
            control: VmControl::default(),
        }
    }

    fn snapshot(at_s: f64, vms: Vec<VmView>, guest_free_mib: u64) -> Snapshot {
        let mut host = HostView::new((0..2).map(Pcpu::plain).collect(), 8192 * MIB, 4096 * MIB);
        host.guest_free_kib = guest_free_mib * MIB;
        host.limits.host_reserve_kib = 200 * MIB;
        Snapshot::builder(host)
            .wall_s(at_s)
            .vms(vms)
            .build()
            .unwrap()
    }

    fn quiet() -> (MemoryPlan, GuardedPlan) {
        (MemoryPlan::default(), GuardedPlan::default())
    }

    #[test]
    fn cpu_demand_over_the_pcpus_for_a_minute_cannot_be_satisfied_and_the_busiest_relieves_most() {
        let mut fleet = Fleet::default();
        let (plan, guarded) = quiet();
        // Three busy vCPUs and a light one share two pCPUs: 300 + 20 of demand on 200.
        let vms = || {
            vec![
                vm("a", &[(50.0, 50.0), (50.0, 50.0)], 1024, 300),
                vm("b", &[(60.0, 40.0)], 1024, 300),
                vm("c", &[(10.0, 10.0)], 1024, 300),
            ]
        };
        let first = fleet.signals(&snapshot(0.0, vms(), 4096), &plan, &guarded);
        assert!((first.cpu.amount - 120.0).abs() < 1e-9, "{:?}", first.cpu);
        assert!(!first.cpu.cannot_satisfy);
        assert_eq!(first.vms[0].cpu_wait_ratio, 0.5);
        assert!((first.vms[1].cpu_wait_ratio - 0.4).abs() < 1e-9);
        // CPU ready per vCPU, as VMware counts it: a's two vCPUs waited 50% each, c 10%.
        assert_eq!(first.vms[0].cpu_ready_pct, Some(50.0));
        assert_eq!(first.vms[2].cpu_ready_pct, Some(10.0));
        // a wants 200 of the 120 missing: moving it removes all; c only a sixth.
        assert_eq!(first.vms[0].cpu_relief, Some(1.0));
        assert!((first.vms[2].cpu_relief.unwrap() - 20.0 / 120.0).abs() < 1e-9);
        assert_eq!(first.memory, Deficit::default());
        assert_eq!(first.vms[0].memory_relief, None);
        let later = fleet.signals(&snapshot(59.0, vms(), 4096), &plan, &guarded);
        assert!(!later.cpu.cannot_satisfy && later.cpu.lasted_s == 59.0);
        let held = fleet.signals(&snapshot(60.0, vms(), 4096), &plan, &guarded);
        assert!(held.cpu.cannot_satisfy, "{:?}", held.cpu);
        // One tick without a deficit starts the count again.
        let light = vec![vm("a", &[(50.0, 0.0)], 1024, 300)];
        let eased = fleet.signals(&snapshot(61.0, light, 4096), &plan, &guarded);
        assert_eq!(eased.cpu, Deficit::default());
        let again = fleet.signals(&snapshot(62.0, vms(), 4096), &plan, &guarded);
        assert_eq!(again.cpu.lasted_s, 0.0);
    }

    #[test]
    fn memory_shortfalls_over_what_the_host_can_grant_are_a_deficit() {
        let mut fleet = Fleet::default();
        let (plan, guarded) = quiet();
        // g has 40 MiB unused: it lacks 60. 250 MiB free, 200 reserved: 50 grantable.
        let vms = || vec![vm("g", &[], 1024, 40), vm("idle", &[], 512, 300)];
        let s = fleet.signals(&snapshot(0.0, vms(), 250), &plan, &guarded);
        assert_eq!(s.vms[0].memory_short_kib, 60 * MIB);
        assert!((s.vms[0].score - 0.6).abs() < 1e-9);
        assert_eq!(s.vms[1].memory_short_kib, 0);
        assert_eq!(s.memory.amount, 10.0 * MIB as f64);
        // Moving either frees far more than the 10 MiB missing.
        assert_eq!(s.vms[1].memory_relief, Some(1.0));
        // With memory to give, a shortfall is no deficit.
        let s = fleet.signals(&snapshot(1.0, vms(), 1024), &plan, &guarded);
        assert_eq!(s.memory, Deficit::default());
        assert_eq!(s.vms[0].memory_short_kib, 60 * MIB);
    }

    #[test]
    fn a_grant_the_guard_cut_for_lack_of_memory_counts_as_short() {
        let mut fleet = Fleet::default();
        let plan = MemoryPlan {
            targets: vec![BalloonTarget {
                vm: "g".into(),
                target_kib: (1024 + 300) * MIB as i64,
                reason: String::new(),
            }],
            ..MemoryPlan::default()
        };
        let guarded = GuardedPlan {
            balloons: vec![BalloonChange {
                vm: "g".into(),
                actual_kib: 1024 * MIB,
                target_kib: (1024 + 50) * MIB,
                reason: String::new(),
            }],
            rejected: vec![Rejection {
                action: String::new(),
                why: String::new(),
                reason: Refusal::HostReserve,
                vm: "g".into(),
            }],
            ..Default::default()
        };
        // Plenty unused, but 250 MiB of the grant it was meant to have were cut.
        let s = fleet.signals(
            &snapshot(0.0, vec![vm("g", &[], 1024, 500)], 250),
            &plan,
            &guarded,
        );
        assert_eq!(s.vms[0].memory_short_kib, 250 * MIB);
        assert_eq!(s.vms[0].score, 1.0);
        // Any other refusal is not a shortfall.
        let mut busy = guarded.clone();
        busy.rejected[0].reason = Refusal::Busy;
        let s = fleet.signals(
            &snapshot(0.0, vec![vm("g", &[], 1024, 500)], 250),
            &plan,
            &busy,
        );
        assert_eq!(s.vms[0].memory_short_kib, 0);
    }
}
