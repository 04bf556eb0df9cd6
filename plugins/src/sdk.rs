//! What `export_plugin!` expands to. A plugin author writes policies against vcoord-api
//! (re-exported from this crate's root) exactly as a built-in is written, logging with
//! `vcoord_api::info!` and friends; this module adapts them to the ABI: converting snapshots
//! and plans, turning panics into errors, forwarding log lines. Nothing here is needed by
//! vcoord itself.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use vcoord_api::{policy, CpuPolicy, MemoryPolicy, Policy};

use crate::abi::{
    self, BuildError, CpuPolicyBox, CpuPolicyObject, CpuPolicyObject_TO, LogLevel, LogSink,
    MemoryPolicyBox, MemoryPolicyObject, MemoryPolicyObject_TO,
};
use crate::convert;

#[doc(hidden)]
pub extern "C" fn set_log_sink(sink: LogSink, label: RStr<'_>) {
    // Panics in the plugin come back to vcoord as errors with their message (see `guarded`);
    // the default hook would also print raw `thread '<unnamed>' panicked at` text. The hook is
    // the plugin's own (its standard library is its own copy), so vcoord's is untouched.
    std::panic::set_hook(Box::new(|_| {}));
    let label = label.as_str().to_owned();
    vcoord_api::log::set_logger(move |level, message| {
        (sink.func)(level as LogLevel, label.as_str().into(), message.into());
    });
}

/// The message of a caught panic.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Runs `f`, turning a panic into an error made by `on_panic` from its message.
fn guarded<T, E>(
    what: &str,
    on_panic: impl FnOnce(String) -> E,
    f: impl FnOnce() -> Result<T, E>,
) -> RResult<T, E> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(on_panic(format!(
            "{what} panicked: {}",
            panic_message(payload)
        ))),
    }
}

struct CpuAdapter<T>(T);

impl<T: CpuPolicy> CpuPolicyObject for CpuAdapter<T> {
    fn decide(&mut self, snapshot: &abi::Snapshot) -> RResult<abi::CpuPlan, RString> {
        guarded("decide", RString::from, || {
            let snapshot = convert::snapshot_from_abi(snapshot).map_err(|e| e.to_string())?;
            Ok(convert::cpu_plan_to_abi(self.0.decide(&snapshot)))
        })
    }
}

struct MemoryAdapter<T>(T);

impl<T: MemoryPolicy> MemoryPolicyObject for MemoryAdapter<T> {
    fn decide(&mut self, snapshot: &abi::Snapshot) -> RResult<abi::MemoryPlan, RString> {
        guarded("decide", RString::from, || {
            let snapshot = convert::snapshot_from_abi(snapshot).map_err(|e| e.to_string())?;
            Ok(convert::memory_plan_to_abi(self.0.decide(&snapshot)))
        })
    }
}

/// Builds `T` from the TOML text vcoord hands over.
fn build<T: Policy>(text: RStr<'_>) -> Result<T, BuildError> {
    let table = text
        .as_str()
        .parse::<toml::Table>()
        .map_err(|e| convert::build_failure(format!("params are not a TOML table: {e}")))?;
    policy::build::<T>(&table).map_err(convert::param_error_to_abi)
}

#[doc(hidden)]
pub extern "C" fn new_cpu_policy<T: Policy + CpuPolicy>(
    params: RStr<'_>,
) -> RResult<CpuPolicyBox, BuildError> {
    guarded("new", convert::build_failure, || {
        let policy = build::<T>(params)?;
        Ok(CpuPolicyObject_TO::from_value(
            CpuAdapter(policy),
            abi_stable::sabi_trait::TD_Opaque,
        ))
    })
}

#[doc(hidden)]
pub extern "C" fn new_memory_policy<T: Policy + MemoryPolicy>(
    params: RStr<'_>,
) -> RResult<MemoryPolicyBox, BuildError> {
    guarded("new", convert::build_failure, || {
        let policy = build::<T>(params)?;
        Ok(MemoryPolicyObject_TO::from_value(
            MemoryAdapter(policy),
            abi_stable::sabi_trait::TD_Opaque,
        ))
    })
}

#[doc(hidden)]
pub extern "C" fn no_cpu_policy(_: RStr<'_>) -> RResult<CpuPolicyBox, BuildError> {
    RResult::RErr(convert::build_failure("this plugin has no CPU policy"))
}

#[doc(hidden)]
pub extern "C" fn no_memory_policy(_: RStr<'_>) -> RResult<MemoryPolicyBox, BuildError> {
    RResult::RErr(convert::build_failure("this plugin has no memory policy"))
}

#[doc(hidden)]
pub extern "C" fn params_of<T: Policy>() -> RVec<abi::ParamSpec> {
    convert::specs_to_abi(policy::specs::<T>())
}

#[doc(hidden)]
pub extern "C" fn no_params() -> RVec<abi::ParamSpec> {
    RVec::new()
}

/// Exports a plugin's root module. Invoke once, at the root of a `cdylib` crate that depends on
/// `vcoord-plugin` and `abi_stable` (whose attribute writes the exported symbol):
///
/// ```ignore
/// vcoord_plugin::export_plugin! {
///     name: "spread",
///     description: "pins each vCPU once, spreading VMs over cores",
///     cpu: Spread,
/// }
/// ```
///
/// `cpu:` and `memory:` name types implementing [`vcoord_api::Policy`] and
/// [`vcoord_api::CpuPolicy`] / [`vcoord_api::MemoryPolicy`]; give either or both.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, description: $description:expr, cpu: $cpu:ty, memory: $memory:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::new_cpu_policy::<$cpu>, $crate::__private::params_of::<$cpu>, true,
            $crate::__private::new_memory_policy::<$memory>, $crate::__private::params_of::<$memory>, true);
    };
    (name: $name:expr, description: $description:expr, cpu: $cpu:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::new_cpu_policy::<$cpu>, $crate::__private::params_of::<$cpu>, true,
            $crate::__private::no_memory_policy, $crate::__private::no_params, false);
    };
    (name: $name:expr, description: $description:expr, memory: $memory:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::no_cpu_policy, $crate::__private::no_params, false,
            $crate::__private::new_memory_policy::<$memory>, $crate::__private::params_of::<$memory>, true);
    };
    (@emit $name:expr, $description:expr, $cpu:expr, $cpu_params:expr, $has_cpu:expr,
        $memory:expr, $memory_params:expr, $has_memory:expr) => {
        extern "C" fn __vcoord_plugin_info() -> $crate::__private::PluginInfo {
            $crate::__private::PluginInfo {
                name: $crate::__private::RStr::from_str($name),
                version: $crate::__private::RStr::from_str(env!("CARGO_PKG_VERSION")),
                description: $crate::__private::RStr::from_str($description),
                has_cpu_policy: $has_cpu,
                has_memory_policy: $has_memory,
            }
        }

        #[::abi_stable::export_root_module]
        pub fn __vcoord_plugin_root() -> $crate::__private::PluginRef {
            use $crate::__private::PrefixTypeTrait;
            $crate::__private::Plugin {
                info: __vcoord_plugin_info,
                set_log_sink: $crate::__private::set_log_sink,
                new_cpu_policy: $cpu,
                new_memory_policy: $memory,
                cpu_params: $cpu_params,
                memory_params: $memory_params,
            }
            .leak_into_prefix()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: RResult<(), RString> = guarded("decide", RString::from, || panic!("boom {}", 7));
        assert_eq!(
            r.into_result().unwrap_err().as_str(),
            "decide panicked: boom 7"
        );
    }
}
