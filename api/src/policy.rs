//! What a policy is: a decision over an immutable snapshot that returns a plan. Policies keep
//! their own state between ticks but never touch the backend.
//!
//! A policy type implements [`Policy`] (its name, its parameter struct, how it is built) and
//! [`CpuPolicy`] or [`MemoryPolicy`]. The same type then becomes a built-in with
//! [`builtin_cpu_policy!`](crate::builtin_cpu_policy) /
//! [`builtin_memory_policy!`](crate::builtin_memory_policy), or part of a plugin with
//! `vcoord_plugin::export_plugin!`, without a change to its source.

use crate::params::{ParamError, ParamSpec, Params, Table};
use crate::plan::{CpuPlan, MemoryPlan};
use crate::snapshot::Snapshot;

/// The two kinds of policy: where vCPUs run (CPU) and how big VMs are (memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A CPU policy, its plans and figures.
    Cpu,
    /// A memory policy, its plans and figures.
    Memory,
}

impl Kind {
    /// Both, CPU first.
    pub const ALL: [Kind; 2] = [Kind::Cpu, Kind::Memory];

    /// Its name in keys, labels and file names: `cpu`, `memory`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
        }
    }
}

impl std::fmt::Display for Kind {
    /// Its name in prose and headings: `CPU`, `memory`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Cpu => "CPU",
            Kind::Memory => "memory",
        })
    }
}

/// How a running policy is. Policies need not care: the runtime reports on policies it runs
/// under supervision (plugins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyHealth {
    /// Deciding.
    Ok,
    /// Not called any more.
    Quarantined {
        /// Why.
        reason: String,
        /// Whether a fallback decides in its place.
        fallback: bool,
    },
}

/// Decides where vCPUs run.
pub trait CpuPolicy: Send {
    /// Returns this tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan;

    /// How this policy is (always `Ok` unless the runtime supervises it).
    fn health(&self) -> PolicyHealth {
        PolicyHealth::Ok
    }

    /// What the policy has learned of the host that a restart should not forget (a prediction
    /// error, say), if anything: the runtime keeps it in the host's state directory and gives
    /// it back to the policy of the next process ([`Self::relearn`]). Measurements that a few
    /// ticks bring back do not belong here.
    fn learned(&self) -> Option<Table> {
        None
    }

    /// Takes back what [`Self::learned`] gave in a process before; an error (a table it
    /// cannot read) leaves the policy as new.
    fn relearn(&mut self, _learned: &Table) -> Result<(), String> {
        Ok(())
    }
}

/// Decides how much memory each VM has.
pub trait MemoryPolicy: Send {
    /// Returns this tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan;

    /// How this policy is (always `Ok` unless the runtime supervises it).
    fn health(&self) -> PolicyHealth {
        PolicyHealth::Ok
    }
}

/// How a policy is named, described and built from its parameters.
pub trait Policy: Sized + Send + 'static {
    /// Name used in configurations.
    const NAME: &'static str;
    /// One line on what it does.
    const DESCRIPTION: &'static str;
    /// Its parameters.
    type Params: Params;

    /// Builds the policy; checks that involve several parameters belong here.
    fn new(params: Self::Params) -> Result<Self, ParamError>;
}

/// A registered CPU policy.
#[derive(Debug)]
pub struct CpuPolicyEntry {
    /// Name used in configurations.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its parameters.
    pub params: fn() -> Vec<ParamSpec>,
    /// Builds an instance from a `params` table.
    pub build: fn(&Table) -> Result<Box<dyn CpuPolicy>, ParamError>,
}

/// A registered memory policy.
#[derive(Debug)]
pub struct MemoryPolicyEntry {
    /// Name used in configurations.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its parameters.
    pub params: fn() -> Vec<ParamSpec>,
    /// Builds an instance from a `params` table.
    pub build: fn(&Table) -> Result<Box<dyn MemoryPolicy>, ParamError>,
}

inventory::collect!(CpuPolicyEntry);
inventory::collect!(MemoryPolicyEntry);

/// Builds `T` from a `params` table.
pub fn build<T: Policy>(table: &Table) -> Result<T, ParamError> {
    T::new(T::Params::from_table(table)?)
}

#[doc(hidden)]
pub fn build_cpu<T: Policy + CpuPolicy>(table: &Table) -> Result<Box<dyn CpuPolicy>, ParamError> {
    Ok(Box::new(build::<T>(table)?))
}

#[doc(hidden)]
pub fn build_memory<T: Policy + MemoryPolicy>(
    table: &Table,
) -> Result<Box<dyn MemoryPolicy>, ParamError> {
    Ok(Box::new(build::<T>(table)?))
}

#[doc(hidden)]
pub fn specs<T: Policy>() -> Vec<ParamSpec> {
    T::Params::specs()
}

/// Registers a type implementing [`Policy`] and [`CpuPolicy`] as a built-in CPU policy.
#[macro_export]
macro_rules! builtin_cpu_policy {
    ($policy:ty) => {
        $crate::inventory::submit! {
            $crate::policy::CpuPolicyEntry {
                name: <$policy as $crate::Policy>::NAME,
                description: <$policy as $crate::Policy>::DESCRIPTION,
                params: $crate::policy::specs::<$policy>,
                build: $crate::policy::build_cpu::<$policy>,
            }
        }
    };
}

/// Registers a type implementing [`Policy`] and [`MemoryPolicy`] as a built-in memory policy.
#[macro_export]
macro_rules! builtin_memory_policy {
    ($policy:ty) => {
        $crate::inventory::submit! {
            $crate::policy::MemoryPolicyEntry {
                name: <$policy as $crate::Policy>::NAME,
                description: <$policy as $crate::Policy>::DESCRIPTION,
                params: $crate::policy::specs::<$policy>,
                build: $crate::policy::build_memory::<$policy>,
            }
        }
    };
}

/// Built-in CPU policies, sorted by name.
pub fn cpu_policies() -> Vec<&'static CpuPolicyEntry> {
    let mut all: Vec<_> = inventory::iter::<CpuPolicyEntry>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// Built-in memory policies, sorted by name.
pub fn memory_policies() -> Vec<&'static MemoryPolicyEntry> {
    let mut all: Vec<_> = inventory::iter::<MemoryPolicyEntry>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// The names of the built-in policies of `kind`, sorted.
pub fn policy_names(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Cpu => cpu_policies().iter().map(|p| p.name).collect(),
        Kind::Memory => memory_policies().iter().map(|p| p.name).collect(),
    }
}

/// The built-in CPU policy called `name`.
pub fn find_cpu_policy(name: &str) -> Option<&'static CpuPolicyEntry> {
    inventory::iter::<CpuPolicyEntry>
        .into_iter()
        .find(|p| p.name == name)
}

/// The built-in memory policy called `name`.
pub fn find_memory_policy(name: &str) -> Option<&'static MemoryPolicyEntry> {
    inventory::iter::<MemoryPolicyEntry>
        .into_iter()
        .find(|p| p.name == name)
}
