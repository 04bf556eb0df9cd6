//! What a policy is (see [`vcoord_api::policy`]): re-exported here for the runtime's modules.

pub use vcoord_api::plan::{BalloonTarget, CpuPlan, MemoryPlan, VcpuPin, VmTune};
pub use vcoord_api::policy::{
    cpu_policies, find_cpu_policy, find_memory_policy, memory_policies, policy_names, CpuPolicy,
    CpuPolicyEntry, Kind, MemoryPolicy, MemoryPolicyEntry, Policy, PolicyHealth,
};

/// Sends built-in policies' log lines (`vcoord_api::info!` and friends) to vcoord's log.
pub fn route_logs_to_tracing() {
    use vcoord_api::log::Level;
    vcoord_api::log::set_logger(|level, message| match level {
        Level::Error => tracing::error!(target: "vcoord::policy", "{message}"),
        Level::Warn => tracing::warn!(target: "vcoord::policy", "{message}"),
        Level::Info => tracing::info!(target: "vcoord::policy", "{message}"),
        Level::Debug => tracing::debug!(target: "vcoord::policy", "{message}"),
    });
}
