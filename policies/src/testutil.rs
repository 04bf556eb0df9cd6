//! Snapshots for policy unit tests.

use vcoord_core::cpuset::CpuSet;
use vcoord_core::model::Pcpu;
use vcoord_core::policy::CpuPlan;
use vcoord_core::snapshot::{HostView, MemoryView, Snapshot, VcpuView, VmView};

const MIB: u64 = 1024;

/// A host with `pcpus` pCPUs and one single-vCPU VM (`vm0`, `vm1`, ...) per `(load, pcpu)`.
pub fn cpu_snapshot(pcpus: u32, vcpus: &[(f64, u32)]) -> Snapshot {
    let vms = vcpus
        .iter()
        .enumerate()
        .map(|(i, &(load, pcpu))| VmView {
            name: format!("vm{i}"),
            uuid: format!("u{i}"),
            vcpus: vec![VcpuView {
                id: 0,
                load_pct: Some(load),
                wait_pct: Some(0.0),
                pcpu: Some(pcpu),
                affinity: CpuSet::single(pcpu),
            }],
            memory: memory(1024, 512, Some(200)),
            oom_events: None,
            is_new: false,
        })
        .collect();
    snapshot(pcpus, vms, 8192)
}

/// A VM memory view in MiB.
pub fn memory(max_mib: u64, actual_mib: u64, unused_mib: Option<u64>) -> MemoryView {
    MemoryView {
        max_kib: max_mib * MIB,
        actual_kib: actual_mib * MIB,
        unused_kib: unused_mib.map(|u| u * MIB),
        usable_kib: unused_mib.map(|u| u * MIB),
        swap_in_kib: Some(0),
        swap_out_kib: Some(0),
        major_faults: Some(0),
        stats_fresh: unused_mib.is_some(),
    }
}

/// A snapshot of the given VMs (sorted by name) with `guest_free_mib` grantable.
pub fn snapshot(pcpus: u32, mut vms: Vec<VmView>, guest_free_mib: u64) -> Snapshot {
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    let mut load = vec![0.0; pcpus as usize];
    for v in vms.iter().flat_map(|vm| vm.vcpus.iter()) {
        if let (Some(l), Some(p)) = (v.load_pct, v.placed_on()) {
            load[p as usize] += l;
        }
    }
    Snapshot {
        tick: 1,
        interval_s: 1.0,
        wall_s: 0.0,
        host: HostView {
            pcpus: (0..pcpus).map(Pcpu::plain).collect(),
            pcpu_load_pct: load,
            mem_total_kib: 16384 * MIB,
            mem_free_kib: guest_free_mib * MIB,
            guest_free_kib: guest_free_mib * MIB,
            guest_budget_kib: None,
        },
        vms,
    }
}

/// A single-vCPU VM with only memory figures that matter.
pub fn mem_vm(name: &str, max_mib: u64, actual_mib: u64, unused_mib: Option<u64>) -> VmView {
    VmView {
        name: name.into(),
        uuid: name.into(),
        vcpus: vec![VcpuView {
            id: 0,
            load_pct: Some(0.0),
            wait_pct: None,
            pcpu: Some(0),
            affinity: CpuSet::single(0),
        }],
        memory: memory(max_mib, actual_mib, unused_mib),
        oom_events: None,
        is_new: false,
    }
}

/// The single pCPU of each pin, in plan order.
pub fn pins_of(plan: &CpuPlan) -> Vec<u32> {
    plan.pins.iter().map(|p| p.cpus.only().unwrap()).collect()
}
