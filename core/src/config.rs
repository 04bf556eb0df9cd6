//! The TOML configuration: one or more `[[host]]` tables, each naming its backend URI, tick
//! interval and policies. Parsing and validation are separate steps; every error names the
//! file, line, column and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::guard::GuardSettings;
use crate::params::Params;
use crate::policy::{
    cpu_policies, find_cpu_policy, find_memory_policy, memory_policies, CpuPolicy, MemoryPolicy,
};
use crate::source::Located;

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/vcoord/vcoord.toml";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{0}")]
    Invalid(#[from] Located),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "host", default)]
    hosts: Vec<RawHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    uri: Spanned<String>,
    interval_s: Option<Spanned<f64>>,
    #[serde(default)]
    dry_run: bool,
    memory_stats_period_s: Option<Spanned<u32>>,
    guest_memory_budget_mib: Option<Spanned<u64>>,
    cpu_policy: Option<Spanned<RawPolicy>>,
    memory_policy: Option<Spanned<RawPolicy>>,
    #[serde(default)]
    guard: GuardSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, toml::Value>,
}

/// Which policy runs, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyChoice {
    /// Registered name.
    pub name: String,
    /// Parameter table, as written.
    pub params: toml::Table,
}

/// One host's settings.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Name used in logs and records.
    pub name: String,
    /// Backend URI: `sim:<scenario>` or a libvirt URI.
    pub uri: String,
    /// Time between ticks.
    pub interval_s: f64,
    /// Decide and log, but change nothing.
    pub dry_run: bool,
    /// Guest memory statistics period set on each domain when first seen.
    pub memory_stats_period_s: u32,
    /// Memory guests may have in all, if limited.
    pub guest_memory_budget_mib: Option<u64>,
    /// CPU policy.
    pub cpu_policy: PolicyChoice,
    /// Memory policy.
    pub memory_policy: PolicyChoice,
    /// Guard limits.
    pub guard: GuardSettings,
    /// Directory relative paths (scenarios) are resolved against.
    pub base_dir: PathBuf,
}

impl HostConfig {
    /// A host with default settings for `uri`.
    pub fn new(name: &str, uri: &str, base_dir: &Path) -> Self {
        Self {
            name: name.into(),
            uri: uri.into(),
            interval_s: 1.0,
            dry_run: false,
            memory_stats_period_s: 1,
            guest_memory_budget_mib: None,
            cpu_policy: PolicyChoice {
                name: DEFAULT_CPU_POLICY.into(),
                params: toml::Table::new(),
            },
            memory_policy: PolicyChoice {
                name: DEFAULT_MEMORY_POLICY.into(),
                params: toml::Table::new(),
            },
            guard: GuardSettings::default(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// Builds the configured CPU policy.
    pub fn build_cpu_policy(&self) -> Result<Box<dyn CpuPolicy>, String> {
        let info = find_cpu_policy(&self.cpu_policy.name)
            .ok_or_else(|| format!("unknown CPU policy `{}`", self.cpu_policy.name))?;
        let params =
            Params::parse(&self.cpu_policy.params, info.params).map_err(|e| e.to_string())?;
        (info.build)(&params).map_err(|e| e.to_string())
    }

    /// Builds the configured memory policy.
    pub fn build_memory_policy(&self) -> Result<Box<dyn MemoryPolicy>, String> {
        let info = find_memory_policy(&self.memory_policy.name)
            .ok_or_else(|| format!("unknown memory policy `{}`", self.memory_policy.name))?;
        let params =
            Params::parse(&self.memory_policy.params, info.params).map_err(|e| e.to_string())?;
        (info.build)(&params).map_err(|e| e.to_string())
    }
}

/// CPU policy used when a host names none.
pub const DEFAULT_CPU_POLICY: &str = "greedy-lpt";
/// Memory policy used when a host names none.
pub const DEFAULT_MEMORY_POLICY: &str = "threshold-balloon";

/// A whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Its hosts, in file order.
    pub hosts: Vec<HostConfig>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| Located::from_toml(path, text, &e))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let err = |span: std::ops::Range<usize>, key: String, msg: String| {
            ConfigError::Invalid(Located::new(path, text, Some(span), &key, msg))
        };
        if raw.hosts.is_empty() {
            return Err(ConfigError::Invalid(Located::new(
                path,
                text,
                None,
                "host",
                "no [[host]] table: nothing to coordinate",
            )));
        }
        let mut hosts: Vec<HostConfig> = Vec::new();
        for (i, h) in raw.hosts.into_iter().enumerate() {
            let key = |k: &str| format!("host[{i}].{k}");
            let name = h.name.get_ref().trim();
            if name.is_empty() {
                return Err(err(h.name.span(), key("name"), "must not be empty".into()));
            }
            if hosts.iter().any(|other| other.name == name) {
                return Err(err(
                    h.name.span(),
                    key("name"),
                    format!("host name `{name}` is used twice"),
                ));
            }
            let uri = h.uri.get_ref().trim();
            if uri.is_empty() || uri == "sim:" {
                return Err(err(
                    h.uri.span(),
                    key("uri"),
                    "must name a libvirt URI or sim:<scenario.toml>".into(),
                ));
            }
            let mut host = HostConfig::new(name, uri, &base_dir);
            host.dry_run = h.dry_run;
            if let Some(interval) = h.interval_s {
                let v = *interval.get_ref();
                if !(0.05..=3600.0).contains(&v) {
                    return Err(err(
                        interval.span(),
                        key("interval_s"),
                        format!("{v} is out of range [0.05, 3600] seconds"),
                    ));
                }
                host.interval_s = v;
            }
            if let Some(period) = h.memory_stats_period_s {
                if *period.get_ref() == 0 {
                    return Err(err(
                        period.span(),
                        key("memory_stats_period_s"),
                        "must be at least 1 second (0 turns guest statistics off)".into(),
                    ));
                }
                host.memory_stats_period_s = *period.get_ref();
            }
            host.guest_memory_budget_mib = h.guest_memory_budget_mib.map(|b| b.into_inner());
            host.guard = h.guard;
            if let Some(policy) = h.cpu_policy {
                host.cpu_policy = check_policy(policy, &key("cpu_policy"), path, text, true)?;
            }
            if let Some(policy) = h.memory_policy {
                host.memory_policy =
                    check_policy(policy, &key("memory_policy"), path, text, false)?;
            }
            hosts.push(host);
        }
        Ok(Self {
            path: path.to_path_buf(),
            hosts,
        })
    }
}

fn check_policy(
    raw: Spanned<RawPolicy>,
    key: &str,
    path: &Path,
    text: &str,
    cpu: bool,
) -> Result<PolicyChoice, ConfigError> {
    let raw = raw.into_inner();
    let name = raw.name.get_ref().clone();
    let specs = if cpu {
        find_cpu_policy(&name).map(|p| p.params)
    } else {
        find_memory_policy(&name).map(|p| p.params)
    };
    let Some(specs) = specs else {
        let known: Vec<&str> = if cpu {
            cpu_policies().iter().map(|p| p.name).collect()
        } else {
            memory_policies().iter().map(|p| p.name).collect()
        };
        return Err(ConfigError::Invalid(Located::new(
            path,
            text,
            Some(raw.name.span()),
            &format!("{key}.name"),
            format!(
                "unknown {} policy `{name}` (built-in: {})",
                if cpu { "CPU" } else { "memory" },
                known.join(", ")
            ),
        )));
    };
    let spans: BTreeMap<String, std::ops::Range<usize>> = raw
        .params
        .keys()
        .map(|k| (k.get_ref().clone(), k.span()))
        .collect();
    let params: toml::Table = raw
        .params
        .into_iter()
        .map(|(k, v)| (k.into_inner(), v))
        .collect();
    if let Err(e) = Params::parse(&params, specs) {
        return Err(ConfigError::Invalid(Located::new(
            path,
            text,
            spans.get(&e.key).cloned(),
            &format!("{key}.params.{}", e.key),
            e.message,
        )));
    }
    Ok(PolicyChoice { name, params })
}
