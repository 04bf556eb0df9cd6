//! The dedicated class: which pCPUs each `placement = "dedicated"` VM gets to itself, worked out
//! the same way wherever it is needed (every CPU policy, plugins, the guard, the status).
//!
//! Each vCPU of a dedicated VM gets a pCPU of its own, and with it the whole core: its SMT
//! siblings stay empty. Cores are given from the highest-numbered down (pCPU 0, where host
//! daemons and interrupts usually run, goes last), and one core always stays shared: host
//! work and every emulator thread run there. A VM already holding pCPUs that can be its own
//! (each vCPU pinned alone to a distinct core, not the lowest) keeps them, whatever the loads
//! do; the others take the free cores in name order. A VM the
//! host cannot give its cores to is left shared, with the reason ([`Dedication::left_shared`]).
//! No core is given where a vCPU the operator left alone is pinned.

use std::collections::BTreeSet;

use crate::{CpuSet, Placement, Snapshot, VcpuPin};

/// What the host dedicates this tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dedication {
    /// Each dedicated VM (by name) with the pCPU of each of its vCPUs, in vCPU order.
    pub vms: Vec<(String, Vec<u32>)>,
    /// Every pCPU taken by them, with their SMT siblings.
    pub reserved: CpuSet,
    /// The pCPUs left for everything else.
    pub shared: CpuSet,
    /// Dedicated VMs left shared, with why.
    pub left_shared: Vec<(String, String)>,
}

impl Dedication {
    /// The pCPUs of VM `name`'s vCPUs, if it has them to itself.
    pub fn of(&self, name: &str) -> Option<&[u32]> {
        self.vms
            .iter()
            .find(|(vm, _)| vm == name)
            .map(|(_, pcpus)| pcpus.as_slice())
    }

    /// Whether pCPU `id` is some dedicated VM's.
    pub fn is_reserved(&self, id: u32) -> bool {
        self.reserved.contains(id)
    }

    /// The pins that put each dedicated vCPU of `snapshot` on its own pCPU, where it is not
    /// pinned there alone already; in VM order.
    pub fn pins(&self, snapshot: &Snapshot) -> Vec<VcpuPin> {
        let mut pins = Vec::new();
        for (name, own) in &self.vms {
            let Some(vm) = snapshot.vm(name) else {
                continue;
            };
            for (v, &cpu) in vm.vcpus.iter().zip(own) {
                if v.affinity.only() != Some(cpu) {
                    pins.push(VcpuPin {
                        vm: vm.name.clone(),
                        vcpu: v.id,
                        cpus: CpuSet::single(cpu),
                    });
                }
            }
        }
        pins
    }
}

/// The dedication of `snapshot`'s host.
pub fn dedicate(snapshot: &Snapshot) -> Dedication {
    let host = snapshot.host();
    let all: CpuSet = host.pcpus.iter().map(|p| p.pcpu.id).collect();
    let wanted: Vec<&crate::VmView> = snapshot
        .vms()
        .iter()
        .filter(|vm| vm.control.cpu_managed && vm.control.placement == Some(Placement::Dedicated))
        .collect();
    if wanted.is_empty() {
        return Dedication {
            shared: all,
            ..Dedication::default()
        };
    }
    // Cores as pCPU id sets, the highest first.
    let mut cores: Vec<Vec<u32>> = host
        .topology()
        .iter()
        .flat_map(|n| n.cores.iter())
        .flat_map(|c| {
            let ids: Vec<u32> = c.pcpus.iter().map(|&i| host.pcpus[i].pcpu.id).collect();
            if c.core_id.is_some() {
                vec![ids]
            } else {
                ids.into_iter().map(|id| vec![id]).collect()
            }
        })
        .collect();
    cores.sort_by_key(|c| std::cmp::Reverse(c.iter().max().copied()));
    let core_of = |id: u32| cores.iter().position(|c| c.contains(&id));
    // Cores where a vCPU left alone is pinned cannot be given.
    let mut taken: BTreeSet<usize> = snapshot
        .vms()
        .iter()
        .filter(|vm| !vm.control.cpu_managed)
        .flat_map(|vm| vm.vcpus.iter().filter_map(|v| v.affinity.only()))
        .filter_map(core_of)
        .collect();
    // One core stays shared: at most all but one are given.
    let mut budget = cores.len().saturating_sub(1);
    let mut out = Dedication::default();
    // What each VM holds now, if it can be its own: each vCPU alone on a distinct core.
    let holding = |vm: &crate::VmView| -> Option<Vec<(u32, usize)>> {
        let pcpus: Vec<(u32, usize)> = vm
            .vcpus
            .iter()
            .map(|v| v.affinity.only().and_then(|id| Some((id, core_of(id)?))))
            .collect::<Option<_>>()?;
        let distinct: BTreeSet<usize> = pcpus.iter().map(|p| p.1).collect();
        (distinct.len() == pcpus.len() && !pcpus.is_empty()).then_some(pcpus)
    };
    // (Not on the lowest core: the one kept shared when nothing else is.)
    let lowest = cores.len().saturating_sub(1);
    let (mut keep, mut new): (Vec<_>, Vec<_>) = wanted.into_iter().partition(|vm| {
        holding(vm).is_some_and(|h| {
            h.iter()
                .all(|(_, core)| !taken.contains(core) && *core != lowest)
        })
    });
    // Those holding theirs first (they keep them), then the rest, both in name order.
    let mut given: Vec<(String, Vec<u32>)> = Vec::new();
    for vm in keep.drain(..) {
        let h = holding(vm).unwrap_or_default();
        if h.len() > budget || h.iter().any(|(_, core)| taken.contains(core)) {
            new.push(vm);
            continue;
        }
        budget -= h.len();
        taken.extend(h.iter().map(|p| p.1));
        given.push((vm.name.clone(), h.into_iter().map(|p| p.0).collect()));
    }
    new.sort_by(|a, b| a.name.cmp(&b.name));
    for vm in new {
        let need = vm.vcpus.len();
        let free: Vec<usize> = (0..cores.len()).filter(|c| !taken.contains(c)).collect();
        // Never the last free core: it is the shared one.
        let can = free.len().saturating_sub(1).min(budget);
        if need == 0 || need > can {
            out.left_shared.push((
                vm.name.clone(),
                format!(
                    "it needs {need} pCPU{} of {} own (whole cores), and {can} can be given (one core stays shared)",
                    if need == 1 { "" } else { "s" },
                    if need == 1 { "its" } else { "their" },
                ),
            ));
            continue;
        }
        let cores_given = &free[..need];
        budget -= need;
        taken.extend(cores_given.iter().copied());
        // Its lowest pCPU of each core (the siblings stay empty).
        let pcpus = cores_given
            .iter()
            .map(|&c| cores[c].iter().min().copied().unwrap_or_default())
            .collect();
        given.push((vm.name.clone(), pcpus));
    }
    given.sort_by(|a, b| a.0.cmp(&b.0));
    out.reserved = given
        .iter()
        .flat_map(|(_, pcpus)| pcpus.iter().filter_map(|&id| core_of(id)))
        .flat_map(|c| cores[c].iter().copied())
        .collect();
    out.shared = all
        .iter()
        .filter(|&id| !out.reserved.contains(id))
        .collect();
    out.vms = given;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HostView, MemoryView, VcpuView};
    use crate::{CpuTune, Pcpu, VmControl, VmView};

    /// A VM: name, vCPUs, pinned to, placement, managed.
    type Vm<'a> = (&'a str, usize, Option<&'a [u32]>, Option<Placement>, bool);

    /// A host of `cores` cores of `threads` pCPUs (ids core-major) with `vms`.
    fn snap(cores: u32, threads: u32, vms: &[Vm]) -> Snapshot {
        let pcpus = (0..cores * threads)
            .map(|id| Pcpu {
                id,
                core_id: Some(id / threads),
                socket_id: Some(0),
                node_id: Some(0),
            })
            .collect();
        let host = HostView::new(pcpus, 1 << 24, 1 << 23);
        let vms = vms
            .iter()
            .map(|&(name, n, pinned, placement, managed)| VmView {
                name: name.into(),
                uuid: name.into(),
                vcpus: (0..n)
                    .map(|i| VcpuView {
                        id: i as u32,
                        load_pct: Some(50.0),
                        wait_pct: Some(0.0),
                        pcpu: None,
                        affinity: match pinned {
                            Some(p) => CpuSet::single(p[i]),
                            None => (0..cores * threads).collect(),
                        },
                    })
                    .collect(),
                memory: MemoryView::default(),
                oom_events: None,
                control: VmControl {
                    cpu_managed: managed,
                    placement,
                    ..VmControl::default()
                },
                cputune: CpuTune::default(),
            });
        Snapshot::builder(host)
            .tick(1)
            .interval_s(1.0)
            .vms(vms)
            .build()
            .unwrap()
    }

    const D: Option<Placement> = Some(Placement::Dedicated);

    #[test]
    fn a_dedicated_vm_gets_the_highest_pcpu_and_pcpu0_stays_shared() {
        let d = dedicate(&snap(
            2,
            1,
            &[("lat", 1, None, D, true), ("web", 1, None, None, true)],
        ));
        assert_eq!(d.of("lat"), Some(&[1][..]));
        assert_eq!(d.reserved.to_string(), "1");
        assert_eq!(d.shared.to_string(), "0");
        assert!(d.left_shared.is_empty());
        assert_eq!(d.of("web"), None);
    }

    #[test]
    fn with_smt_a_vcpu_takes_a_whole_core_and_the_sibling_stays_empty() {
        // 4 cores of 2 threads: pCPUs 6-7 are the top core.
        let d = dedicate(&snap(4, 2, &[("lat", 2, None, D, true)]));
        assert_eq!(d.of("lat"), Some(&[6, 4][..]));
        assert_eq!(d.reserved.to_string(), "4-7");
        assert_eq!(d.shared.to_string(), "0-3");
    }

    #[test]
    fn what_a_vm_holds_it_keeps_and_one_that_cannot_fit_is_left_shared_with_why() {
        // `b` holds pCPU 2 already; `a` comes later in name order but `b` keeps its pCPU.
        let d = dedicate(&snap(
            4,
            1,
            &[
                ("a", 1, None, D, true),
                ("b", 1, Some(&[2]), D, true),
                ("c", 2, None, D, true),
            ],
        ));
        assert_eq!(d.of("b"), Some(&[2][..]));
        assert_eq!(d.of("a"), Some(&[3][..]));
        // Two of four cores given, one must stay shared: one left, `c` needs two.
        assert_eq!(d.of("c"), None);
        assert_eq!(d.left_shared.len(), 1);
        assert_eq!(d.left_shared[0].0, "c");
        assert!(
            d.left_shared[0].1.contains("needs 2 pCPUs"),
            "{:?}",
            d.left_shared
        );
        assert_eq!(d.shared.to_string(), "0-1");
    }

    #[test]
    fn more_vcpus_than_the_host_can_dedicate_are_left_shared() {
        let d = dedicate(&snap(2, 1, &[("big", 2, None, D, true)]));
        assert!(d.vms.is_empty());
        assert_eq!(d.shared.to_string(), "0-1");
        assert!(
            d.left_shared[0].1.contains("1 can be given"),
            "{:?}",
            d.left_shared
        );
    }

    #[test]
    fn no_core_is_given_where_a_vm_left_alone_is_pinned_and_unmanaged_vms_are_not_dedicated() {
        let d = dedicate(&snap(
            3,
            1,
            &[("lat", 1, None, D, true), ("ops", 1, Some(&[2]), D, false)],
        ));
        assert_eq!(d.of("lat"), Some(&[1][..]));
        assert_eq!(d.of("ops"), None);
        assert!(d.left_shared.is_empty());
    }
}
