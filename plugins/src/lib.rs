//! The stable ABI between vcoord and policy plugins (`abi`, converted in one place by
//! `convert`), and what a plugin needs to export policies ([`export_plugin!`], log macros).
//!
//! A plugin's policies are written against vcoord-api, re-exported here, exactly as built-in
//! policies are: the same source builds into vcoord or into a `cdylib`. vcoord opens a plugin
//! by path, checks that it was built against a compatible version of this crate (the version of
//! this crate *is* the ABI version) and that every type crossing has the layout vcoord expects,
//! then asks it for a CPU or a memory policy built from the `params` table of the host's
//! configuration. Parameter errors come back as data (key and message).
//!
//! Every call into a plugin is wrapped so that a panic comes back as an error instead of
//! unwinding across the boundary (which would abort vcoord). Plugin log lines go to vcoord's
//! log, tagged with the plugin's name.

pub mod abi;
pub mod convert;
pub mod host;
pub mod sdk;

pub use abi::ABI_VERSION;
pub use vcoord_api::*;

#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{Plugin, PluginInfo, PluginRef};
    pub use crate::sdk::{
        new_cpu_policy, new_memory_policy, no_cpu_policy, no_memory_policy, no_params, params_of,
        set_log_sink,
    };
    pub use abi_stable::prefix_type::PrefixTypeTrait;
    pub use abi_stable::std_types::{RStr, RString};
}
