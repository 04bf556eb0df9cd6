//! The stable ABI between vcoord and policy plugins (`abi`), and a small SDK for writing one
//! (`sdk`, [`export_plugin!`]).
//!
//! A plugin is a `cdylib` that exports one root module. vcoord opens it by path, checks that it
//! was built against a compatible version of this crate (the version of this crate *is* the ABI
//! version) and that every type below has the layout vcoord expects, then asks it for a CPU or a
//! memory policy built from the `params` table of the host's configuration.
//!
//! Every call into a plugin made through the SDK is wrapped so that a panic comes back as an
//! error instead of unwinding across the boundary (which would abort vcoord). Plugin log lines
//! go to vcoord's log, tagged with the plugin's name.

pub mod abi;
pub mod host;
pub mod sdk;

pub use abi::{
    BalloonTarget, CpuPlan, Memory, MemoryPlan, Pcpu, Snapshot, Vcpu, VcpuPin, Vm, ABI_VERSION,
};
pub use sdk::{CpuPolicy, MemoryPolicy, Params};

#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{Plugin, PluginInfo, PluginRef};
    pub use crate::sdk::{
        new_cpu_policy, new_memory_policy, no_cpu_policy, no_memory_policy, set_log_sink,
    };
    pub use abi_stable::prefix_type::PrefixTypeTrait;
    pub use abi_stable::std_types::{RStr, RString};
}
