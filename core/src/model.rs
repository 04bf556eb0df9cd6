//! Raw samples of a host and its VMs, as a backend reports them: cumulative counters and
//! current values, with units in every name (libvirt mixes KiB, bytes, ns and seconds).

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
pub use vcoord_api::Pcpu;

/// Host-wide figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// Online pCPUs guests may run on.
    pub pcpus: Vec<Pcpu>,
    /// Host memory in total.
    pub mem_total_kib: u64,
    /// Host memory free now.
    pub mem_free_kib: u64,
    /// Pressure stall counters, where the host gives them.
    #[serde(default)]
    pub pressure: PressureSample,
    /// Each pCPU's busy time since boot (ns; everything but idle and I/O wait), by pCPU id,
    /// where the backend reads it.
    #[serde(default)]
    pub pcpu_busy_ns: Vec<(u32, u64)>,
    /// Run-queue wait of the host's threads outside the VMs' vCPUs (ns, cumulative since the
    /// backend started), each thread's wait counted on the pCPU it last ran on, by pCPU id,
    /// where the backend reads it.
    #[serde(default)]
    pub pcpu_other_wait_ns: Vec<(u32, u64)>,
    /// The kernel's same-page merging, where the backend reads it (the local host).
    #[serde(default)]
    pub ksm: Option<KsmSample>,
}

/// KSM as `/sys/kernel/mm/ksm` shows it, in pages of `page_kib`, and ksmd's run time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsmSample {
    /// `run`: 0 stopped, 1 merging, 2 stopped and unmerging.
    pub run: u64,
    /// Merged pages kept (`pages_shared`).
    pub pages_shared: u64,
    /// Pages sharing them: the pages merging saves (`pages_sharing`).
    pub pages_sharing: u64,
    /// Pages scanned that stay unique (`pages_unshared`).
    pub pages_unshared: u64,
    /// Pages changing too fast to merge (`pages_volatile`).
    pub pages_volatile: u64,
    /// Full scans of the mergeable memory since KSM started (`full_scans`).
    pub full_scans: u64,
    /// Pages scanned per wakeup (`pages_to_scan`).
    pub pages_to_scan: u64,
    /// Sleep between wakeups, ms (`sleep_millisecs`).
    pub sleep_millisecs: u64,
    /// The scan-rate advisor's mode (`none`, `scan-time`), where the kernel has one.
    pub advisor_mode: Option<String>,
    /// The kernel's base page size, KiB.
    pub page_kib: u64,
    /// ksmd's run time so far, ns, where found.
    pub ksmd_run_ns: Option<u64>,
}

/// Cumulative pressure stall counters of one resource (`/proc/pressure/<resource>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiSample {
    /// Time in which some task stalled, µs since boot.
    pub some_total_us: u64,
    /// Time in which every non-idle task stalled, µs since boot (where the kernel says).
    pub full_total_us: Option<u64>,
    /// The kernel's 10 s average of `some`, percent.
    pub some_avg10_pct: f64,
}

/// The host's pressure stall counters; a resource is absent where the kernel has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PressureSample {
    /// CPU.
    pub cpu: Option<PsiSample>,
    /// Memory.
    pub memory: Option<PsiSample>,
    /// I/O.
    pub io: Option<PsiSample>,
}

/// Cumulative counters of one vCPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuSample {
    /// vCPU number inside the VM.
    pub id: u32,
    /// Cumulative time this vCPU ran on a pCPU.
    pub run_time_ns: u64,
    /// Cumulative time it waited runnable for a pCPU (run-queue delay), when known.
    pub wait_time_ns: Option<u64>,
    /// pCPU it last ran on, when known.
    pub pcpu: Option<u32>,
    /// pCPUs it may run on.
    pub affinity: CpuSet,
}

/// Memory figures of one VM. Guest-reported ones are `None` when the guest has no balloon
/// driver or has not reported yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Most memory the VM may have (balloon fully deflated).
    pub max_kib: u64,
    /// Memory the VM has now (balloon "current"/"actual").
    pub actual_kib: u64,
    /// Memory the guest leaves completely unused.
    pub unused_kib: Option<u64>,
    /// Memory the guest sees in total.
    pub available_kib: Option<u64>,
    /// Memory the guest could use without swapping (unused + reclaimable caches).
    pub usable_kib: Option<u64>,
    /// Cumulative memory swapped in by the guest.
    pub swap_in_total_kib: Option<u64>,
    /// Cumulative memory swapped out by the guest.
    pub swap_out_total_kib: Option<u64>,
    /// Cumulative major page faults in the guest.
    pub major_faults_total: Option<u64>,
    /// When the guest last updated its statistics (seconds since the Unix epoch).
    pub stats_updated_s: Option<i64>,
    /// Its virtio-mem devices (`held` is set by the backend for an unusable device, and by the
    /// runtime for one that refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtio_mem: Vec<vcoord_api::VirtioMemView>,
    /// Whether its balloon reports free pages to the host.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// Memory pressure of its domain's cgroup v2 group (all its QEMU threads), where the host has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<PsiSample>,
}

/// Everything sampled about one VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSample {
    /// Domain name (unique on the host).
    pub name: String,
    /// Domain UUID; a VM that restarts under the same name gets a new identity only through it.
    pub uuid: String,
    /// Per-vCPU counters, ordered by vCPU id.
    pub vcpus: Vec<VcpuSample>,
    /// Memory figures.
    pub memory: MemorySample,
    /// Cumulative OOM kills seen in the guest, where the backend can tell (the simulator can).
    pub oom_events: Option<u64>,
    /// Its CPU tuning now (weight, quota, emulator affinity), where the backend reads it.
    #[serde(default, skip_serializing_if = "vcoord_api::CpuTune::is_empty")]
    pub cputune: vcoord_api::CpuTune,
    /// The operator's settings in the domain's own metadata, where there are some.
    #[serde(skip)]
    pub metadata: Option<crate::vmcontrol::VmSettings>,
}

/// One sample of a whole host, taken at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Monotonic time of the sample (the backend's clock).
    pub taken_ns: u64,
    /// Wall-clock time of the sample, seconds since the Unix epoch (for stats freshness).
    pub wall_s: f64,
    /// Host figures.
    pub host: HostSample,
    /// The VMs running now, ordered by name.
    pub vms: Vec<VmSample>,
}
