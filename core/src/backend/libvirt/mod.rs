//! The libvirt backend: any libvirt URI (`qemu:///system`, `qemu+ssh://host/system`,
//! `test:///default`). Live pinning and balloon targets; lost connections are re-opened with
//! backoff.
//!
//! Sampling, on a local `qemu:///system` host (the fast path, see [`procfs`]): one domain
//! list call per tick; vCPU figures and placement from /proc; the balloon statistics group in
//! one bulk call at most every `memory_interval` (cached in between); host free memory from
//! /proc/meminfo. A domain whose /proc figures cannot be read is sampled through libvirt that
//! tick (logged once). Elsewhere (remote URIs, the fast path off): one bulk VCPU + BALLOON call
//! and one `virDomainGetVcpus` per domain per tick, and one node free-memory call.

pub(crate) mod ffi;
mod memdev;
mod metadata;
pub mod procfs;
mod sample;
mod topology;

use topology::parse_topology;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::{Backend, BackendCalls, BackendError};
use crate::cpuset::CpuSet;
use crate::model::{MemorySample, Pcpu, Sample};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// An open connection and its event subscription, which is dropped first (fields drop in
/// order): it must end before the connection closes.
struct Link {
    size_changes: Option<ffi::SizeChangeWatch>,
    conn: Connect,
}

/// A libvirt host.
pub struct LibvirtBackend {
    uri: String,
    conn: Option<Link>,
    pcpus: Vec<Pcpu>,
    mem_total_kib: u64,
    maplen: usize,
    started: Instant,
    next_tick: Option<Instant>,
    backoff: Duration,
    retry_at: Option<Instant>,
    calls: BackendCalls,
    /// Domains whose placement failed, so it is logged once, not every tick.
    placement_failed: HashMap<String, String>,
    /// `virNodeGetCPUStats` failed (said once).
    node_stats_failed: bool,
    /// How many counters `virNodeGetCPUStats` gives here, once asked.
    node_stats_count: Option<usize>,
    /// The fast local path, when on.
    proc: Option<procfs::ProcReader>,
    /// Domains the fast path failed for: the first error and the samples in a row it failed.
    proc_failed: HashMap<String, (String, u32)>,
    /// Balloon statistics of each domain (by UUID) from the last balloon call, and when.
    balloon_cache: HashMap<String, MemorySample>,
    balloon_at: Option<Instant>,
    memory_interval: Duration,
    /// The operator's settings read from each domain's metadata.
    metadata: metadata::MetadataCache,
    /// Each domain's virtio-mem devices and free page reporting.
    devices: memdev::DeviceCache,
    /// Whether the log said if per-VM memory pressure is available.
    vm_pressure_said: bool,
    /// virtio-mem size changes libvirt's events brought, not yet applied to `devices`.
    size_changes: ffi::SizeChanges,
    /// Whether the log said if the size-change events are delivered.
    size_events_said: bool,
}

/// A domain's bulk statistics fields and vCPU placement.
type BulkVcpus = (Vec<(String, ffi::Value)>, Vec<ffi::Placement>);

/// How the libvirt backend samples.
#[derive(Clone, Debug)]
pub struct LibvirtOptions {
    /// Read vCPU figures from /proc on a local `qemu:///system` host.
    pub fast_path: bool,
    /// Poll the balloon statistics group at most this often (fast path only).
    pub memory_interval: Duration,
    /// Where libvirt keeps the status files of running QEMU domains.
    pub qemu_run_dir: std::path::PathBuf,
}

impl Default for LibvirtOptions {
    fn default() -> Self {
        Self {
            fast_path: true,
            memory_interval: Duration::from_secs(2),
            qemu_run_dir: procfs::QEMU_RUN_DIR.into(),
        }
    }
}

/// Whether `uri` is the local system QEMU driver (where /proc shows its QEMU processes).
pub fn is_local_system(uri: &str) -> bool {
    matches!(
        uri.trim_end_matches('/'),
        "qemu:///system" | "qemu+unix:///system"
    )
}

impl LibvirtBackend {
    /// Connects to `uri` and reads the host's CPU topology and memory size.
    pub fn connect(uri: &str) -> Result<Self, BackendError> {
        Self::connect_with(uri, &LibvirtOptions::default())
    }

    /// Connects with the given sampling options.
    pub fn connect_with(uri: &str, options: &LibvirtOptions) -> Result<Self, BackendError> {
        // libvirt's default error handler prints every error to stderr, including expected ones
        // (a domain gone between listing and lookup); errors reach us as values and are logged
        // where they matter.
        static QUIET: std::sync::Once = std::sync::Once::new();
        QUIET.call_once(virt::error::clear_error_callback);
        // Before the first connection: connections opened earlier deliver no events.
        if let Err(e) = ffi::start_event_loop() {
            warn!(error = %e, "cannot run libvirt's event loop; virtio-mem sizes are read back every tick");
        }
        let proc = (options.fast_path && is_local_system(uri))
            .then(|| procfs::ProcReader::new(&options.qemu_run_dir, Path::new("/proc")))
            .filter(|p| {
                let ok = p.available();
                if !ok {
                    warn!(uri, dir = %options.qemu_run_dir.display(), "fast path unavailable (cannot read libvirt's QEMU status directory); sampling through libvirt");
                }
                ok
            });
        let mut backend = Self {
            uri: uri.to_string(),
            conn: None,
            pcpus: Vec::new(),
            mem_total_kib: 0,
            maplen: 1,
            started: Instant::now(),
            next_tick: None,
            backoff: Duration::from_secs(1),
            retry_at: None,
            calls: BackendCalls::default(),
            placement_failed: HashMap::new(),
            node_stats_failed: false,
            node_stats_count: None,
            proc,
            proc_failed: HashMap::new(),
            balloon_cache: HashMap::new(),
            balloon_at: None,
            memory_interval: options.memory_interval,
            metadata: Default::default(),
            devices: Default::default(),
            vm_pressure_said: false,
            size_changes: Default::default(),
            size_events_said: false,
        };
        backend.open()?;
        Ok(backend)
    }

    fn conn_error(&self, e: impl std::fmt::Display) -> BackendError {
        BackendError::Connection {
            uri: self.uri.clone(),
            message: e.to_string(),
        }
    }

    fn open(&mut self) -> Result<(), BackendError> {
        let conn = Connect::open(Some(&self.uri)).map_err(|e| self.conn_error(e))?;
        let node = conn.node_info().map_err(|e| self.conn_error(e))?;
        let pcpus = conn
            .capabilities()
            .ok()
            .map(|xml| parse_topology(&xml))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| (0..node.cpus).map(Pcpu::plain).collect());
        let max_id = pcpus.iter().map(|p| p.id).max().unwrap_or(0);
        self.maplen = (max_id as usize / 8) + 1;
        self.pcpus = pcpus;
        self.mem_total_kib = node.memory;
        let watch = ffi::start_event_loop()
            .map_err(|e| e.to_string())
            .and_then(|()| {
                ffi::watch_size_changes(&conn, &self.size_changes).map_err(|e| e.to_string())
            });
        let size_changes = match watch {
            Ok(watch) => Some(watch),
            Err(e) => {
                if !self.size_events_said {
                    info!(uri = %self.uri, error = %e, "no memory-device size-change events here; virtio-mem sizes are read back every tick");
                }
                None
            }
        };
        if size_changes.is_some() && !self.size_events_said {
            info!(uri = %self.uri, "virtio-mem sizes followed by libvirt's memory-device size-change events");
        }
        self.size_events_said = true;
        // A new subscription starts from what the domains' XML says: drop what came before.
        self.devices.forget_all();
        self.conn = Some(Link { size_changes, conn });
        self.backoff = Duration::from_secs(1);
        self.retry_at = None;
        Ok(())
    }

    /// The live connection, re-opening a lost one when its backoff has passed.
    fn live(&mut self) -> Result<&Connect, BackendError> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(self.conn_error("not connected (waiting to retry)"));
            }
            match self.open() {
                Ok(()) => info!(uri = %self.uri, "reconnected"),
                Err(e) => {
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(e);
                }
            }
        }
        Ok(&self.conn.as_ref().expect("connected above").conn)
    }

    /// Whether libvirt's memory-device size-change events reach this backend.
    fn follows_size_events(&self) -> bool {
        self.conn.as_ref().is_some_and(|l| l.size_changes.is_some())
    }

    /// The live connection (re-opened when lost), for tools that make calls of their own.
    pub fn connection(&mut self) -> Result<&Connect, BackendError> {
        self.live()
    }

    /// Length in bytes of this host's libvirt CPU maps.
    pub fn cpumap_len(&self) -> usize {
        self.maplen
    }

    /// Drops the connection if libvirt says it is gone.
    fn check_alive(&mut self) {
        let alive = self
            .conn
            .as_ref()
            .is_some_and(|c| c.conn.is_alive().unwrap_or(false));
        if !alive && self.conn.take().is_some() {
            warn!(uri = %self.uri, "connection lost; will reconnect");
            self.retry_at = Some(Instant::now() + self.backoff);
        }
    }

    fn domain(&mut self, vm: &str, op: &'static str) -> Result<Domain, BackendError> {
        self.calls.actuate_calls += 1;
        let conn = self.live()?;
        conn.lookup_domain_by_name(vm)
            .map_err(|e| Self::refused(vm, op, e))
    }

    /// Maps a failed call on a domain: gone (not found, or "domain is not running": it went away
    /// between sampling and acting), or refused with libvirt's message.
    fn refused(vm: &str, op: &'static str, e: virt::error::Error) -> BackendError {
        if e.code().is_known_and(|c| c == ErrorNumber::NoDomain)
            || e.code()
                .is_known_and(|c| c == ErrorNumber::OperationInvalid)
        {
            BackendError::VmGone { vm: vm.to_string() }
        } else {
            BackendError::Refused {
                vm: vm.to_string(),
                op,
                message: e.message().to_string(),
            }
        }
    }
}

impl Backend for LibvirtBackend {
    fn describe(&self) -> String {
        format!(
            "libvirt {} ({} pCPUs, {})",
            self.uri,
            self.pcpus.len(),
            if self.proc.is_some() {
                "vCPU figures from /proc"
            } else {
                "all figures from libvirt"
            }
        )
    }

    fn sample(&mut self) -> Result<Sample, BackendError> {
        let sample = if self.proc.is_some() {
            self.sample_fast()
        } else {
            self.sample_bulk()
        }?;
        let vms = &sample.vms;
        if !vms.is_empty() && !self.vm_pressure_said {
            self.vm_pressure_said = true;
            let with = vms.iter().filter(|v| v.memory.pressure.is_some()).count();
            if with == 0 {
                info!("per-VM memory pressure: not available here (no QEMU process in a cgroup v2 group of its own, or not a local host); guests are judged pressured by swap and faults alone");
            } else {
                let example = vms
                    .iter()
                    .find(|v| v.memory.pressure.is_some())
                    .and_then(|v| {
                        let group = self.proc.as_ref()?.group(&v.name)?;
                        Some(format!("{}={}", v.name, group.display()))
                    });
                info!(
                    vms = with,
                    of = vms.len(),
                    example = example.as_deref().unwrap_or("-"),
                    "per-VM memory pressure from each domain's cgroup v2 group"
                );
            }
        }
        Ok(sample)
    }

    fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError> {
        let map = cpus.to_cpumap(self.maplen);
        let dom = self.domain(vm, "pin vCPU")?;
        self.calls.actuate_calls += 1;
        dom.pin_vcpu_flags(vcpu, &map, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map(|_| ())
            .map_err(|e| Self::refused(vm, "pin vCPU", e))
    }

    fn set_cputune(&mut self, vm: &str, tune: &vcoord_api::CpuTune) -> Result<(), BackendError> {
        const OP: &str = "tune CPU";
        let dom = self.domain(vm, OP)?;
        if tune.cpu_shares.is_some()
            || tune.vcpu_quota_us.is_some()
            || tune.vcpu_period_us.is_some()
        {
            let mut info = virt::domain::SchedulerInfo {
                cpu_shares: tune.cpu_shares,
                ..Default::default()
            };
            info.vcpu_bw.quota = tune.vcpu_quota_us;
            info.vcpu_bw.period = tune.vcpu_period_us;
            self.calls.actuate_calls += 1;
            dom.set_scheduler_parameters_flags(&info, sys::VIR_DOMAIN_AFFECT_LIVE)
                .map_err(|e| Self::refused(vm, OP, e))?;
        }
        if let Some(cpus) = &tune.emulator {
            self.calls.actuate_calls += 1;
            dom.pin_emulator(&cpus.to_cpumap(self.maplen), sys::VIR_DOMAIN_AFFECT_LIVE)
                .map_err(|e| Self::refused(vm, OP, e))?;
        }
        if let Ok(uuid) = dom.uuid_string() {
            self.devices.tuned(&uuid, tune);
        }
        Ok(())
    }

    fn set_balloon_target(&mut self, vm: &str, target_kib: u64) -> Result<(), BackendError> {
        let dom = self.domain(vm, "set balloon target")?;
        self.calls.actuate_calls += 1;
        dom.set_memory_flags(target_kib, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map(|_| ())
            .map_err(|e| Self::refused(vm, "set balloon target", e))
    }

    fn set_virtio_mem(
        &mut self,
        vm: &str,
        alias: &str,
        requested_kib: u64,
    ) -> Result<(), BackendError> {
        const OP: &str = "set virtio-mem request";
        let dom = self.domain(vm, OP)?;
        self.calls.actuate_calls += 2;
        let live = dom.xml_desc(0).map_err(|e| Self::refused(vm, OP, e))?;
        let element = memdev::with_request(&live, alias, requested_kib).map_err(|message| {
            BackendError::Refused {
                vm: vm.to_string(),
                op: OP,
                message,
            }
        })?;
        dom.update_device_flags(&element, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| Self::refused(vm, OP, e))?;
        // What the guest then plugs comes by event (or the next read); what was asked is known.
        self.calls.actuate_calls += 1;
        if let Ok(uuid) = dom.uuid_string() {
            self.devices.requested(&uuid, alias, requested_kib);
        }
        Ok(())
    }

    /// On the local host (the fast path: its sysfs is this host's); a remote host's KSM is
    /// not read, so no plan reaches here for it.
    fn set_ksm(&mut self, ksm: &vcoord_api::KsmPlan) -> Result<(), BackendError> {
        if self.proc.is_none() {
            return Err(BackendError::HostRefused {
                op: "set KSM",
                message: format!("{} is not this machine's libvirt", self.uri),
            });
        }
        crate::backend::ksm::write(std::path::Path::new(crate::backend::ksm::SYS_DIR), ksm).map_err(
            |e| BackendError::HostRefused {
                op: "set KSM",
                message: e.to_string(),
            },
        )
    }

    fn set_memory_stats_period(&mut self, vm: &str, period_s: u32) -> Result<(), BackendError> {
        let dom = self.domain(vm, "set memory stats period")?;
        self.calls.actuate_calls += 1;
        dom.set_memory_stats_period(period_s as i32, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| Self::refused(vm, "set memory stats period", e))
    }

    fn busy(&mut self, vm: &str) -> Option<String> {
        use virt::domain::DomainState;
        use virt::enumutil::Enum;
        // A domain that cannot be looked up is gone: acting on it says so.
        let dom = self.domain(vm, "read state").ok()?;
        self.calls.actuate_calls += 2;
        if let Ok((state, reason)) = dom.state() {
            if !matches!(
                state,
                Enum::Known(DomainState::Running | DomainState::Blocked)
            ) {
                return Some(format!("not running: {state} ({reason})"));
            }
        }
        let job = dom.job_info().ok()?.r#type;
        match u32::try_from(job) {
            Ok(sys::VIR_DOMAIN_JOB_BOUNDED) | Ok(sys::VIR_DOMAIN_JOB_UNBOUNDED) => Some(
                "a job is running (a migration, dump, snapshot or save: see `virsh domjobinfo`)"
                    .into(),
            ),
            _ => None,
        }
    }

    fn wait(&mut self, interval: Duration, sleep: &dyn Fn(Duration)) {
        // Keep a steady cadence: sleep until the next tick is due, not a full interval after
        // this tick's work.
        let now = Instant::now();
        let due = match self.next_tick {
            Some(t) if t > now => t,
            _ => now + interval,
        };
        sleep(due.saturating_duration_since(now));
        self.next_tick = Some(due + interval);
    }

    fn take_calls(&mut self) -> BackendCalls {
        std::mem::take(&mut self.calls)
    }
}
