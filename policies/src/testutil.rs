//! Snapshots for policy unit tests.

use vcoord_api::snapshot::HostView;
use vcoord_api::units::KIB_PER_MIB as MIB;
use vcoord_api::{CpuPlan, CpuSet, MemoryView, Pcpu, Snapshot, VcpuView, VmControl, VmView};

/// A host with `pcpus` pCPUs and one single-vCPU VM (`vm0`, `vm1`, ...) per `(load, pcpu)`.
pub fn cpu_snapshot(pcpus: u32, vcpus: &[(f64, u32)]) -> Snapshot {
    let vms = vcpus
        .iter()
        .enumerate()
        .map(|(i, &(load, pcpu))| VmView {
            cputune: Default::default(),
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
            control: VmControl::default(),
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
        available_kib: None,
        unavailable_kib: None,
        usable_kib: unused_mib.map(|u| u * MIB),
        swap_in_kib: Some(0),
        swap_out_kib: Some(0),
        major_faults: Some(0),
        major_fault_rate: Some(0.0),
        swap_rate_kib_s: Some(0.0),
        stats_fresh: unused_mib.is_some(),
        last_report_s: unused_mib.map(|_| 0.0),
        ..MemoryView::default()
    }
}

/// A snapshot of the given VMs with `guest_free_mib` grantable, pCPU loads summed from the
/// vCPUs, default guard limits.
pub fn snapshot(pcpus: u32, vms: Vec<VmView>, guest_free_mib: u64) -> Snapshot {
    let host = HostView::new(
        (0..pcpus).map(Pcpu::plain).collect(),
        16384 * MIB,
        guest_free_mib * MIB,
    );
    Snapshot::builder(host)
        .tick(1)
        .interval_s(1.0)
        .vms(vms)
        .loads_from_vcpus()
        .build()
        .unwrap()
}

/// `snapshot` as seen at wall-clock time `wall_s`, with every guest's report made then.
pub fn at(wall_s: f64, snapshot: Snapshot) -> Snapshot {
    let vms: Vec<VmView> = snapshot
        .vms()
        .iter()
        .cloned()
        .map(|mut vm| {
            vm.memory.last_report_s = vm.memory.last_report_s.map(|_| wall_s);
            vm
        })
        .collect();
    Snapshot::builder(snapshot.host().clone())
        .tick(snapshot.tick())
        .interval_s(snapshot.interval_s())
        .wall_s(wall_s)
        .vms(vms)
        .build()
        .unwrap()
}

/// A single-vCPU VM with only memory figures that matter.
pub fn mem_vm(name: &str, max_mib: u64, actual_mib: u64, unused_mib: Option<u64>) -> VmView {
    VmView {
        cputune: Default::default(),
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
        control: VmControl::default(),
    }
}

/// The single pCPU of each pin, in plan order.
pub fn pins_of(plan: &CpuPlan) -> Vec<u32> {
    plan.pins.iter().map(|p| p.cpus.only().unwrap()).collect()
}

/// `cpu_snapshot` with VM `vm{dedicated}` set to `placement = "dedicated"`.
pub fn with_dedicated(s: &Snapshot, dedicated: usize) -> Snapshot {
    let mut vms = s.vms().to_vec();
    vms[dedicated].control.placement = Some(vcoord_api::Placement::Dedicated);
    Snapshot::builder(s.host().clone())
        .tick(s.tick())
        .interval_s(s.interval_s())
        .wall_s(s.wall_s())
        .vms(vms)
        .build()
        .unwrap()
}
