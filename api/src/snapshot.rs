//! The immutable view a policy decides on. A [`Snapshot`] is made only by [`Builder::build`],
//! which sorts what must be sorted and refuses what cannot be true, so a policy may rely on:
//! pCPUs ascending by id and unique, VMs ascending by name and unique, vCPUs of each VM
//! ascending by id and unique, every figure finite and not negative.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::units::Kib;

/// One physical CPU and where it sits in the host topology (NUMA node -> socket -> core ->
/// pCPU), where known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pcpu {
    /// pCPU id as libvirt numbers it.
    pub id: u32,
    /// Core id (SMT siblings share it).
    pub core_id: Option<u32>,
    /// Socket (package) id.
    pub socket_id: Option<u32>,
    /// NUMA node id.
    pub node_id: Option<u32>,
}

impl Pcpu {
    /// A pCPU with unknown topology.
    pub fn plain(id: u32) -> Self {
        Self {
            id,
            core_id: None,
            socket_id: None,
            node_id: None,
        }
    }

    /// Whether `other` is an SMT sibling of this pCPU (same core of the same socket).
    pub fn is_sibling_of(&self, other: &Pcpu) -> bool {
        self.id != other.id
            && self.core_id.is_some()
            && self.core_id == other.core_id
            && self.socket_id == other.socket_id
    }
}

/// One pCPU in a snapshot: its place in the topology and its load this tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PcpuView {
    /// Where it sits.
    #[serde(flatten)]
    pub pcpu: Pcpu,
    /// The sum of the loads of the vCPUs that last ran here, percent of one pCPU, at most 100.
    pub load_pct: f64,
    /// Time it was busy outside the vCPUs in the snapshot (host daemons, QEMU's emulator and
    /// I/O threads, VMs left out, other tenants), percent of the pCPU; `None` where not
    /// measured (or measuring is switched off: `cpu_capacity = "whole"`).
    #[serde(default)]
    pub other_pct: Option<f64>,
    /// Run-queue wait of that load: the time the host's threads outside the VMs' vCPUs were
    /// runnable but waiting, counted on the pCPU each last ran on, percent of the pCPU, at most
    /// 100; `None` where not measured. With `other_pct`, what the host's own work wanted here
    /// ([`Self::other_demand_pct`]), not only what it got.
    #[serde(default)]
    pub other_wait_pct: Option<f64>,
}

impl PcpuView {
    /// What it offers the vCPUs: 100% less its non-VM load (all of it when not measured).
    pub fn capacity_pct(&self) -> f64 {
        100.0 - self.other_pct.unwrap_or(0.0)
    }

    /// What the load outside the VMs wanted here, as a vCPU's demand is: its run time plus its
    /// run-queue wait (where measured), percent of the pCPU; `None` where not measured.
    pub fn other_demand_pct(&self) -> Option<f64> {
        self.other_pct
            .map(|run| run + self.other_wait_pct.unwrap_or(0.0))
    }
}

/// Limits the guard enforces on every plan; policies read them here instead of repeating them
/// in their own parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardLimits {
    /// No balloon target below this.
    pub guest_floor_kib: u64,
    /// Grants never take the memory available to guests below this.
    pub host_reserve_kib: u64,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            guest_floor_kib: Kib::from_mib(200).get(),
            host_reserve_kib: Kib::from_mib(200).get(),
        }
    }
}

/// One NUMA node of the host and its cores (see [`HostView::topology`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Node id, where known (`None` gathers the pCPUs of unknown node).
    pub id: Option<u32>,
    /// Its cores, by socket and core id.
    pub cores: Vec<Core>,
}

/// One core: its pCPUs (SMT siblings), as indices into [`HostView::pcpus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Core {
    /// Socket id, where known.
    pub socket_id: Option<u32>,
    /// Core id, where known (a pCPU of unknown core is a core of its own).
    pub core_id: Option<u32>,
    /// Indices of its pCPUs in [`HostView::pcpus`], ascending.
    pub pcpus: Vec<usize>,
}

/// Pressure stall information of one resource on the host (Linux PSI, `/proc/pressure/*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Share of the last interval in which some task stalled on the resource, percent (`None`
    /// on the first sample).
    pub some_pct: Option<f64>,
    /// Share of it in which every non-idle task stalled, percent (`None` where the kernel
    /// gives no `full` line, or on the first sample).
    pub full_pct: Option<f64>,
    /// The kernel's own 10 s average of `some`, percent.
    pub some_avg10_pct: f64,
}

impl Stall {
    /// The stall to act on: the last interval's `some`, or the kernel's 10 s average before
    /// there is one.
    pub fn some_now_pct(&self) -> f64 {
        self.some_pct.unwrap_or(self.some_avg10_pct)
    }
}

/// Pressure stall information of the host; each resource absent where the kernel (or the
/// backend) gives none. Absent is no signal, never zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPressure {
    /// Tasks waiting for a CPU.
    pub cpu: Option<Stall>,
    /// Tasks waiting for memory (reclaim, swap-in, thrashing).
    pub memory: Option<Stall>,
    /// Tasks waiting for I/O.
    pub io: Option<Stall>,
}

impl HostPressure {
    /// Each resource by the name the kernel gives its file (`cpu`, `memory`, `io`).
    pub fn by_resource(&self) -> [(&'static str, Option<Stall>); 3] {
        [("cpu", self.cpu), ("memory", self.memory), ("io", self.io)]
    }
}

/// Host-wide figures of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// pCPUs guests may run on, ascending by id.
    pub pcpus: Vec<PcpuView>,
    /// Host memory in total.
    pub mem_total_kib: u64,
    /// Host memory free, as the host reports it.
    pub mem_free_kib: u64,
    /// Memory the coordinator may hand to guests: the host's free memory, or less when a guest
    /// memory budget is set (`min(free, budget - sum of guests' actual)`), less what earlier
    /// grants still in flight (balloons deflating toward a higher target) will take.
    pub guest_free_kib: u64,
    /// The configured guest memory budget, if any.
    pub guest_budget_kib: Option<u64>,
    /// The guard's limits.
    pub limits: GuardLimits,
    /// Pressure stall information, where the host gives it.
    #[serde(default)]
    pub pressure: HostPressure,
    /// The kernel's same-page merging, where the backend reads it (the local host).
    #[serde(default)]
    pub ksm: Option<KsmView>,
}

/// The kernel's same-page merging (KSM) on the host: whether ksmd is merging, what merging
/// saves, how fast it scans and what it costs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KsmView {
    /// ksmd is merging (`run` = 1).
    pub running: bool,
    /// Memory merging saves: the pages that share a merged page (`pages_sharing`), KiB.
    pub saved_kib: u64,
    /// The merged pages kept for them (`pages_shared`), KiB.
    pub shared_kib: u64,
    /// Pages scanned that stay unique (`pages_unshared`), KiB.
    pub unshared_kib: u64,
    /// Pages changing too fast to merge (`pages_volatile`), KiB.
    pub volatile_kib: u64,
    /// Full scans of the mergeable memory since KSM started.
    pub full_scans: u64,
    /// Pages scanned per wakeup (`pages_to_scan`).
    pub pages_to_scan: u64,
    /// Sleep between wakeups, ms (`sleep_millisecs`).
    pub sleep_ms: u64,
    /// The kernel's scan-rate advisor mode (`none`, `scan-time`), where the kernel has one.
    pub advisor: Option<String>,
    /// ksmd's CPU time over the last interval, percent of one pCPU, where measured.
    pub ksmd_cpu_pct: Option<f64>,
    /// Plans may change it (`[host] ksm = "auto"`); `false` where the operator runs KSM
    /// (`ksm = "leave"`): the guard refuses every change.
    #[serde(default)]
    pub managed: bool,
}

impl KsmView {
    /// Its settings as a plan would write them.
    pub fn settings(&self) -> crate::plan::KsmPlan {
        crate::plan::KsmPlan {
            run: self.running,
            pages_to_scan: self.pages_to_scan,
            sleep_ms: self.sleep_ms,
        }
    }
}

impl HostView {
    /// A host with these pCPUs (all idle) and memory figures, and default guard limits.
    pub fn new(pcpus: Vec<Pcpu>, mem_total_kib: u64, mem_free_kib: u64) -> Self {
        Self {
            pcpus: pcpus
                .into_iter()
                .map(|pcpu| PcpuView {
                    pcpu,
                    load_pct: 0.0,
                    other_pct: None,
                    other_wait_pct: None,
                })
                .collect(),
            mem_total_kib,
            mem_free_kib,
            guest_free_kib: mem_free_kib,
            guest_budget_kib: None,
            limits: GuardLimits::default(),
            pressure: HostPressure::default(),
            ksm: None,
        }
    }

    /// The host as NUMA node -> core -> pCPU, nodes and cores in id order. Each pCPU's load is
    /// `pcpus[index].load_pct`.
    pub fn topology(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = Vec::new();
        for (index, p) in self.pcpus.iter().enumerate() {
            let p = &p.pcpu;
            let node = match nodes.iter().position(|n| n.id == p.node_id) {
                Some(i) => &mut nodes[i],
                None => {
                    nodes.push(Node {
                        id: p.node_id,
                        cores: Vec::new(),
                    });
                    nodes.last_mut().expect("just pushed")
                }
            };
            let same_core = |c: &Core| {
                p.core_id.is_some() && c.core_id == p.core_id && c.socket_id == p.socket_id
            };
            match node.cores.iter_mut().find(|c| same_core(c)) {
                Some(core) => core.pcpus.push(index),
                None => node.cores.push(Core {
                    socket_id: p.socket_id,
                    core_id: p.core_id,
                    pcpus: vec![index],
                }),
            }
        }
        nodes.sort_by_key(|n| n.id);
        for n in &mut nodes {
            n.cores
                .sort_by_key(|c| (c.socket_id, c.core_id, c.pcpus[0]));
        }
        nodes
    }

    /// The SMT siblings of the pCPU at `index` (pCPUs of the same core), as indices into
    /// `pcpus`.
    pub fn siblings(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        let me = self.pcpus.get(index).map(|p| &p.pcpu);
        self.pcpus
            .iter()
            .enumerate()
            .filter(move |(_, q)| me.is_some_and(|me| me.is_sibling_of(&q.pcpu)))
            .map(|(j, _)| j)
    }
}

/// One vCPU as a policy sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuView {
    /// vCPU number inside its VM.
    pub id: u32,
    /// Time it ran over the last interval, percent of one pCPU; `None` before the second sample.
    pub load_pct: Option<f64>,
    /// Time it waited for a pCPU while runnable over the last interval, percent; `None` when
    /// unknown.
    pub wait_pct: Option<f64>,
    /// pCPU it last ran on.
    pub pcpu: Option<u32>,
    /// pCPUs it may run on now.
    pub affinity: CpuSet,
}

impl VcpuView {
    /// The pCPU this vCPU is counted on: where it last ran, or its only allowed pCPU.
    pub fn placed_on(&self) -> Option<u32> {
        self.pcpu.or_else(|| self.affinity.only())
    }

    /// Its demand over the last interval: see [`vcpu_demand_pct`].
    pub fn demand_pct(&self) -> Option<f64> {
        vcpu_demand_pct(self.load_pct, self.wait_pct)
    }
}

/// A vCPU's demand over an interval, percent of one pCPU: the time it ran plus the time it
/// waited to run (runnable, but its pCPU busy), at most one pCPU's worth, since one vCPU cannot
/// use more. Two busy vCPUs sharing a pCPU each show 100, where their run time alone shows 50.
/// `None` while its run time is unknown (before a second sample); unknown wait counts as none.
pub fn vcpu_demand_pct(load_pct: Option<f64>, wait_pct: Option<f64>) -> Option<f64> {
    Some((load_pct? + wait_pct.unwrap_or(0.0)).clamp(0.0, 100.0))
}

/// Memory of one VM as a policy sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryView {
    /// Most memory the VM may have.
    pub max_kib: u64,
    /// Memory the VM has now.
    pub actual_kib: u64,
    /// Memory the guest leaves unused (`None` when no fresh guest statistics), as of its last
    /// report.
    pub unused_kib: Option<u64>,
    /// Memory the guest counts as its own (its total), as of the same report: it follows the
    /// balloon, so `available - unused` is what the guest used then, whatever the balloon did
    /// since.
    #[serde(default)]
    pub available_kib: Option<u64>,
    /// Memory the VM has that its guest does not count in `available_kib` (kernel, firmware),
    /// as measured while the balloon stood still; `None` until measured.
    #[serde(default)]
    pub unavailable_kib: Option<u64>,
    /// Memory the guest could use without swapping.
    pub usable_kib: Option<u64>,
    /// Swapped in over the last interval.
    pub swap_in_kib: Option<u64>,
    /// Swapped out over the last interval.
    pub swap_out_kib: Option<u64>,
    /// Major faults over the last interval.
    pub major_faults: Option<u64>,
    /// Major faults a second over the interval between the guest's last two statistics
    /// reports. The guest's counters move only when it reports (every few seconds), so a
    /// per-tick delta reads zero between reports and a whole report's worth at one; this rate
    /// does not. `None` until two reports were seen, and while the statistics are stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_fault_rate: Option<f64>,
    /// KiB swapped in and out a second, over the same interval as `major_fault_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_rate_kib_s: Option<f64>,
    /// Whether the guest's statistics are recent enough to act on. Never balloon a VM without
    /// fresh statistics.
    pub stats_fresh: bool,
    /// When the guest last reported its statistics (wall clock, seconds since the Unix epoch),
    /// where known. Guests report every few seconds, not every tick, and an idle guest reports
    /// the same figures again: state that ages should age with this time.
    #[serde(default)]
    pub last_report_s: Option<f64>,
    /// Its virtio-mem devices, in the domain's order (none for a balloon-only VM). Their
    /// plugged memory counts in `actual_kib` and their sizes in `max_kib`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem: Vec<VirtioMemView>,
    /// Whether the balloon has free page reporting on: the guest hands pages it frees back to
    /// the host by itself (the host's free memory rises, `actual_kib` does not move).
    #[serde(default)]
    pub free_page_reporting: bool,
    /// How much the VM's own tasks stalled on memory (Linux pressure stall information of its
    /// QEMU process's cgroup v2 group); `None` where the host has no such group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<Stall>,
}

/// A virtio-mem device: memory the host plugs into the guest in blocks, beside the boot
/// memory, up to the device's size. The guest follows `requested` block by block; `current`
/// is what it has plugged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtioMemView {
    /// The device's name in the domain (its alias, `virtiomem0`).
    pub alias: String,
    /// Most it can plug.
    pub size_kib: u64,
    /// Its block: requests are multiples of it.
    pub block_kib: u64,
    /// What the guest was last asked to plug.
    pub requested_kib: u64,
    /// What the guest has plugged.
    pub current_kib: u64,
    /// The guest NUMA node it plugs into.
    pub node: Option<u32>,
    /// vcoord leaves it where it is: the guest did not follow its last request in time (held
    /// until a while has passed), or the device's definition is unusable. Only `current` is
    /// reachable.
    #[serde(default)]
    pub held: bool,
}

/// How a memory target is carried out on a VM: what each virtio-mem device is asked to plug,
/// and the balloon target (which libvirt counts over the boot memory only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySplit {
    /// The balloon target, at most the boot memory.
    pub balloon_kib: u64,
    /// The request of each virtio-mem device, in the domain's order.
    pub requested_kib: Vec<u64>,
}

impl MemoryView {
    /// The memory it booted with: what the balloon works over.
    pub fn boot_kib(&self) -> u64 {
        let devices: u64 = self.virtio_mem.iter().map(|d| d.size_kib).sum();
        self.max_kib.saturating_sub(devices)
    }

    /// Memory its virtio-mem devices have plugged.
    pub fn plugged_kib(&self) -> u64 {
        self.virtio_mem.iter().map(|d| d.current_kib).sum()
    }

    /// The most it can be given now: `max_kib`, less what held devices cannot plug.
    pub fn reachable_max_kib(&self) -> u64 {
        let out_of_reach: u64 = self
            .virtio_mem
            .iter()
            .filter(|d| d.held)
            .map(|d| d.size_kib.saturating_sub(d.current_kib))
            .sum();
        self.max_kib.saturating_sub(out_of_reach)
    }

    /// How to give it `target_kib` (at most [`Self::reachable_max_kib`]): above the boot
    /// memory through virtio-mem, each device in turn asked for whole blocks up to its size;
    /// the balloon takes the rest, below the boot memory (so the fine part of a target is the
    /// balloon's, the coarse part the devices'). A held device stays where it is.
    pub fn split(&self, target_kib: u64) -> MemorySplit {
        let boot = self.boot_kib();
        let mut beyond = target_kib.saturating_sub(boot);
        let mut requested = Vec::with_capacity(self.virtio_mem.len());
        for d in &self.virtio_mem {
            let r = if d.held {
                d.current_kib
            } else {
                let block = d.block_kib.max(1);
                (beyond.div_ceil(block) * block).min(d.size_kib / block * block)
            };
            beyond = beyond.saturating_sub(r);
            requested.push(r);
        }
        let plugged: u64 = requested.iter().sum();
        MemorySplit {
            balloon_kib: target_kib.saturating_sub(plugged).min(boot),
            requested_kib: requested,
        }
    }

    /// Memory in use in the VM, in the balloon's terms (so `actual - used` is what is unused
    /// now), when the guest reported. From the guest's own figures of one report where they
    /// are known (`unavailable + available - unused`): guests report every few seconds while
    /// the balloon size is read live, so `actual - unused` mixes two moments and reads a
    /// balloon's move as growth or as a free. Otherwise `actual - unused`.
    pub fn used_kib(&self) -> Option<u64> {
        let unused = self.unused_kib?;
        Some(match (self.available_kib, self.unavailable_kib) {
            (Some(available), Some(unavailable)) => {
                (unavailable + available).saturating_sub(unused)
            }
            _ => self.actual_kib.saturating_sub(unused),
        })
    }
}

/// What the operator lets vcoord do with one VM, and the limits they set for it (from the
/// host configuration's `[[host.vm]]` rules and the domain's own vcoord metadata). The guard
/// enforces it whatever a policy plans; policies should plan within it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmControl {
    /// vcoord may pin this VM's vCPUs. An ignored VM's load still counts on its pCPUs.
    pub cpu_managed: bool,
    /// vcoord may change this VM's balloon target.
    pub memory_managed: bool,
    /// The VM is never made smaller than this.
    pub min_kib: Option<u64>,
    /// The VM is never made larger than this.
    pub max_kib: Option<u64>,
    /// Its weight when memory is short (1 when unset).
    pub shares: Option<f64>,
    /// How its vCPUs should be placed, where the operator said.
    #[serde(default)]
    pub placement: Option<Placement>,
    /// Its CPU weight (libvirt's `cpu_shares`), where the operator set one.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Never capped below this much CPU in all, in percent of one pCPU.
    #[serde(default)]
    pub cpu_min_pct: Option<f64>,
    /// Never given more than this much CPU in all, in percent of one pCPU (a cap policies set
    /// as a vCPU quota).
    #[serde(default)]
    pub cpu_max_pct: Option<f64>,
}

/// How an operator wants a VM's vCPUs placed (`ignore` is `cpu_managed = false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Each vCPU on one pCPU.
    Pin,
    /// The VM on a group of pCPUs (a NUMA node, a core); the host scheduler places inside it.
    Group,
    /// Each vCPU on a pCPU of its own (a whole core where the host has SMT), nothing else
    /// there, its emulator threads on the shared pCPUs ([`crate::dedicated`]).
    Dedicated,
}

/// A VM's CPU tuning in libvirt's terms: its weight, its vCPUs' quota and period, and where its
/// emulator threads run. In a snapshot, what the domain has (`None`: not set, the host's
/// default); in a plan, what the policy wants (`None`: leave as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTune {
    /// Relative CPU weight (`cpu_shares`; the cgroup default is 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// Run time each vCPU may have per period, µs (`vcpu_quota`; -1 is no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_quota_us: Option<i64>,
    /// The quota's period, µs (`vcpu_period`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_period_us: Option<u64>,
    /// pCPUs the emulator threads (QEMU's main loop and I/O) may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<CpuSet>,
}

impl CpuTune {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The cap the quota puts on a VM of `vcpus` vCPUs, in percent of one pCPU; `None` when
    /// there is no quota (unset or -1). A quota without a period is taken over libvirt's default
    /// period of 100 ms.
    pub fn cap_pct(&self, vcpus: usize) -> Option<f64> {
        let quota = self.vcpu_quota_us.filter(|&q| q > 0)?;
        let period = self.vcpu_period_us.unwrap_or(DEFAULT_PERIOD_US).max(1);
        Some(quota as f64 / period as f64 * 100.0 * vcpus as f64)
    }

    /// What of `wanted` differs from this (the fields to change), or `None` if nothing does.
    pub fn changes_to(&self, wanted: &CpuTune) -> Option<CpuTune> {
        let pick = |now: Option<u64>, want: Option<u64>| want.filter(|w| Some(*w) != now);
        let out = CpuTune {
            cpu_shares: pick(self.cpu_shares, wanted.cpu_shares),
            vcpu_quota_us: wanted
                .vcpu_quota_us
                .filter(|w| Some(*w) != self.vcpu_quota_us),
            vcpu_period_us: pick(self.vcpu_period_us, wanted.vcpu_period_us),
            emulator: wanted
                .emulator
                .clone()
                .filter(|w| Some(w) != self.emulator.as_ref()),
        };
        (!out.is_empty()).then_some(out)
    }

    /// This, with what `change` sets laid over it.
    pub fn with(&self, change: &CpuTune) -> CpuTune {
        CpuTune {
            cpu_shares: change.cpu_shares.or(self.cpu_shares),
            vcpu_quota_us: change.vcpu_quota_us.or(self.vcpu_quota_us),
            vcpu_period_us: change.vcpu_period_us.or(self.vcpu_period_us),
            emulator: change.emulator.clone().or_else(|| self.emulator.clone()),
        }
    }
}

/// libvirt's default vCPU period, µs.
pub const DEFAULT_PERIOD_US: u64 = 100_000;

impl Default for VmControl {
    fn default() -> Self {
        Self {
            cpu_managed: true,
            memory_managed: true,
            min_kib: None,
            max_kib: None,
            shares: None,
            placement: None,
            cpu_shares: None,
            cpu_min_pct: None,
            cpu_max_pct: None,
        }
    }
}

/// One VM as a policy sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// Domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// vCPUs, ordered by id.
    pub vcpus: Vec<VcpuView>,
    /// Memory figures.
    pub memory: MemoryView,
    /// OOM kills in the guest over the last interval, where the backend can tell.
    pub oom_events: Option<u64>,
    /// What the operator lets vcoord do with it.
    #[serde(default)]
    pub control: VmControl,
    /// Its CPU tuning now (weight, quota, emulator affinity), where the backend reads it.
    #[serde(default)]
    pub cputune: CpuTune,
}

impl VmView {
    /// The CPU weight and cap its operator set, in libvirt's terms: `cpu_shares`, and a vCPU
    /// quota that holds the whole VM to `cpu_max_pct` over libvirt's default period (at least
    /// 1 ms a vCPU). Unset where the operator set nothing; no emulator affinity.
    pub fn operator_tune(&self) -> CpuTune {
        let c = &self.control;
        let quota = c.cpu_max_pct.filter(|_| !self.vcpus.is_empty()).map(|max| {
            let per_vcpu = max / 100.0 / self.vcpus.len() as f64;
            ((per_vcpu * DEFAULT_PERIOD_US as f64).floor() as i64).max(1_000)
        });
        CpuTune {
            cpu_shares: c.cpu_shares,
            vcpu_quota_us: quota,
            vcpu_period_us: quota.map(|_| DEFAULT_PERIOD_US),
            emulator: None,
        }
    }
}

/// What one tick sees of the host and its VMs. Utilizations come from counter deltas between
/// this sample and the previous one; a VM seen for the first time has none yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Parts")]
pub struct Snapshot {
    tick: u64,
    interval_s: f64,
    wall_s: f64,
    host: HostView,
    vms: Vec<VmView>,
}

impl Snapshot {
    /// A builder for a snapshot of `host`.
    pub fn builder(host: HostView) -> Builder {
        Builder {
            sum_loads: false,
            parts: Parts {
                tick: 0,
                interval_s: 0.0,
                wall_s: 0.0,
                host,
                vms: Vec::new(),
            },
        }
    }

    /// Tick number, from 0.
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Time since the previous sample; 0 on the first tick.
    pub fn interval_s(&self) -> f64 {
        self.interval_s
    }

    /// Wall-clock time of the sample, seconds since the Unix epoch.
    pub fn wall_s(&self) -> f64 {
        self.wall_s
    }

    /// Host-wide figures.
    pub fn host(&self) -> &HostView {
        &self.host
    }

    /// The VMs, ascending by name.
    pub fn vms(&self) -> &[VmView] {
        &self.vms
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&VmView> {
        self.vms
            .binary_search_by(|vm| vm.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.vms[i])
    }

    /// Index of pCPU `id` in `host().pcpus`.
    pub fn pcpu_index(&self, id: u32) -> Option<usize> {
        self.host
            .pcpus
            .binary_search_by_key(&id, |p| p.pcpu.id)
            .ok()
    }

    /// Ids of the pCPUs, ascending.
    pub fn pcpu_ids(&self) -> Vec<u32> {
        self.host.pcpus.iter().map(|p| p.pcpu.id).collect()
    }

    /// Load of each pCPU, in the order of `host().pcpus`.
    pub fn pcpu_loads(&self) -> Vec<f64> {
        self.host.pcpus.iter().map(|p| p.load_pct).collect()
    }

    /// Non-VM load of each pCPU where measured, in the order of `host().pcpus`.
    pub fn pcpu_other_loads(&self) -> Vec<Option<f64>> {
        self.host.pcpus.iter().map(|p| p.other_pct).collect()
    }

    /// Whether any vCPU has a measured load yet.
    pub fn has_cpu_loads(&self) -> bool {
        self.vms
            .iter()
            .any(|vm| vm.vcpus.iter().any(|v| v.load_pct.is_some()))
    }

    /// A builder holding this snapshot's parts, to derive a changed one (tests, tools).
    pub fn to_builder(&self) -> Builder {
        Builder {
            sum_loads: false,
            parts: Parts {
                tick: self.tick,
                interval_s: self.interval_s,
                wall_s: self.wall_s,
                host: self.host.clone(),
                vms: self.vms.clone(),
            },
        }
    }
}

/// Why parts cannot make a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSnapshot(pub String);

impl fmt::Display for InvalidSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid snapshot: {}", self.0)
    }
}

impl std::error::Error for InvalidSnapshot {}

/// The parts of a snapshot, as written in records.
#[derive(Clone, Debug, Deserialize)]
struct Parts {
    tick: u64,
    interval_s: f64,
    wall_s: f64,
    host: HostView,
    vms: Vec<VmView>,
}

impl TryFrom<Parts> for Snapshot {
    type Error = InvalidSnapshot;

    fn try_from(parts: Parts) -> Result<Self, Self::Error> {
        Builder {
            parts,
            sum_loads: false,
        }
        .build()
    }
}

/// Assembles a [`Snapshot`] and checks it (see the module's documentation).
#[derive(Clone, Debug)]
pub struct Builder {
    parts: Parts,
    sum_loads: bool,
}

impl Builder {
    /// Tick number.
    pub fn tick(mut self, tick: u64) -> Self {
        self.parts.tick = tick;
        self
    }

    /// Time since the previous sample.
    pub fn interval_s(mut self, interval_s: f64) -> Self {
        self.parts.interval_s = interval_s;
        self
    }

    /// Wall-clock time of the sample.
    pub fn wall_s(mut self, wall_s: f64) -> Self {
        self.parts.wall_s = wall_s;
        self
    }

    /// Adds a VM.
    pub fn vm(mut self, vm: VmView) -> Self {
        self.parts.vms.push(vm);
        self
    }

    /// Adds VMs.
    pub fn vms(mut self, vms: impl IntoIterator<Item = VmView>) -> Self {
        self.parts.vms.extend(vms);
        self
    }

    /// Replaces the host view.
    pub fn host(mut self, host: HostView) -> Self {
        self.parts.host = host;
        self
    }

    /// Sets each pCPU's load, when built, to the sum of the loads of the vCPUs placed on it
    /// (VMs by name, vCPUs by id), capped at 100.
    pub fn loads_from_vcpus(mut self) -> Self {
        self.sum_loads = true;
        self
    }

    /// Sorts, checks and freezes the snapshot.
    pub fn build(self) -> Result<Snapshot, InvalidSnapshot> {
        let Parts {
            tick,
            interval_s,
            wall_s,
            mut host,
            mut vms,
        } = self.parts;
        let sum_loads = self.sum_loads;
        let bad = |what: String| Err(InvalidSnapshot(what));
        for (name, v) in [("interval_s", interval_s), ("wall_s", wall_s)] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} is {v}"));
            }
        }
        host.pcpus.sort_by_key(|p| p.pcpu.id);
        if let Some(w) = host.pcpus.windows(2).find(|w| w[0].pcpu.id == w[1].pcpu.id) {
            return bad(format!("pCPU {} appears twice", w[0].pcpu.id));
        }
        if let Some(p) = host.pcpus.iter().find(|p| !is_figure(p.load_pct)) {
            return bad(format!("pCPU {} has load {}", p.pcpu.id, p.load_pct));
        }
        if let Some((id, other)) = host
            .pcpus
            .iter()
            .filter_map(|p| Some((p.pcpu.id, p.other_pct?)))
            .find(|&(_, x)| !is_figure(x) || x > 100.0)
        {
            return bad(format!("pCPU {id} has non-VM load {other}"));
        }
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = vms.windows(2).find(|w| w[0].name == w[1].name) {
            return bad(format!("VM `{}` appears twice", w[0].name));
        }
        for vm in &mut vms {
            vm.vcpus.sort_by_key(|v| v.id);
            if let Some(w) = vm.vcpus.windows(2).find(|w| w[0].id == w[1].id) {
                return bad(format!("VM `{}` has vCPU {} twice", vm.name, w[0].id));
            }
            for v in &vm.vcpus {
                for (what, value) in [("load", v.load_pct), ("wait", v.wait_pct)] {
                    if let Some(x) = value.filter(|x| !is_figure(*x)) {
                        return bad(format!("VM `{}` vCPU {} has {what} {x}", vm.name, v.id));
                    }
                }
            }
            if let Some(t) = vm.memory.last_report_s.filter(|t| !t.is_finite()) {
                return bad(format!("VM `{}` has report time {t}", vm.name));
            }
            if let Some(s) = vm.control.shares.filter(|s| !(s.is_finite() && *s > 0.0)) {
                return bad(format!("VM `{}` has shares {s}", vm.name));
            }
            for (what, value) in [
                ("CPU minimum", vm.control.cpu_min_pct),
                ("CPU maximum", vm.control.cpu_max_pct),
            ] {
                if let Some(x) = value.filter(|x| !is_figure(*x)) {
                    return bad(format!("VM `{}` has {what} {x}%", vm.name));
                }
            }
        }
        if sum_loads {
            for p in &mut host.pcpus {
                p.load_pct = 0.0;
            }
            for vcpu in vms.iter().flat_map(|vm| vm.vcpus.iter()) {
                if let (Some(load), Some(cpu)) = (vcpu.load_pct, vcpu.placed_on()) {
                    if let Ok(i) = host.pcpus.binary_search_by_key(&cpu, |p| p.pcpu.id) {
                        host.pcpus[i].load_pct += load;
                    }
                }
            }
            for p in &mut host.pcpus {
                p.load_pct = p.load_pct.min(100.0);
            }
        }
        Ok(Snapshot {
            tick,
            interval_s,
            wall_s,
            host,
            vms,
        })
    }
}

/// A measured figure: finite and not negative.
fn is_figure(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024;

    /// 512 MiB booted, one 1 GiB device of 2 MiB blocks with `current` plugged.
    fn with_device(current_mib: u64, held: bool) -> MemoryView {
        MemoryView {
            max_kib: 1536 * MIB,
            actual_kib: (512 + current_mib) * MIB,
            virtio_mem: vec![VirtioMemView {
                alias: "virtiomem0".into(),
                size_kib: 1024 * MIB,
                block_kib: 2 * MIB,
                requested_kib: current_mib * MIB,
                current_kib: current_mib * MIB,
                node: Some(0),
                held,
            }],
            ..MemoryView::default()
        }
    }

    #[test]
    fn a_target_splits_into_whole_blocks_above_boot_and_the_balloon_below() {
        let m = with_device(0, false);
        assert_eq!(m.boot_kib(), 512 * MIB);
        let split = |t: u64| {
            let s = m.split(t);
            (s.balloon_kib, s.requested_kib)
        };
        // Below boot: the balloon alone, every device unplugged.
        assert_eq!(split(300 * MIB), (300 * MIB, vec![0]));
        assert_eq!(split(512 * MIB), (512 * MIB, vec![0]));
        // Above: whole blocks, rounded up; the balloon takes the odd MiB back.
        assert_eq!(split(700 * MIB), (512 * MIB, vec![188 * MIB]));
        assert_eq!(split(701 * MIB), (511 * MIB, vec![190 * MIB]));
        // Never beyond the device.
        assert_eq!(split(4096 * MIB), (512 * MIB, vec![1024 * MIB]));
        // Balloon-only VMs: the balloon, as before.
        let plain = MemoryView {
            max_kib: 1024 * MIB,
            ..MemoryView::default()
        };
        assert_eq!(plain.boot_kib(), 1024 * MIB);
        assert_eq!(plain.split(700 * MIB).balloon_kib, 700 * MIB);
    }

    #[test]
    fn a_held_device_stays_where_it_is_and_bounds_the_reach() {
        let m = with_device(128, true);
        assert_eq!(m.reachable_max_kib(), 640 * MIB);
        assert_eq!(m.split(600 * MIB).requested_kib, vec![128 * MIB]);
        assert_eq!(m.split(600 * MIB).balloon_kib, 472 * MIB);
        assert_eq!(with_device(128, false).reachable_max_kib(), 1536 * MIB);
    }

    fn vm(name: &str, vcpus: &[(u32, f64, u32)]) -> VmView {
        VmView {
            cputune: Default::default(),
            name: name.into(),
            uuid: format!("u-{name}"),
            vcpus: vcpus
                .iter()
                .map(|&(id, load, pcpu)| VcpuView {
                    id,
                    load_pct: Some(load),
                    wait_pct: None,
                    pcpu: Some(pcpu),
                    affinity: CpuSet::single(pcpu),
                })
                .collect(),
            memory: MemoryView::default(),
            oom_events: None,
            control: VmControl::default(),
        }
    }

    fn host(ids: &[u32]) -> HostView {
        HostView::new(
            ids.iter().copied().map(Pcpu::plain).collect(),
            8 << 20,
            4 << 20,
        )
    }

    #[test]
    fn builder_sorts_and_sums_loads() {
        let s = Snapshot::builder(host(&[1, 0]))
            .vm(vm("b", &[(1, 30.0, 1), (0, 20.0, 0)]))
            .vm(vm("a", &[(0, 90.0, 0)]))
            .loads_from_vcpus()
            .build()
            .unwrap();
        assert_eq!(s.pcpu_ids(), vec![0, 1]);
        assert_eq!(s.pcpu_loads(), vec![100.0, 30.0]);
        assert_eq!(s.vms()[0].name, "a");
        assert_eq!(s.vm("b").unwrap().vcpus[0].id, 0);
        assert_eq!(s.pcpu_index(1), Some(1));
        assert_eq!(s.pcpu_index(7), None);
    }

    #[test]
    fn builder_refuses_what_cannot_be() {
        let dup = Snapshot::builder(host(&[0]))
            .vm(vm("a", &[]))
            .vm(vm("a", &[]));
        assert!(dup.build().unwrap_err().0.contains("`a` appears twice"));
        let nan = Snapshot::builder(host(&[0])).vm(vm("a", &[(0, f64::NAN, 0)]));
        assert!(nan.build().unwrap_err().0.contains("load NaN"));
        assert!(Snapshot::builder(host(&[2, 2])).build().is_err());
        assert!(Snapshot::builder(host(&[0]))
            .vm(vm("a", &[(0, 1.0, 0), (0, 2.0, 0)]))
            .build()
            .is_err());
        assert!(Snapshot::builder(host(&[0]))
            .interval_s(-1.0)
            .build()
            .is_err());
    }

    #[test]
    fn deserializing_goes_through_the_checks() {
        let s = Snapshot::builder(host(&[0, 1]))
            .vm(vm("a", &[(0, 10.0, 1)]))
            .loads_from_vcpus()
            .build()
            .unwrap();
        let text = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let twice = text.replace(
            r#""vms":["#,
            &format!(r#""vms":[{},"#, serde_json::to_string(&s.vms()[0]).unwrap()),
        );
        assert!(serde_json::from_str::<Snapshot>(&twice).is_err());
    }

    #[test]
    fn siblings_share_a_core() {
        let mut h = host(&[0, 1, 2]);
        for (i, core) in [(0, 0), (1, 0), (2, 1)] {
            h.pcpus[i].pcpu.core_id = Some(core);
            h.pcpus[i].pcpu.socket_id = Some(0);
        }
        assert_eq!(h.siblings(0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(h.siblings(2).count(), 0);
        h.pcpus[2].pcpu.node_id = Some(1);
        let t = h.topology();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id, t[1].id), (None, Some(1)));
        assert_eq!(t[0].cores.len(), 1);
        assert_eq!(t[0].cores[0].pcpus, vec![0, 1]);
        assert_eq!(t[1].cores[0].pcpus, vec![2]);
        // Unknown cores are cores of their own.
        let plain = host(&[0, 1]).topology();
        assert_eq!(plain[0].cores.len(), 2);
    }
}
