//! The TOML configuration: one or more `[[host]]` tables, each naming its backend URI, tick
//! interval and policies. Parsing and validation are separate steps; every error names the
//! file, line, column and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use tracing::error;

use crate::limits::GuardSettings;
use crate::plugin::{self, DecideLimits, PluginError, PluginSpec};
use crate::policy::{
    find_cpu_policy, find_memory_policy, policy_names, CpuPolicy, Kind, MemoryPolicy,
};
use crate::source::Located;
use crate::vmcontrol::{CpuSetting, Mode, PlacementSetting, VmRule, VmSettings};

/// Longest host name, characters (a DNS name's limit).
pub const MAX_HOST_NAME: usize = 253;

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/vcoord/vcoord.toml";

/// Where the package installs plugins; always the last place a relative plugin path is looked
/// for.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/vcoord/plugins";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {}: {source}", path.display())]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file could have been written by someone other than root or this user.
    #[error("config {}: refused: {why}", path.display())]
    Insecure {
        /// File path.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        why: String,
    },
    /// The file is not a valid configuration.
    #[error(transparent)]
    Invalid(#[from] Located),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Directories relative plugin paths are looked up in, after the configuration's own.
    #[serde(default)]
    plugin_dirs: Vec<String>,
    /// Log level or filter of `vcoord run` (the command line and $RUST_LOG come first).
    log_level: Option<Spanned<String>>,
    metrics: Option<RawMetrics>,
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
    memory_interval_s: Option<Spanned<f64>>,
    fast_path: Option<bool>,
    cpu_capacity: Option<CpuCapacity>,
    ksm: Option<KsmMode>,
    guest_memory_budget_mib: Option<Spanned<u64>>,
    cpu_policy: Option<Spanned<RawPolicy>>,
    memory_policy: Option<Spanned<RawPolicy>>,
    shadow_cpu_policy: Option<Spanned<RawPolicy>>,
    shadow_memory_policy: Option<Spanned<RawPolicy>>,
    guard: Option<Spanned<GuardSettings>>,
    #[serde(rename = "vm", default)]
    vm_rules: Vec<Spanned<RawVmRule>>,
}

/// What a pCPU offers the vCPUs (`cpu_capacity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuCapacity {
    /// 100% less its measured non-VM load (host processes, QEMU's own threads).
    #[default]
    Measured,
    /// All of it: non-VM load is not measured (the original design's assumption).
    Whole,
}

/// Who runs the kernel's same-page merging on the host (`ksm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KsmMode {
    /// The memory policy turns it on and off and sets its scan rate, through the guard.
    #[default]
    Auto,
    /// The operator (or ksmtuned) runs it: vcoord reads it and never writes to it.
    Leave,
}

/// `[metrics]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
    fleet_host: Option<Spanned<String>>,
}

/// A `[[host.vm]]` rule as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVmRule {
    #[serde(rename = "match")]
    pattern: String,
    cpu: Option<Mode>,
    memory: Option<Mode>,
    min_mib: Option<f64>,
    max_mib: Option<f64>,
    shares: Option<f64>,
    placement: Option<PlacementSetting>,
    cpu_shares: Option<u64>,
    cpu_min_pct: Option<f64>,
    cpu_max_pct: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Option<Spanned<String>>,
    plugin: Option<Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, toml::Value>,
    fallback: Option<Spanned<RawFallback>>,
    decide_budget_ms: Option<Spanned<u64>>,
    max_over_budget: Option<Spanned<u32>>,
    #[serde(default)]
    allow_insecure: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFallback {
    Name(String),
    Table {
        name: String,
        #[serde(default)]
        params: toml::Table,
    },
}

/// Which policy runs, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyChoice {
    /// Built-in name, or for a plugin the path as written.
    pub name: String,
    /// The plugin file, when the policy comes from one.
    pub plugin: Option<PluginSpec>,
    /// Parameter table, as written.
    pub params: toml::Table,
    /// Built-in policy used if the plugin cannot be loaded or is quarantined.
    pub fallback: Option<Box<PolicyChoice>>,
    /// Time limits of a plugin's decide.
    pub limits: DecideLimits,
    /// Where in the configuration this choice was made, for errors.
    pub origin: Option<Origin>,
}

/// Where a policy choice sits in its configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// Dotted key of the policy table, e.g. `host[0].cpu_policy`.
    pub key: String,
    /// Line and column of `name` or `plugin`.
    pub line_col: Option<(usize, usize)>,
    /// Line and column of the `params` table and of each parameter.
    pub params_line_col: Option<(usize, usize)>,
    /// Line and column of each parameter key.
    pub param_line_col: BTreeMap<String, (usize, usize)>,
}

impl PolicyChoice {
    /// A built-in policy with the given parameters.
    pub fn builtin(name: &str, params: toml::Table) -> Self {
        Self {
            name: name.to_owned(),
            plugin: None,
            params,
            fallback: None,
            limits: DecideLimits::default(),
            origin: None,
        }
    }

    /// A plugin policy from `path` (tried as given), with no fallback.
    pub fn plugin(path: &str, params: toml::Table) -> Self {
        Self {
            name: path.to_owned(),
            plugin: Some(PluginSpec::new(path, &[PathBuf::from(".")], false)),
            params,
            fallback: None,
            limits: DecideLimits::default(),
            origin: None,
        }
    }

    /// Builds the CPU policy this choice names. A plugin that cannot be had is replaced by
    /// its fallback (logged as an error) when there is one.
    pub fn build_cpu(&self) -> Result<Box<dyn CpuPolicy>, String> {
        let Some(spec) = &self.plugin else {
            let info = find_cpu_policy(&self.name)
                .ok_or_else(|| format!("unknown CPU policy `{}`", self.name))?;
            return (info.build)(&self.params).map_err(|e| e.to_string());
        };
        let fallback = self.fallback.as_ref().map(|f| f.build_cpu()).transpose()?;
        plugin::cpu_policy(spec, &self.params, self.limits, fallback).or_else(|e| {
            let message = self.locate(&e);
            match &self.fallback {
                Some(f) => {
                    error!("{message}; falling back to built-in `{}`", f.name);
                    let fallback = f.build_cpu()?;
                    Ok(Box::new(crate::plugin::Replaced::<dyn CpuPolicy>::new(
                        fallback, message,
                    )))
                }
                None => Err(message),
            }
        })
    }

    /// Builds the memory policy this choice names (see [`Self::build_cpu`]).
    pub fn build_memory(&self) -> Result<Box<dyn MemoryPolicy>, String> {
        let Some(spec) = &self.plugin else {
            let info = find_memory_policy(&self.name)
                .ok_or_else(|| format!("unknown memory policy `{}`", self.name))?;
            return (info.build)(&self.params).map_err(|e| e.to_string());
        };
        let fallback = self
            .fallback
            .as_ref()
            .map(|f| f.build_memory())
            .transpose()?;
        plugin::memory_policy(spec, &self.params, self.limits, fallback).or_else(|e| {
            let message = self.locate(&e);
            match &self.fallback {
                Some(f) => {
                    error!("{message}; falling back to built-in `{}`", f.name);
                    let fallback = f.build_memory()?;
                    Ok(Box::new(crate::plugin::Replaced::<dyn MemoryPolicy>::new(
                        fallback, message,
                    )))
                }
                None => Err(message),
            }
        })
    }

    /// A plugin error, located at the key of the configuration it concerns.
    fn locate(&self, e: &PluginError) -> String {
        let Some(origin) = &self.origin else {
            return e.to_string();
        };
        let (key, line_col) = match e {
            PluginError::Params { refusal, .. } => {
                // The line of the key at fault, or of its table for a nested key.
                let param = refusal
                    .key
                    .as_deref()
                    .and_then(|k| k.split('.').next())
                    .filter(|k| origin.param_line_col.contains_key(*k));
                match param {
                    Some(k) => (
                        format!("{}.params.{k}", origin.key),
                        origin.param_line_col.get(k).copied(),
                    ),
                    None => (
                        format!("{}.params", origin.key),
                        origin.params_line_col.or(origin.line_col),
                    ),
                }
            }
            _ => (format!("{}.plugin", origin.key), origin.line_col),
        };
        Located {
            path: origin.path.clone(),
            line_col,
            key,
            message: e.to_string(),
        }
        .to_string()
    }

    /// What to call this policy in listings: the built-in name, or `plugin:<path>`.
    pub fn label(&self) -> String {
        match &self.plugin {
            None => self.name.clone(),
            Some(spec) => format!("plugin:{}", spec.written),
        }
    }
}

/// One host's settings.
#[derive(Clone, Debug, PartialEq)]
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
    /// Guest memory statistics are polled at most this often (libvirt fast path).
    pub memory_interval_s: f64,
    /// Read vCPU figures from /proc on a local `qemu:///system` host.
    pub fast_path: bool,
    /// What a pCPU offers the vCPUs.
    pub cpu_capacity: CpuCapacity,
    /// Who runs KSM on the host.
    pub ksm: KsmMode,
    /// CPU policy.
    pub cpu_policy: PolicyChoice,
    /// Memory policy.
    pub memory_policy: PolicyChoice,
    /// CPU policy run in shadow: it sees every snapshot, its plans are recorded, never applied.
    pub shadow_cpu_policy: Option<PolicyChoice>,
    /// Memory policy run in shadow.
    pub shadow_memory_policy: Option<PolicyChoice>,
    /// Guard limits.
    pub guard: GuardSettings,
    /// The operator's per-VM rules, in file order.
    pub vm_rules: Vec<VmRule>,
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
            memory_interval_s: 2.0,
            fast_path: true,
            cpu_capacity: CpuCapacity::Measured,
            ksm: KsmMode::Auto,
            cpu_policy: PolicyChoice::builtin(DEFAULT_CPU_POLICY, toml::Table::new()),
            memory_policy: PolicyChoice::builtin(DEFAULT_MEMORY_POLICY, toml::Table::new()),
            shadow_cpu_policy: None,
            shadow_memory_policy: None,
            guard: GuardSettings::default(),
            vm_rules: Vec::new(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// Builds the configured CPU policy.
    pub fn build_cpu_policy(&self) -> Result<Box<dyn CpuPolicy>, String> {
        self.cpu_policy.build_cpu()
    }

    /// Builds the configured memory policy.
    pub fn build_memory_policy(&self) -> Result<Box<dyn MemoryPolicy>, String> {
        self.memory_policy.build_memory()
    }
}

/// CPU policy used when a host names none.
pub const DEFAULT_CPU_POLICY: &str = "stable-balance";
/// Memory policy used when a host names none.
pub const DEFAULT_MEMORY_POLICY: &str = "pressure-balloon";

/// A whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Its hosts, in file order.
    pub hosts: Vec<HostConfig>,
    /// `log_level`, if set: a level name.
    pub log_level: Option<String>,
    /// `[metrics] listen`: where `/metrics`, `/healthz` and `/status.json` are served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[metrics] fleet_host`: the `fqdn` label of every series (default: the machine's FQDN).
    pub metrics_fleet_host: Option<String>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        // Whoever can write the configuration chooses the plugins vcoord loads.
        let text = crate::trust::read_regular(path, crate::trust::CONFIG_MAX_BYTES, true).map_err(
            |refusal| match refusal {
                crate::trust::ReadRefusal::Io(source) => ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                },
                crate::trust::ReadRefusal::Untrusted(why) => ConfigError::Insecure {
                    path: path.to_path_buf(),
                    why,
                },
            },
        )?;
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
        // Relative plugin paths: under the configuration's directory, then each plugin_dirs,
        // then where the package puts plugins.
        let mut plugin_dirs = vec![base_dir.clone()];
        plugin_dirs.extend(raw.plugin_dirs.iter().map(|d| base_dir.join(d)));
        plugin_dirs.push(PathBuf::from(DEFAULT_PLUGIN_DIR));
        let ctx = PolicyContext {
            path,
            text,
            plugin_dirs: &plugin_dirs,
        };
        let mut hosts: Vec<HostConfig> = Vec::new();
        for (i, h) in raw.hosts.into_iter().enumerate() {
            let key = |k: &str| format!("host[{i}].{k}");
            let name = h.name.get_ref().trim();
            if name.is_empty() {
                return Err(err(h.name.span(), key("name"), "must not be empty".into()));
            }
            if name.chars().count() > MAX_HOST_NAME {
                return Err(err(
                    h.name.span(),
                    key("name"),
                    format!(
                        "{} characters: a host name has at most {MAX_HOST_NAME} (it is in every log line and label)",
                        name.chars().count()
                    ),
                ));
            }
            if name.contains(crate::show::hidden) {
                return Err(err(
                    h.name.span(),
                    key("name"),
                    format!(
                        "`{}` has control or reordering characters (it is shown in logs, labels and tables)",
                        crate::show::shown(name)
                    ),
                ));
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
            if let Some(guard) = h.guard {
                if let Err((field, why)) = guard.get_ref().check() {
                    return Err(err(guard.span(), key(&format!("guard.{field}")), why));
                }
                host.guard = guard.into_inner();
            }
            if let Some(budget) = &h.guest_memory_budget_mib {
                let (v, floor) = (*budget.get_ref(), host.guard.guest_floor_mib);
                if !(floor..=crate::limits::MAX_MEMORY_MIB).contains(&v) {
                    return Err(err(
                        budget.span(),
                        key("guest_memory_budget_mib"),
                        format!(
                            "{v} is out of range [{floor}, {}] MiB: a budget below one guest's \
                             floor (guard.guest_floor_mib) holds every guest at its floor; \
                             leave it out for no budget",
                            crate::limits::MAX_MEMORY_MIB
                        ),
                    ));
                }
            }
            host.guest_memory_budget_mib = h.guest_memory_budget_mib.map(|b| b.into_inner());
            if let Some(mi) = h.memory_interval_s {
                let v = *mi.get_ref();
                if !(0.0..=3600.0).contains(&v) {
                    return Err(err(
                        mi.span(),
                        key("memory_interval_s"),
                        format!("{v} is out of range [0, 3600] seconds"),
                    ));
                }
                host.memory_interval_s = v;
            }
            if let Some(fast) = h.fast_path {
                host.fast_path = fast;
            }
            if let Some(capacity) = h.cpu_capacity {
                host.cpu_capacity = capacity;
            }
            if let Some(ksm) = h.ksm {
                host.ksm = ksm;
            }
            let mut rule_spans = Vec::new();
            for (j, rule) in h.vm_rules.into_iter().enumerate() {
                let span = rule.span();
                let raw = rule.into_inner();
                let rule_key = |k: &str| key(&format!("vm[{j}].{k}"));
                if raw.pattern.trim().is_empty() {
                    return Err(err(span, rule_key("match"), "must not be empty".into()));
                }
                let cpu = CpuSetting::combine(raw.cpu, raw.placement)
                    .map_err(|why| err(span.clone(), rule_key("placement"), why))?;
                let settings = VmSettings {
                    cpu,
                    memory: raw.memory,
                    min_mib: raw.min_mib,
                    max_mib: raw.max_mib,
                    shares: raw.shares,
                    cpu_shares: raw.cpu_shares,
                    cpu_min_pct: raw.cpu_min_pct,
                    cpu_max_pct: raw.cpu_max_pct,
                };
                if let Err((field, why)) = settings.check() {
                    return Err(err(span, rule_key(field), why));
                }
                host.vm_rules.push(VmRule {
                    pattern: raw.pattern,
                    settings,
                });
                rule_spans.push(span);
            }
            // Rules that are each sound may still combine into a contradiction for the VMs
            // that match several of them.
            if let Some((j, why)) =
                crate::vmcontrol::check_rules(&host.vm_rules, &|j| key(&format!("vm[{j}]")))
            {
                return Err(err(rule_spans[j].clone(), key(&format!("vm[{j}]")), why));
            }
            if let Some(policy) = h.cpu_policy {
                host.cpu_policy = check_policy(policy, &key("cpu_policy"), &ctx, Kind::Cpu)?;
            }
            if let Some(policy) = h.memory_policy {
                host.memory_policy =
                    check_policy(policy, &key("memory_policy"), &ctx, Kind::Memory)?;
            }
            if let Some(policy) = h.shadow_cpu_policy {
                host.shadow_cpu_policy = Some(check_policy(
                    policy,
                    &key("shadow_cpu_policy"),
                    &ctx,
                    Kind::Cpu,
                )?);
            }
            if let Some(policy) = h.shadow_memory_policy {
                host.shadow_memory_policy = Some(check_policy(
                    policy,
                    &key("shadow_memory_policy"),
                    &ctx,
                    Kind::Memory,
                )?);
            }
            // Two acting coordinators of one host would fight over its guests.
            if let Some(me) = (!host.dry_run)
                .then(|| crate::backend::host_identity(&host.uri))
                .flatten()
            {
                if let Some(other) = hosts.iter().find(|o| {
                    !o.dry_run && crate::backend::host_identity(&o.uri).as_ref() == Some(&me)
                }) {
                    return Err(err(
                        h.uri.span(),
                        key("uri"),
                        format!(
                            "`{}` reaches the same host as host `{}` (`{}`): one vcoord per host (make one of them dry_run = true to watch it twice)",
                            host.uri, other.name, other.uri
                        ),
                    ));
                }
            }
            hosts.push(host);
        }
        let log_level = match raw.log_level {
            None => None,
            Some(level) => {
                let name = level.get_ref().trim().to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace"].contains(&name.as_str()) {
                    return Err(err(
                        level.span(),
                        "log_level".into(),
                        format!(
                            "`{}` is not error, warn, info, debug or trace",
                            level.get_ref()
                        ),
                    ));
                }
                Some(name)
            }
        };
        let mut metrics_fleet_host = None;
        if let Some(host) = raw.metrics.as_ref().and_then(|m| m.fleet_host.as_ref()) {
            let name = host.get_ref().trim();
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(err(
                    host.span(),
                    "metrics.fleet_host".into(),
                    "must be a host name such as node1.example.org".into(),
                ));
            }
            metrics_fleet_host = Some(name.to_owned());
        }
        let metrics_listen = match raw.metrics {
            None => None,
            Some(m) => Some(m.listen.get_ref().trim().parse().map_err(|_| {
                err(
                    m.listen.span(),
                    "metrics.listen".into(),
                    format!(
                        "`{}` is not an address and port such as 127.0.0.1:9477",
                        m.listen.get_ref()
                    ),
                )
            })?),
        };
        Ok(Self {
            path: path.to_path_buf(),
            hosts,
            log_level,
            metrics_listen,
            metrics_fleet_host,
        })
    }
}

struct PolicyContext<'a> {
    path: &'a Path,
    text: &'a str,
    plugin_dirs: &'a [PathBuf],
}

fn check_policy(
    raw: Spanned<RawPolicy>,
    key: &str,
    ctx: &PolicyContext<'_>,
    kind: Kind,
) -> Result<PolicyChoice, ConfigError> {
    let (path, text) = (ctx.path, ctx.text);
    let table_span = raw.span();
    let raw = raw.into_inner();
    let err = |span: Option<std::ops::Range<usize>>, k: String, msg: String| {
        ConfigError::Invalid(Located::new(path, text, span, &k, msg))
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
    let mut limits = DecideLimits::default();
    if let Some(ms) = &raw.decide_budget_ms {
        if !(1..=60_000).contains(ms.get_ref()) {
            return Err(err(
                Some(ms.span()),
                format!("{key}.decide_budget_ms"),
                format!("{} is out of range [1, 60000] ms", ms.get_ref()),
            ));
        }
        limits.budget = std::time::Duration::from_millis(*ms.get_ref());
    }
    if let Some(n) = &raw.max_over_budget {
        if *n.get_ref() == 0 {
            return Err(err(
                Some(n.span()),
                format!("{key}.max_over_budget"),
                "must be at least 1".into(),
            ));
        }
        limits.max_over_budget = *n.get_ref();
    }
    let (name, plugin, line_span) = match (raw.name, raw.plugin) {
        (Some(name), None) => {
            let n = name.get_ref().clone();
            check_builtin(&n, &params, &spans, key, ctx, kind, Some(name.span()))?;
            (n, None, name.span())
        }
        (None, Some(file)) => {
            let written = file.get_ref().trim().to_owned();
            if written.is_empty() {
                return Err(err(
                    Some(file.span()),
                    format!("{key}.plugin"),
                    "must name a plugin file".into(),
                ));
            }
            let spec = PluginSpec::new(&written, ctx.plugin_dirs, raw.allow_insecure);
            (written, Some(spec), file.span())
        }
        (Some(name), Some(_)) => {
            return Err(err(
                Some(name.span()),
                key.to_owned(),
                format!(
                    "give either `name` (a built-in {kind} policy) or `plugin` (a file), not both"
                ),
            ))
        }
        (None, None) => {
            return Err(err(
                Some(table_span),
                key.to_owned(),
                format!("needs `name` (a built-in {kind} policy) or `plugin` (a plugin file)"),
            ))
        }
    };
    let fallback = match raw.fallback {
        None => None,
        Some(f) => {
            let span = f.span();
            let (fname, fparams) = match f.into_inner() {
                RawFallback::Name(n) => (n, toml::Table::new()),
                RawFallback::Table { name, params } => (name, params),
            };
            if plugin.is_none() {
                return Err(err(
                    Some(span),
                    format!("{key}.fallback"),
                    "only a plugin policy has a fallback".into(),
                ));
            }
            check_builtin(
                &fname,
                &fparams,
                &BTreeMap::new(),
                &format!("{key}.fallback"),
                ctx,
                kind,
                Some(span),
            )?;
            Some(Box::new(PolicyChoice::builtin(&fname, fparams)))
        }
    };
    let lc = |span: &std::ops::Range<usize>| crate::source::line_col(text, span.start);
    let origin = Origin {
        path: path.to_path_buf(),
        key: key.to_owned(),
        line_col: Some(lc(&line_span)),
        params_line_col: spans.values().next().map(lc),
        param_line_col: spans.iter().map(|(k, s)| (k.clone(), lc(s))).collect(),
    };
    Ok(PolicyChoice {
        name,
        plugin,
        params,
        fallback,
        limits,
        origin: Some(origin),
    })
}

/// Checks that `name` is a built-in policy of the kind and that `params` suit it.
fn check_builtin(
    name: &str,
    params: &toml::Table,
    spans: &BTreeMap<String, std::ops::Range<usize>>,
    key: &str,
    ctx: &PolicyContext<'_>,
    kind: Kind,
    name_span: Option<std::ops::Range<usize>>,
) -> Result<(), ConfigError> {
    // Building checks each parameter and the checks that involve several.
    let built = match kind {
        Kind::Cpu => find_cpu_policy(name).map(|p| (p.build)(params).map(drop)),
        Kind::Memory => find_memory_policy(name).map(|p| (p.build)(params).map(drop)),
    };
    let Some(built) = built else {
        let known = policy_names(kind);
        let name_key = if key.ends_with(".fallback") {
            key.to_owned()
        } else {
            format!("{key}.name")
        };
        return Err(ConfigError::Invalid(Located::new(
            ctx.path,
            ctx.text,
            name_span,
            &name_key,
            format!(
                "unknown {kind} policy `{name}` (built-in: {}; a plugin is named with `plugin = \"path/libx.so\"`)",
                known.join(", ")
            ),
        )));
    };
    if let Err(e) = built {
        let top_key = e.key.split('.').next().unwrap_or_default();
        return Err(ConfigError::Invalid(Located::new(
            ctx.path,
            ctx.text,
            spans
                .get(&e.key)
                .or_else(|| spans.get(top_key))
                .cloned()
                .or(name_span),
            &format!("{key}.params.{}", e.key),
            e.message,
        )));
    }
    Ok(())
}
