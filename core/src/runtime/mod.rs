//! The loop: collect -> snapshot -> decide -> guard -> actuate -> record, once per tick.

pub mod guard;
pub mod record;
pub mod snapshot;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::backend::{self, Backend, BackendError, BackendOptions};
use crate::config::HostConfig;
use crate::policy::{CpuPlan, CpuPolicy, MemoryPlan, MemoryPolicy, VcpuPin};
use crate::runtime::guard::{Guard, GuardedPlan};
use crate::runtime::record::{ShadowRecord, TickRecord};
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
}

#[derive(Debug)]
struct KnownVm {
    uuid: String,
    last_target_kib: Option<u64>,
}

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
    start_wall_s: Option<f64>,
}

impl Coordinator {
    /// Opens the host's backend and builds its policies.
    pub fn open(host: &HostConfig, options: &RunOptions) -> Result<Self, RunError> {
        let backend_options = BackendOptions {
            realtime: options.realtime,
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
        let policy_err = |message| RunError::Policy {
            host: host.name.clone(),
            message,
        };
        let cpu_policy = host.build_cpu_policy().map_err(policy_err)?;
        let memory_policy = host.build_memory_policy().map_err(policy_err)?;
        let mut coordinator = Self::new(host, backend, cpu_policy, memory_policy, options.dry_run);
        if host.shadow_cpu_policy.is_some() || host.shadow_memory_policy.is_some() {
            let cpu = host
                .shadow_cpu_policy
                .as_ref()
                .map(|c| Ok::<_, String>((c.label(), c.build_cpu()?)))
                .transpose()
                .map_err(policy_err)?;
            let memory = host
                .shadow_memory_policy
                .as_ref()
                .map(|c| Ok::<_, String>((c.label(), c.build_memory()?)))
                .transpose()
                .map_err(policy_err)?;
            coordinator.shadow = Some(Shadow { cpu, memory });
        }
        coordinator.record_snapshots = options.record_snapshots;
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
        let settings = SnapshotSettings {
            guest_budget_kib: host.guest_memory_budget_mib.map(|m| Kib::from_mib(m).get()),
            // Guest statistics older than two intervals (or two stats periods) are stale.
            stats_max_age_s: 2.0
                * host
                    .interval_s
                    .max(host.memory_stats_period_s as f64)
                    .max(host.memory_interval_s)
                + 1.0,
            limits: host.guard.limits(),
        };
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
            start_wall_s: None,
        }
    }

    /// Whether the backend has nothing more to show.
    pub fn finished(&self) -> bool {
        self.backend.finished()
    }

    /// Runs until `ticks` ticks are done or the backend is finished, passing each tick's record
    /// to `on_tick`.
    pub fn run(
        &mut self,
        ticks: Option<u64>,
        mut on_tick: impl FnMut(&TickRecord) -> std::io::Result<()>,
    ) -> Result<u64, RunError> {
        info!(host = %self.host.name, backend = %self.backend.describe(), dry_run = self.dry_run, "coordinating");
        let mut done = 0;
        while ticks.is_none_or(|n| done < n) && !self.backend.finished() {
            if let Some(record) = self.tick() {
                on_tick(&record).map_err(|source| RunError::Record {
                    host: self.host.name.clone(),
                    source,
                })?;
            }
            done += 1;
            self.backend
                .wait(Duration::from_secs_f64(self.host.interval_s));
        }
        Ok(done)
    }

    /// One tick; `None` when the host could not be sampled (logged; the next tick retries).
    pub fn tick(&mut self) -> Option<TickRecord> {
        let sample = match self.backend.sample() {
            Ok(sample) => sample,
            Err(e) => {
                warn!(host = %self.host.name, error = %e, "sampling failed; retrying next tick");
                return None;
            }
        };
        self.first_sight(&sample.vms);
        let pending = self.pending_grants_kib(&sample.vms);
        let snapshot = match self.builder.build_with_pending(sample, pending) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(host = %self.host.name, error = %e, "sample refused; retrying next tick");
                return None;
            }
        };
        let start = *self.start_wall_s.get_or_insert(snapshot.wall_s());
        let sample_calls = self.backend.take_calls().sample_calls;

        let cpu_plan = self.cpu_policy.decide(&snapshot);
        let memory_plan = self.memory_policy.decide(&snapshot);
        let guarded = self.guard.check(&snapshot, &cpu_plan, &memory_plan);
        for r in &guarded.rejected {
            warn!(host = %self.host.name, action = %r.action, why = %r.why, "guard");
        }

        let mut record = TickRecord::from_snapshot(&self.host.name, &snapshot, start);
        record.cpu_reason = cpu_plan.reason;
        record.memory_reason = memory_plan.reason;
        record.dry_run = self.dry_run;
        record.rejected = guarded.rejected.clone();
        record.shadow = self.shadow_tick(&snapshot);
        self.actuate(&snapshot, guarded, &mut record);
        record.sample_calls = sample_calls;
        record.actuate_calls = self.backend.take_calls().actuate_calls;
        log_tick(&record);
        if self.record_snapshots {
            record.snapshot = Some(snapshot);
        }
        Some(record)
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
        let guarded = self.guard.check(snapshot, &cpu_plan, &memory_plan);
        out.cpu_reason = cpu_plan.reason;
        out.memory_reason = memory_plan.reason;
        out.pins = changed_pins(snapshot, guarded.pins);
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
            info!(host = %self.host.name, vm = %vm.name, vcpus = vm.vcpus.len(), "new domain");
            // Statistics are observation, not actuation: set them even in a dry run.
            if let Err(e) = self
                .backend
                .set_memory_stats_period(&vm.name, self.host.memory_stats_period_s)
            {
                warn!(host = %self.host.name, vm = %vm.name, error = %e, "cannot set memory stats period");
            }
            self.known.insert(
                vm.name.clone(),
                KnownVm {
                    uuid: vm.uuid.clone(),
                    last_target_kib: None,
                },
            );
        }
    }

    /// Carries out what changed: pins that differ from the current affinity, balloon targets
    /// that differ from the last one sent. Shrinks go before grants.
    fn actuate(&mut self, snapshot: &Snapshot, plan: GuardedPlan, record: &mut TickRecord) {
        for pin in changed_pins(snapshot, plan.pins) {
            if !self.dry_run {
                if let Err(e) = self.backend.pin_vcpu(&pin.vm, pin.vcpu, &pin.cpus) {
                    warn!(host = %self.host.name, error = %e, "pin failed");
                    record.failed.push(e.to_string());
                    continue;
                }
            }
            record.pins.push(pin);
        }
        let mut balloons = plan.balloons;
        balloons.sort_by_key(|b| b.target_kib > b.actual_kib);
        for change in balloons {
            let known = self.known.get_mut(&change.vm);
            if known
                .as_ref()
                .is_some_and(|k| k.last_target_kib == Some(change.target_kib))
            {
                continue;
            }
            if !self.dry_run {
                if let Err(e) = self
                    .backend
                    .set_balloon_target(&change.vm, change.target_kib)
                {
                    warn!(host = %self.host.name, error = %e, "balloon failed");
                    record.failed.push(e.to_string());
                    continue;
                }
                if let Some(k) = known {
                    k.last_target_kib = Some(change.target_kib);
                }
            }
            debug!(host = %self.host.name, vm = %change.vm,
                from_mib = change.actual_kib / KIB_PER_MIB, to_mib = change.target_kib / KIB_PER_MIB,
                reason = %change.reason, "balloon");
            record.balloons.push(change);
        }
    }
}

/// Policies run in shadow, with the labels they are recorded under.
struct Shadow {
    cpu: Option<(String, Box<dyn CpuPolicy>)>,
    memory: Option<(String, Box<dyn MemoryPolicy>)>,
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

fn log_tick(r: &TickRecord) {
    let loads: Vec<String> = r.pcpu_load_pct.iter().map(|l| format!("{l:.0}")).collect();
    let mem: Vec<String> = r
        .vms
        .iter()
        .map(|vm| match vm.unused_mib {
            Some(u) => format!("{} {:.0}/{:.0}", vm.name, vm.actual_mib, u),
            None => format!("{} {:.0}/-", vm.name, vm.actual_mib),
        })
        .collect();
    info!(
        "{} tick {} | pcpu% [{}] sd {:.1} | pins {} | mem actual/unused MiB: {} | balloons {}{}",
        r.host,
        r.tick,
        loads.join(" "),
        r.pcpu_stdev_pct,
        r.pins.len(),
        mem.join(", "),
        r.balloons.len(),
        if r.dry_run { " (dry run)" } else { "" }
    );
    debug!(host = %r.host, cpu = %r.cpu_reason, memory = %r.memory_reason, "decisions");
}

/// Runs one host to the end, writing each tick's record as a JSON line to `record` if given.
pub fn run_host(
    host: &HostConfig,
    options: &RunOptions,
    mut record: Option<&mut (dyn Write + Send)>,
) -> Result<u64, RunError> {
    let mut coordinator = Coordinator::open(host, options)?;
    coordinator.run(options.ticks, |tick| {
        if let Some(out) = record.as_deref_mut() {
            let line = serde_json::to_string(tick).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        }
        Ok(())
    })
}
