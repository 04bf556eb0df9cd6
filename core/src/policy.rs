//! What a policy is (see [`vcoord_api::policy`]): re-exported here for the runtime's modules.

pub use vcoord_api::plan::{BalloonTarget, CpuPlan, MemoryPlan, VcpuPin};
pub use vcoord_api::policy::{
    cpu_policies, find_cpu_policy, find_memory_policy, memory_policies, CpuPolicy, CpuPolicyEntry,
    MemoryPolicy, MemoryPolicyEntry, Policy,
};
