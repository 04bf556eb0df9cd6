//! Policies that never act: for hosts where one side should be left alone.

use vcoord_core::params::{ParamError, Params};
use vcoord_core::policy::{
    CpuPlan, CpuPolicy, CpuPolicyInfo, MemoryPlan, MemoryPolicy, MemoryPolicyInfo,
};
use vcoord_core::snapshot::Snapshot;

/// Never pins anything.
#[derive(Debug, Default)]
pub struct NoCpuPolicy;

impl CpuPolicy for NoCpuPolicy {
    fn decide(&mut self, _: &Snapshot) -> CpuPlan {
        CpuPlan {
            pins: Vec::new(),
            reason: "none: observe only".into(),
        }
    }
}

/// Never changes a balloon.
#[derive(Debug, Default)]
pub struct NoMemoryPolicy;

impl MemoryPolicy for NoMemoryPolicy {
    fn decide(&mut self, _: &Snapshot) -> MemoryPlan {
        MemoryPlan {
            targets: Vec::new(),
            reason: "none: observe only".into(),
        }
    }
}

fn build_cpu(_: &Params) -> Result<Box<dyn CpuPolicy>, ParamError> {
    Ok(Box::new(NoCpuPolicy))
}

fn build_memory(_: &Params) -> Result<Box<dyn MemoryPolicy>, ParamError> {
    Ok(Box::new(NoMemoryPolicy))
}

inventory::submit! {
    CpuPolicyInfo {
        name: "none",
        description: "never pins anything (observe only)",
        params: &[],
        build: build_cpu,
    }
}

inventory::submit! {
    MemoryPolicyInfo {
        name: "none",
        description: "never changes a balloon (observe only)",
        params: &[],
        build: build_memory,
    }
}
