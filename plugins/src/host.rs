//! What vcoord uses to open a plugin file, without naming abi_stable: opening, version and
//! layout checks, and typed errors.

use std::fmt;
use std::path::Path;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use abi_stable::std_types::RStr;

use vcoord_api::ParamSpec;

use crate::abi::{BuildError, CpuPolicyBox, LogLevel, LogSink, MemoryPolicyBox, PluginRef};
use crate::convert;

/// Why a file could not be opened as a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The dynamic loader refused the file (missing, not a shared object, missing symbols).
    NotALibrary(String),
    /// A shared object, but it exports no vcoord plugin root module.
    NotAPlugin(String),
    /// Built against another plugin ABI version.
    Version {
        /// The ABI version the plugin was built against.
        found: String,
        /// The ABI version this vcoord speaks.
        expected: String,
    },
    /// Same version, but the types differ (a modified ABI crate, or another abi_stable).
    Layout(String),
    /// The plugin's own initialization failed.
    Init(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotALibrary(why) => write!(f, "cannot be loaded as a shared library: {why}"),
            Self::NotAPlugin(why) => write!(
                f,
                "is not a vcoord plugin (it exports no plugin root module; build it with \
                 vcoord_plugin::export_plugin!): {why}"
            ),
            Self::Version { found, expected } => write!(
                f,
                "was built for plugin ABI {found}, but this vcoord loads plugin ABI {expected}: \
                 rebuild it against vcoord-plugin {expected}"
            ),
            Self::Layout(why) => write!(
                f,
                "has the right ABI version but different types (rebuild it against this \
                 vcoord's vcoord-plugin): {why}"
            ),
            Self::Init(why) => write!(f, "failed to initialize: {why}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Who a plugin is and what it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// One line on what it does.
    pub description: String,
    /// Whether it has a CPU policy.
    pub has_cpu_policy: bool,
    /// Whether it has a memory policy.
    pub has_memory_policy: bool,
}

/// An opened, checked plugin. Libraries are never unloaded.
#[derive(Clone, Copy)]
pub struct Library {
    root: PluginRef,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("info", &self.info())
            .finish()
    }
}

impl Library {
    /// Opens the plugin at `path` (which runs its initializers) and checks its ABI.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let header = lib_header_from_path(path).map_err(classify)?;
        let root = header.init_root_module::<PluginRef>().map_err(classify)?;
        Ok(Self { root })
    }

    /// Who the plugin is.
    pub fn info(&self) -> Info {
        let info = (self.root.info())();
        Info {
            name: info.name.as_str().to_owned(),
            version: info.version.as_str().to_owned(),
            description: info.description.as_str().to_owned(),
            has_cpu_policy: info.has_cpu_policy,
            has_memory_policy: info.has_memory_policy,
        }
    }

    /// Sends the plugin's log lines to `sink`, tagged with `label`.
    pub fn set_log_sink(&self, sink: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>), label: &str) {
        (self.root.set_log_sink())(LogSink { func: sink }, label.into());
    }

    /// Builds the plugin's CPU policy from its parameters (TOML text).
    pub fn new_cpu_policy(&self, params_toml: &str) -> Result<CpuPolicyBox, Refusal> {
        (self.root.new_cpu_policy())(params_toml.into())
            .into_result()
            .map_err(Refusal::from)
    }

    /// Builds the plugin's memory policy from its parameters (TOML text).
    pub fn new_memory_policy(&self, params_toml: &str) -> Result<MemoryPolicyBox, Refusal> {
        (self.root.new_memory_policy())(params_toml.into())
            .into_result()
            .map_err(Refusal::from)
    }

    /// The parameters of the plugin's CPU policy.
    pub fn cpu_params(&self) -> Vec<ParamSpec> {
        convert::specs_from_abi((self.root.cpu_params())())
    }

    /// The parameters of the plugin's memory policy.
    pub fn memory_params(&self) -> Vec<ParamSpec> {
        convert::specs_from_abi((self.root.memory_params())())
    }
}

/// Why a plugin would not build a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The parameter at fault (a dotted path), when one is.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl From<BuildError> for Refusal {
    fn from(e: BuildError) -> Self {
        Self {
            key: Some(e.key.into_string()).filter(|k| !k.is_empty()),
            message: e.message.into_string(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "parameter `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn classify(e: LibraryError) -> OpenError {
    match e {
        LibraryError::OpenError { err, .. } => OpenError::NotALibrary(err.to_string()),
        LibraryError::GetSymbolError { err, .. } => OpenError::NotAPlugin(err.to_string()),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => OpenError::Version {
            found: actual_version.to_string(),
            expected: expected_version.to_string(),
        },
        LibraryError::ParseVersionError(e) => OpenError::Version {
            found: format!("unreadable ({e})"),
            expected: PluginRef::VERSION_STRINGS.version.to_string(),
        },
        LibraryError::AbiInstability(e) => OpenError::Layout(first_lines(&e.to_string(), 12)),
        LibraryError::InvalidAbiHeader(h) => {
            OpenError::Layout(format!("built with an incompatible abi_stable ({h:?})"))
        }
        LibraryError::InvalidCAbi { .. } => {
            OpenError::Layout("built with an incompatible C ABI".to_owned())
        }
        LibraryError::RootModule { err, .. } => OpenError::Init(err.to_string()),
        LibraryError::Many(errors) => {
            let all: Vec<String> = errors
                .into_iter()
                .map(|e| classify(e).to_string())
                .collect();
            OpenError::Layout(all.join("; "))
        }
    }
}

/// The first `n` lines of a long message (layout diffs run to pages).
fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        text.to_owned()
    } else {
        format!(
            "{}\n... ({} more lines)",
            lines[..n].join("\n"),
            lines.len() - n
        )
    }
}
