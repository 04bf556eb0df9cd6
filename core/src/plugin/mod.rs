//! Policies from plugin files: finding and vetting the file and loading it once (here), and
//! supervising each plugin policy so that a panic, a stall or a bad plan never takes the daemon
//! down (`supervise`). Snapshots and plans cross the ABI through `vcoord_plugin::convert`.

mod supervise;

pub use supervise::{cpu_policy, memory_policy, DecideLimits, Replaced};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing::{debug, error, info, trace, warn};
use vcoord_plugin::abi::{self as abi, RStr};
use vcoord_plugin::host::{Info, Library, OpenError, Refusal};

/// Which policy kind a plugin is asked for.
pub use vcoord_api::Kind;

/// Why a plugin policy could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// No such file in any of the places searched.
    #[error("plugin `{written}` not found (looked for {})", list(searched))]
    NotFound {
        /// As written in the configuration.
        written: String,
        /// Paths tried.
        searched: Vec<PathBuf>,
    },
    /// The file or its directory may be changed by others.
    #[error("{}: refused: {why} (set `allow_insecure = true` in the policy table to load it anyway)", path.display())]
    Insecure {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file cannot be opened as a plugin.
    #[error("{}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: OpenError,
    },
    /// The plugin has no policy of the kind asked for.
    #[error("{}: plugin `{name}` has no {expected} policy (it offers: {offers})", path.display())]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// Plugin name.
        name: String,
        /// Kind asked for.
        expected: Kind,
        /// What it has.
        offers: String,
    },
    /// The plugin refused its parameters (or failed to build).
    #[error("{}: plugin `{name}` refused its params: {refusal}", path.display())]
    Params {
        /// The file.
        path: PathBuf,
        /// Plugin name.
        name: String,
        /// The parameter at fault, if any, and the plugin's message.
        refusal: Refusal,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plugin file named in a configuration, with where to look for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// The path as written.
    pub written: String,
    /// Candidate paths, in order: as written if absolute, else under the configuration's
    /// directory, then under each plugin directory.
    pub candidates: Vec<PathBuf>,
    /// Load it even if others could have changed it.
    pub allow_insecure: bool,
}

impl PluginSpec {
    /// A spec for `written`, relative paths tried under each of `dirs` in order.
    pub fn new(written: &str, dirs: &[PathBuf], allow_insecure: bool) -> Self {
        let path = Path::new(written);
        let candidates = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            dirs.iter().map(|d| d.join(path)).collect()
        };
        Self {
            written: written.to_owned(),
            candidates,
            allow_insecure,
        }
    }

    /// The first candidate that exists.
    pub fn resolve(&self) -> Result<PathBuf, PluginError> {
        self.candidates
            .iter()
            .find(|p| p.exists())
            .cloned()
            .ok_or_else(|| PluginError::NotFound {
                written: self.written.clone(),
                searched: self.candidates.clone(),
            })
    }
}

/// A loaded plugin: where it came from and who it is.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// Canonical path of the file.
    pub path: PathBuf,
    /// What the plugin says of itself.
    pub info: Info,
    library: Library,
}

impl Plugin {
    /// "cpu", "memory" or "cpu+memory".
    pub fn kinds(&self) -> &'static str {
        match (self.info.has_cpu_policy, self.info.has_memory_policy) {
            (true, true) => "cpu+memory",
            (true, false) => "cpu",
            (false, true) => "memory",
            (false, false) => "none",
        }
    }

    fn check_kind(&self, kind: Kind) -> Result<(), PluginError> {
        let has = match kind {
            Kind::Cpu => self.info.has_cpu_policy,
            Kind::Memory => self.info.has_memory_policy,
        };
        if has {
            Ok(())
        } else {
            Err(PluginError::WrongKind {
                path: self.path.clone(),
                name: self.info.name.clone(),
                expected: kind,
                offers: self.kinds().to_owned(),
            })
        }
    }

    fn params_error(&self, refusal: Refusal) -> PluginError {
        PluginError::Params {
            path: self.path.clone(),
            name: self.info.name.clone(),
            refusal,
        }
    }

    /// The parameters of its policy of `kind`.
    pub fn params(&self, kind: Kind) -> Vec<vcoord_api::ParamSpec> {
        match kind {
            Kind::Cpu => self.library.cpu_params(),
            Kind::Memory => self.library.memory_params(),
        }
    }
}

/// Finds, vets and loads the plugin `spec` names (once per file for the whole process:
/// libraries are never unloaded).
pub fn load(spec: &PluginSpec) -> Result<Plugin, PluginError> {
    let found = spec.resolve()?;
    let path = found.canonicalize().unwrap_or(found);
    check_permissions(&path, spec.allow_insecure)?;
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Plugin>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(plugin) = loaded.get(&path) {
        return Ok(plugin.clone());
    }
    let library = Library::open(&path).map_err(|source| PluginError::Open {
        path: path.clone(),
        source,
    })?;
    let info = library.info();
    library.set_log_sink(log_sink, &info.name);
    info!(plugin = %info.name, version = %info.version, path = %path.display(), "plugin loaded");
    let plugin = Plugin {
        path: path.clone(),
        info,
        library,
    };
    loaded.insert(path, plugin.clone());
    Ok(plugin)
}

/// Refuses a file that someone other than root or this user could have written, or that sits
/// under a directory others may write to (they could swap it): [`crate::trust`]. With
/// `allow_insecure` it is loaded anyway, with a warning.
fn check_permissions(path: &Path, allow_insecure: bool) -> Result<(), PluginError> {
    match crate::trust::check_trusted(path) {
        Ok(()) if allow_insecure => {
            warn!(path = %path.display(), "allow_insecure = true: this plugin passes the ownership and mode checks, which are off for it");
            Ok(())
        }
        Ok(()) => Ok(()),
        Err(why) if allow_insecure => {
            warn!(path = %path.display(), problem = %why, "loading a plugin that fails the ownership and mode checks (allow_insecure = true): whoever can write it runs code as vcoord");
            Ok(())
        }
        Err(why) => Err(PluginError::Insecure {
            path: path.to_path_buf(),
            why,
        }),
    }
}

/// Receives plugin log lines and passes them to `tracing`, tagged with the plugin's name.
extern "C" fn log_sink(level: abi::LogLevel, plugin: RStr<'_>, message: RStr<'_>) {
    let (plugin, message) = (plugin.as_str(), message.as_str());
    match level {
        1 => error!(plugin, "{message}"),
        2 => warn!(plugin, "{message}"),
        3 => info!(plugin, "{message}"),
        4 => debug!(plugin, "{message}"),
        _ => trace!(plugin, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_plugin_paths_are_tried_in_order() {
        let spec = PluginSpec::new(
            "libx.so",
            &[PathBuf::from("/a"), PathBuf::from("/b")],
            false,
        );
        assert_eq!(
            spec.candidates,
            vec![PathBuf::from("/a/libx.so"), PathBuf::from("/b/libx.so")]
        );
        let abs = PluginSpec::new("/c/libx.so", &[PathBuf::from("/a")], false);
        assert_eq!(abs.candidates, vec![PathBuf::from("/c/libx.so")]);
        assert!(matches!(spec.resolve(), Err(PluginError::NotFound { .. })));
    }
}
