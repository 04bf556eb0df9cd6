//! Policies that never act: for hosts where one side should be left alone.

use vcoord_api::{CpuPlan, CpuPolicy, MemoryPlan, MemoryPolicy, ParamError, Policy, Snapshot};

vcoord_api::params! {
    /// `none` takes no parameters.
    pub struct NoParams {}
}

/// Never pins anything.
#[derive(Debug, Default)]
pub struct NoCpuPolicy;

impl Policy for NoCpuPolicy {
    const NAME: &'static str = "none";
    const DESCRIPTION: &'static str = "never pins anything (observe only)";
    type Params = NoParams;

    fn new(_: NoParams) -> Result<Self, ParamError> {
        Ok(Self)
    }
}

impl CpuPolicy for NoCpuPolicy {
    fn decide(&mut self, _: &Snapshot) -> CpuPlan {
        CpuPlan::keep("none: observe only")
    }
}

/// Never changes a balloon.
#[derive(Debug, Default)]
pub struct NoMemoryPolicy;

impl Policy for NoMemoryPolicy {
    const NAME: &'static str = "none";
    const DESCRIPTION: &'static str = "never changes a balloon (observe only)";
    type Params = NoParams;

    fn new(_: NoParams) -> Result<Self, ParamError> {
        Ok(Self)
    }
}

impl MemoryPolicy for NoMemoryPolicy {
    fn decide(&mut self, _: &Snapshot) -> MemoryPlan {
        MemoryPlan::keep("none: observe only")
    }
}
