//! FFI-safe types crossing the plugin boundary. They mirror vcoord-api's snapshot and plan
//! types field for field (units in the names); [`crate::convert`] converts both ways, and is
//! the only place that does.
//!
//! Changing any type here changes the ABI: bump this crate's version (minor before 1.0, major
//! after), and vcoord will refuse plugins built against the old one with a clear message.

// `#[sabi_trait]` expands to impls outside the items it annotates.
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
pub use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

/// The ABI version of this crate, as `major.minor.patch`.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One physical CPU guests may run on, with its load this tick.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Pcpu {
    /// pCPU id as libvirt numbers it.
    pub id: u32,
    /// Core id (SMT siblings share it), where known.
    pub core_id: ROption<u32>,
    /// Socket id, where known.
    pub socket_id: ROption<u32>,
    /// NUMA node id, where known.
    pub node_id: ROption<u32>,
    /// Sum of the loads of the vCPUs that last ran here, percent of one pCPU (at most 100).
    pub load_pct: f64,
    /// Busy time outside the snapshot's vCPUs, percent of the pCPU, where measured.
    pub other_pct: ROption<f64>,
    /// Run-queue wait of that load (its threads' time runnable but waiting), percent of the
    /// pCPU, where measured.
    pub other_wait_pct: ROption<f64>,
}

/// Pressure stall information of one resource on the host (Linux PSI).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// Share of the last interval in which some task stalled on it, percent.
    pub some_pct: ROption<f64>,
    /// Share in which every non-idle task stalled, percent.
    pub full_pct: ROption<f64>,
    /// The kernel's 10 s average of `some`, percent.
    pub some_avg10_pct: f64,
}

/// The host's pressure stall information; each resource absent where the host gives none.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Pressure {
    /// CPU.
    pub cpu: ROption<Stall>,
    /// Memory.
    pub memory: ROption<Stall>,
    /// I/O.
    pub io: ROption<Stall>,
}

/// One vCPU.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Vcpu {
    /// vCPU number inside its VM.
    pub id: u32,
    /// Time it ran over the last interval, percent of one pCPU; none before its second sample.
    pub load_pct: ROption<f64>,
    /// Time it waited for a pCPU while runnable, percent; none when unknown.
    pub wait_pct: ROption<f64>,
    /// pCPU it last ran on.
    pub pcpu: ROption<u32>,
    /// pCPUs it may run on now, ascending.
    pub affinity: RVec<u32>,
}

/// Memory figures of one VM.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Memory {
    /// Most memory the VM may have.
    pub max_kib: u64,
    /// Memory the VM has now.
    pub actual_kib: u64,
    /// Memory the guest leaves unused; none without fresh guest statistics.
    pub unused_kib: ROption<u64>,
    /// The guest's own total, as of the same report.
    pub available_kib: ROption<u64>,
    /// Memory outside the guest's total, measured with the balloon still.
    pub unavailable_kib: ROption<u64>,
    /// Memory the guest could use without swapping.
    pub usable_kib: ROption<u64>,
    /// Swapped in over the last interval.
    pub swap_in_kib: ROption<u64>,
    /// Swapped out over the last interval.
    pub swap_out_kib: ROption<u64>,
    /// Major page faults over the last interval.
    pub major_faults: ROption<u64>,
    /// Major faults a second between the guest's last two statistics reports.
    pub major_fault_rate: ROption<f64>,
    /// KiB swapped in and out a second between the guest's last two statistics reports.
    pub swap_rate_kib_s: ROption<f64>,
    /// Whether the guest statistics are recent enough to act on.
    pub stats_fresh: bool,
    /// When the guest last reported its statistics (seconds since the Unix epoch).
    pub last_report_s: ROption<f64>,
    /// Its virtio-mem devices, in the domain's order.
    pub virtio_mem: RVec<VirtioMem>,
    /// Whether its balloon reports free pages to the host.
    pub free_page_reporting: bool,
    /// How much its own tasks stalled on memory (its cgroup's pressure), where known.
    pub stall: ROption<Stall>,
}

/// A virtio-mem device of one VM.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct VirtioMem {
    /// Its alias in the domain.
    pub alias: RString,
    /// Most it can plug.
    pub size_kib: u64,
    /// Its block size.
    pub block_kib: u64,
    /// What the guest was last asked to plug.
    pub requested_kib: u64,
    /// What the guest has plugged.
    pub current_kib: u64,
    /// The guest NUMA node it plugs into.
    pub node: ROption<u32>,
    /// vcoord leaves it where it is (the guest refused a request, or it is unusable).
    pub held: bool,
}

/// One VM.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Vm {
    /// Domain name.
    pub name: RString,
    /// Domain UUID.
    pub uuid: RString,
    /// vCPUs, ordered by id.
    pub vcpus: RVec<Vcpu>,
    /// Memory figures.
    pub memory: Memory,
    /// OOM kills in the guest over the last interval, where known.
    pub oom_events: ROption<u64>,
    /// What the operator lets vcoord do with it, and its limits.
    pub control: Control,
    /// Its CPU tuning now.
    pub cputune: CpuTune,
}

/// A VM's CPU weight, vCPU quota and period, and emulator affinity. In a snapshot what it has
/// (none: the host's default); in a plan what to set (none: leave it).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct CpuTune {
    /// Relative CPU weight (`cpu_shares`).
    pub cpu_shares: ROption<u64>,
    /// Run time each vCPU may have per period, µs; -1 is no limit.
    pub vcpu_quota_us: ROption<i64>,
    /// The quota's period, µs.
    pub vcpu_period_us: ROption<u64>,
    /// pCPUs the emulator threads may run on, ascending.
    pub emulator: ROption<RVec<u32>>,
}

/// How the operator wants a VM's vCPUs placed.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Each vCPU on one pCPU.
    Pin,
    /// The VM on a group of pCPUs.
    Group,
    /// Each vCPU on a pCPU of its own, nothing else there.
    Dedicated,
}

/// What the operator lets vcoord do with one VM.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Control {
    /// vcoord may pin its vCPUs.
    pub cpu_managed: bool,
    /// vcoord may change its balloon target.
    pub memory_managed: bool,
    /// Never smaller than this.
    pub min_kib: ROption<u64>,
    /// Never larger than this.
    pub max_kib: ROption<u64>,
    /// Weight when memory is short.
    pub shares: ROption<f64>,
    /// How its vCPUs should be placed, where the operator said.
    pub placement: ROption<Placement>,
    /// Its CPU weight, where the operator set one.
    pub cpu_shares: ROption<u64>,
    /// Never capped below this much CPU, percent of one pCPU.
    pub cpu_min_pct: ROption<f64>,
    /// Never given more than this much CPU, percent of one pCPU.
    pub cpu_max_pct: ROption<f64>,
}

/// The kernel's same-page merging (KSM) on the host.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Ksm {
    /// ksmd is merging (`run` = 1).
    pub running: bool,
    /// Memory merging saves (`pages_sharing`), KiB.
    pub saved_kib: u64,
    /// Merged pages kept for them (`pages_shared`), KiB.
    pub shared_kib: u64,
    /// Pages scanned that stay unique, KiB.
    pub unshared_kib: u64,
    /// Pages changing too fast to merge, KiB.
    pub volatile_kib: u64,
    /// Full scans since KSM started.
    pub full_scans: u64,
    /// Pages scanned per wakeup.
    pub pages_to_scan: u64,
    /// Sleep between wakeups, ms.
    pub sleep_ms: u64,
    /// The kernel's scan-rate advisor mode, where it has one.
    pub advisor: ROption<RString>,
    /// ksmd's CPU over the last interval, percent of one pCPU, where measured.
    pub ksmd_cpu_pct: ROption<f64>,
    /// Plans may change it (`ksm = "auto"`).
    pub managed: bool,
}

/// KSM's settings as a memory plan wants them.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KsmPlan {
    /// ksmd merges (`run` = 1) or stops (`run` = 0).
    pub run: bool,
    /// Pages scanned per wakeup.
    pub pages_to_scan: u64,
    /// Sleep between wakeups, ms.
    pub sleep_ms: u64,
}

/// What one tick sees of the host. Immutable for the plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Tick number, from 0.
    pub tick: u64,
    /// Time since the previous sample; 0 on the first tick.
    pub interval_s: f64,
    /// Wall-clock time of the sample, seconds since the Unix epoch.
    pub wall_s: f64,
    /// pCPUs guests may run on, ascending by id.
    pub pcpus: RVec<Pcpu>,
    /// Host memory in total.
    pub mem_total_kib: u64,
    /// Host memory free.
    pub mem_free_kib: u64,
    /// Memory the coordinator may still hand to guests (free memory, or what the guest budget
    /// leaves, less grants still in flight).
    pub guest_free_kib: u64,
    /// The configured guest memory budget, if any.
    pub guest_budget_kib: ROption<u64>,
    /// The guard's floor: no balloon target below this.
    pub guest_floor_kib: u64,
    /// The guard's reserve: grants never take guest-free memory below this.
    pub host_reserve_kib: u64,
    /// Pressure stall information of the host.
    pub pressure: Pressure,
    /// KSM, where the host's is read.
    pub ksm: ROption<Ksm>,
    /// VMs, ordered by name.
    pub vms: RVec<Vm>,
}

/// Pin one vCPU to a set of pCPUs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct VcpuPin {
    /// Domain name.
    pub vm: RString,
    /// vCPU number.
    pub vcpu: u32,
    /// pCPUs the vCPU may run on.
    pub cpus: RVec<u32>,
}

/// Set one VM's CPU tuning (the fields it names).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct VmTune {
    /// Domain name.
    pub vm: RString,
    /// What to set.
    pub tune: CpuTune,
}

/// A CPU policy's plan: vCPUs not named keep their pinning, VMs not named their tuning.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct CpuPlan {
    /// Desired pinning.
    pub pins: RVec<VcpuPin>,
    /// Desired weights, quotas and emulator affinities.
    pub tunes: RVec<VmTune>,
    /// Why, in a few words.
    pub reason: RString,
}

/// Set one VM's balloon target.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct BalloonTarget {
    /// Domain name.
    pub vm: RString,
    /// Memory the VM should have (signed: a negative target is rejected by vcoord's guard).
    pub target_kib: i64,
    /// Why.
    pub reason: RString,
}

/// A memory policy's plan: VMs not named keep their balloon target.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct MemoryPlan {
    /// Desired balloon targets.
    pub targets: RVec<BalloonTarget>,
    /// Why, in a few words.
    pub reason: RString,
    /// KSM as the host should run it; none leaves it as it is.
    pub ksm: ROption<KsmPlan>,
}

/// A CPU policy instance living in a plugin. `Err` carries a panic message or a refusal.
#[sabi_trait]
pub trait CpuPolicyObject: Send {
    /// This tick's plan.
    #[sabi(last_prefix_field)]
    fn decide(&mut self, snapshot: &Snapshot) -> RResult<CpuPlan, RString>;
}

/// A memory policy instance living in a plugin.
#[sabi_trait]
pub trait MemoryPolicyObject: Send {
    /// This tick's plan.
    #[sabi(last_prefix_field)]
    fn decide(&mut self, snapshot: &Snapshot) -> RResult<MemoryPlan, RString>;
}

/// An owned CPU policy from a plugin.
pub type CpuPolicyBox = CpuPolicyObject_TO<'static, RBox<()>>;
/// An owned memory policy from a plugin.
pub type MemoryPolicyBox = MemoryPolicyObject_TO<'static, RBox<()>>;

/// Who a plugin is.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    /// Name shown in listings and logs.
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// One line on what it does.
    pub description: RStr<'static>,
    /// Whether `new_cpu_policy` builds a policy.
    pub has_cpu_policy: bool,
    /// Whether `new_memory_policy` builds a policy.
    pub has_memory_policy: bool,
}

/// Why a plugin could not build a policy: a parameter at fault (`key` set, a dotted path) or
/// another failure such as a panic (`key` empty).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct BuildError {
    /// The parameter at fault, or empty.
    pub key: RString,
    /// What is wrong.
    pub message: RString,
}

/// One parameter of a plugin policy, for listings.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Key in the `params` table.
    pub key: RString,
    /// Value type, in words.
    pub kind: RString,
    /// The default, as shown.
    pub default: RString,
    /// Unit.
    pub unit: RString,
    /// Smallest allowed value.
    pub min: f64,
    /// Largest allowed value.
    pub max: f64,
    /// What it does.
    pub doc: RString,
}

/// Severity of a plugin log line: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
pub type LogLevel = u8;

/// Where a plugin's log lines go.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct LogSink {
    /// Called with `(level, plugin label, message)`.
    pub func: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
}

/// The root module every plugin exports (through [`crate::export_plugin!`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginRef)))]
#[sabi(missing_field(panic))]
pub struct Plugin {
    /// Who the plugin is.
    pub info: extern "C" fn() -> PluginInfo,
    /// Hands the plugin where its log lines go, `(level, label, message)`, and the label to
    /// tag them with.
    pub set_log_sink: extern "C" fn(sink: LogSink, label: RStr<'_>),
    /// Builds its CPU policy from the host's parameters, given as TOML text; `Err` says what
    /// is wrong with them (or that the plugin has no CPU policy).
    pub new_cpu_policy: extern "C" fn(params_toml: RStr<'_>) -> RResult<CpuPolicyBox, BuildError>,
    /// Builds its memory policy, likewise.
    pub new_memory_policy:
        extern "C" fn(params_toml: RStr<'_>) -> RResult<MemoryPolicyBox, BuildError>,
    /// The parameters of its CPU policy (empty without one).
    pub cpu_params: extern "C" fn() -> RVec<ParamSpec>,
    /// The parameters of its memory policy (empty without one).
    #[sabi(last_prefix_field)]
    pub memory_params: extern "C" fn() -> RVec<ParamSpec>,
}

impl RootModule for PluginRef {
    declare_root_module_statics! {PluginRef}
    const BASE_NAME: &'static str = "vcoord_plugin";
    const NAME: &'static str = "vcoord policy plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
