//! Sampling a libvirt host: through libvirt alone (one bulk VCPU + BALLOON call and one
//! `virDomainGetVcpus` per domain), or on the fast local path (vCPU figures from /proc, the
//! balloon group at most every memory interval); both end in the same [`Sample`].

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use virt::sys;

use super::{ffi, procfs, BulkVcpus, LibvirtBackend};
use crate::backend::BackendError;
use crate::cpuset::CpuSet;
use crate::model::{HostSample, MemorySample, Sample, VcpuSample, VmSample};

/// Samples in a row the fast path must fail for a domain before it is a warning.
const PERSISTENT_FAILURES: u32 = 3;

impl LibvirtBackend {
    /// Everything through libvirt: one bulk VCPU + BALLOON call, `virDomainGetVcpus` per domain.
    pub(super) fn sample_bulk(&mut self) -> Result<Sample, BackendError> {
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
                        warn!(vm = %crate::show::shown(&dom.name), error = %e, "cannot read vCPU placement; vCPUs unplaced");
                    }
                    Vec::new()
                }
            };
            vms.push(vm_sample(dom.name, dom.uuid, &dom.params, &placement));
        }
        self.attach_metadata(&mut vms);
        self.attach_devices(&mut vms);
        let busy = self.node_busy_ns();
        let mut sample = self.finish_sample(taken, mem_free_kib, vms);
        sample.host.pcpu_busy_ns = busy;
        Ok(sample)
    }

    /// Each pCPU's busy time through libvirt (`virNodeGetCPUStats`: `kernel` + `user`, ns), for
    /// hosts whose `/proc` is not this machine's. A pCPU libvirt gives no figures for is left
    /// out (its non-VM load is then not measured); said once.
    fn node_busy_ns(&mut self) -> Vec<(u32, u64)> {
        let pcpus: Vec<u32> = self.pcpus.iter().map(|p| p.id).collect();
        let known = self.node_stats_count;
        let Ok(conn) = self.live() else {
            return Vec::new();
        };
        let count = match known.map_or_else(|| ffi::node_cpu_stats_count(conn), Ok) {
            Ok(n) => n,
            Err(e) => {
                self.node_stats_said(format!("{e}"));
                return Vec::new();
            }
        };
        self.node_stats_count = Some(count);
        let Ok(conn) = self.live() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(pcpus.len());
        let mut failed = None;
        for &id in &pcpus {
            match ffi::node_cpu_stats(conn, id, count) {
                Ok(fields) => {
                    let get = |name: &str| fields.iter().find(|(f, _)| f == name).map(|f| f.1);
                    if let (Some(kernel), Some(user)) = (get("kernel"), get("user")) {
                        out.push((id, kernel + user));
                    }
                }
                Err(e) => failed = Some(format!("pCPU {id}: {e}")),
            }
        }
        self.calls.sample_calls += pcpus.len() as u32;
        if let Some(why) = failed {
            self.node_stats_said(why);
        }
        out
    }

    fn node_stats_said(&mut self, why: String) {
        if !self.node_stats_failed {
            self.node_stats_failed = true;
            warn!(error = %why, "cannot read pCPU time through libvirt; non-VM load not measured there");
        }
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
                // The local host's own kernel (the fast path reads its /proc); none elsewhere.
                pressure: self
                    .proc
                    .as_ref()
                    .map(|p| crate::backend::psi::read(&p.proc_dir().join("pressure")))
                    .unwrap_or_default(),
                // The same host's /proc/stat; elsewhere read through libvirt by the caller.
                pcpu_busy_ns: self
                    .proc
                    .as_ref()
                    .and_then(|p| std::fs::read_to_string(p.proc_dir().join("stat")).ok())
                    .map(|stat| procfs::pcpu_busy_ns(&stat))
                    .unwrap_or_default(),
                // Set by the fast path, which reads the host's threads.
                pcpu_other_wait_ns: Vec::new(),
                // The same host's kernel; none elsewhere.
                ksm: self.proc.as_ref().and_then(|p| {
                    crate::backend::ksm::read(
                        std::path::Path::new(crate::backend::ksm::SYS_DIR),
                        p.proc_dir(),
                    )
                }),
            },
            vms,
        }
    }

    /// The fast local path (see the module documentation).
    pub(super) fn sample_fast(&mut self) -> Result<Sample, BackendError> {
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
                    if self
                        .proc_failed
                        .remove(name)
                        .is_some_and(|(_, n)| n >= PERSISTENT_FAILURES)
                    {
                        info!(vm = %crate::show::shown(name), "vCPU figures from /proc again");
                    }
                    figures.insert(name.clone(), v);
                }
                Err(e) => {
                    // A domain starting (no threads yet) or going (its process gone between the
                    // list and /proc) fails once or twice as a matter of course: said at debug
                    // level; only a failure that lasts is a warning, once.
                    let failed = self
                        .proc_failed
                        .entry(name.clone())
                        .or_insert((e.clone(), 0));
                    failed.1 += 1;
                    if failed.1 == PERSISTENT_FAILURES {
                        warn!(vm = %crate::show::shown(name), error = %e, samples = failed.1, "fast path keeps failing for this domain; sampling it through libvirt");
                    } else if failed.1 == 1 {
                        debug!(vm = %crate::show::shown(name), error = %e, "fast path failed for this domain (starting or stopping?); sampling it through libvirt");
                    }
                    fallback.push(name.clone());
                }
            }
        }
        // The host's own threads, beside the vCPUs just read.
        let other_wait_ns = proc.other_wait_ns();
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
            let mut memory = self.balloon_cache.get(&uuid).cloned().unwrap_or_default();
            memory.pressure = self.proc.as_ref().and_then(|p| p.memory_pressure(&name));
            let vm = if let Some(v) = figures.remove(&name) {
                VmSample {
                    cputune: Default::default(),
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
                    metadata: None,
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
        self.attach_metadata(&mut vms);
        self.attach_devices(&mut vms);
        let mut sample = self.finish_sample(taken, mem_free_kib, vms);
        sample.host.pcpu_other_wait_ns = other_wait_ns;
        Ok(sample)
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
        swap_in_total_kib: get("balloon.swap_in"),
        swap_out_total_kib: get("balloon.swap_out"),
        major_faults_total: get("balloon.major_fault"),
        stats_updated_s: get("balloon.last-update").map(|s| s as i64),
        ..MemorySample::default()
    };
    VmSample {
        cputune: Default::default(),
        name,
        uuid,
        vcpus,
        memory,
        oom_events: None,
        metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.memory.swap_out_total_kib, None);
        assert_eq!(s.memory.stats_updated_s, Some(1700000000));
    }
}
