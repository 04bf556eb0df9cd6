//! The one place that converts between vcoord-api's types and their FFI-safe mirrors, in both
//! directions: vcoord sends snapshots and receives plans; a plugin receives snapshots and sends
//! plans. A snapshot that comes back through [`snapshot_from_abi`] goes through the same checks
//! as any other.

use abi_stable::std_types::{RString, RVec};
use vcoord_api::snapshot::{GuardLimits, HostPressure, HostView, InvalidSnapshot, PcpuView, Stall};
use vcoord_api::{
    BalloonTarget, CpuPlan, CpuSet, CpuTune, KsmPlan, KsmView, MemoryPlan, MemoryView, ParamError,
    ParamSpec, Pcpu, Placement, Snapshot, VcpuPin, VcpuView, VirtioMemView, VmControl, VmTune,
    VmView,
};

use crate::abi;

/// A snapshot as plugins receive it.
pub fn snapshot_to_abi(snapshot: &Snapshot) -> abi::Snapshot {
    let host = snapshot.host();
    abi::Snapshot {
        tick: snapshot.tick(),
        interval_s: snapshot.interval_s(),
        wall_s: snapshot.wall_s(),
        pcpus: host
            .pcpus
            .iter()
            .map(|p| abi::Pcpu {
                id: p.pcpu.id,
                core_id: p.pcpu.core_id.into(),
                socket_id: p.pcpu.socket_id.into(),
                node_id: p.pcpu.node_id.into(),
                load_pct: p.load_pct,
                other_pct: p.other_pct.into(),
                other_wait_pct: p.other_wait_pct.into(),
            })
            .collect(),
        mem_total_kib: host.mem_total_kib,
        mem_free_kib: host.mem_free_kib,
        guest_free_kib: host.guest_free_kib,
        guest_budget_kib: host.guest_budget_kib.into(),
        guest_floor_kib: host.limits.guest_floor_kib,
        host_reserve_kib: host.limits.host_reserve_kib,
        pressure: abi::Pressure {
            cpu: host.pressure.cpu.map(stall_to_abi).into(),
            memory: host.pressure.memory.map(stall_to_abi).into(),
            io: host.pressure.io.map(stall_to_abi).into(),
        },
        ksm: host
            .ksm
            .as_ref()
            .map(|k| abi::Ksm {
                running: k.running,
                saved_kib: k.saved_kib,
                shared_kib: k.shared_kib,
                unshared_kib: k.unshared_kib,
                volatile_kib: k.volatile_kib,
                full_scans: k.full_scans,
                pages_to_scan: k.pages_to_scan,
                sleep_ms: k.sleep_ms,
                advisor: k.advisor.clone().map(RString::from).into(),
                ksmd_cpu_pct: k.ksmd_cpu_pct.into(),
                managed: k.managed,
            })
            .into(),
        vms: snapshot.vms().iter().map(vm_to_abi).collect(),
    }
}

fn stall_to_abi(s: Stall) -> abi::Stall {
    abi::Stall {
        some_pct: s.some_pct.into(),
        full_pct: s.full_pct.into(),
        some_avg10_pct: s.some_avg10_pct,
    }
}

fn stall_from_abi(s: abi::Stall) -> Stall {
    Stall {
        some_pct: s.some_pct.into_option(),
        full_pct: s.full_pct.into_option(),
        some_avg10_pct: s.some_avg10_pct,
    }
}

fn vm_to_abi(vm: &VmView) -> abi::Vm {
    let m = &vm.memory;
    abi::Vm {
        name: vm.name.as_str().into(),
        uuid: vm.uuid.as_str().into(),
        vcpus: vm
            .vcpus
            .iter()
            .map(|v| abi::Vcpu {
                id: v.id,
                load_pct: v.load_pct.into(),
                wait_pct: v.wait_pct.into(),
                pcpu: v.pcpu.into(),
                affinity: v.affinity.iter().collect(),
            })
            .collect(),
        memory: abi::Memory {
            max_kib: m.max_kib,
            actual_kib: m.actual_kib,
            unused_kib: m.unused_kib.into(),
            available_kib: m.available_kib.into(),
            unavailable_kib: m.unavailable_kib.into(),
            usable_kib: m.usable_kib.into(),
            swap_in_kib: m.swap_in_kib.into(),
            swap_out_kib: m.swap_out_kib.into(),
            major_faults: m.major_faults.into(),
            major_fault_rate: m.major_fault_rate.into(),
            swap_rate_kib_s: m.swap_rate_kib_s.into(),
            stats_fresh: m.stats_fresh,
            last_report_s: m.last_report_s.into(),
            virtio_mem: m
                .virtio_mem
                .iter()
                .map(|d| abi::VirtioMem {
                    alias: d.alias.as_str().into(),
                    size_kib: d.size_kib,
                    block_kib: d.block_kib,
                    requested_kib: d.requested_kib,
                    current_kib: d.current_kib,
                    node: d.node.into(),
                    held: d.held,
                })
                .collect(),
            free_page_reporting: m.free_page_reporting,
            stall: m.stall.map(stall_to_abi).into(),
        },
        oom_events: vm.oom_events.into(),
        control: abi::Control {
            cpu_managed: vm.control.cpu_managed,
            memory_managed: vm.control.memory_managed,
            min_kib: vm.control.min_kib.into(),
            max_kib: vm.control.max_kib.into(),
            shares: vm.control.shares.into(),
            placement: vm.control.placement.map(placement_to_abi).into(),
            cpu_shares: vm.control.cpu_shares.into(),
            cpu_min_pct: vm.control.cpu_min_pct.into(),
            cpu_max_pct: vm.control.cpu_max_pct.into(),
        },
        cputune: tune_to_abi(&vm.cputune),
    }
}

fn placement_to_abi(p: Placement) -> abi::Placement {
    match p {
        Placement::Pin => abi::Placement::Pin,
        Placement::Group => abi::Placement::Group,
        Placement::Dedicated => abi::Placement::Dedicated,
    }
}

fn placement_from_abi(p: abi::Placement) -> Placement {
    match p {
        abi::Placement::Pin => Placement::Pin,
        abi::Placement::Group => Placement::Group,
        abi::Placement::Dedicated => Placement::Dedicated,
    }
}

fn tune_to_abi(t: &CpuTune) -> abi::CpuTune {
    abi::CpuTune {
        cpu_shares: t.cpu_shares.into(),
        vcpu_quota_us: t.vcpu_quota_us.into(),
        vcpu_period_us: t.vcpu_period_us.into(),
        emulator: t.emulator.as_ref().map(|e| e.iter().collect()).into(),
    }
}

fn tune_from_abi(t: &abi::CpuTune) -> CpuTune {
    CpuTune {
        cpu_shares: t.cpu_shares.into_option(),
        vcpu_quota_us: t.vcpu_quota_us.into_option(),
        vcpu_period_us: t.vcpu_period_us.into_option(),
        emulator: t
            .emulator
            .as_ref()
            .map(|e| e.iter().copied().collect::<CpuSet>())
            .into_option(),
    }
}

/// A snapshot received across the boundary, checked like any other.
pub fn snapshot_from_abi(s: &abi::Snapshot) -> Result<Snapshot, InvalidSnapshot> {
    let host = HostView {
        pcpus: s
            .pcpus
            .iter()
            .map(|p| PcpuView {
                pcpu: Pcpu {
                    id: p.id,
                    core_id: p.core_id.into_option(),
                    socket_id: p.socket_id.into_option(),
                    node_id: p.node_id.into_option(),
                },
                load_pct: p.load_pct,
                other_pct: p.other_pct.into_option(),
                other_wait_pct: p.other_wait_pct.into_option(),
            })
            .collect(),
        mem_total_kib: s.mem_total_kib,
        mem_free_kib: s.mem_free_kib,
        guest_free_kib: s.guest_free_kib,
        guest_budget_kib: s.guest_budget_kib.into_option(),
        limits: GuardLimits {
            guest_floor_kib: s.guest_floor_kib,
            host_reserve_kib: s.host_reserve_kib,
        },
        pressure: HostPressure {
            cpu: s.pressure.cpu.into_option().map(stall_from_abi),
            memory: s.pressure.memory.into_option().map(stall_from_abi),
            io: s.pressure.io.into_option().map(stall_from_abi),
        },
        ksm: s.ksm.as_ref().into_option().map(|k| KsmView {
            running: k.running,
            saved_kib: k.saved_kib,
            shared_kib: k.shared_kib,
            unshared_kib: k.unshared_kib,
            volatile_kib: k.volatile_kib,
            full_scans: k.full_scans,
            pages_to_scan: k.pages_to_scan,
            sleep_ms: k.sleep_ms,
            advisor: k.advisor.as_ref().into_option().map(|a| a.to_string()),
            ksmd_cpu_pct: k.ksmd_cpu_pct.into_option(),
            managed: k.managed,
        }),
    };
    Snapshot::builder(host)
        .tick(s.tick)
        .interval_s(s.interval_s)
        .wall_s(s.wall_s)
        .vms(s.vms.iter().map(vm_from_abi))
        .build()
}

fn vm_from_abi(vm: &abi::Vm) -> VmView {
    let m = &vm.memory;
    VmView {
        name: vm.name.as_str().to_owned(),
        uuid: vm.uuid.as_str().to_owned(),
        vcpus: vm
            .vcpus
            .iter()
            .map(|v| VcpuView {
                id: v.id,
                load_pct: v.load_pct.into_option(),
                wait_pct: v.wait_pct.into_option(),
                pcpu: v.pcpu.into_option(),
                affinity: v.affinity.iter().copied().collect(),
            })
            .collect(),
        memory: MemoryView {
            max_kib: m.max_kib,
            actual_kib: m.actual_kib,
            unused_kib: m.unused_kib.into_option(),
            available_kib: m.available_kib.into_option(),
            unavailable_kib: m.unavailable_kib.into_option(),
            usable_kib: m.usable_kib.into_option(),
            swap_in_kib: m.swap_in_kib.into_option(),
            swap_out_kib: m.swap_out_kib.into_option(),
            major_faults: m.major_faults.into_option(),
            major_fault_rate: m.major_fault_rate.into_option(),
            swap_rate_kib_s: m.swap_rate_kib_s.into_option(),
            stats_fresh: m.stats_fresh,
            last_report_s: m.last_report_s.into_option(),
            virtio_mem: m
                .virtio_mem
                .iter()
                .map(|d| VirtioMemView {
                    alias: d.alias.as_str().to_owned(),
                    size_kib: d.size_kib,
                    block_kib: d.block_kib,
                    requested_kib: d.requested_kib,
                    current_kib: d.current_kib,
                    node: d.node.into_option(),
                    held: d.held,
                })
                .collect(),
            free_page_reporting: m.free_page_reporting,
            stall: m.stall.into_option().map(stall_from_abi),
        },
        oom_events: vm.oom_events.into_option(),
        control: VmControl {
            cpu_managed: vm.control.cpu_managed,
            memory_managed: vm.control.memory_managed,
            min_kib: vm.control.min_kib.into_option(),
            max_kib: vm.control.max_kib.into_option(),
            shares: vm.control.shares.into_option(),
            placement: vm.control.placement.into_option().map(placement_from_abi),
            cpu_shares: vm.control.cpu_shares.into_option(),
            cpu_min_pct: vm.control.cpu_min_pct.into_option(),
            cpu_max_pct: vm.control.cpu_max_pct.into_option(),
        },
        cputune: tune_from_abi(&vm.cputune),
    }
}

/// A CPU plan as it crosses the boundary.
pub fn cpu_plan_to_abi(plan: CpuPlan) -> abi::CpuPlan {
    abi::CpuPlan {
        pins: plan
            .pins
            .into_iter()
            .map(|p| abi::VcpuPin {
                vm: p.vm.into(),
                vcpu: p.vcpu,
                cpus: p.cpus.iter().collect(),
            })
            .collect(),
        tunes: plan
            .tunes
            .iter()
            .map(|t| abi::VmTune {
                vm: t.vm.as_str().into(),
                tune: tune_to_abi(&t.tune),
            })
            .collect(),
        reason: plan.reason.into(),
    }
}

/// A plugin's CPU plan in vcoord's terms (unchecked: the guard checks it like any plan).
pub fn cpu_plan_from_abi(plan: abi::CpuPlan) -> CpuPlan {
    CpuPlan {
        pins: plan
            .pins
            .into_iter()
            .map(|p| VcpuPin {
                vm: p.vm.into_string(),
                vcpu: p.vcpu,
                cpus: p.cpus.into_iter().collect::<CpuSet>(),
            })
            .collect(),
        tunes: plan
            .tunes
            .iter()
            .map(|t| VmTune {
                vm: t.vm.as_str().to_owned(),
                tune: tune_from_abi(&t.tune),
            })
            .collect(),
        reason: plan.reason.into_string(),
    }
}

/// A memory plan as it crosses the boundary.
pub fn memory_plan_to_abi(plan: MemoryPlan) -> abi::MemoryPlan {
    abi::MemoryPlan {
        targets: plan
            .targets
            .into_iter()
            .map(|t| abi::BalloonTarget {
                vm: t.vm.into(),
                target_kib: t.target_kib,
                reason: t.reason.into(),
            })
            .collect(),
        reason: plan.reason.into(),
        ksm: plan
            .ksm
            .map(|k| abi::KsmPlan {
                run: k.run,
                pages_to_scan: k.pages_to_scan,
                sleep_ms: k.sleep_ms,
            })
            .into(),
    }
}

/// A plugin's memory plan in vcoord's terms (unchecked).
pub fn memory_plan_from_abi(plan: abi::MemoryPlan) -> MemoryPlan {
    MemoryPlan {
        targets: plan
            .targets
            .into_iter()
            .map(|t| BalloonTarget {
                vm: t.vm.into_string(),
                target_kib: t.target_kib,
                reason: t.reason.into_string(),
            })
            .collect(),
        reason: plan.reason.into_string(),
        ksm: plan.ksm.into_option().map(|k| KsmPlan {
            run: k.run,
            pages_to_scan: k.pages_to_scan,
            sleep_ms: k.sleep_ms,
        }),
    }
}

/// A parameter error as it crosses the boundary.
pub fn param_error_to_abi(e: ParamError) -> abi::BuildError {
    abi::BuildError {
        key: e.key.into(),
        message: e.message.into(),
    }
}

/// A build failure with no parameter at fault (a panic, a missing policy kind).
pub fn build_failure(message: impl Into<String>) -> abi::BuildError {
    abi::BuildError {
        key: RString::new(),
        message: message.into().into(),
    }
}

/// Parameter listings as they cross the boundary.
pub fn specs_to_abi(specs: Vec<ParamSpec>) -> RVec<abi::ParamSpec> {
    specs
        .into_iter()
        .map(|s| abi::ParamSpec {
            key: s.key.into(),
            kind: s.kind.into(),
            default: s.default.into(),
            unit: s.unit.into(),
            min: s.min,
            max: s.max,
            doc: s.doc.into(),
        })
        .collect()
}

/// Parameter listings received from a plugin.
pub fn specs_from_abi(specs: RVec<abi::ParamSpec>) -> Vec<ParamSpec> {
    specs
        .into_iter()
        .map(|s| ParamSpec {
            key: s.key.into_string(),
            kind: s.kind.into_string(),
            default: s.default.into_string(),
            unit: s.unit.into_string(),
            min: s.min,
            max: s.max,
            doc: s.doc.into_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut host = HostView::new(
            vec![Pcpu {
                id: 3,
                core_id: Some(1),
                socket_id: Some(0),
                node_id: None,
            }],
            8 << 20,
            4 << 20,
        );
        host.limits.host_reserve_kib = 12345;
        host.pressure.memory = Some(Stall {
            some_pct: Some(2.5),
            full_pct: None,
            some_avg10_pct: 1.25,
        });
        Snapshot::builder(host)
            .tick(4)
            .interval_s(1.0)
            .wall_s(100.0)
            .vm(VmView {
                cputune: CpuTune {
                    cpu_shares: Some(512),
                    vcpu_quota_us: Some(-1),
                    vcpu_period_us: None,
                    emulator: Some(CpuSet::single(3)),
                },
                name: "vm1".into(),
                uuid: "u1".into(),
                vcpus: vec![VcpuView {
                    id: 0,
                    load_pct: Some(50.0),
                    wait_pct: Some(1.5),
                    pcpu: Some(3),
                    affinity: CpuSet::single(3),
                }],
                memory: MemoryView {
                    max_kib: 2 << 20,
                    actual_kib: 1 << 20,
                    unused_kib: Some(300 << 10),
                    available_kib: Some(990 << 10),
                    unavailable_kib: Some(34 << 10),
                    stats_fresh: true,
                    last_report_s: Some(99.0),
                    ..MemoryView::default()
                },
                oom_events: Some(0),
                control: VmControl {
                    cpu_managed: false,
                    min_kib: Some(300 << 10),
                    shares: Some(2.5),
                    placement: Some(Placement::Group),
                    cpu_shares: Some(4096),
                    cpu_min_pct: Some(25.0),
                    cpu_max_pct: Some(150.0),
                    ..VmControl::default()
                },
            })
            .loads_from_vcpus()
            .build()
            .unwrap()
    }

    #[test]
    fn snapshots_cross_both_ways_unchanged() {
        let s = snapshot();
        let a = snapshot_to_abi(&s);
        assert_eq!(a.pcpus[0].core_id.into_option(), Some(1));
        assert_eq!(a.pcpus[0].load_pct, 50.0);
        assert_eq!(a.host_reserve_kib, 12345);
        assert_eq!(snapshot_from_abi(&a).unwrap(), s);
    }

    #[test]
    fn a_malformed_abi_snapshot_is_refused() {
        let mut a = snapshot_to_abi(&snapshot());
        let twin = a.vms[0].clone();
        a.vms.push(twin);
        assert!(snapshot_from_abi(&a).is_err());
    }

    #[test]
    fn plans_cross_both_ways_unchecked() {
        let mut p = CpuPlan::keep("r");
        p.pin("vm1", 0, &[5, 2]);
        p.pin("vm1", 1, &[]);
        p.tune(
            "vm1",
            CpuTune {
                cpu_shares: Some(1),
                vcpu_quota_us: Some(-7),
                vcpu_period_us: Some(100_000),
                emulator: Some([4, 0].into_iter().collect()),
            },
        );
        let back = cpu_plan_from_abi(cpu_plan_to_abi(p.clone()));
        assert_eq!(back, p);
        assert_eq!(back.pins[0].cpus.as_slice(), &[2, 5]);
        let mut m = MemoryPlan::keep("m");
        m.target("vm1", -5, "neg");
        assert_eq!(memory_plan_from_abi(memory_plan_to_abi(m.clone())), m);
    }
}
