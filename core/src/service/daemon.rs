//! `vcoord run`: every host of a configuration on a thread of its own, under one supervisor
//! that answers stop and reload requests, holds the host locks, keeps the service manager
//! informed (ready, status, watchdog) and flushes the record on the way out.
//!
//! - A host that cannot start is logged at once. When its backend is merely unreachable
//!   (libvirtd down), it is retried with backoff; a host that can never start (a bad scenario)
//!   is given up, and the others keep running.
//! - A reload re-reads the configuration and builds every policy and plugin it names first. If
//!   anything fails, the running configuration stays and the error is logged with its place.
//!   Otherwise each host takes its new settings at a tick boundary: a host whose policy choices
//!   did not change keeps its policies and their state; hosts added start, hosts removed stop.
//! - A stop lets every host finish the tick in progress; pins and balloon sizes stay as they
//!   are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::backend::BackendError;
use crate::config::{Config, ConfigError, HostConfig};
use crate::policy::{CpuPolicy, MemoryPolicy};
use crate::runtime::control::Control;
use crate::runtime::record::Recorder;
use crate::runtime::{Coordinator, RunError, RunOptions, Shadow, Update};
use crate::service::http::Endpoint;
use crate::service::lock::{HostLock, LockError};
use crate::service::notify::Notifier;
use crate::service::Observers;

/// The longest wait between attempts to start a host whose backend is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why the daemon could not run (as opposed to a host that failed while it ran).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--host` names no host of the configuration.
    #[error("{}: no host named `{name}`", path.display())]
    NoSuchHost {
        /// The configuration.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A host's policies cannot be built.
    #[error("host {host}: {message}")]
    Policy {
        /// Host name.
        host: String,
        /// What failed.
        message: String,
    },
    /// Another process coordinates a host.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Some hosts failed (each was logged when it did), or the record stopped.
    #[error("{}", failures(*hosts, record.as_deref()))]
    Failed {
        /// Hosts that stopped on an error.
        hosts: usize,
        /// Why the `--record` file stopped, if it did.
        record: Option<String>,
    },
    /// The metrics endpoint cannot listen.
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        /// Where it was to listen.
        addr: std::net::SocketAddr,
        /// Why it cannot.
        source: std::io::Error,
    },
}

fn failures(hosts: usize, record: Option<&str>) -> String {
    let mut parts = Vec::new();
    match hosts {
        0 => {}
        1 => parts.push("1 host failed (see the log)".to_owned()),
        n => parts.push(format!("{n} hosts failed (see the log)")),
    }
    if let Some(r) = record {
        parts.push(r.to_owned());
    }
    parts.join("; ")
}

/// What `vcoord run` was asked to do, beyond the configuration.
#[derive(Debug)]
pub struct DaemonOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// Run only this host.
    pub only_host: Option<String>,
    /// Tick limit, dry run, real time, snapshots in records.
    pub run: RunOptions,
    /// Where host locks go.
    pub lock_dir: PathBuf,
}

/// What a host thread tells the supervisor.
#[derive(Debug, Default)]
struct HostStatus {
    /// Ticks done.
    ticks: AtomicU64,
    /// VMs seen at the last tick.
    vms: AtomicUsize,
    /// When the host's loop last went round (its first tick attempt counts).
    last_loop: Mutex<Option<Instant>>,
    /// The host's thread has ended or has given up starting.
    ended: AtomicBool,
    /// It could not start (yet).
    start_failed: AtomicBool,
}

impl HostStatus {
    fn looped(&self) {
        if let Ok(mut t) = self.last_loop.lock() {
            *t = Some(Instant::now());
        }
    }

    fn last_loop(&self) -> Option<Instant> {
        self.last_loop.lock().ok().and_then(|t| *t)
    }
}

/// A running host.
struct Worker {
    config: HostConfig,
    control: Control,
    updates: Sender<Update>,
    status: Arc<HostStatus>,
    handle: JoinHandle<Result<u64, RunError>>,
    _lock: Option<HostLock>,
}

/// Hosts a configuration names, each with its policies built (a reload builds everything
/// before it swaps anything).
struct Plan {
    hosts: Vec<(HostConfig, Policies)>,
    metrics_listen: Option<std::net::SocketAddr>,
    fleet_host: Option<String>,
}

/// Runs the hosts of `options.config` until they end (tick limit, end of scenario) or a stop is
/// asked for through `control`, reloading on request.
pub fn run(
    options: &DaemonOptions,
    recorder: Option<Arc<Recorder>>,
    control: &Control,
    notifier: &Notifier,
) -> Result<(), DaemonError> {
    let plan = load(options)?;
    let listening = (plan.metrics_listen, plan.fleet_host.clone());
    // Locks first: a second instance refuses before it touches anything.
    let mut locks = BTreeMap::new();
    for (host, _) in &plan.hosts {
        locks.insert(host.name.clone(), lock_for(host, options)?);
    }
    let observers = plan.metrics_listen.map(|_| match &plan.fleet_host {
        Some(name) => Observers::new(name),
        None => Observers::default(),
    });
    if let Some(addr) = plan.metrics_listen.filter(|a| !a.ip().is_loopback()) {
        // The endpoint has no authentication: what it serves (VM names, UUIDs, loads) is for
        // whoever can reach that address.
        warn!(
            listen = %addr,
            "the metrics endpoint listens beyond this machine ({}): VM names, UUIDs and loads are served to whoever reaches it, unauthenticated; restrict it with a firewall or listen on 127.0.0.1 behind a proxy",
            if addr.ip().is_unspecified() { "on every interface" } else { "on a network address" }
        );
    }
    let endpoint = match (plan.metrics_listen, &observers) {
        (Some(addr), Some(o)) => Some(
            Endpoint::start(addr, o.metrics.clone(), o.status.clone(), control.clone())
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        _ => None,
    };
    if let (Some(o), Some(r)) = (&observers, &recorder) {
        o.metrics.record_started(&r.path().display().to_string());
    }
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    // Hosts that stopped on an error, with why: they stay in health, status and metrics until
    // a reload starts them again or removes them.
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for (host, policies) in plan.hosts {
        let lock = locks.remove(&host.name).flatten();
        let worker = spawn(
            host,
            lock,
            Some(policies),
            options,
            recorder.clone(),
            observers.clone(),
        );
        workers.insert(worker.config.name.clone(), worker);
    }

    let mut ready = false;
    let watchdog_every = notifier.watchdog_every();
    let mut last_pet = Instant::now();
    let mut last_status = Instant::now();
    loop {
        if control.stop_requested() {
            info!("stop requested: finishing the tick in progress");
            notifier.stopping();
            break;
        }
        if control.take_reload() {
            notifier.reloading();
            let ok = reload(
                options,
                &listening,
                &mut workers,
                &mut failed,
                recorder.clone(),
                observers.as_ref(),
            );
            if let Some(o) = &observers {
                o.metrics.reload(ok);
            }
            notifier.ready(&status_line(&workers));
        }
        // Hosts that ended (tick limit, end of scenario, or a failure).
        let ended: Vec<String> = workers
            .iter()
            .filter(|(_, w)| w.handle.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            if let Some(w) = workers.remove(&name) {
                if let Err(why) = finish(w, observers.as_ref()) {
                    failed.insert(name, why);
                }
            }
        }
        // With every host ended, stay only to show the failed ones through the endpoint (a
        // service; a run with a tick limit ends).
        let showing_failures =
            !failed.is_empty() && endpoint.is_some() && options.run.ticks.is_none();
        if workers.is_empty() && !showing_failures {
            break;
        }
        if !ready && workers.values().all(|w| started_or_failed(&w.status)) {
            ready = true;
            notifier.ready(&status_line(&workers));
            info!(hosts = workers.len(), "ready");
        }
        if let Some(every) = watchdog_every {
            if last_pet.elapsed() >= every && all_alive(&workers) {
                notifier.watchdog();
                last_pet = Instant::now();
            }
        }
        if ready && last_status.elapsed() >= Duration::from_secs(10) {
            notifier.status(&status_line(&workers));
            last_status = Instant::now();
        }
        control.sleep(Duration::from_millis(100));
    }
    for w in workers.values() {
        w.control.request_stop();
    }
    for (name, w) in std::mem::take(&mut workers) {
        if let Err(why) = finish(w, observers.as_ref()) {
            failed.insert(name, why);
        }
    }
    if let Some(e) = endpoint {
        // Ended by a tick limit, nobody asked to stop: the endpoint must hear it too.
        control.request_stop();
        e.join();
    }
    let mut record = None;
    if let Some(r) = &recorder {
        if let Err(e) = r.flush() {
            error!(file = %r.path().display(), error = %e, "cannot write the record");
        }
        record = r
            .stopped()
            .map(|why| format!("the record {} {why}", r.path().display()));
    }
    if !failed.is_empty() || record.is_some() {
        return Err(DaemonError::Failed {
            hosts: failed.len(),
            record,
        });
    }
    Ok(())
}

/// What `vcoord check-config` checks: exactly what `run` builds before it starts (every
/// policy, shadow policy and plugin with its parameters, the metrics address) and every
/// simulated host's scenario; libvirt hosts are not contacted. Returns the number of hosts.
pub fn check(config: &std::path::Path) -> Result<Checked, DaemonError> {
    let options = DaemonOptions {
        config: config.to_path_buf(),
        only_host: None,
        run: RunOptions::default(),
        lock_dir: PathBuf::new(),
    };
    let plan = load(&options)?;
    let mut degraded = Vec::new();
    for (host, policies) in &plan.hosts {
        if host.uri.starts_with("sim:") {
            crate::backend::open(&host.uri, &host.base_dir, &Default::default()).map_err(|e| {
                DaemonError::Policy {
                    host: host.name.clone(),
                    message: e.to_string(),
                }
            })?;
        }
        let (cpu, memory, _) = policies;
        for (kind, label, health) in [
            ("cpu", host.cpu_policy.label(), cpu.health()),
            ("memory", host.memory_policy.label(), memory.health()),
        ] {
            if let crate::policy::PolicyHealth::Quarantined { reason, .. } = health {
                degraded.push(format!(
                    "host `{}`: {kind} policy {label} {reason}; its fallback decides in its place",
                    host.name
                ));
            }
        }
    }
    Ok(Checked {
        hosts: plan.hosts.len(),
        degraded,
    })
}

/// What `check-config` found: the hosts, and each policy that would not run as written.
#[derive(Debug)]
pub struct Checked {
    /// How many hosts the configuration has.
    pub hosts: usize,
    /// Each policy a fallback would decide in place of, and why.
    pub degraded: Vec<String>,
}

/// Reads the configuration and builds every host's policies (and plugins) once, to refuse a
/// configuration that cannot run before anything starts or changes.
fn load(options: &DaemonOptions) -> Result<Plan, DaemonError> {
    let config = Config::from_file(&options.config)?;
    let hosts: Vec<HostConfig> = match &options.only_host {
        Some(name) => vec![config
            .hosts
            .iter()
            .find(|h| &h.name == name)
            .cloned()
            .ok_or_else(|| DaemonError::NoSuchHost {
                path: options.config.clone(),
                name: name.clone(),
            })?],
        None => config.hosts,
    };
    let hosts = hosts
        .into_iter()
        .map(|host| {
            let policies = build_policies(&host)?;
            Ok((host, policies))
        })
        .collect::<Result<_, DaemonError>>()?;
    Ok(Plan {
        hosts,
        metrics_listen: config.metrics_listen,
        fleet_host: config.metrics_fleet_host.clone(),
    })
}

type Policies = (Box<dyn CpuPolicy>, Box<dyn MemoryPolicy>, Option<Shadow>);

fn build_policies(host: &HostConfig) -> Result<Policies, DaemonError> {
    let policy = |message| DaemonError::Policy {
        host: host.name.clone(),
        message,
    };
    Ok((
        host.build_cpu_policy().map_err(policy)?,
        host.build_memory_policy().map_err(policy)?,
        Shadow::build(host).map_err(policy)?,
    ))
}

/// The host lock of an acting host on a real backend; none for dry runs and the simulator.
fn lock_for(host: &HostConfig, options: &DaemonOptions) -> Result<Option<HostLock>, LockError> {
    if options.run.dry_run || host.dry_run || host.uri.starts_with("sim:") {
        return Ok(None);
    }
    HostLock::acquire(&options.lock_dir, &host.uri).map(Some)
}

/// Starts `host` on a thread of its own.
fn spawn(
    host: HostConfig,
    lock: Option<HostLock>,
    policies: Option<Policies>,
    options: &DaemonOptions,
    recorder: Option<Arc<Recorder>>,
    observers: Option<Observers>,
) -> Worker {
    if let Some(o) = &observers {
        o.metrics
            .host_started(&host.name, Duration::from_secs_f64(host.interval_s));
    }
    let control = Control::new();
    let status = Arc::new(HostStatus::default());
    let (updates, incoming) = mpsc::channel();
    let handle = {
        let (host, control, status) = (host.clone(), control.clone(), status.clone());
        let run = options.run.clone();
        std::thread::Builder::new()
            .name(format!("host {}", host.name))
            .spawn(move || {
                host_loop(
                    host, policies, run, control, incoming, recorder, status, observers,
                )
            })
            .expect("spawning a host thread")
    };
    Worker {
        config: host,
        control,
        updates,
        status,
        handle,
        _lock: lock,
    }
}

/// One host: start (retrying while its backend is unreachable), then tick until the end or a
/// stop, taking new settings between ticks.
#[allow(clippy::too_many_arguments)]
fn host_loop(
    host: HostConfig,
    policies: Option<Policies>,
    options: RunOptions,
    control: Control,
    updates: Receiver<Update>,
    recorder: Option<Arc<Recorder>>,
    status: Arc<HostStatus>,
    observers: Option<Observers>,
) -> Result<u64, RunError> {
    let mut coordinator = match start(
        &host,
        policies,
        &options,
        &control,
        &status,
        observers.as_ref(),
    ) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            status.ended.store(true, Ordering::SeqCst);
            return Err(e);
        }
        None => return Ok(0),
    };
    if let Some(o) = &observers {
        coordinator.observe(Arc::new(o.clone()));
    }
    status.start_failed.store(false, Ordering::SeqCst);
    let mut done = 0;
    let result = loop {
        if options.ticks.is_some_and(|n| done >= n)
            || coordinator.finished()
            || control.stop_requested()
        {
            break Ok(done);
        }
        while let Ok(update) = updates.try_recv() {
            info!(host = %host.name, "new configuration taken");
            coordinator.reconfigure(update);
        }
        if let Some(record) = coordinator.tick() {
            status.vms.store(record.vms.len(), Ordering::Relaxed);
            if let Some(r) = &recorder {
                // A record that cannot be written stops, not the host: coordinating goes on,
                // and health says so until the process ends.
                if let Err(e) = r.write(&record) {
                    let file = r.path().display().to_string();
                    error!(host = %host.name, file = %file, error = %e, "cannot write the record: the record stops here, coordinating goes on");
                    if let Some(o) = &observers {
                        o.metrics
                            .record_stopped(&file, &r.stopped().unwrap_or_else(|| e.to_string()));
                    }
                }
            }
        }
        done += 1;
        status.ticks.store(done, Ordering::Relaxed);
        status.looped();
        if options.ticks.is_none_or(|n| done < n) {
            coordinator.wait(&control);
        }
    };
    coordinator.release();
    status.ended.store(true, Ordering::SeqCst);
    result
}

/// Opens the host; `None` when a stop came first. An unreachable backend is retried with
/// backoff, anything else is final.
fn start(
    host: &HostConfig,
    policies: Option<Policies>,
    options: &RunOptions,
    control: &Control,
    status: &HostStatus,
    observers: Option<&Observers>,
) -> Option<Result<Coordinator, RunError>> {
    let failed = |why: &RunError| {
        if let Some(o) = observers {
            o.metrics.host_failed(&host.name, &why.to_string());
        }
    };
    let mut policies = policies;
    let mut backoff = Duration::from_secs(1);
    loop {
        let opened = match policies.take() {
            Some((cpu, memory, shadow)) => {
                Coordinator::open_with(host, options, cpu, memory, shadow)
            }
            None => Coordinator::open(host, options),
        };
        match opened {
            Ok(c) => {
                info!(host = %host.name, backend = %c.describe(), "host started");
                return Some(Ok(c));
            }
            Err(
                e @ RunError::Backend {
                    source: BackendError::Connection { .. },
                    ..
                },
            ) => {
                failed(&e);
                let first = !status.start_failed.swap(true, Ordering::SeqCst);
                if first {
                    error!(host = %host.name, error = %e, "cannot start; retrying with backoff");
                } else {
                    warn!(host = %host.name, error = %e, retry_in_s = backoff.as_secs(), "still cannot start");
                }
                status.looped();
                if !control.sleep(backoff) {
                    return None;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                failed(&e);
                error!(host = %host.name, error = %e, "cannot start; giving this host up");
                status.start_failed.store(true, Ordering::SeqCst);
                return Some(Err(e));
            }
        }
    }
}

/// Joins a host's thread. A host that stopped cleanly loses its series; one that failed
/// (logged when it did, or now) keeps them, marked failed with why, which is returned.
fn finish(worker: Worker, observers: Option<&Observers>) -> Result<(), String> {
    let name = worker.config.name.clone();
    let result = match worker.handle.join() {
        Ok(Ok(ticks)) => {
            info!(host = %name, ticks, "host stopped");
            Ok(())
        }
        Ok(Err(e)) => {
            // Start failures were logged when they happened; others now.
            if !matches!(e, RunError::Backend { .. } | RunError::Policy { .. }) {
                error!(host = %name, error = %e, "host failed");
            }
            Err(e.to_string())
        }
        Err(_) => {
            error!(host = %name, "host thread panicked");
            Err("its thread panicked".to_owned())
        }
    };
    if let Some(o) = observers {
        match &result {
            Ok(()) => {
                o.metrics.host_removed(&name);
                o.status.remove(&name);
            }
            Err(why) => {
                o.metrics.host_stopped_failed(&name, why);
                o.status.fail(&name, why);
            }
        }
    }
    result
}

/// Forgets a host in the observers, whatever state it ended in.
fn forget(name: &str, observers: Option<&Observers>) {
    if let Some(o) = observers {
        o.metrics.host_removed(name);
        o.status.remove(name);
    }
}

/// Re-reads the configuration and applies it, or keeps the running one if it cannot run.
/// Returns whether it was applied.
fn reload(
    options: &DaemonOptions,
    listening: &(Option<std::net::SocketAddr>, Option<String>),
    workers: &mut BTreeMap<String, Worker>,
    failed: &mut BTreeMap<String, String>,
    recorder: Option<Arc<Recorder>>,
    observers: Option<&Observers>,
) -> bool {
    info!(config = %options.config.display(), "reloading the configuration");
    let plan = match load(options) {
        Ok(plan) => plan,
        Err(e) => {
            error!(error = %e, "reload refused: keeping the running configuration");
            return false;
        }
    };
    // The endpoint keeps its address for the life of the process: a reload that says
    // otherwise would report success and keep serving the old one.
    if plan.metrics_listen != listening.0 {
        let shown =
            |a: Option<std::net::SocketAddr>| a.map_or("none".to_owned(), |a| a.to_string());
        error!(
            config = %options.config.display(),
            "reload refused: `metrics.listen` changed ({} -> {}); it takes effect only at a restart: keeping the running configuration",
            shown(listening.0),
            shown(plan.metrics_listen)
        );
        return false;
    }
    if plan.fleet_host != listening.1 {
        let shown = |a: &Option<String>| a.clone().unwrap_or_else(|| "the machine's FQDN".into());
        error!(
            config = %options.config.display(),
            "reload refused: `metrics.fleet_host` changed ({} -> {}); it takes effect only at a restart: keeping the running configuration",
            shown(&listening.1),
            shown(&plan.fleet_host)
        );
        return false;
    }
    let configured: Vec<String> = plan.hosts.iter().map(|h| h.0.name.clone()).collect();
    // Take what changes (locks of new backends) before touching anything.
    let mut staged = Vec::new();
    for (host, policies) in plan.hosts {
        let running = workers.get(&host.name);
        if running.is_some_and(|w| w.config == host) {
            continue;
        }
        let same_backend = running.is_some_and(|w| w.config.uri == host.uri);
        let lock = if same_backend {
            None
        } else {
            match lock_for(&host, options) {
                Ok(l) => l,
                Err(e) => {
                    error!(error = %e, "reload refused: keeping the running configuration");
                    return false;
                }
            }
        };
        staged.push((host, same_backend, policies, lock));
    }
    // Failed hosts are forgotten: those still configured start again below (as added).
    for name in std::mem::take(failed).into_keys() {
        if configured.contains(&name) {
            info!(host = %name, "starting the failed host again");
        } else {
            info!(host = %name, "failed host removed by the new configuration");
        }
        forget(&name, observers);
    }
    // Hosts no longer configured stop.
    let gone: Vec<String> = workers
        .keys()
        .filter(|n| !configured.contains(n))
        .cloned()
        .collect();
    for name in gone {
        if let Some(w) = workers.remove(&name) {
            info!(host = %name, "host removed by the new configuration: stopping it");
            w.control.request_stop();
            let _ = finish(w, observers);
            forget(&name, observers);
        }
    }
    for (host, same_backend, (cpu, memory, shadow), lock) in staged {
        let name = host.name.clone();
        if same_backend {
            let w = workers.get_mut(&name).expect("running host");
            let keep_cpu = w.config.cpu_policy == host.cpu_policy;
            let keep_memory = w.config.memory_policy == host.memory_policy;
            let keep_shadow = w.config.shadow_cpu_policy == host.shadow_cpu_policy
                && w.config.shadow_memory_policy == host.shadow_memory_policy;
            let update = Update {
                host: host.clone(),
                cpu_policy: (!keep_cpu).then_some(cpu),
                memory_policy: (!keep_memory).then_some(memory),
                shadow: (!keep_shadow).then_some(shadow),
            };
            info!(host = %name, new_cpu_policy = !keep_cpu, new_memory_policy = !keep_memory, "host reconfigured");
            if w.updates.send(update).is_ok() {
                if let Some(o) = observers {
                    o.metrics
                        .host_started(&name, Duration::from_secs_f64(host.interval_s));
                }
                w.config = host;
            }
        } else {
            if let Some(w) = workers.remove(&name) {
                info!(host = %name, "host's backend changed: restarting it");
                w.control.request_stop();
                let _ = finish(w, observers);
                forget(&name, observers);
            }
            info!(host = %name, "host added by the new configuration");
            let worker = spawn(
                host,
                lock,
                Some((cpu, memory, shadow)),
                options,
                recorder.clone(),
                observers.cloned(),
            );
            workers.insert(name, worker);
        }
    }
    info!("configuration reloaded");
    true
}

fn started_or_failed(status: &HostStatus) -> bool {
    status.ticks.load(Ordering::Relaxed) > 0
        || status.start_failed.load(Ordering::SeqCst)
        || status.ended.load(Ordering::SeqCst)
}

/// Whether every running host's loop went round recently (a loop stuck in a call is not).
fn all_alive(workers: &BTreeMap<String, Worker>) -> bool {
    workers.values().all(|w| {
        let limit = Duration::from_secs_f64((3.0 * w.config.interval_s).max(10.0));
        w.status.ended.load(Ordering::SeqCst)
            || w.status.last_loop().is_none_or(|t| t.elapsed() <= limit)
    })
}

/// A short summary for the service manager.
fn status_line(workers: &BTreeMap<String, Worker>) -> String {
    let parts: Vec<String> = workers
        .iter()
        .map(|(name, w)| {
            if w.status.start_failed.load(Ordering::SeqCst)
                && w.status.ticks.load(Ordering::Relaxed) == 0
            {
                format!("{name}: cannot start")
            } else {
                format!(
                    "{name}: {} VMs, tick {}",
                    w.status.vms.load(Ordering::Relaxed),
                    w.status.ticks.load(Ordering::Relaxed)
                )
            }
        })
        .collect();
    let mut line = parts.join("; ");
    if line.len() > 200 {
        line = format!("{} hosts", workers.len());
    }
    line
}
