//! Policies from plugin files: finding and vetting the file, loading it once, converting
//! snapshots and plans across the ABI (the one place that does), and supervising each plugin
//! policy so that a panic, a stall or a bad plan never takes the daemon down.
//!
//! A supervised policy runs its `decide` on a thread of its own. The call is timed: over the
//! budget is warned, three times over in a row quarantines it, and a call still running after
//! ten budgets is abandoned and quarantines at once. A panic quarantines at once. A quarantined
//! policy is never called again; its fallback (a built-in) decides from then on, or nothing is
//! changed when there is none. Plans that break the guard are refused by the guard as for any
//! policy.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, trace, warn};
use vcoord_plugin::abi::{self as abi, RStr};
use vcoord_plugin::convert::{self, cpu_plan_from_abi, memory_plan_from_abi};
use vcoord_plugin::host::{Info, Library, OpenError, Refusal};

use crate::policy::{CpuPlan, CpuPolicy, MemoryPlan, MemoryPolicy};
use crate::snapshot::Snapshot;

/// Which policy kind a plugin is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A CPU policy.
    Cpu,
    /// A memory policy.
    Memory,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "CPU",
            Self::Memory => "memory",
        })
    }
}

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
/// in a directory others may write to (they could swap it).
fn check_permissions(path: &Path, allow_insecure: bool) -> Result<(), PluginError> {
    if allow_insecure {
        return Ok(());
    }
    let insecure = |why: String| PluginError::Insecure {
        path: path.to_path_buf(),
        why,
    };
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let meta = std::fs::metadata(path).map_err(|e| insecure(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(insecure("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(insecure(format!(
            "file is group- or world-writable (mode {:o})",
            mode & 0o7777
        )));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(insecure(format!(
            "file is owned by uid {}, not root or this user (uid {me})",
            meta.uid()
        )));
    }
    if let Some(dir) = path.parent() {
        if let Ok(dmeta) = std::fs::metadata(dir) {
            let dmode = dmeta.permissions().mode();
            let sticky = dmode & 0o1000 != 0;
            if dmode & 0o022 != 0 && !sticky {
                return Err(insecure(format!(
                    "directory {} is group- or world-writable (mode {:o})",
                    dir.display(),
                    dmode & 0o7777
                )));
            }
        }
    }
    Ok(())
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

/// How long a plugin's `decide` may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecideLimits {
    /// Calls longer than this are warned about.
    pub budget: Duration,
    /// Quarantine after this many over-budget calls in a row.
    pub max_over_budget: u32,
}

impl Default for DecideLimits {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(100),
            max_over_budget: 3,
        }
    }
}

impl DecideLimits {
    /// A call still running after this long is abandoned.
    pub fn hard_limit(&self) -> Duration {
        self.budget * 10
    }
}

/// Builds plugin `spec`'s CPU policy with `params`, supervised, with an optional fallback.
pub fn cpu_policy(
    spec: &PluginSpec,
    params: &toml::Table,
    limits: DecideLimits,
    fallback: Option<Box<dyn CpuPolicy>>,
) -> Result<Box<dyn CpuPolicy>, PluginError> {
    let supervisor = start(
        spec,
        params,
        limits,
        Kind::Cpu,
        Library::new_cpu_policy,
        |object: &mut abi::CpuPolicyBox, snapshot| {
            object
                .decide(snapshot)
                .into_result()
                .map_err(|e| e.into_string())
        },
    )?;
    Ok(Box::new(SupervisedCpu {
        supervisor,
        fallback,
    }))
}

/// Builds plugin `spec`'s memory policy with `params`, supervised, with an optional fallback.
pub fn memory_policy(
    spec: &PluginSpec,
    params: &toml::Table,
    limits: DecideLimits,
    fallback: Option<Box<dyn MemoryPolicy>>,
) -> Result<Box<dyn MemoryPolicy>, PluginError> {
    let supervisor = start(
        spec,
        params,
        limits,
        Kind::Memory,
        Library::new_memory_policy,
        |object: &mut abi::MemoryPolicyBox, snapshot| {
            object
                .decide(snapshot)
                .into_result()
                .map_err(|e| e.into_string())
        },
    )?;
    Ok(Box::new(SupervisedMemory {
        supervisor,
        fallback,
    }))
}

/// Loads the plugin, checks it has a policy of `kind`, builds it from `params` with `build`
/// and puts it on a thread of its own, where `decide` serves it.
fn start<O: Send + 'static, P: Send + 'static>(
    spec: &PluginSpec,
    params: &toml::Table,
    limits: DecideLimits,
    kind: Kind,
    build: fn(&Library, &str) -> Result<O, Refusal>,
    decide: fn(&mut O, &abi::Snapshot) -> Result<P, String>,
) -> Result<Supervisor<P>, PluginError> {
    let plugin = load(spec)?;
    plugin.check_kind(kind)?;
    let text = toml::to_string(params).unwrap_or_default();
    let mut object = build(&plugin.library, &text).map_err(|m| plugin.params_error(m))?;
    let worker = Worker::spawn(&plugin.info.name, move |snapshot| {
        decide(&mut object, snapshot)
    });
    Ok(Supervisor::new(&plugin.info.name, worker, limits))
}

/// A plugin policy object on a thread of its own, answering one snapshot at a time.
struct Worker<P> {
    requests: SyncSender<Arc<abi::Snapshot>>,
    replies: Receiver<Result<P, String>>,
}

impl<P: Send + 'static> Worker<P> {
    fn spawn(
        name: &str,
        mut decide: impl FnMut(&abi::Snapshot) -> Result<P, String> + Send + 'static,
    ) -> Self {
        let (requests, incoming) = mpsc::sync_channel::<Arc<abi::Snapshot>>(1);
        let (outgoing, replies) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name(format!("plugin {name}"))
            .spawn(move || {
                while let Ok(snapshot) = incoming.recv() {
                    if outgoing.send(decide(&snapshot)).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            error!(plugin = name, error = %e, "cannot start the plugin's thread");
        }
        Self { requests, replies }
    }
}

/// Times a plugin's calls and decides when it is quarantined.
struct Supervisor<P> {
    name: String,
    worker: Option<Worker<P>>,
    limits: DecideLimits,
    over_budget: u32,
    quarantined: Option<String>,
}

impl<P: Send + 'static> Supervisor<P> {
    fn new(name: &str, worker: Worker<P>, limits: DecideLimits) -> Self {
        Self {
            name: name.to_owned(),
            worker: Some(worker),
            limits,
            over_budget: 0,
            quarantined: None,
        }
    }

    /// The plugin's plan, or why it is (now) quarantined.
    fn call(&mut self, snapshot: &Snapshot) -> Result<P, String> {
        if let Some(why) = &self.quarantined {
            return Err(why.clone());
        }
        let outcome = match &self.worker {
            None => Err("its thread is gone".to_owned()),
            Some(worker) => {
                let started = Instant::now();
                match worker
                    .requests
                    .send(Arc::new(convert::snapshot_to_abi(snapshot)))
                {
                    Err(_) => Err("its thread is gone".to_owned()),
                    Ok(()) => match worker.replies.recv_timeout(self.limits.hard_limit()) {
                        Ok(Ok(plan)) => self.timed(started.elapsed()).map(|()| plan),
                        Ok(Err(message)) => Err(message),
                        Err(RecvTimeoutError::Timeout) => Err(format!(
                            "decide still running after {} ms (10x its budget); abandoned",
                            self.limits.hard_limit().as_millis()
                        )),
                        Err(RecvTimeoutError::Disconnected) => Err("its thread ended".to_owned()),
                    },
                }
            }
        };
        outcome.map_err(|why| {
            error!(plugin = %self.name, reason = %why, "plugin policy quarantined: it will not be called again");
            self.worker = None;
            self.quarantined = Some(why.clone());
            why
        })
    }

    /// Budget accounting for a call that returned after `took`.
    fn timed(&mut self, took: Duration) -> Result<(), String> {
        if took <= self.limits.budget {
            self.over_budget = 0;
            return Ok(());
        }
        self.over_budget += 1;
        warn!(
            plugin = %self.name,
            took_ms = took.as_millis() as u64,
            budget_ms = self.limits.budget.as_millis() as u64,
            in_a_row = self.over_budget,
            "plugin decide over budget"
        );
        if self.over_budget >= self.limits.max_over_budget {
            Err(format!(
                "decide over its {} ms budget {} times in a row",
                self.limits.budget.as_millis(),
                self.over_budget
            ))
        } else {
            Ok(())
        }
    }
}

/// A plan whose reason can be amended.
trait Reasoned: Default {
    fn reason_mut(&mut self) -> &mut String;
}

impl Reasoned for CpuPlan {
    fn reason_mut(&mut self) -> &mut String {
        &mut self.reason
    }
}

impl Reasoned for MemoryPlan {
    fn reason_mut(&mut self) -> &mut String {
        &mut self.reason
    }
}

impl<A: Send + 'static> Supervisor<A> {
    /// The plugin's plan converted by `convert`; once it is quarantined, the fallback's plan
    /// (or an empty one) with a reason that says so.
    fn plan_or_fallback<P: Reasoned>(
        &mut self,
        snapshot: &Snapshot,
        convert: fn(A) -> P,
        fallback: Option<impl FnOnce(&Snapshot) -> P>,
    ) -> P {
        let why = match self.call(snapshot) {
            Ok(plan) => return convert(plan),
            Err(why) => why,
        };
        let name = &self.name;
        match fallback {
            Some(fallback) => {
                let mut plan = fallback(snapshot);
                let reason = plan.reason_mut();
                *reason = format!("plugin {name} quarantined ({why}); fallback: {reason}");
                plan
            }
            None => {
                let mut plan = P::default();
                *plan.reason_mut() =
                    format!("plugin {name} quarantined ({why}); no fallback, no change");
                plan
            }
        }
    }
}

struct SupervisedCpu {
    supervisor: Supervisor<abi::CpuPlan>,
    fallback: Option<Box<dyn CpuPolicy>>,
}

impl CpuPolicy for SupervisedCpu {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        let fallback = self.fallback.as_mut().map(|f| |s: &Snapshot| f.decide(s));
        self.supervisor
            .plan_or_fallback(snapshot, cpu_plan_from_abi, fallback)
    }
}

struct SupervisedMemory {
    supervisor: Supervisor<abi::MemoryPlan>,
    fallback: Option<Box<dyn MemoryPolicy>>,
}

impl MemoryPolicy for SupervisedMemory {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        let fallback = self.fallback.as_mut().map(|f| |s: &Snapshot| f.decide(s));
        self.supervisor
            .plan_or_fallback(snapshot, memory_plan_from_abi, fallback)
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
