//! What a policy is: a decision over an immutable snapshot that returns a plan. Policies keep
//! their own state between ticks but never touch the backend.

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::params::{ParamError, ParamSpec, Params};
use crate::snapshot::Snapshot;

/// Pin one vCPU to a set of pCPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuPin {
    /// Domain name.
    pub vm: String,
    /// vCPU number.
    pub vcpu: u32,
    /// pCPUs the vCPU may run on.
    pub cpus: CpuSet,
}

/// What a CPU policy wants this tick. An empty plan changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuPlan {
    /// Desired pinning; vCPUs not named keep theirs.
    pub pins: Vec<VcpuPin>,
    /// Why, in a few words with the figures that decided it.
    pub reason: String,
}

/// Set one VM's balloon target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BalloonTarget {
    /// Domain name.
    pub vm: String,
    /// Memory the VM should have. Signed so that a nonsensical plan (from a plugin, say) stays
    /// representable and is rejected by the guard rather than wrapped around.
    pub target_kib: i64,
    /// Why this VM gets this target.
    pub reason: String,
}

/// What a memory policy wants this tick. An empty plan changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Desired balloon targets; VMs not named keep theirs.
    pub targets: Vec<BalloonTarget>,
    /// Why, in a few words.
    pub reason: String,
}

/// Decides where vCPUs run.
pub trait CpuPolicy: Send {
    /// Returns this tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan;
}

/// Decides how much memory each VM has.
pub trait MemoryPolicy: Send {
    /// Returns this tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan;
}

/// A built-in CPU policy, registered with `inventory::submit!`.
pub struct CpuPolicyInfo {
    /// Name used in configurations.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its parameters.
    pub params: &'static [ParamSpec],
    /// Builds an instance from validated parameters.
    pub build: fn(&Params) -> Result<Box<dyn CpuPolicy>, ParamError>,
}

/// A built-in memory policy, registered with `inventory::submit!`.
pub struct MemoryPolicyInfo {
    /// Name used in configurations.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its parameters.
    pub params: &'static [ParamSpec],
    /// Builds an instance from validated parameters.
    pub build: fn(&Params) -> Result<Box<dyn MemoryPolicy>, ParamError>,
}

inventory::collect!(CpuPolicyInfo);
inventory::collect!(MemoryPolicyInfo);

/// Built-in CPU policies, sorted by name.
pub fn cpu_policies() -> Vec<&'static CpuPolicyInfo> {
    let mut all: Vec<_> = inventory::iter::<CpuPolicyInfo>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// Built-in memory policies, sorted by name.
pub fn memory_policies() -> Vec<&'static MemoryPolicyInfo> {
    let mut all: Vec<_> = inventory::iter::<MemoryPolicyInfo>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// The built-in CPU policy called `name`.
pub fn find_cpu_policy(name: &str) -> Option<&'static CpuPolicyInfo> {
    inventory::iter::<CpuPolicyInfo>
        .into_iter()
        .find(|p| p.name == name)
}

/// The built-in memory policy called `name`.
pub fn find_memory_policy(name: &str) -> Option<&'static MemoryPolicyInfo> {
    inventory::iter::<MemoryPolicyInfo>
        .into_iter()
        .find(|p| p.name == name)
}
