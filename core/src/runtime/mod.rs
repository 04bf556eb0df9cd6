//! The loop: collect -> snapshot -> decide -> guard -> actuate -> record, once per tick.

pub mod control;
pub mod fleet;
pub mod guard;
pub mod learned;
pub mod record;
pub mod snapshot;
pub mod virtio_mem;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::backend::{self, Backend, BackendCalls, BackendError, BackendOptions};
use crate::config::HostConfig;
use crate::policy::PolicyHealth;
use crate::policy::{CpuPlan, CpuPolicy, MemoryPlan, MemoryPolicy, VcpuPin, VmTune};
use crate::runtime::control::Control;
use crate::runtime::fleet::{Fleet, FleetSignals};
use crate::runtime::guard::{BalloonChange, Guard, GuardedPlan, Refusal, Rejection};
use crate::runtime::learned::LearnedFile;
use crate::runtime::record::{PlugRequest, ShadowRecord, TickRecord};
use crate::runtime::snapshot::{Snapshot, SnapshotBuilder, SnapshotSettings};
use crate::units::{Kib, KIB_PER_MIB};

/// A host that cannot be coordinated at all (as opposed to a tick that fails and is retried).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The backend cannot be opened.
    #[error("host {host}: {source}")]
    Backend {
        /// Host name.
        host: String,
        /// What failed.
        source: BackendError,
    },
    /// A policy cannot be built.
    #[error("host {host}: {message}")]
    Policy {
        /// Host name.
        host: String,
        /// What failed.
        message: String,
    },
    /// The record file cannot be written.
    #[error("host {host}: writing the record: {source}")]
    Record {
        /// Host name.
        host: String,
        /// I/O error.
        source: std::io::Error,
    },
}

/// How a run goes, beyond the host configuration.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop after this many ticks (default: until the backend is finished, i.e. forever on a
    /// real host).
    pub ticks: Option<u64>,
    /// Change nothing, whatever the configuration says.
    pub dry_run: bool,
    /// Run the simulator in real time.
    pub realtime: bool,
    /// Put each tick's snapshot into its record (for `vcoord replay`).
    pub record_snapshots: bool,
    /// A simulated host's noise seed instead of its scenario's (`vcoord compare --seeds`).
    pub sim_seed: Option<u64>,
    /// Where an acting daemon keeps what its CPU policy learned of a real host
    /// ([`learned`]); `None`: nowhere (each run starts as new).
    pub state_dir: Option<std::path::PathBuf>,
}

#[derive(Debug)]
struct KnownVm {
    uuid: String,
    /// When it was first seen, and whether its guest has reported memory statistics.
    seen_at: Instant,
    reports: GuestReports,
    last_target_kib: Option<u64>,
    /// The balloon part of the last target, for a VM with virtio-mem (libvirt counts it over
    /// the boot memory).
    last_balloon_kib: Option<u64>,
}

/// Whether a guest reports memory statistics: without them it is never ballooned, and the
/// operator is told why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestReports {
    /// None yet.
    NotYet,
    /// It has reported.
    Reporting,
    /// None for [`SILENT_AFTER`]: said once.
    Silent,
}

/// How long a new guest may go without memory statistics before vcoord says it cannot balloon
/// it.
const SILENT_AFTER: Duration = Duration::from_secs(60);

/// One host's coordinator: its backend, policies, guard and the state between ticks.
pub struct Coordinator {
    host: HostConfig,
    backend: Box<dyn Backend>,
    cpu_policy: Box<dyn CpuPolicy>,
    memory_policy: Box<dyn MemoryPolicy>,
    shadow: Option<Shadow>,
    record_snapshots: bool,
    guard: Guard,
    builder: SnapshotBuilder,
    known: HashMap<String, KnownVm>,
    dry_run: bool,
    /// Dry run by the command line, whatever the configuration says.
    dry_run_forced: bool,
    throttle: Throttle,
    /// KSM's settings where this process started ksmd (found stopped): stopped again when the
    /// process stops ([`Coordinator::release`]).
    ksm_started: Option<vcoord_api::KsmPlan>,
    observer: Option<Arc<dyn Observer>>,
    start_wall_s: Option<f64>,
    fleet: Fleet,
    follow: virtio_mem::Follow,
    /// Whether the guest memory budget was last seen below the guests' floors (said once a
    /// change).
    budget_short: bool,
    /// Dedicated VMs last seen left shared, with why (said once a change).
    left_shared: Vec<(String, String)>,
    /// Where what the CPU policy learned is kept across restarts (an acting daemon on a real
    /// host), and whether keeping it last failed (said once a change).
    learned: Option<(LearnedFile, bool)>,
}

/// A kind of warning that may repeat every tick: what [`Throttle`] counts by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Warning {
    /// The host could not be sampled.
    Sampling,
    /// The guard refused or trimmed an action for this VM, for this reason.
    Guard(Refusal, String),
    /// The hypervisor refused a pin of this VM.
    Pin(String),
    /// The hypervisor refused a balloon target of this VM.
    Balloon(String),
    /// The host refused KSM's settings.
    Ksm,
}

/// Lets each kind of repeated warning through at most once a minute, saying how many were held
/// back.
#[derive(Debug, Default)]
struct Throttle {
    seen: HashMap<Warning, (Instant, u64)>,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(60);

    /// Kinds remembered at most; older ones are dropped past it.
    const MAX_KINDS: usize = 10_000;

    /// `Some(held back since the last one)` when a warning of this kind may be logged now.
    fn allow(&mut self, kind: Warning) -> Option<u64> {
        let now = Instant::now();
        if self.seen.len() > Self::MAX_KINDS {
            self.seen
                .retain(|_, (last, _)| now.duration_since(*last) < Self::EVERY);
        }
        match self.seen.get_mut(&kind) {
            Some((last, held)) if now.duration_since(*last) < Self::EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                self.seen.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

/// What a tick cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct TickCost {
    /// The whole tick.
    pub tick: Duration,
    /// Sampling the host.
    pub collect: Duration,
    /// Hypervisor calls made.
    pub calls: u64,
    /// Hypervisor events used in place of calls.
    pub events: u64,
}

/// A policy's kind (`cpu`, `memory`), its label and how it is.
pub type PolicyState<'a> = (&'a str, &'a str, PolicyHealth);

/// One tick as a coordinator reports it.
pub struct TickReport<'a> {
    /// What the policies saw.
    pub snapshot: &'a Snapshot,
    /// Each vCPU's cumulative run time as sampled: (VM, vCPU, ns).
    pub run_times: &'a [(String, u32, u64)],
    /// What was decided and done.
    pub record: &'a TickRecord,
    /// What it cost.
    pub cost: TickCost,
    /// Both policies.
    pub policies: [PolicyState<'a>; 2],
    /// What a fleet balancer needs: contention, deficits, relief.
    pub fleet: &'a FleetSignals,
}

/// Whatever watches a coordinator's ticks (the service's metrics and status page). The loop
/// calls it and knows nothing else of it.
pub trait Observer: Send + Sync {
    /// A tick of `host` that could not sample the host.
    fn tick_failed(&self, host: &str);
    /// A tick of `host` that ran.
    fn tick(&self, host: &str, report: &TickReport<'_>);
}

/// A new configuration for a running host (see [`Coordinator::reconfigure`]).
pub struct Update {
    /// The host's new settings.
    pub host: HostConfig,
    /// A new CPU policy, or `None` to keep the running one.
    pub cpu_policy: Option<Box<dyn CpuPolicy>>,
    /// A new memory policy, or `None` to keep the running one.
    pub memory_policy: Option<Box<dyn MemoryPolicy>>,
    /// New shadow policies (`Some(None)`: none any more), or `None` to keep them.
    pub shadow: Option<Option<Shadow>>,
}

/// How snapshots are made for `host`.
fn snapshot_settings(host: &HostConfig) -> SnapshotSettings {
    SnapshotSettings {
        guest_budget_kib: host.guest_memory_budget_mib.map(|m| Kib::from_mib(m).get()),
        // Guest statistics older than twice the longest of the tick, the stats period and the
        // memory interval, and a second, are stale.
        stats_max_age_s: 2.0
            * host
                .interval_s
                .max(host.memory_stats_period_s as f64)
                .max(host.memory_interval_s)
            + 1.0,
        limits: host.guard.limits(),
        vm_rules: host.vm_rules.clone(),
        measure_other_load: host.cpu_capacity == crate::config::CpuCapacity::Measured,
        ksm_managed: host.ksm == crate::config::KsmMode::Auto,
    }
}

impl Coordinator {
    /// Opens the host's backend and builds its policies.
    pub fn open(host: &HostConfig, options: &RunOptions) -> Result<Self, RunError> {
        let policy_err = |message| RunError::Policy {
            host: host.name.clone(),
            message,
        };
        let cpu_policy = host.build_cpu_policy().map_err(policy_err)?;
        let memory_policy = host.build_memory_policy().map_err(policy_err)?;
        let shadow = Shadow::build(host).map_err(policy_err)?;
        Self::open_with(host, options, cpu_policy, memory_policy, shadow)
    }

    /// Opens the host's backend, with policies built already.
    pub fn open_with(
        host: &HostConfig,
        options: &RunOptions,
        cpu_policy: Box<dyn CpuPolicy>,
        memory_policy: Box<dyn MemoryPolicy>,
        shadow: Option<Shadow>,
    ) -> Result<Self, RunError> {
        let backend_options = BackendOptions {
            realtime: options.realtime,
            sim_seed: options.sim_seed,
            libvirt: crate::backend::libvirt::LibvirtOptions {
                fast_path: host.fast_path,
                memory_interval: Duration::from_secs_f64(host.memory_interval_s),
                ..Default::default()
            },
        };
        let backend =
            backend::open(&host.uri, &host.base_dir, &backend_options).map_err(|source| {
                RunError::Backend {
                    host: host.name.clone(),
                    source,
                }
            })?;
        let mut coordinator = Self::new(host, backend, cpu_policy, memory_policy, options.dry_run);
        coordinator.shadow = shadow;
        coordinator.record_snapshots = options.record_snapshots;
        let acting = !coordinator.dry_run && !host.uri.starts_with("sim:");
        if let Some(dir) = options.state_dir.as_deref().filter(|_| acting) {
            let file = LearnedFile::new(dir, &host.uri, &host.cpu_policy.label());
            coordinator.learned = Some((file, false));
            coordinator.relearn();
        }
        Ok(coordinator)
    }

    /// A coordinator over a given backend and policies.
    pub fn new(
        host: &HostConfig,
        backend: Box<dyn Backend>,
        cpu_policy: Box<dyn CpuPolicy>,
        memory_policy: Box<dyn MemoryPolicy>,
        dry_run: bool,
    ) -> Self {
        let settings = snapshot_settings(host);
        Self {
            host: host.clone(),
            backend,
            cpu_policy,
            memory_policy,
            shadow: None,
            record_snapshots: false,
            guard: Guard::new(host.guard.clone()),
            builder: SnapshotBuilder::new(settings),
            known: HashMap::new(),
            dry_run: dry_run || host.dry_run,
            dry_run_forced: dry_run,
            throttle: Throttle::default(),
            ksm_started: None,
            observer: None,
            start_wall_s: None,
            fleet: Fleet::default(),
            follow: virtio_mem::Follow::default(),
            budget_short: false,
            left_shared: Vec::new(),
            learned: None,
        }
    }

    /// Gives the CPU policy back what it learned in a process before, from the state file.
    fn relearn(&mut self) {
        let Some((file, _)) = &mut self.learned else {
            return;
        };
        let host = &self.host.name;
        match file.read() {
            Ok(Some(learned)) => match self.cpu_policy.relearn(&learned) {
                Ok(()) => {
                    info!(host = %host, file = %file.path().display(), "CPU policy: what it learned before the restart taken back")
                }
                Err(why) => {
                    warn!(host = %host, file = %file.path().display(), why = %why, "CPU policy: what it learned before the restart ignored")
                }
            },
            Ok(None) => {}
            Err(why) => {
                warn!(host = %host, why = %why, "learned state unreadable, ignored (the policy starts as new)")
            }
        }
    }

    /// Keeps what the CPU policy has learned, at `now_s`; a failure is said once until it
    /// succeeds again.
    fn keep_learned(&mut self, now_s: f64) {
        let Some((file, failing)) = &mut self.learned else {
            return;
        };
        match file.keep(self.cpu_policy.learned(), now_s) {
            Ok(_) if *failing => {
                *failing = false;
                info!(host = %self.host.name, file = %file.path().display(), "learned state kept again");
            }
            Ok(_) => {}
            Err(why) => {
                if !std::mem::replace(failing, true) {
                    warn!(host = %self.host.name, why = %why, "cannot keep the learned state (a restart will start the policy as new)");
                }
            }
        }
    }

    /// What the CPU policy has learned of the host that a restart keeps.
    pub fn cpu_learned(&self) -> Option<vcoord_api::params::Table> {
        self.cpu_policy.learned()
    }

    /// Whether the backend has nothing more to show.
    pub fn finished(&self) -> bool {
        self.backend.finished()
    }

    /// The host's configuration as this coordinator runs it.
    pub fn host(&self) -> &HostConfig {
        &self.host
    }

    /// What drives this host, for logs.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Waits for the next tick; `control` cuts the wait short when a stop is asked for.
    pub fn wait(&mut self, control: &Control) {
        let interval = Duration::from_secs_f64(self.host.interval_s);
        self.backend.wait(interval, &|d| {
            control.sleep(d);
        });
    }

    /// Takes a new configuration of this host at a tick boundary. Policies given replace the
    /// running ones (whose state is lost); `None` keeps a running policy and its state. The
    /// backend and what was learnt of the VMs are kept: `update.host.uri` must be the same.
    pub fn reconfigure(&mut self, update: Update) {
        let Update {
            host,
            cpu_policy,
            memory_policy,
            shadow,
        } = update;
        if let Some(p) = cpu_policy {
            self.cpu_policy = p;
            if let Some((file, _)) = &mut self.learned {
                file.set_policy(&host.cpu_policy.label());
            }
        }
        if let Some(p) = memory_policy {
            self.memory_policy = p;
        }
        if let Some(shadow) = shadow {
            self.shadow = shadow;
        }
        self.guard = Guard::new(host.guard.clone());
        self.builder.set_settings(snapshot_settings(&host));
        self.dry_run = self.dry_run_forced || host.dry_run;
        self.host = host;
    }

    /// Starts over as a new vcoord process would on the same host: policies built afresh from
    /// the configuration, no previous sample, nothing learnt of the VMs. The backend goes on
    /// (a simulated host does not restart with vcoord): this is how restarts are simulated.
    pub fn restart(&mut self) -> Result<(), RunError> {
        let policy_err = |message| RunError::Policy {
            host: self.host.name.clone(),
            message,
        };
        // What the policy learned goes over, as the state file carries it over a real restart.
        let learned = self.cpu_policy.learned();
        self.cpu_policy = self.host.build_cpu_policy().map_err(policy_err)?;
        if let Some(l) = &learned {
            let _ = self.cpu_policy.relearn(l);
        }
        self.memory_policy = self.host.build_memory_policy().map_err(policy_err)?;
        self.shadow = Shadow::build(&self.host).map_err(policy_err)?;
        self.guard = Guard::new(self.host.guard.clone());
        self.builder = SnapshotBuilder::new(snapshot_settings(&self.host));
        self.known.clear();
        self.throttle = Throttle::default();
        Ok(())
    }

    /// Runs until `ticks` ticks are done, the backend is finished or `control` asks for a
    /// stop, passing each tick's record to `on_tick`. A stop lets the tick in progress finish.
    pub fn run(
        &mut self,
        ticks: Option<u64>,
        control: &Control,
        mut on_tick: impl FnMut(&TickRecord) -> std::io::Result<()>,
    ) -> Result<u64, RunError> {
        info!(host = %self.host.name, backend = %self.backend.describe(), dry_run = self.dry_run, "coordinating");
        let mut done = 0;
        while ticks.is_none_or(|n| done < n)
            && !self.backend.finished()
            && !control.stop_requested()
        {
            if let Some(record) = self.tick() {
                if let Err(source) = on_tick(&record) {
                    self.release();
                    return Err(RunError::Record {
                        host: self.host.name.clone(),
                        source,
                    });
                }
            }
            done += 1;
            if ticks.is_none_or(|n| done < n) {
                self.wait(control);
            }
        }
        self.release();
        Ok(done)
    }

    /// Undoes, as the process stops, what it started and would have stopped later: ksmd, where
    /// this process started it. What it merged stays merged (`run` = 0).
    pub fn release(&mut self) {
        let Some(ksm) = self.ksm_started.take() else {
            return;
        };
        let stop = vcoord_api::KsmPlan { run: false, ..ksm };
        match self.backend.set_ksm(&stop) {
            Ok(()) => info!(host = %self.host.name, "KSM stopped: this process started it"),
            Err(e) => {
                warn!(host = %self.host.name, error = %e, "KSM started by this process could not be stopped")
            }
        }
    }

    /// One tick; `None` when the host could not be sampled (logged; the next tick retries).
    pub fn tick(&mut self) -> Option<TickRecord> {
        let started = Instant::now();
        let mut sample = match self.backend.sample() {
            Ok(sample) => sample,
            Err(e) => {
                let text = e.to_string();
                if let Some(held) = self.throttle.allow(Warning::Sampling) {
                    warn!(host = %self.host.name, error = %text, held_back = held, "sampling failed; retrying next tick");
                }
                if let Some(o) = &self.observer {
                    o.tick_failed(&self.host.name);
                }
                return None;
            }
        };
        let collect = started.elapsed();
        self.first_sight(&sample.vms);
        let refusals = self
            .follow
            .observe(&mut sample.vms, sample.taken_ns as f64 / 1e9);
        let pending = self.pending_grants_kib(&sample.vms);
        let run_times: Vec<(String, u32, u64)> = match &self.observer {
            Some(_) => sample
                .vms
                .iter()
                .flat_map(|vm| {
                    vm.vcpus
                        .iter()
                        .map(move |v| (vm.name.clone(), v.id, v.run_time_ns))
                })
                .collect(),
            None => Vec::new(),
        };
        let snapshot = match self.builder.build_with_pending(sample, pending) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(host = %self.host.name, error = %e, "sample refused; retrying next tick");
                return None;
            }
        };
        self.note_silent_guests(&snapshot);
        note_oom_kills(&self.host.name, &snapshot);
        self.check_budget(&snapshot);
        let start = *self.start_wall_s.get_or_insert(snapshot.wall_s());
        let BackendCalls {
            sample_calls,
            events,
            ..
        } = self.backend.take_calls();

        let cpu_plan = self.cpu_policy.decide(&snapshot);
        self.keep_learned(snapshot.wall_s());
        let memory_plan = self.memory_policy.decide(&snapshot);
        let guarded = self.guard.check(&snapshot, &cpu_plan, &memory_plan);
        let fleet = self.fleet.signals(&snapshot, &memory_plan, &guarded);
        self.note_dedication(&fleet);
        for r in &guarded.rejected {
            if let Some(held) = self.throttle.allow(Warning::Guard(r.reason, r.vm.clone())) {
                warn!(host = %self.host.name, action = %r.action, why = %r.why, held_back = held, "guard");
            }
        }

        let mut record = TickRecord::from_snapshot(&self.host.name, &snapshot, start);
        record.pcpu_other_pct = self.builder.measured_other_loads().to_vec();
        record.pcpu_other_wait_pct =
            record::measured_only(self.builder.measured_other_waits().to_vec());
        record.cpu_reason = cpu_plan.reason;
        record.memory_reason = memory_plan.reason;
        record.dry_run = self.dry_run;
        record.rejected = guarded.rejected.clone();
        record.shadow = self.shadow_tick(&snapshot);
        self.withdraw(refusals, &mut record);
        self.actuate(&snapshot, guarded, &mut record);
        record.sample_calls = sample_calls;
        record.actuate_calls = self.backend.take_calls().actuate_calls;
        log_tick(&record);
        if let Some(o) = &self.observer {
            let cost = TickCost {
                tick: started.elapsed(),
                collect,
                calls: u64::from(record.sample_calls) + u64::from(record.actuate_calls),
                events: u64::from(events),
            };
            let (cpu, memory) = (
                self.host.cpu_policy.label(),
                self.host.memory_policy.label(),
            );
            let report = TickReport {
                snapshot: &snapshot,
                run_times: &run_times,
                record: &record,
                cost,
                policies: [
                    ("cpu", cpu.as_str(), self.cpu_policy.health()),
                    ("memory", memory.as_str(), self.memory_policy.health()),
                ],
                fleet: &fleet,
            };
            o.tick(&self.host.name, &report);
        }
        if self.record_snapshots {
            record.snapshot = Some(snapshot);
        }
        Some(record)
    }

    /// Reports every tick to `observer` from now on.
    pub fn observe(&mut self, observer: Arc<dyn Observer>) {
        self.observer = Some(observer);
    }

    /// What the shadow policies would do on this snapshot: decided and guarded, never applied.
    fn shadow_tick(&mut self, snapshot: &Snapshot) -> Option<ShadowRecord> {
        let shadow = self.shadow.as_mut()?;
        let mut out = ShadowRecord::default();
        let cpu_plan = match &mut shadow.cpu {
            Some((label, policy)) => {
                out.cpu_policy = Some(label.clone());
                policy.decide(snapshot)
            }
            None => CpuPlan::default(),
        };
        let memory_plan = match &mut shadow.memory {
            Some((label, policy)) => {
                out.memory_policy = Some(label.clone());
                policy.decide(snapshot)
            }
            None => MemoryPlan::default(),
        };
        // On a copy: what the shadow would change must not hold back the live policy's KSM.
        let guarded = self.guard.clone().check(snapshot, &cpu_plan, &memory_plan);
        out.cpu_reason = cpu_plan.reason;
        out.memory_reason = memory_plan.reason;
        out.pins = changed_pins(snapshot, guarded.pins);
        out.tunes = changed_tunes(snapshot, guarded.tunes);
        out.balloons = guarded
            .balloons
            .into_iter()
            .filter(|b| b.target_kib != b.actual_kib)
            .collect();
        out.rejected = guarded.rejected;
        info!(
            host = %self.host.name,
            "{} tick {} shadow | would pin {} | would balloon {}{}",
            self.host.name,
            snapshot.tick(),
            out.pins.len(),
            out.balloons.len(),
            if out.rejected.is_empty() { String::new() } else { format!(" | {} refused", out.rejected.len()) }
        );
        Some(out)
    }

    /// Memory granted by targets sent earlier that the guests have not taken yet: the balloon
    /// deflates over time, and counting it as free again would grant it twice.
    fn pending_grants_kib(&self, vms: &[crate::model::VmSample]) -> u64 {
        vms.iter()
            .filter_map(|vm| {
                let known = self.known.get(&vm.name).filter(|k| k.uuid == vm.uuid)?;
                Some(known.last_target_kib?.saturating_sub(vm.memory.actual_kib))
            })
            .sum()
    }

    /// Says once (a change) when the host's guest memory budget is below what its guests' floors
    /// add up to: then every guest is held at its floor, whatever it uses.
    fn check_budget(&mut self, snapshot: &Snapshot) {
        let Some(budget_mib) = self.host.guest_memory_budget_mib else {
            return;
        };
        let floor_kib = snapshot.host().limits.guest_floor_kib;
        let floors_kib: u64 = snapshot
            .vms()
            .iter()
            .filter(|vm| vm.control.memory_managed)
            .map(|vm| vm.control.min_kib.unwrap_or(0).max(floor_kib))
            .sum();
        let short = budget_mib * KIB_PER_MIB < floors_kib;
        if short && !self.budget_short {
            warn!(host = %self.host.name, budget_mib, floors_mib = floors_kib / KIB_PER_MIB,
                "guest_memory_budget_mib is below what the guests' floors (min_mib, or guard.guest_floor_mib) add up to: every guest is held at its floor");
        } else if !short && self.budget_short {
            info!(host = %self.host.name, budget_mib, floors_mib = floors_kib / KIB_PER_MIB, "the guest memory budget covers the guests' floors again");
        }
        self.budget_short = short;
    }

    /// Says once of each memory-managed guest that has not reported memory statistics for
    /// [`SILENT_AFTER`] since it was first seen that it is not ballooned, and why; and when it
    /// starts reporting after all.
    fn note_silent_guests(&mut self, snapshot: &Snapshot) {
        for vm in snapshot.vms() {
            let Some(known) = self.known.get_mut(&vm.name).filter(|k| k.uuid == vm.uuid) else {
                continue;
            };
            // QEMU gives a report time of 0 until the guest's driver first reports.
            let reported =
                vm.memory.stats_fresh || vm.memory.last_report_s.is_some_and(|t| t > 0.0);
            match (known.reports, reported) {
                (GuestReports::Silent, true) => {
                    info!(host = %self.host.name, vm = %crate::show::shown(&vm.name), "its guest reports memory statistics now: it may be ballooned");
                    known.reports = GuestReports::Reporting;
                }
                (GuestReports::NotYet, true) => known.reports = GuestReports::Reporting,
                (GuestReports::NotYet, false)
                    if vm.control.memory_managed && known.seen_at.elapsed() >= SILENT_AFTER =>
                {
                    info!(host = %self.host.name, vm = %crate::show::shown(&vm.name), silent_s = SILENT_AFTER.as_secs(),
                        "its guest has reported no memory statistics (no virtio balloon driver in the guest, or no <memballoon>): it is never ballooned until it does");
                    known.reports = GuestReports::Silent;
                }
                _ => {}
            }
        }
    }

    /// Sets the memory statistics period of VMs seen for the first time (or restarted), and
    /// forgets VMs that are gone.
    fn first_sight(&mut self, vms: &[crate::model::VmSample]) {
        self.known.retain(|name, known| {
            vms.iter()
                .any(|vm| &vm.name == name && vm.uuid == known.uuid)
        });
        for vm in vms {
            if self.known.contains_key(&vm.name) {
                continue;
            }
            // One arriving by migration is busy until it lands: setting its statistics period
            // would wait for the migration's lock. It is met again on a later tick.
            if let Some(why) = self.backend.busy(&vm.name) {
                debug!(host = %self.host.name, vm = %crate::show::shown(&vm.name), why, "new domain, busy");
                continue;
            }
            info!(host = %self.host.name, vm = %crate::show::shown(&vm.name), vcpus = vm.vcpus.len(), "new domain");
            // Statistics are observation, not actuation: set them even in a dry run.
            if let Err(e) = self
                .backend
                .set_memory_stats_period(&vm.name, self.host.memory_stats_period_s)
            {
                warn!(host = %self.host.name, vm = %crate::show::shown(&vm.name), error = %e, "cannot set memory stats period");
            }
            self.known.insert(
                vm.name.clone(),
                KnownVm {
                    uuid: vm.uuid.clone(),
                    seen_at: Instant::now(),
                    reports: GuestReports::NotYet,
                    last_target_kib: None,
                    last_balloon_kib: None,
                },
            );
        }
    }

    /// Says once that a guest refused its virtio-mem request, and asks it for what it has, so
    /// that it stops trying (the device is held: see [`virtio_mem`]).
    fn withdraw(&mut self, refusals: Vec<virtio_mem::DeviceRefusal>, record: &mut TickRecord) {
        for r in refusals {
            warn!(host = %self.host.name, vm = %crate::show::shown(&r.vm), device = %r.device,
                requested_mib = r.requested_kib / KIB_PER_MIB, plugged_mib = r.current_kib / KIB_PER_MIB,
                hold_s = virtio_mem::HOLD_S,
                "the guest did not follow its virtio-mem request in {} s; withdrawn, the device left as it is", virtio_mem::FOLLOW_S);
            if !self.dry_run {
                if let Err(e) = self.backend.set_virtio_mem(&r.vm, &r.device, r.current_kib) {
                    record.failed.push(e.to_string());
                }
            }
            record.virtio_mem_refusals.push(r);
        }
    }

    /// What carrying out one memory target takes: for a VM with virtio-mem, the device
    /// requests and the balloon part that differ from what was last asked (see
    /// [`vcoord_api::MemoryView::split`]); for the others, the balloon target. Empty when
    /// nothing would change (a VM with virtio-mem may be asked the same total again: a device
    /// held since moves the balloon's part).
    fn memory_actions(&self, snapshot: &Snapshot, change: &BalloonChange) -> MemoryActions {
        let last = self.known.get(&change.vm);
        let Some(vm) = snapshot
            .vm(&change.vm)
            .filter(|vm| !vm.memory.virtio_mem.is_empty())
        else {
            let sent = last.and_then(|k| k.last_target_kib);
            return MemoryActions {
                plugs: Vec::new(),
                balloon_kib: (sent != Some(change.target_kib)).then_some(change.target_kib),
            };
        };
        let split = vm.memory.split(change.target_kib);
        let plugs = vm
            .memory
            .virtio_mem
            .iter()
            .zip(&split.requested_kib)
            .filter(|(d, &requested)| requested != d.requested_kib && !d.held)
            .map(|(d, &requested)| PlugRequest {
                vm: vm.name.clone(),
                device: d.alias.clone(),
                from_kib: d.requested_kib,
                to_kib: requested,
            })
            .collect();
        let balloon_now = vm.memory.actual_kib.saturating_sub(vm.memory.plugged_kib());
        let sent = last.and_then(|k| k.last_balloon_kib).unwrap_or(balloon_now);
        MemoryActions {
            plugs,
            balloon_kib: (sent != split.balloon_kib).then_some(split.balloon_kib),
        }
    }

    /// Sends `actions` for `change`, and remembers what was sent.
    fn send_memory(
        &mut self,
        change: &BalloonChange,
        actions: &MemoryActions,
        devices: bool,
    ) -> Result<(), BackendError> {
        for p in &actions.plugs {
            self.backend.set_virtio_mem(&p.vm, &p.device, p.to_kib)?;
        }
        if let Some(kib) = actions.balloon_kib {
            self.backend.set_balloon_target(&change.vm, kib)?;
        }
        if let Some(k) = self.known.get_mut(&change.vm) {
            k.last_target_kib = Some(change.target_kib);
            if devices {
                k.last_balloon_kib = actions.balloon_kib.or(k.last_balloon_kib);
            }
        }
        Ok(())
    }

    /// Writes KSM's settings (the guard let them through: they differ from the host's), and
    /// remembers whether this process started ksmd.
    fn set_ksm(&mut self, ksm: vcoord_api::KsmPlan, was_running: bool, record: &mut TickRecord) {
        if !self.dry_run {
            if let Err(e) = self.backend.set_ksm(&ksm) {
                if let Some(held) = self.throttle.allow(Warning::Ksm) {
                    warn!(host = %self.host.name, error = %e, held_back = held, "KSM change failed");
                }
                record.failed.push(e.to_string());
                return;
            }
            self.ksm_started = match (ksm.run, was_running, self.ksm_started) {
                (false, _, _) => None,
                (true, false, _) | (true, true, Some(_)) => Some(ksm),
                (true, true, None) => None,
            };
        }
        info!(host = %self.host.name, run = ksm.run, pages_to_scan = ksm.pages_to_scan,
            sleep_millisecs = ksm.sleep_ms, dry_run = self.dry_run, "KSM set");
        record.ksm = Some(ksm);
    }

    /// Carries out what changed: pins that differ from the current affinity, balloon targets
    /// that differ from the last one sent. Shrinks go before grants.
    fn actuate(&mut self, snapshot: &Snapshot, plan: GuardedPlan, record: &mut TickRecord) {
        if let Some(ksm) = plan.ksm {
            let was_running = snapshot.host().ksm.as_ref().is_some_and(|k| k.running);
            self.set_ksm(ksm, was_running, record);
        }
        let pins = changed_pins(snapshot, plan.pins);
        let mut tunes = changed_tunes(snapshot, plan.tunes);
        let mut balloons: Vec<(BalloonChange, MemoryActions)> = plan
            .balloons
            .into_iter()
            .map(|change| {
                let actions = self.memory_actions(snapshot, &change);
                (change, actions)
            })
            .filter(|(_, actions)| !actions.is_empty())
            .collect();
        // A VM in the middle of a job, or not running, is left alone until that ends.
        let mut busy: HashMap<String, Option<String>> = HashMap::new();
        let mut is_busy = |backend: &mut Box<dyn Backend>, vm: &str| {
            busy.entry(vm.to_owned())
                .or_insert_with(|| backend.busy(vm))
                .clone()
        };
        let mut left_alone = Vec::new();
        let pins: Vec<_> = pins
            .into_iter()
            .filter(|pin| match is_busy(&mut self.backend, &pin.vm) {
                Some(why) => {
                    left_alone.push(busy_rejection(
                        &pin.vm,
                        format!("pin vCPU {}", pin.vcpu),
                        why,
                    ));
                    false
                }
                None => true,
            })
            .collect();
        tunes.retain(|t| match is_busy(&mut self.backend, &t.vm) {
            Some(why) => {
                left_alone.push(busy_rejection(
                    &t.vm,
                    format!("tune ({})", guard::describe_tune(&t.tune)),
                    why,
                ));
                false
            }
            None => true,
        });
        balloons.retain(|(change, _)| match is_busy(&mut self.backend, &change.vm) {
            Some(why) => {
                left_alone.push(busy_rejection(
                    &change.vm,
                    format!("balloon to {} MiB", change.target_kib / KIB_PER_MIB),
                    why,
                ));
                false
            }
            None => true,
        });
        for r in &left_alone {
            if let Some(held) = self.throttle.allow(Warning::Guard(r.reason, r.vm.clone())) {
                warn!(host = %self.host.name, vm = %crate::show::shown(&r.vm), action = %r.action, why = %r.why, held_back = held, "left alone");
            }
        }
        record.rejected.extend(left_alone);
        for pin in pins {
            if !self.dry_run {
                if let Err(e) = self.backend.pin_vcpu(&pin.vm, pin.vcpu, &pin.cpus) {
                    if matches!(e, BackendError::VmGone { .. }) {
                        // Destroyed or shut down since the sample: nothing to pin, nothing wrong.
                        debug!(host = %self.host.name, vm = %crate::show::shown(&pin.vm), "gone before its pin");
                        continue;
                    }
                    if let Some(held) = self.throttle.allow(Warning::Pin(pin.vm.clone())) {
                        warn!(host = %self.host.name, error = %e, held_back = held, "pin failed");
                    }
                    record.failed.push(e.to_string());
                    continue;
                }
            }
            record.pins.push(pin);
        }
        for tune in tunes {
            if !self.dry_run {
                if let Err(e) = self.backend.set_cputune(&tune.vm, &tune.tune) {
                    if matches!(e, BackendError::VmGone { .. }) {
                        debug!(host = %self.host.name, vm = %crate::show::shown(&tune.vm), "gone before its tune");
                        continue;
                    }
                    if let Some(held) = self.throttle.allow(Warning::Pin(tune.vm.clone())) {
                        warn!(host = %self.host.name, error = %e, held_back = held, "CPU tune failed");
                    }
                    record.failed.push(e.to_string());
                    continue;
                }
            }
            debug!(host = %self.host.name, vm = %crate::show::shown(&tune.vm), tune = %guard::describe_tune(&tune.tune), "tune");
            record.tunes.push(tune);
        }
        balloons.sort_by_key(|(b, _)| b.target_kib > b.actual_kib);
        for (change, actions) in balloons {
            if !self.dry_run {
                let devices = snapshot
                    .vm(&change.vm)
                    .is_some_and(|vm| !vm.memory.virtio_mem.is_empty());
                if let Err(e) = self.send_memory(&change, &actions, devices) {
                    if matches!(e, BackendError::VmGone { .. }) {
                        debug!(host = %self.host.name, vm = %crate::show::shown(&change.vm), "gone before its balloon change");
                        continue;
                    }
                    if let Some(held) = self.throttle.allow(Warning::Balloon(change.vm.clone())) {
                        warn!(host = %self.host.name, error = %e, held_back = held, "balloon failed");
                    }
                    record.failed.push(e.to_string());
                    continue;
                }
            }
            record.plugs.extend(actions.plugs);
            debug!(host = %self.host.name, vm = %crate::show::shown(&change.vm),
                from_mib = change.actual_kib / KIB_PER_MIB, to_mib = change.target_kib / KIB_PER_MIB,
                reason = %change.reason, "balloon");
            record.balloons.push(change);
        }
    }
}

/// The backend calls one memory target takes.
#[derive(Debug, Default)]
struct MemoryActions {
    /// virtio-mem requests.
    plugs: Vec<PlugRequest>,
    /// The balloon target, when it changes.
    balloon_kib: Option<u64>,
}

impl MemoryActions {
    fn is_empty(&self) -> bool {
        self.plugs.is_empty() && self.balloon_kib.is_none()
    }
}

/// Policies run in shadow, with the labels they are recorded under.
pub struct Shadow {
    cpu: Option<(String, Box<dyn CpuPolicy>)>,
    memory: Option<(String, Box<dyn MemoryPolicy>)>,
}

impl Shadow {
    /// The shadow policies `host` configures, if any.
    pub fn build(host: &HostConfig) -> Result<Option<Self>, String> {
        if host.shadow_cpu_policy.is_none() && host.shadow_memory_policy.is_none() {
            return Ok(None);
        }
        let cpu = host
            .shadow_cpu_policy
            .as_ref()
            .map(|c| Ok::<_, String>((c.label(), c.build_cpu()?)))
            .transpose()?;
        let memory = host
            .shadow_memory_policy
            .as_ref()
            .map(|c| Ok::<_, String>((c.label(), c.build_memory()?)))
            .transpose()?;
        Ok(Some(Self { cpu, memory }))
    }
}

/// An action not taken because its VM is busy (`why`).
fn busy_rejection(vm: &str, action: String, why: String) -> Rejection {
    Rejection {
        action: format!("{action} of {}", crate::show::shown(vm)),
        why: format!("left alone: {why}"),
        reason: Refusal::Busy,
        vm: vm.to_owned(),
    }
}

/// The pins that would change a vCPU's current affinity.
pub fn changed_pins(snapshot: &Snapshot, pins: Vec<VcpuPin>) -> Vec<VcpuPin> {
    pins.into_iter()
        .filter(|pin| {
            let current = snapshot
                .vm(&pin.vm)
                .and_then(|vm| vm.vcpus.iter().find(|v| v.id == pin.vcpu))
                .map(|v| &v.affinity);
            current != Some(&pin.cpus)
        })
        .collect()
}

/// Of each tune, what would change the VM's current tuning (tunes that change nothing dropped).
pub fn changed_tunes(snapshot: &Snapshot, tunes: Vec<VmTune>) -> Vec<VmTune> {
    tunes
        .into_iter()
        .filter_map(|t| {
            let now = snapshot
                .vm(&t.vm)
                .map(|vm| vm.cputune.clone())
                .unwrap_or_default();
            now.changes_to(&t.tune)
                .map(|tune| VmTune { vm: t.vm, tune })
        })
        .collect()
}

/// One short line per tick at info level (at most ~200 characters whatever the host's size),
/// the per-VM detail at debug level.
fn log_tick(r: &TickRecord) {
    info!(host = %r.host, tick = r.tick, "{}", tick_summary(r));
    if tracing::enabled!(tracing::Level::DEBUG) {
        let loads: Vec<String> = r.pcpu_load_pct.iter().map(|l| format!("{l:.0}")).collect();
        let mem: Vec<String> = r
            .vms
            .iter()
            .map(|vm| match vm.unused_mib() {
                Some(u) => format!("{} {:.0}/{:.0}", vm.name, vm.actual_mib(), u),
                None => format!("{} {:.0}/-", vm.name, vm.actual_mib()),
            })
            .collect();
        debug!(host = %r.host, tick = r.tick, pcpu_load_pct = %loads.join(" "), mem_actual_unused_mib = %mem.join(", "), "detail");
        debug!(host = %r.host, tick = r.tick, cpu = %r.cpu_reason, memory = %r.memory_reason, "decisions");
    }
}

/// `tick 3 | 8 VMs | pCPU% mean 54 sd 3.1 max 99 | unused MiB min 132 (vm3) | pins 0 | balloons 2`.
fn tick_summary(r: &TickRecord) -> String {
    let n = r.pcpu_load_pct.len().max(1) as f64;
    let mean = r.pcpu_load_pct.iter().sum::<f64>() / n;
    let max = r.pcpu_load_pct.iter().copied().fold(0.0, f64::max);
    let lowest = r
        .vms
        .iter()
        .filter_map(|vm| Some((vm.unused_mib()?, vm.name.as_str())))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let unused = match lowest {
        Some((mib, vm)) => {
            let vm: String = vm.chars().take(40).collect();
            format!("unused MiB min {mib:.0} ({vm})")
        }
        None => "unused MiB -".to_owned(),
    };
    format!(
        "tick {} | {} VMs | pCPU% mean {mean:.0} sd {:.1} max {max:.0} | {unused} | pins {} | balloons {}{}{}",
        r.tick,
        r.vms.len(),
        r.pcpu_stdev_pct,
        r.pins.len(),
        r.balloons.len(),
        if r.rejected.is_empty() {
            String::new()
        } else {
            format!(" | refused {}", r.rejected.len())
        },
        if r.dry_run { " (dry run)" } else { "" }
    )
}

impl Coordinator {
    /// Says, once a change, which dedicated VMs the host leaves shared and why, and when one
    /// gets its pCPUs again.
    fn note_dedication(&mut self, fleet: &FleetSignals) {
        let now: Vec<(String, String)> = fleet
            .vms
            .iter()
            .filter_map(|v| match &v.dedicated {
                Some(Err(why)) => Some((v.vm.clone(), why.clone())),
                _ => None,
            })
            .collect();
        for (vm, why) in now.iter().filter(|e| !self.left_shared.contains(e)) {
            warn!(host = %self.host.name, vm = %crate::show::shown(vm), why = %why,
                "a dedicated VM is left shared");
        }
        for (vm, _) in self
            .left_shared
            .iter()
            .filter(|(vm, _)| !now.iter().any(|(n, _)| n == vm))
        {
            info!(host = %self.host.name, vm = %crate::show::shown(vm),
                "a dedicated VM is no longer left shared");
        }
        self.left_shared = now;
    }
}

/// Warns of every OOM kill a guest reported since the last tick, with its memory as vcoord last
/// saw it: an operator wants to know, and to tell whether vcoord's sizing had a part in it.
fn note_oom_kills(host: &str, snapshot: &Snapshot) {
    for vm in snapshot.vms() {
        let Some(kills) = vm.oom_events.filter(|&n| n > 0) else {
            continue;
        };
        let mib = |kib: u64| kib / crate::units::KIB_PER_MIB;
        warn!(host = %host, tick = snapshot.tick(), vm = %crate::show::shown(&vm.name), kills,
            actual_mib = mib(vm.memory.actual_kib),
            unused_mib = vm.memory.unused_kib.map(mib),
            "the guest's OOM killer ran");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::CpuSet;

    #[test]
    fn the_tick_line_stays_short_on_big_hosts() {
        let snap = crate::runtime::snapshot::synthetic_snapshot(10_000, 256, 7);
        let mut r = TickRecord::from_snapshot("a-host-with-a-long-name", &snap, 0.0);
        r.vms[0].name = "x".repeat(300);
        r.vms[0].memory.unused_kib = Some(0);
        let line = tick_summary(&r);
        assert!(line.len() <= 200, "{} chars: {line}", line.len());
        assert!(
            line.starts_with("tick 1 | 10000 VMs | pCPU% mean"),
            "{line}"
        );
    }

    /// A simulated host whose domain `a` is destroyed between the sample and the actions.
    struct Vanishing(crate::backend::sim::SimBackend);

    impl Backend for Vanishing {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn sample(&mut self) -> Result<crate::model::Sample, BackendError> {
            self.0.sample()
        }
        fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError> {
            match vm {
                "a" => Err(BackendError::VmGone { vm: vm.into() }),
                _ => self.0.pin_vcpu(vm, vcpu, cpus),
            }
        }
        fn set_balloon_target(&mut self, vm: &str, kib: u64) -> Result<(), BackendError> {
            match vm {
                "a" => Err(BackendError::VmGone { vm: vm.into() }),
                _ => self.0.set_balloon_target(vm, kib),
            }
        }
        fn set_memory_stats_period(&mut self, vm: &str, s: u32) -> Result<(), BackendError> {
            self.0.set_memory_stats_period(vm, s)
        }
        fn wait(&mut self, interval: Duration, sleep: &dyn Fn(Duration)) {
            self.0.wait(interval, sleep)
        }
    }

    /// Pins every vCPU to pCPU 1.
    struct AllOnOne;
    impl CpuPolicy for AllOnOne {
        fn decide(&mut self, snapshot: &Snapshot) -> CpuPlan {
            let pins = snapshot.vms().iter().flat_map(|vm| {
                vm.vcpus.iter().map(|v| VcpuPin {
                    vm: vm.name.clone(),
                    vcpu: v.id,
                    cpus: CpuSet::single(1),
                })
            });
            CpuPlan {
                tunes: Vec::new(),
                pins: pins.collect(),
                reason: "all on pCPU 1".into(),
            }
        }
    }

    /// Asks every VM to give back 64 MiB.
    struct TrimAll;
    impl MemoryPolicy for TrimAll {
        fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
            let targets = snapshot.vms().iter().map(|vm| vcoord_api::BalloonTarget {
                vm: vm.name.clone(),
                target_kib: vm.memory.actual_kib as i64 - 65_536,
                reason: "trim".into(),
            });
            MemoryPlan {
                targets: targets.collect(),
                reason: "trim".into(),
                ksm: None,
            }
        }
    }

    #[test]
    fn a_domain_gone_before_its_actions_is_skipped_not_failed() {
        let path = std::path::Path::new("gone.toml");
        let vm = |name: &str| {
            format!("[[vm]]\nname = \"{name}\"\nmax_memory_mib = 2048\nmemory_mib = 2048\npins = [0]\ncpu = [{{ pct = 90 }}]\n")
        };
        let text = format!(
            "name = \"gone\"\nduration_s = 10\n[host]\npcpus = 2\nmemory_mib = 8192\n{}{}",
            vm("a"),
            vm("b")
        );
        let scenario = crate::backend::sim::Scenario::parse(&text, path).unwrap();
        let backend = crate::backend::sim::SimBackend::new(scenario, false);
        let host = HostConfig::new("h", "sim:gone.toml", std::path::Path::new("."));
        let mut c = Coordinator::new(
            &host,
            Box::new(Vanishing(backend)),
            Box::new(AllOnOne),
            Box::new(TrimAll),
            false,
        );
        let (mut pinned_b, mut ballooned_b) = (false, false);
        for _ in 0..4 {
            let r = c.tick().unwrap();
            assert!(r.failed.is_empty(), "{:?}", r.failed);
            assert!(r.pins.iter().all(|p| p.vm != "a"), "{:?}", r.pins);
            assert!(r.balloons.iter().all(|b| b.vm != "a"), "{:?}", r.balloons);
            pinned_b |= r.pins.iter().any(|p| p.vm == "b");
            ballooned_b |= r.balloons.iter().any(|b| b.vm == "b");
            c.backend.wait(Duration::from_secs(1), &|_| {});
        }
        assert!(pinned_b && ballooned_b, "the test needs ticks that act");
    }

    /// Learns how many ticks it has seen.
    #[derive(Default)]
    struct Counter(i64);
    impl CpuPolicy for Counter {
        fn decide(&mut self, _: &Snapshot) -> CpuPlan {
            self.0 += 1;
            CpuPlan::default()
        }
        fn learned(&self) -> Option<vcoord_api::params::Table> {
            let mut t = vcoord_api::params::Table::new();
            t.insert("ticks".into(), self.0.into());
            Some(t)
        }
        fn relearn(&mut self, learned: &vcoord_api::params::Table) -> Result<(), String> {
            self.0 = learned["ticks"].as_integer().ok_or("no ticks")?;
            Ok(())
        }
    }

    #[test]
    fn what_the_cpu_policy_learned_is_kept_and_given_back_to_the_next_process() {
        let dir = std::env::temp_dir().join(format!("vcoord-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let scenario = "name = \"k\"\nduration_s = 10\n[host]\npcpus = 2\nmemory_mib = 4096\n";
        let open = |policy: Counter| {
            let scenario =
                crate::backend::sim::Scenario::parse(scenario, std::path::Path::new("k.toml"))
                    .unwrap();
            let backend = crate::backend::sim::SimBackend::new(scenario, false);
            let host = HostConfig::new("h", "qemu:///system", std::path::Path::new("."));
            let mut c = Coordinator::new(
                &host,
                Box::new(backend),
                Box::new(policy),
                Box::new(TrimAll),
                false,
            );
            let file = LearnedFile::new(&dir, &host.uri, "counter");
            c.learned = Some((file, false));
            c.relearn();
            c
        };
        let mut first = open(Counter::default());
        for _ in 0..3 {
            first.tick().unwrap();
        }
        let mut next = open(Counter::default());
        assert_eq!(next.cpu_policy.learned(), first.cpu_policy.learned());
        next.tick().unwrap();
        let path = next.learned.as_ref().unwrap().0.path().to_owned();
        assert!(path.starts_with(&dir), "{}", path.display());
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.contains("policy = \"counter\"") && text.contains("ticks = 4"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn repeated_warnings_are_let_through_once_a_minute() {
        let mut t = Throttle::default();
        let trimmed = || Warning::Guard(Refusal::HostReserve, "a".into());
        assert_eq!(t.allow(trimmed()), Some(0));
        assert_eq!(t.allow(trimmed()), None);
        // Another VM, or another reason, is another warning.
        assert_eq!(
            t.allow(Warning::Guard(Refusal::HostReserve, "b".into())),
            Some(0)
        );
        assert_eq!(
            t.allow(Warning::Guard(Refusal::Trimmed, "a".into())),
            Some(0)
        );
        assert_eq!(t.allow(Warning::Balloon("a".into())), Some(0));
        // A minute later the next one gets through with the count held back.
        t.seen.get_mut(&trimmed()).unwrap().0 -= Duration::from_secs(61);
        assert_eq!(t.allow(trimmed()), Some(1));
    }
}
