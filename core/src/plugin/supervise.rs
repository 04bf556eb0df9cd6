//! Running a plugin's policy under supervision. A supervised policy runs its `decide` on a
//! thread of its own. The call is timed: over the budget is warned, three times over in a row
//! quarantines it, and a call still running after ten budgets is abandoned and quarantines at
//! once. A panic quarantines at once. A quarantined policy is never called again; its fallback
//! (a built-in) decides from then on, or nothing is changed when there is none. Plans that
//! break the guard are refused by the guard as for any policy.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};
use vcoord_plugin::abi;
use vcoord_plugin::convert::{self, cpu_plan_from_abi, memory_plan_from_abi};
use vcoord_plugin::host::{Library, Refusal};

use super::{load, Kind, PluginError, PluginSpec};
use crate::policy::{CpuPlan, CpuPolicy, MemoryPlan, MemoryPolicy, PolicyHealth};
use vcoord_api::snapshot::Snapshot;

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

    /// How the plugin is.
    fn health(&self, fallback: bool) -> PolicyHealth {
        match &self.quarantined {
            None => PolicyHealth::Ok,
            Some(reason) => PolicyHealth::Quarantined {
                reason: reason.clone(),
                fallback,
            },
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

    fn health(&self) -> PolicyHealth {
        self.supervisor.health(self.fallback.is_some())
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

    fn health(&self) -> PolicyHealth {
        self.supervisor.health(self.fallback.is_some())
    }
}

/// A built-in policy deciding in place of a plugin that was refused or could not be loaded:
/// it decides as the built-in does, and says why in its health, as a quarantined plugin with
/// a fallback does (so health is degraded and the fallback metric is 1).
pub struct Replaced<P: ?Sized> {
    fallback: Box<P>,
    reason: String,
}

impl<P: ?Sized> Replaced<P> {
    /// `fallback` deciding for a plugin refused for `reason`.
    pub fn new(fallback: Box<P>, reason: String) -> Self {
        Self { fallback, reason }
    }

    fn health_of(&self) -> PolicyHealth {
        PolicyHealth::Quarantined {
            reason: format!("not loaded: {}", self.reason),
            fallback: true,
        }
    }
}

impl CpuPolicy for Replaced<dyn CpuPolicy> {
    fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
        self.fallback.decide(snapshot)
    }

    fn learned(&self) -> Option<vcoord_api::params::Table> {
        self.fallback.learned()
    }

    fn relearn(&mut self, learned: &vcoord_api::params::Table) -> Result<(), String> {
        self.fallback.relearn(learned)
    }

    fn health(&self) -> PolicyHealth {
        self.health_of()
    }
}

impl MemoryPolicy for Replaced<dyn MemoryPolicy> {
    fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
        self.fallback.decide(snapshot)
    }

    fn health(&self) -> PolicyHealth {
        self.health_of()
    }
}
