//! What a plugin author writes against: two traits, a parameter reader, log macros and
//! [`crate::export_plugin!`]. Nothing here is needed by vcoord itself.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::RwLock;

use abi_stable::std_types::{RResult, RStr, RString};

use crate::abi::{
    CpuPlan, CpuPolicyBox, CpuPolicyObject, CpuPolicyObject_TO, LogLevel, LogSink, MemoryPlan,
    MemoryPolicyBox, MemoryPolicyObject, MemoryPolicyObject_TO, Snapshot,
};

/// A CPU policy implemented in a plugin.
pub trait CpuPolicy: Send + Sized + 'static {
    /// Builds the policy from the host's `params` table. Read every key you accept from
    /// `params`; keys left unread are reported as unknown.
    fn new(params: &mut Params) -> Result<Self, String>;
    /// This tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan;
}

/// A memory policy implemented in a plugin.
pub trait MemoryPolicy: Send + Sized + 'static {
    /// Builds the policy from the host's `params` table (see [`CpuPolicy::new`]).
    fn new(params: &mut Params) -> Result<Self, String>;
    /// This tick's plan.
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan;
}

/// The `params` table of a host's policy configuration, read key by key.
#[derive(Debug)]
pub struct Params {
    table: toml::Table,
}

impl Params {
    /// Parses the TOML text vcoord hands over.
    pub fn parse(text: &str) -> Result<Self, String> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| format!("params are not a TOML table: {e}"))?;
        Ok(Self { table })
    }

    /// A number in `[min, max]`, or `default` when absent. Integers are accepted.
    pub fn number(&mut self, key: &str, default: f64, min: f64, max: f64) -> Result<f64, String> {
        let value = match self.table.remove(key) {
            None => return Ok(default),
            Some(toml::Value::Float(f)) => f,
            Some(toml::Value::Integer(i)) => i as f64,
            Some(other) => {
                return Err(format!(
                    "`{key}`: expected a number, found {}",
                    other.type_str()
                ))
            }
        };
        if !(min..=max).contains(&value) {
            return Err(format!("`{key}`: {value} is out of range [{min}, {max}]"));
        }
        Ok(value)
    }

    /// A boolean, or `default` when absent.
    pub fn boolean(&mut self, key: &str, default: bool) -> Result<bool, String> {
        match self.table.remove(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(b),
            Some(other) => Err(format!(
                "`{key}`: expected true or false, found {}",
                other.type_str()
            )),
        }
    }

    /// A table of numbers in `[min, max]` (e.g. per-VM weights); empty when absent.
    pub fn numbers(&mut self, key: &str, min: f64, max: f64) -> Result<Vec<(String, f64)>, String> {
        let table = match self.table.remove(key) {
            None => return Ok(Vec::new()),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(format!(
                    "`{key}`: expected a table of numbers, found {}",
                    other.type_str()
                ))
            }
        };
        let mut out = Vec::with_capacity(table.len());
        for (name, value) in table {
            let v = match value {
                toml::Value::Float(f) => f,
                toml::Value::Integer(i) => i as f64,
                other => {
                    return Err(format!(
                        "`{key}.{name}`: expected a number, found {}",
                        other.type_str()
                    ))
                }
            };
            if !(min..=max).contains(&v) {
                return Err(format!(
                    "`{key}.{name}`: {v} is out of range [{min}, {max}]"
                ));
            }
            out.push((name, v));
        }
        Ok(out)
    }

    /// Fails on keys nobody read.
    pub fn finish(self) -> Result<(), String> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("`{key}`: unknown parameter")),
        }
    }
}

static LOG: RwLock<Option<(LogSink, String)>> = RwLock::new(None);

#[doc(hidden)]
pub extern "C" fn set_log_sink(sink: LogSink, label: RStr<'_>) {
    if let Ok(mut slot) = LOG.write() {
        *slot = Some((sink, label.as_str().to_owned()));
    }
}

/// Sends one line to vcoord's log (use the [`crate::info!`] family of macros).
pub fn log(level: LogLevel, message: std::fmt::Arguments<'_>) {
    if let Ok(slot) = LOG.read() {
        if let Some((sink, label)) = slot.as_ref() {
            let text = message.to_string();
            (sink.func)(level, label.as_str().into(), text.as_str().into());
        }
    }
}

/// Logs an error line into vcoord's log.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::sdk::log(1, format_args!($($arg)*)) };
}
/// Logs a warning into vcoord's log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::sdk::log(2, format_args!($($arg)*)) };
}
/// Logs an informational line into vcoord's log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::sdk::log(3, format_args!($($arg)*)) };
}
/// Logs a debug line into vcoord's log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::sdk::log(4, format_args!($($arg)*)) };
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

/// Runs `f`, turning a panic into an error naming what panicked.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(payload) => {
            RResult::RErr(format!("{what} panicked: {}", panic_message(payload)).into())
        }
    }
}

fn build<T>(text: RStr<'_>, new: fn(&mut Params) -> Result<T, String>) -> Result<T, String> {
    let mut params = Params::parse(text.as_str())?;
    let policy = new(&mut params)?;
    params.finish()?;
    Ok(policy)
}

struct CpuAdapter<T>(T);

impl<T: CpuPolicy> CpuPolicyObject for CpuAdapter<T> {
    fn decide(&mut self, snapshot: &Snapshot) -> RResult<CpuPlan, RString> {
        guarded("decide", || Ok(self.0.decide(snapshot)))
    }
}

struct MemoryAdapter<T>(T);

impl<T: MemoryPolicy> MemoryPolicyObject for MemoryAdapter<T> {
    fn decide(&mut self, snapshot: &Snapshot) -> RResult<MemoryPlan, RString> {
        guarded("decide", || Ok(self.0.decide(snapshot)))
    }
}

#[doc(hidden)]
pub extern "C" fn new_cpu_policy<T: CpuPolicy>(params: RStr<'_>) -> RResult<CpuPolicyBox, RString> {
    guarded("new", || {
        let policy = build(params, T::new)?;
        Ok(CpuPolicyObject_TO::from_value(
            CpuAdapter(policy),
            abi_stable::sabi_trait::TD_Opaque,
        ))
    })
}

#[doc(hidden)]
pub extern "C" fn no_cpu_policy(_: RStr<'_>) -> RResult<CpuPolicyBox, RString> {
    RResult::RErr("this plugin has no CPU policy".into())
}

#[doc(hidden)]
pub extern "C" fn no_memory_policy(_: RStr<'_>) -> RResult<MemoryPolicyBox, RString> {
    RResult::RErr("this plugin has no memory policy".into())
}

#[doc(hidden)]
pub extern "C" fn new_memory_policy<T: MemoryPolicy>(
    params: RStr<'_>,
) -> RResult<MemoryPolicyBox, RString> {
    guarded("new", || {
        let policy = build(params, T::new)?;
        Ok(MemoryPolicyObject_TO::from_value(
            MemoryAdapter(policy),
            abi_stable::sabi_trait::TD_Opaque,
        ))
    })
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
/// `cpu:` and `memory:` name types implementing [`CpuPolicy`] and [`MemoryPolicy`]; give
/// either or both.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, description: $description:expr, cpu: $cpu:ty, memory: $memory:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::new_cpu_policy::<$cpu>, true,
            $crate::__private::new_memory_policy::<$memory>, true);
    };
    (name: $name:expr, description: $description:expr, cpu: $cpu:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::new_cpu_policy::<$cpu>, true,
            $crate::__private::no_memory_policy, false);
    };
    (name: $name:expr, description: $description:expr, memory: $memory:ty $(,)?) => {
        $crate::export_plugin!(@emit $name, $description,
            $crate::__private::no_cpu_policy, false,
            $crate::__private::new_memory_policy::<$memory>, true);
    };
    (@emit $name:expr, $description:expr, $cpu:expr, $has_cpu:expr, $memory:expr, $has_memory:expr) => {
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
            }
            .leak_into_prefix()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_read_check_ranges_and_report_unknown_keys() {
        let mut p = Params::parse("a = 2\nb = true\nw = { x = 1, y = 2.5 }\nz = 1\n").unwrap();
        assert_eq!(p.number("a", 0.0, 0.0, 10.0), Ok(2.0));
        assert_eq!(p.number("missing", 7.0, 0.0, 10.0), Ok(7.0));
        assert_eq!(p.boolean("b", false), Ok(true));
        let w = p.numbers("w", 0.0, 10.0).unwrap();
        assert_eq!(w, vec![("x".into(), 1.0), ("y".into(), 2.5)]);
        assert_eq!(p.finish(), Err("`z`: unknown parameter".into()));
        let mut p = Params::parse("a = 20").unwrap();
        assert_eq!(
            p.number("a", 0.0, 0.0, 10.0),
            Err("`a`: 20 is out of range [0, 10]".into())
        );
        let mut p = Params::parse("a = \"x\"").unwrap();
        assert!(p
            .boolean("a", false)
            .unwrap_err()
            .contains("expected true or false"));
    }

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let r: RResult<(), RString> = guarded("decide", || panic!("boom {}", 7));
        assert_eq!(
            r.into_result().unwrap_err().as_str(),
            "decide panicked: boom 7"
        );
    }
}
