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

mod ffi;
pub mod procfs;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use super::{Backend, BackendCalls, BackendError};
use crate::cpuset::CpuSet;
use crate::model::{HostSample, MemorySample, Pcpu, Sample, VcpuSample, VmSample};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A libvirt host.
pub struct LibvirtBackend {
    uri: String,
    conn: Option<Connect>,
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
    /// The fast local path, when on.
    proc: Option<procfs::ProcReader>,
    /// Domains the fast path failed for, so it is logged once.
    proc_failed: HashMap<String, String>,
    /// Balloon statistics of each domain (by UUID) from the last balloon call, and when.
    balloon_cache: HashMap<String, MemorySample>,
    balloon_at: Option<Instant>,
    memory_interval: Duration,
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
            proc,
            proc_failed: HashMap::new(),
            balloon_cache: HashMap::new(),
            balloon_at: None,
            memory_interval: options.memory_interval,
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
        self.conn = Some(conn);
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
        Ok(self.conn.as_ref().expect("connected above"))
    }

    /// Drops the connection if libvirt says it is gone.
    fn check_alive(&mut self) {
        let alive = self
            .conn
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false));
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

impl LibvirtBackend {
    /// Everything through libvirt: one bulk VCPU + BALLOON call, `virDomainGetVcpus` per domain.
    fn sample_bulk(&mut self) -> Result<Sample, BackendError> {
        let maplen = self.maplen;
        let started = self.started;
        let before = started.elapsed();
        let conn = self.live()?;
        let stats = ffi::all_domain_stats(
            conn,
            sys::VIR_DOMAIN_STATS_VCPU | sys::VIR_DOMAIN_STATS_BALLOON,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
            maplen,
        );
        // libvirtd reads the counters somewhere during the call, which can take long on a busy
        // host: the midpoint keeps the interval error to half the call's duration.
        let taken = before + (started.elapsed() - before) / 2;
        let free = stats.as_ref().ok().map(|_| conn.free_memory());
        let stats = match stats {
            Ok(s) => s,
            Err(e) => {
                let err = self.conn_error(e);
                self.check_alive();
                return Err(err);
            }
        };
        self.calls.sample_calls += 2 + stats.len() as u32;
        let mem_free_kib = match free {
            Some(Ok(bytes)) => bytes / 1024,
            _ => {
                self.check_alive();
                return Err(self.conn_error("cannot read host free memory"));
            }
        };
        let mut vms = Vec::with_capacity(stats.len());
        for dom in stats {
            let placement = match dom.placement {
                Ok(p) => {
                    self.placement_failed.remove(&dom.name);
                    p
                }
                Err(e) => {
                    if self
                        .placement_failed
                        .insert(dom.name.clone(), e.to_string())
                        .is_none()
                    {
                        warn!(vm = %dom.name, error = %e, "cannot read vCPU placement; vCPUs unplaced");
                    }
                    Vec::new()
                }
            };
            vms.push(vm_sample(dom.name, dom.uuid, &dom.params, &placement));
        }
        Ok(self.finish_sample(taken, mem_free_kib, vms))
    }

    /// A sample of this host taken at `taken` (since the backend started), VMs by name.
    fn finish_sample(&self, taken: Duration, mem_free_kib: u64, mut vms: Vec<VmSample>) -> Sample {
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Sample {
            taken_ns: taken.as_nanos() as u64,
            wall_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            host: HostSample {
                pcpus: self.pcpus.clone(),
                mem_total_kib: self.mem_total_kib,
                mem_free_kib,
            },
            vms,
        }
    }

    /// One round of a per-domain poller in the style of the original design: list the
    /// domains, then per domain its vCPU info, memory statistics and domain info. Returns the
    /// libvirt calls made (for `vcoord bench`).
    pub fn poll_per_domain(&mut self) -> Result<u32, BackendError> {
        let maplen = self.maplen;
        let conn = self.live()?;
        let doms = conn
            .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            .map_err(|e| self.conn_error(e))?;
        let mut calls = 1;
        for dom in &doms {
            let _ = ffi::domain_vcpus(dom, maplen);
            let _ = dom.memory_stats(0);
            let _ = dom.info();
            calls += 3;
        }
        Ok(calls)
    }

    /// One bare bulk statistics call (VCPU + BALLOON), nothing else. Returns the calls made.
    pub fn poll_bulk_call(&mut self) -> Result<u32, BackendError> {
        let conn = self.live()?;
        ffi::all_domain_stats(
            conn,
            sys::VIR_DOMAIN_STATS_VCPU | sys::VIR_DOMAIN_STATS_BALLOON,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
            0,
        )
        .map_err(|e| self.conn_error(e))?;
        Ok(1)
    }

    /// The fast local path (see the module documentation).
    fn sample_fast(&mut self) -> Result<Sample, BackendError> {
        let started = self.started;
        let before = started.elapsed();
        let conn = self.live()?;
        let listed = conn.list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE);
        let domains: Vec<(String, String)> = match listed {
            Ok(doms) => doms
                .iter()
                .filter_map(|d| Some((d.name().ok()?, d.uuid_string().ok()?)))
                .collect(),
            Err(e) => {
                let err = self.conn_error(e);
                self.check_alive();
                return Err(err);
            }
        };
        self.calls.sample_calls += 1;
        let proc = self.proc.as_mut().expect("fast path on");
        let names: Vec<&str> = domains.iter().map(|d| d.0.as_str()).collect();
        proc.retain(&names);
        let mut figures = HashMap::new();
        let mut fallback = Vec::new();
        for (name, uuid) in &domains {
            match proc.vcpus(name, uuid) {
                Ok(v) => {
                    if self.proc_failed.remove(name).is_some() {
                        info!(vm = %name, "vCPU figures from /proc again");
                    }
                    figures.insert(name.clone(), v);
                }
                Err(e) => {
                    if self.proc_failed.insert(name.clone(), e.clone()).is_none() {
                        warn!(vm = %name, error = %e, "fast path failed for this domain; sampling it through libvirt");
                    }
                    fallback.push(name.clone());
                }
            }
        }
        let taken = before + (started.elapsed() - before) / 2;
        self.proc_failed.retain(|n, _| names.contains(&n.as_str()));

        // Balloon statistics: at most every memory interval, and whenever a domain is new.
        let new_domain = domains
            .iter()
            .any(|(_, uuid)| !self.balloon_cache.contains_key(uuid));
        let due = self
            .balloon_at
            .is_none_or(|t| t.elapsed() >= self.memory_interval);
        let mut bulk_vcpus: HashMap<String, BulkVcpus> = HashMap::new();
        if due || new_domain || !fallback.is_empty() {
            let mut groups = sys::VIR_DOMAIN_STATS_BALLOON;
            if !fallback.is_empty() {
                groups |= sys::VIR_DOMAIN_STATS_VCPU;
            }
            let maplen = if fallback.is_empty() { 0 } else { self.maplen };
            let conn = self.live()?;
            let stats = match ffi::all_domain_stats(
                conn,
                groups,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
                maplen,
            ) {
                Ok(s) => s,
                Err(e) => {
                    let err = self.conn_error(e);
                    self.check_alive();
                    return Err(err);
                }
            };
            self.calls.sample_calls += 1 + if maplen > 0 { stats.len() as u32 } else { 0 };
            self.balloon_cache.clear();
            for dom in stats {
                let sample = vm_sample(dom.name.clone(), dom.uuid.clone(), &dom.params, &[]);
                self.balloon_cache.insert(dom.uuid.clone(), sample.memory);
                if fallback.contains(&dom.name) {
                    bulk_vcpus.insert(dom.name, (dom.params, dom.placement.unwrap_or_default()));
                }
            }
            self.balloon_at = Some(Instant::now());
        }
        let mem_free_kib = procfs::mem_free_kib(Path::new("/proc"))
            .ok_or_else(|| self.conn_error("cannot read /proc/meminfo"))?;
        let mut vms = Vec::with_capacity(domains.len());
        for (name, uuid) in domains {
            let memory = self.balloon_cache.get(&uuid).cloned().unwrap_or_default();
            let vm = if let Some(v) = figures.remove(&name) {
                VmSample {
                    name,
                    uuid,
                    vcpus: v
                        .into_iter()
                        .map(|f| VcpuSample {
                            id: f.vcpu,
                            run_time_ns: f.run_ns,
                            wait_time_ns: Some(f.wait_ns),
                            pcpu: Some(f.cpu),
                            affinity: f.affinity,
                        })
                        .collect(),
                    memory,
                    oom_events: None,
                }
            } else if let Some((params, placement)) = bulk_vcpus.remove(&name) {
                let mut vm = vm_sample(name, uuid, &params, &placement);
                vm.memory = memory;
                vm
            } else {
                // Gone between the list and the statistics call.
                continue;
            };
            vms.push(vm);
        }
        Ok(self.finish_sample(taken, mem_free_kib, vms))
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
        if self.proc.is_some() {
            self.sample_fast()
        } else {
            self.sample_bulk()
        }
    }

    fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError> {
        let map = cpus.to_cpumap(self.maplen);
        let dom = self.domain(vm, "pin vCPU")?;
        self.calls.actuate_calls += 1;
        dom.pin_vcpu_flags(vcpu, &map, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map(|_| ())
            .map_err(|e| Self::refused(vm, "pin vCPU", e))
    }

    fn set_balloon_target(&mut self, vm: &str, target_kib: u64) -> Result<(), BackendError> {
        let dom = self.domain(vm, "set balloon target")?;
        self.calls.actuate_calls += 1;
        dom.set_memory_flags(target_kib, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map(|_| ())
            .map_err(|e| Self::refused(vm, "set balloon target", e))
    }

    fn set_memory_stats_period(&mut self, vm: &str, period_s: u32) -> Result<(), BackendError> {
        let dom = self.domain(vm, "set memory stats period")?;
        self.calls.actuate_calls += 1;
        dom.set_memory_stats_period(period_s as i32, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| Self::refused(vm, "set memory stats period", e))
    }

    fn wait(&mut self, interval: Duration) {
        // Keep a steady cadence: sleep until the next tick is due, not a full interval after
        // this tick's work.
        let now = Instant::now();
        let due = match self.next_tick {
            Some(t) if t > now => t,
            _ => now + interval,
        };
        std::thread::sleep(due.saturating_duration_since(now));
        self.next_tick = Some(due + interval);
    }

    fn take_calls(&mut self) -> BackendCalls {
        std::mem::take(&mut self.calls)
    }
}

/// Builds a VM sample from bulk statistics fields and vCPU placement.
fn vm_sample(
    name: String,
    uuid: String,
    params: &[(String, ffi::Value)],
    placement: &[ffi::Placement],
) -> VmSample {
    let fields: HashMap<&str, &ffi::Value> = params.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let get = |key: &str| fields.get(key).and_then(|v| v.as_u64());
    let vcpu_count = get("vcpu.current").unwrap_or(placement.len() as u64);
    let vcpus = (0..vcpu_count as u32)
        .map(|i| {
            let place = placement.iter().find(|p| p.vcpu == i);
            VcpuSample {
                id: i,
                run_time_ns: get(&format!("vcpu.{i}.time")).unwrap_or(0),
                wait_time_ns: get(&format!("vcpu.{i}.delay")),
                pcpu: place.and_then(|p| u32::try_from(p.cpu).ok()),
                affinity: place
                    .map(|p| CpuSet::from_cpumap(&p.cpumap))
                    .unwrap_or_default(),
            }
        })
        .collect();
    let actual_kib = get("balloon.current").unwrap_or(0);
    let memory = MemorySample {
        max_kib: get("balloon.maximum").unwrap_or(actual_kib),
        actual_kib,
        unused_kib: get("balloon.unused"),
        available_kib: get("balloon.available"),
        usable_kib: get("balloon.usable"),
        swap_in_kib: get("balloon.swap_in"),
        swap_out_kib: get("balloon.swap_out"),
        major_faults: get("balloon.major_fault"),
        stats_updated_s: get("balloon.last-update").map(|s| s as i64),
    };
    VmSample {
        name,
        uuid,
        vcpus,
        memory,
        oom_events: None,
    }
}

/// pCPUs with their topology from the capabilities XML (`<cell id=..>` ... `<cpu id=..
/// socket_id=.. core_id=.. />`). Empty if the XML has no topology.
fn parse_topology(xml: &str) -> Vec<Pcpu> {
    fn attr(tag: &str, name: &str) -> Option<u32> {
        let start = tag.find(&format!(" {name}='"))? + name.len() + 3;
        let end = tag[start..].find('\'')? + start;
        tag[start..end].parse().ok()
    }
    let mut pcpus = Vec::new();
    let Some(topology) = xml.find("<topology>").map(|i| &xml[i..]) else {
        return pcpus;
    };
    for cell in topology.split("<cell ").skip(1) {
        let node = attr(&format!(" {cell}"), "id");
        for cpu in cell.split("<cpu ").skip(1) {
            let tag = format!(" {}", &cpu[..cpu.find('>').unwrap_or(cpu.len())]);
            if let Some(id) = attr(&tag, "id") {
                pcpus.push(Pcpu {
                    id,
                    core_id: attr(&tag, "core_id"),
                    socket_id: attr(&tag, "socket_id"),
                    node_id: node,
                });
            }
        }
    }
    pcpus.sort_by_key(|p| p.id);
    pcpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_from_capabilities() {
        let xml = "<capabilities><host><topology><cells num='1'><cell id='0'><memory unit='KiB'>1</memory><cpus num='2'>\
            <cpu id='0' socket_id='0' die_id='0' core_id='0' siblings='0-1'/>\
            <cpu id='1' socket_id='0' die_id='0' core_id='0' siblings='0-1'/>\
            </cpus></cell></cells></topology></host></capabilities>";
        let p = parse_topology(xml);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, 1);
        assert_eq!(p[1].core_id, Some(0));
        assert_eq!(p[1].node_id, Some(0));
        assert!(parse_topology("<capabilities/>").is_empty());
    }

    #[test]
    fn vm_sample_from_fields() {
        use ffi::Value::Int;
        let params: Vec<(String, ffi::Value)> = [
            ("vcpu.current", 2),
            ("vcpu.0.time", 500),
            ("vcpu.0.delay", 7),
            ("vcpu.1.time", 900),
            ("balloon.current", 524288),
            ("balloon.maximum", 1048576),
            ("balloon.unused", 300000),
            ("balloon.last-update", 1700000000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Int(v)))
        .collect();
        let placement = vec![
            ffi::Placement {
                vcpu: 0,
                cpu: 1,
                cpumap: vec![0b10],
            },
            ffi::Placement {
                vcpu: 1,
                cpu: 0,
                cpumap: vec![0b11],
            },
        ];
        let s = vm_sample("a".into(), "u".into(), &params, &placement);
        assert_eq!(s.vcpus.len(), 2);
        assert_eq!(s.vcpus[0].run_time_ns, 500);
        assert_eq!(s.vcpus[0].wait_time_ns, Some(7));
        assert_eq!(s.vcpus[0].pcpu, Some(1));
        assert_eq!(s.vcpus[0].affinity, CpuSet::single(1));
        assert_eq!(s.vcpus[1].affinity.len(), 2);
        assert_eq!(s.vcpus[1].wait_time_ns, None);
        assert_eq!(s.memory.max_kib, 1048576);
        assert_eq!(s.memory.unused_kib, Some(300000));
        assert_eq!(s.memory.swap_out_kib, None);
        assert_eq!(s.memory.stats_updated_s, Some(1700000000));
    }
}
