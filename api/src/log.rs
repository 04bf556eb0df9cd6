//! Log lines from policies. A policy logs with [`info!`](crate::info) and friends; where the
//! line goes is the host's business: vcoord sends built-ins' lines to its own log, and a
//! plugin's lines cross to vcoord's log tagged with the plugin's name. Until a logger is set,
//! lines are dropped.

use std::fmt;
use std::sync::RwLock;

/// Severity of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something looks wrong.
    Warn = 2,
    /// Worth knowing.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

type Logger = Box<dyn Fn(Level, &str) + Send + Sync>;

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// Sends every line from now on to `logger`.
pub fn set_logger(logger: impl Fn(Level, &str) + Send + Sync + 'static) {
    if let Ok(mut slot) = LOGGER.write() {
        *slot = Some(Box::new(logger));
    }
}

/// Logs one line (use the macros).
pub fn log(level: Level, message: fmt::Arguments<'_>) {
    if let Ok(slot) = LOGGER.read() {
        if let Some(logger) = slot.as_ref() {
            logger(level, &message.to_string());
        }
    }
}

/// Logs an error line from a policy.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($arg)*)) };
}
/// Logs a warning from a policy.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($arg)*)) };
}
/// Logs an informational line from a policy.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($arg)*)) };
}
/// Logs a debug line from a policy.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($arg)*)) };
}
