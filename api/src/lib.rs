//! What a vcoord policy sees and returns, for built-in policies and plugins alike.
//!
//! - [`Snapshot`]: the immutable view of one tick (host topology and pCPU loads, VMs, vCPUs,
//!   memory with its freshness, the guard's limits), built only through [`snapshot::Builder`],
//!   which enforces its invariants.
//! - [`CpuPlan`] and [`MemoryPlan`]: what a policy wants this tick.
//! - [`CpuPolicy`], [`MemoryPolicy`] and [`Policy`]: the traits a policy implements. The same
//!   source registers as a built-in ([`builtin_cpu_policy!`], [`builtin_memory_policy!`]) or is
//!   exported from a plugin (`vcoord_plugin::export_plugin!`).
//! - [`params!`]: typed parameters, defaults written once, validated with the key at fault.
//! - [`units`]: memory sizes as types; KiB (libvirt's unit) inside.
//! - [`placement`]: searches for balanced vCPU placements.
//! - [`dedicated`]: which pCPUs each dedicated VM has to itself.
//! - [`outcome`]: judging a policy's moves by their outcomes (settling, the prediction error).
//! - [`log`]: log lines from policies ([`info!`] and friends), wherever the policy runs.
//!
//! This crate has no libvirt, no FFI and no I/O.
#![forbid(unsafe_code)]

pub mod cpuset;
pub mod dedicated;
pub mod log;
pub mod outcome;
pub mod params;
pub mod placement;
pub mod plan;
pub mod policy;
pub mod snapshot;
pub mod stats;
pub mod units;

pub use cpuset::CpuSet;
pub use params::{ParamError, ParamSpec, Params, PerVm};
pub use plan::{BalloonTarget, CpuPlan, KsmPlan, MemoryPlan, VcpuPin, VmTune};
pub use policy::{CpuPolicy, Kind, MemoryPolicy, Policy, PolicyHealth};
pub use snapshot::{
    vcpu_demand_pct, Core, CpuTune, GuardLimits, HostPressure, HostView, InvalidSnapshot, KsmView,
    MemorySplit, MemoryView, Node, Pcpu, PcpuView, Placement, Snapshot, Stall, VcpuView,
    VirtioMemView, VmControl, VmView,
};
pub use units::{Kib, Mib};

#[doc(hidden)]
pub use inventory;
