//! What the daemon sees and decides, as Prometheus metrics (`vcoord_` prefix, units in names,
//! labels `host`, `vm`, `uuid`, `vcpu`, `pcpu`, `kind`, `reason`, and on every series `fqdn`,
//! the machine as a fleet knows it), and the health of every host. Hosts
//! update them after each tick; the HTTP endpoint ([`super::http`]) encodes them on a scrape.
//! Series of a VM that is gone (or of a host that was removed) are removed with it, so the
//! number of series follows what runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::policy::PolicyHealth;
use crate::runtime::fleet::FleetSignals;
use crate::runtime::guard::Refusal;
use crate::runtime::TickReport;
use vcoord_api::{HostPressure, Kind};

/// Bytes in one KiB.
const KIB: f64 = 1024.0;

/// Every metric of the daemon, and the health of its hosts.
pub struct Metrics {
    registry: Registry,
    pcpu_load: GaugeVec,
    pcpu_other_load: GaugeVec,
    pcpu_other_wait: GaugeVec,
    vcpu_utilization: GaugeVec,
    vcpu_wait: GaugeVec,
    vcpu_pcpu: IntGaugeVec,
    vcpu_time: CounterVec,
    balloon_actual: GaugeVec,
    balloon_target: GaugeVec,
    virtio_mem_size: GaugeVec,
    virtio_mem_requested: GaugeVec,
    virtio_mem_plugged: GaugeVec,
    virtio_mem_held: IntGaugeVec,
    virtio_mem_refusals: IntCounterVec,
    memory_unused: GaugeVec,
    memory_usable: GaugeVec,
    memory_stall: GaugeVec,
    stats_age: GaugeVec,
    swap_in: IntCounterVec,
    swap_out: IntCounterVec,
    major_faults: IntCounterVec,
    vm_managed: IntGaugeVec,
    pin_changes: IntCounterVec,
    cpu_tunes: IntCounterVec,
    balloon_grants: IntCounterVec,
    balloon_reclaims: IntCounterVec,
    guard_refusals: IntCounterVec,
    actuation_errors: IntCounterVec,
    policy_quarantined: IntGaugeVec,
    policy_fallback: IntGaugeVec,
    policy_errors: IntCounterVec,
    shadow_disagreements: IntCounterVec,
    tick_duration: HistogramVec,
    collect_duration: HistogramVec,
    libvirt_calls: IntCounterVec,
    libvirt_events: IntCounterVec,
    backend_up: IntGaugeVec,
    backend_reconnects: IntCounterVec,
    ticks: IntCounterVec,
    last_tick: GaugeVec,
    reload_success: IntGauge,
    reload_timestamp: prometheus::Gauge,
    reloads: IntCounterVec,
    build_info: IntGaugeVec,
    failed_host: IntGaugeVec,
    record_ok: IntGaugeVec,
    vm_cpu_wait_ratio: GaugeVec,
    vm_cpu_ready: GaugeVec,
    vm_dedicated: GaugeVec,
    vm_memory_short: GaugeVec,
    vm_contention: GaugeVec,
    vm_relief: GaugeVec,
    host_cpu_deficit: GaugeVec,
    host_memory_deficit: GaugeVec,
    host_deficit_seconds: GaugeVec,
    host_cannot_satisfy: IntGaugeVec,
    host_pressure: GaugeVec,
    ksm_running: GaugeVec,
    ksm_saved: GaugeVec,
    ksmd_cpu: GaugeVec,
    ksm_scan_rate: GaugeVec,
    ksm_managed: GaugeVec,
    /// Why the `--record` file stopped, if it did.
    record_problem: Mutex<Option<String>>,
    /// What series each host has, to remove those of VMs that are gone.
    series: Mutex<BTreeMap<String, HostSeries>>,
    health: Mutex<BTreeMap<String, HostHealth>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct HostSeries {
    /// (VM, UUID, vCPU).
    vcpus: BTreeSet<(String, String, String)>,
    /// (VM, UUID).
    vms: BTreeSet<(String, String)>,
    /// (VM, UUID, virtio-mem device).
    devices: BTreeSet<(String, String, String)>,
    pcpus: BTreeSet<String>,
    /// (kind, policy label).
    policies: BTreeSet<(String, String)>,
}

/// How one host is doing, for `/healthz`.
#[derive(Clone, Debug)]
struct HostHealth {
    interval: Duration,
    last_ok_tick: Option<Instant>,
    started: Instant,
    problem: Option<String>,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

fn int_gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["host"])
        .expect("a valid metric")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&machine_fqdn())
    }
}

/// The machine's name as a fleet knows it: the kernel's host name when it is fully qualified,
/// else the first fully qualified name `/etc/hosts` gives it (what `hostname -f` finds on a
/// host without DNS for itself), else the short name.
pub fn machine_fqdn() -> String {
    let short = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if short.is_empty() {
        return "localhost".into();
    }
    if short.contains('.') {
        return short;
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn_in_hosts(&hosts, &short).unwrap_or(short)
}

/// The first fully qualified name of `short` in an `/etc/hosts` text.
fn fqdn_in_hosts(hosts: &str, short: &str) -> Option<String> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let names: Vec<&str> = l.split_whitespace().skip(1).collect();
            names.contains(&short).then_some(names)
        })
        .flatten()
        .find(|n| {
            n.strip_prefix(short)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .map(str::to_owned)
}

impl Metrics {
    /// Every metric, registered, at zero; every series labelled `fqdn="<fleet_host>"`.
    pub fn new(fleet_host: &str) -> Self {
        let h = &["host"];
        let vm = &["host", "vm", "uuid"];
        let vcpu = &["host", "vm", "uuid", "vcpu"];
        let seconds = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let m = Self {
            registry: Registry::new_custom(
                None,
                Some([("fqdn".to_owned(), fleet_host.to_owned())].into()),
            )
            .expect("a valid label"),
            pcpu_load: gauge("vcoord_pcpu_load_percent", "Load of a pCPU over the last tick: the sum of its vCPUs' run time, percent of one pCPU (at most 100).", &["host", "pcpu"]),
            pcpu_other_load: gauge("vcoord_pcpu_other_load_percent", "Time a pCPU was busy outside the VMs' vCPUs over the last tick (host processes, QEMU's own threads), percent; absent where not measured.", &["host", "pcpu"]),
            pcpu_other_wait: gauge("vcoord_pcpu_other_wait_percent", "Run-queue wait of the host's threads outside the VMs' vCPUs on a pCPU over the last tick (each counted where it last ran), percent; absent where not measured.", &["host", "pcpu"]),
            vcpu_utilization: gauge("vcoord_vcpu_utilization_percent", "Time a vCPU ran over the last tick, percent of one pCPU.", vcpu),
            vcpu_wait: gauge("vcoord_vcpu_wait_percent", "Time a vCPU waited runnable for a pCPU over the last tick (run-queue wait), percent.", vcpu),
            vcpu_pcpu: int_gauge("vcoord_vcpu_pcpu", "The pCPU a vCPU last ran on.", vcpu),
            vcpu_time: CounterVec::new(Opts::new("vcoord_vcpu_time_seconds_total", "Cumulative run time of a vCPU, as last sampled (the hypervisor's counter)."), vcpu).expect("a valid metric"),
            balloon_actual: gauge("vcoord_vm_balloon_actual_bytes", "Memory the VM has now (balloon current).", vm),
            balloon_target: gauge("vcoord_vm_balloon_target_bytes", "The balloon target vcoord last set for the VM (absent until it sets one).", vm),
            virtio_mem_size: gauge("vcoord_vm_virtio_mem_size_bytes", "Most a virtio-mem device of the VM can plug.", &["host", "vm", "uuid", "device"]),
            virtio_mem_requested: gauge("vcoord_vm_virtio_mem_requested_bytes", "What a virtio-mem device of the VM was asked to plug.", &["host", "vm", "uuid", "device"]),
            virtio_mem_plugged: gauge("vcoord_vm_virtio_mem_plugged_bytes", "What a virtio-mem device of the VM has plugged (the guest's answer to the request).", &["host", "vm", "uuid", "device"]),
            virtio_mem_held: int_gauge("vcoord_vm_virtio_mem_held", "1 while vcoord leaves a virtio-mem device where it is: the guest refused its last request (for 300 s), or the device cannot be driven.", &["host", "vm", "uuid", "device"]),
            virtio_mem_refusals: counter("vcoord_virtio_mem_refusals_total", "virtio-mem requests a guest did not follow in 20 s, each withdrawn once.", h),
            memory_unused: gauge("vcoord_vm_memory_unused_bytes", "Memory the guest leaves unused, from fresh guest statistics.", vm),
            memory_stall: gauge("vcoord_vm_memory_pressure_stall_percent", "Share of the last tick in which some of the VM's own tasks stalled on memory (pressure stall information of the domain's cgroup v2 group, all its QEMU threads); absent where the host has none.", vm),
            memory_usable: gauge("vcoord_vm_memory_usable_bytes", "Memory the guest could use without swapping, from fresh guest statistics.", vm),
            stats_age: gauge("vcoord_vm_guest_stats_age_seconds", "Age of the guest's last memory statistics report.", vm),
            swap_in: counter("vcoord_vm_swap_in_bytes_total", "Memory the guest swapped in, since vcoord saw it first.", vm),
            swap_out: counter("vcoord_vm_swap_out_bytes_total", "Memory the guest swapped out, since vcoord saw it first.", vm),
            major_faults: counter("vcoord_vm_major_faults_total", "Major page faults in the guest, since vcoord saw it first.", vm),
            vm_managed: int_gauge("vcoord_vm_managed", "1 when vcoord may act on this side (kind cpu or memory) of the VM, 0 when the operator set it to ignore.", &["host", "vm", "uuid", "kind"]),
            pin_changes: counter("vcoord_pin_changes_total", "vCPU pins changed (carried out, or decided in a dry run).", h),
            cpu_tunes: counter("vcoord_cpu_tunes_total", "VM CPU weights, quotas and emulator affinities changed (carried out, or decided in a dry run).", h),
            balloon_grants: counter("vcoord_balloon_grants_bytes_total", "Memory given to VMs by raising balloon targets.", h),
            balloon_reclaims: counter("vcoord_balloon_reclaims_bytes_total", "Memory taken back from VMs by lowering balloon targets.", h),
            guard_refusals: counter("vcoord_guard_refusals_total", "Plan actions the guard refused or trimmed, by reason.", &["host", "reason"]),
            actuation_errors: counter("vcoord_actuation_errors_total", "Pins and balloon targets the hypervisor refused.", h),
            policy_quarantined: int_gauge("vcoord_policy_quarantined", "1 when the host's plugin policy of this kind is quarantined (a panic, a stall, too slow).", &["host", "kind", "policy"]),
            policy_fallback: int_gauge("vcoord_policy_fallback_active", "1 when a built-in fallback decides in place of a quarantined plugin policy.", &["host", "kind", "policy"]),
            policy_errors: counter("vcoord_policy_errors_total", "Plugin policy failures (a panic, a stall, too many slow calls), each of which quarantined it.", &["host", "kind", "policy"]),
            shadow_disagreements: counter("vcoord_shadow_disagreements_total", "Ticks on which the shadow policy of this kind would have done something the active one did not.", &["host", "kind"]),
            tick_duration: histogram("vcoord_tick_duration_seconds", "Time of a whole tick: collect, decide, guard, actuate, record.", seconds.clone()),
            collect_duration: histogram("vcoord_collect_duration_seconds", "Time to sample the host.", seconds),
            libvirt_calls: counter("vcoord_libvirt_calls_total", "Hypervisor calls made.", h),
            libvirt_events: counter("vcoord_libvirt_events_total", "Hypervisor events used in place of a call (virtio-mem size changes).", h),
            backend_up: int_gauge("vcoord_backend_up", "1 when the last sample of the host succeeded.", h),
            backend_reconnects: counter("vcoord_backend_reconnects_total", "Times the connection to the host's hypervisor was lost and sampling failed.", h),
            ticks: counter("vcoord_ticks_total", "Ticks done, by outcome (ok: sampled and decided; failed: sampling failed).", &["host", "outcome"]),
            last_tick: gauge("vcoord_last_tick_timestamp_seconds", "When the host last ticked successfully (Unix time).", h),
            reload_success: IntGauge::new("vcoord_config_last_reload_successful", "1 when the last configuration reload succeeded (or none was asked), 0 when it was refused.").expect("a valid metric"),
            reload_timestamp: prometheus::Gauge::new("vcoord_config_last_reload_timestamp_seconds", "When the configuration was last reloaded or refused (Unix time); the start time before any reload.").expect("a valid metric"),
            reloads: counter("vcoord_config_reloads_total", "Configuration reloads, by result.", &["result"]),
            build_info: int_gauge("vcoord_build_info", "Always 1; the labels say which vcoord runs.", &["version"]),
            failed_host: int_gauge("vcoord_host_failed", "1 when the host stopped on an error (it stays so, and /healthz answers 503, until a reload starts it again or removes it).", h),
            record_ok: int_gauge("vcoord_record_ok", "1 while the --record file is written, 0 once a write failed and the record stopped (the hosts go on coordinating).", &["file"]),
            vm_cpu_wait_ratio: gauge("vcoord_vm_cpu_wait_ratio", "Share of the CPU time the VM's vCPUs wanted over the last tick that they spent waiting for a pCPU (run-queue wait over run time plus wait), 0 to 1.", vm),
            vm_dedicated: gauge("vcoord_vm_dedicated", "For a VM of the dedicated class (placement = \"dedicated\"): 1 while it has pCPUs of its own, 0 while the host leaves it shared (the log and `vcoord status` say why); absent for other VMs.", vm),
            vm_cpu_ready: gauge("vcoord_vm_cpu_ready_percent", "CPU ready: share of the last tick the VM's vCPUs waited runnable for a pCPU, averaged over its vCPUs (as VMware's CPU ready), percent; absent while no vCPU's wait is known.", vm),
            vm_memory_short: gauge("vcoord_vm_memory_short_bytes", "Memory the VM lacks: of its use plus 100 MiB (up to its maximum), or of a grant the guard cut for lack of host memory, whichever is more.", vm),
            vm_contention: gauge("vcoord_vm_contention_score", "How contended the VM is, 0 to 1: the larger of its CPU wait ratio and its memory shortfall as a share of 100 MiB.", vm),
            vm_relief: gauge("vcoord_vm_relief_ratio", "While the host is in deficit of this kind: the share of the deficit that moving this VM to another host would remove, 0 to 1 (absent otherwise).", &["host", "vm", "uuid", "kind"]),
            host_cpu_deficit: gauge("vcoord_host_cpu_deficit_percent", "vCPU demand (run time plus run-queue wait) above the host's pCPUs, percent of one pCPU (0: none).", h),
            host_memory_deficit: gauge("vcoord_host_memory_deficit_bytes", "The VMs' memory shortfalls above what the host can grant over its reserve (0: none).", h),
            host_deficit_seconds: gauge("vcoord_host_deficit_seconds", "How long the host's deficit of this kind has lasted without a break (0: none).", &["host", "kind"]),
            host_cannot_satisfy: int_gauge("vcoord_host_cannot_satisfy", "1 once the host's deficit of this kind has lasted 60 s: only moving a VM away relieves it.", &["host", "kind"]),
            host_pressure: gauge("vcoord_host_pressure_stall_percent", "Share of the last tick in which some (scope some) or all non-idle (scope full) tasks of the host stalled on the resource (cpu, memory, io): Linux pressure stall information, absent where the host gives none.", &["host", "resource", "scope"]),
            ksm_running: gauge("vcoord_host_ksm_running", "1 while the kernel's same-page merging (KSM) is merging (run = 1), 0 otherwise; absent where the host's KSM is not read.", &["host"]),
            ksm_saved: gauge("vcoord_host_ksm_saved_bytes", "Memory KSM saves: the pages that share a merged page (pages_sharing); absent where the host's KSM is not read.", &["host"]),
            ksmd_cpu: gauge("vcoord_host_ksmd_cpu_percent", "CPU time of ksmd, the kernel thread that scans and merges, over the last tick, percent of one pCPU; absent where not measured.", &["host"]),
            ksm_scan_rate: gauge("vcoord_host_ksm_scan_pages_per_second", "Pages ksmd is set to scan a second (pages_to_scan x 1000 / sleep_millisecs), whether it runs or not; absent where the host's KSM is not read.", &["host"]),
            ksm_managed: gauge("vcoord_host_ksm_managed", "1 where the memory policy drives KSM (ksm = \"auto\"), 0 where the operator runs it (ksm = \"leave\"); absent where the host's KSM is not read.", &["host"]),
            record_problem: Mutex::default(),
            series: Mutex::default(),
            health: Mutex::default(),
        };
        let r = &m.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.pcpu_load.clone()),
            Box::new(m.pcpu_other_load.clone()),
            Box::new(m.pcpu_other_wait.clone()),
            Box::new(m.vcpu_utilization.clone()),
            Box::new(m.vcpu_wait.clone()),
            Box::new(m.vcpu_pcpu.clone()),
            Box::new(m.vcpu_time.clone()),
            Box::new(m.balloon_actual.clone()),
            Box::new(m.balloon_target.clone()),
            Box::new(m.virtio_mem_size.clone()),
            Box::new(m.virtio_mem_requested.clone()),
            Box::new(m.virtio_mem_plugged.clone()),
            Box::new(m.virtio_mem_held.clone()),
            Box::new(m.virtio_mem_refusals.clone()),
            Box::new(m.memory_unused.clone()),
            Box::new(m.memory_usable.clone()),
            Box::new(m.memory_stall.clone()),
            Box::new(m.stats_age.clone()),
            Box::new(m.swap_in.clone()),
            Box::new(m.swap_out.clone()),
            Box::new(m.major_faults.clone()),
            Box::new(m.vm_managed.clone()),
            Box::new(m.pin_changes.clone()),
            Box::new(m.cpu_tunes.clone()),
            Box::new(m.balloon_grants.clone()),
            Box::new(m.balloon_reclaims.clone()),
            Box::new(m.guard_refusals.clone()),
            Box::new(m.actuation_errors.clone()),
            Box::new(m.policy_quarantined.clone()),
            Box::new(m.policy_fallback.clone()),
            Box::new(m.policy_errors.clone()),
            Box::new(m.shadow_disagreements.clone()),
            Box::new(m.tick_duration.clone()),
            Box::new(m.collect_duration.clone()),
            Box::new(m.libvirt_calls.clone()),
            Box::new(m.libvirt_events.clone()),
            Box::new(m.backend_up.clone()),
            Box::new(m.backend_reconnects.clone()),
            Box::new(m.ticks.clone()),
            Box::new(m.last_tick.clone()),
            Box::new(m.reload_success.clone()),
            Box::new(m.reload_timestamp.clone()),
            Box::new(m.reloads.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.failed_host.clone()),
            Box::new(m.record_ok.clone()),
            Box::new(m.vm_cpu_wait_ratio.clone()),
            Box::new(m.vm_cpu_ready.clone()),
            Box::new(m.vm_dedicated.clone()),
            Box::new(m.vm_memory_short.clone()),
            Box::new(m.vm_contention.clone()),
            Box::new(m.vm_relief.clone()),
            Box::new(m.host_cpu_deficit.clone()),
            Box::new(m.host_memory_deficit.clone()),
            Box::new(m.host_deficit_seconds.clone()),
            Box::new(m.host_cannot_satisfy.clone()),
            Box::new(m.host_pressure.clone()),
            Box::new(m.ksm_running.clone()),
            Box::new(m.ksm_saved.clone()),
            Box::new(m.ksmd_cpu.clone()),
            Box::new(m.ksm_scan_rate.clone()),
            Box::new(m.ksm_managed.clone()),
        ];
        for c in all {
            r.register(c).expect("metric names are unique");
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.reload_success.set(1);
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]);
        }
        m.reload_timestamp.set(unix_now());
        m
    }

    /// Starts following `host`, which ticks every `interval`.
    pub fn host_started(&self, host: &str, interval: Duration) {
        if let Ok(mut h) = self.health.lock() {
            let entry = h.entry(host.to_owned()).or_insert(HostHealth {
                interval,
                last_ok_tick: None,
                started: Instant::now(),
                problem: None,
            });
            entry.interval = interval;
        }
        self.failed_host.with_label_values(&[host]).set(0);
        // Counters exist from the start at 0, so that rates and alerts see them before their
        // first event.
        for c in self.host_counters() {
            c.with_label_values(&[host]);
        }
        for outcome in ["ok", "failed"] {
            self.ticks.with_label_values(&[host, outcome]);
        }
        for reason in Refusal::ALL {
            self.guard_refusals
                .with_label_values(&[host, reason.label()]);
        }
        for kind in ["cpu", "memory"] {
            self.shadow_disagreements.with_label_values(&[host, kind]);
        }
    }

    /// `host` cannot start (yet): `/healthz` says why.
    pub fn host_failed(&self, host: &str, why: &str) {
        if let Ok(mut h) = self.health.lock() {
            if let Some(entry) = h.get_mut(host) {
                entry.problem = Some(why.to_owned());
            }
        }
    }

    /// `host` stopped on an error: it stays in `/healthz` (503, with why) and in the metrics
    /// until it is started again or removed.
    pub fn host_stopped_failed(&self, host: &str, why: &str) {
        if let Ok(mut h) = self.health.lock() {
            let entry = h.entry(host.to_owned()).or_insert(HostHealth {
                interval: Duration::from_secs(1),
                last_ok_tick: None,
                started: Instant::now(),
                problem: None,
            });
            entry.problem = Some(format!("failed: {why}"));
        }
        self.failed_host.with_label_values(&[host]).set(1);
        let _ = self.backend_up.remove_label_values(&[host]);
        self.backend_up.with_label_values(&[host]).set(0);
    }

    /// The `--record` file is written.
    pub fn record_started(&self, file: &str) {
        self.record_ok.with_label_values(&[file]).set(1);
    }

    /// The `--record` file stopped: `/healthz` says so until the process ends.
    pub fn record_stopped(&self, file: &str, why: &str) {
        self.record_ok.with_label_values(&[file]).set(0);
        if let Ok(mut p) = self.record_problem.lock() {
            *p = Some(format!("record {file}: {why}"));
        }
    }

    /// Forgets `host` and every series it had (it was removed or stopped).
    pub fn host_removed(&self, host: &str) {
        if let Ok(mut h) = self.health.lock() {
            h.remove(host);
        }
        let gone = self
            .series
            .lock()
            .ok()
            .and_then(|mut s| s.remove(host))
            .unwrap_or_default();
        for (vm, uuid, vcpu) in &gone.vcpus {
            self.remove_vcpu(host, vm, uuid, vcpu);
        }
        for (vm, uuid, device) in &gone.devices {
            self.remove_device(host, vm, uuid, device);
        }
        for (vm, uuid) in &gone.vms {
            self.remove_vm(host, vm, uuid);
        }
        for pcpu in &gone.pcpus {
            let _ = self.pcpu_load.remove_label_values(&[host, pcpu]);
            let _ = self.pcpu_other_load.remove_label_values(&[host, pcpu]);
            let _ = self.pcpu_other_wait.remove_label_values(&[host, pcpu]);
        }
        for (kind, policy) in &gone.policies {
            self.remove_policy(host, kind, policy);
        }
        let _ = self.backend_up.remove_label_values(&[host]);
        let _ = self.last_tick.remove_label_values(&[host]);
        let _ = self.failed_host.remove_label_values(&[host]);
        let _ = self.host_cpu_deficit.remove_label_values(&[host]);
        let _ = self.host_memory_deficit.remove_label_values(&[host]);
        for kind in Kind::ALL {
            let _ = self
                .host_deficit_seconds
                .remove_label_values(&[host, kind.key()]);
            let _ = self
                .host_cannot_satisfy
                .remove_label_values(&[host, kind.key()]);
        }
        for (resource, _) in HostPressure::default().by_resource() {
            for scope in ["some", "full"] {
                let _ = self
                    .host_pressure
                    .remove_label_values(&[host, resource, scope]);
            }
        }
        for c in self.host_counters() {
            let _ = c.remove_label_values(&[host]);
        }
        for g in [
            &self.ksm_running,
            &self.ksm_saved,
            &self.ksmd_cpu,
            &self.ksm_scan_rate,
            &self.ksm_managed,
        ] {
            let _ = g.remove_label_values(&[host]);
        }
        for outcome in ["ok", "failed"] {
            let _ = self.ticks.remove_label_values(&[host, outcome]);
        }
        for reason in Refusal::ALL {
            let _ = self
                .guard_refusals
                .remove_label_values(&[host, reason.label()]);
        }
        for kind in ["cpu", "memory"] {
            let _ = self.shadow_disagreements.remove_label_values(&[host, kind]);
        }
        for h in [&self.tick_duration, &self.collect_duration] {
            let _ = h.remove_label_values(&[host]);
        }
    }

    /// The series of `host`'s `kind` policy `policy` (gone, or replaced by a reload).
    fn remove_policy(&self, host: &str, kind: &str, policy: &str) {
        let labels = [host, kind, policy];
        let _ = self.policy_errors.remove_label_values(&labels);
        let _ = self.policy_quarantined.remove_label_values(&labels);
        let _ = self.policy_fallback.remove_label_values(&labels);
    }

    /// The counters labelled by host alone.
    fn host_counters(&self) -> [&IntCounterVec; 9] {
        [
            &self.virtio_mem_refusals,
            &self.pin_changes,
            &self.cpu_tunes,
            &self.balloon_grants,
            &self.balloon_reclaims,
            &self.actuation_errors,
            &self.libvirt_calls,
            &self.libvirt_events,
            &self.backend_reconnects,
        ]
    }

    /// A tick whose sampling failed.
    pub fn tick_failed(&self, host: &str) {
        self.ticks.with_label_values(&[host, "failed"]).inc();
        let was_up = self.backend_up.with_label_values(&[host]).get();
        if was_up == 1 {
            self.backend_reconnects.with_label_values(&[host]).inc();
        }
        self.backend_up.with_label_values(&[host]).set(0);
    }

    /// What one tick saw and did.
    pub fn tick(&self, report: &TickReport<'_>) {
        let TickReport {
            snapshot,
            run_times,
            record,
            cost,
            ref policies,
            fleet,
        } = *report;
        let host = record.host.as_str();
        self.ticks.with_label_values(&[host, "ok"]).inc();
        self.backend_up.with_label_values(&[host]).set(1);
        self.last_tick.with_label_values(&[host]).set(unix_now());
        self.tick_duration
            .with_label_values(&[host])
            .observe(cost.tick.as_secs_f64());
        self.collect_duration
            .with_label_values(&[host])
            .observe(cost.collect.as_secs_f64());
        self.libvirt_calls
            .with_label_values(&[host])
            .inc_by(cost.calls);
        self.libvirt_events
            .with_label_values(&[host])
            .inc_by(cost.events);

        let mut now = HostSeries {
            policies: policies
                .iter()
                .map(|(kind, policy, _)| (kind.to_string(), policy.to_string()))
                .collect(),
            ..HostSeries::default()
        };
        for p in &snapshot.host().pcpus {
            let id = p.pcpu.id.to_string();
            self.pcpu_load
                .with_label_values(&[host, &id])
                .set(p.load_pct);
            match p.other_pct {
                Some(other) => self
                    .pcpu_other_load
                    .with_label_values(&[host, &id])
                    .set(other),
                None => {
                    let _ = self.pcpu_other_load.remove_label_values(&[host, &id]);
                }
            }
            match p.other_wait_pct {
                Some(wait) => self
                    .pcpu_other_wait
                    .with_label_values(&[host, &id])
                    .set(wait),
                None => {
                    let _ = self.pcpu_other_wait.remove_label_values(&[host, &id]);
                }
            }
            now.pcpus.insert(id);
        }
        let uuid_of: BTreeMap<&str, &str> = snapshot
            .vms()
            .iter()
            .map(|vm| (vm.name.as_str(), vm.uuid.as_str()))
            .collect();
        for (vm, vcpu, ns) in run_times {
            let Some(uuid) = uuid_of.get(vm.as_str()) else {
                continue;
            };
            let id = vcpu.to_string();
            let labels = [host, vm.as_str(), uuid, id.as_str()];
            let counter = self.vcpu_time.with_label_values(&labels);
            let now = *ns as f64 / 1e9;
            let before = counter.get();
            if now >= before {
                counter.inc_by(now - before);
            } else {
                // The counter went back (a restarted domain): start the series again.
                let _ = self.vcpu_time.remove_label_values(&labels);
                self.vcpu_time.with_label_values(&labels).inc_by(now);
            }
        }
        for vm in snapshot.vms() {
            let (name, uuid) = (vm.name.as_str(), vm.uuid.as_str());
            for v in &vm.vcpus {
                let id = v.id.to_string();
                let labels = [host, name, uuid, id.as_str()];
                set_or_remove(&self.vcpu_utilization, &labels, v.load_pct);
                set_or_remove(&self.vcpu_wait, &labels, v.wait_pct);
                match v.pcpu {
                    Some(p) => self.vcpu_pcpu.with_label_values(&labels).set(i64::from(p)),
                    None => {
                        let _ = self.vcpu_pcpu.remove_label_values(&labels);
                    }
                }
                now.vcpus.insert((name.to_owned(), uuid.to_owned(), id));
            }
            let m = &vm.memory;
            let labels = [host, name, uuid];
            let bytes = |kib: u64| kib as f64 * KIB;
            self.balloon_actual
                .with_label_values(&labels)
                .set(bytes(m.actual_kib));
            for d in &m.virtio_mem {
                let labels = [host, name, uuid, d.alias.as_str()];
                self.virtio_mem_size
                    .with_label_values(&labels)
                    .set(bytes(d.size_kib));
                self.virtio_mem_requested
                    .with_label_values(&labels)
                    .set(bytes(d.requested_kib));
                self.virtio_mem_plugged
                    .with_label_values(&labels)
                    .set(bytes(d.current_kib));
                self.virtio_mem_held
                    .with_label_values(&labels)
                    .set(i64::from(d.held));
                now.devices
                    .insert((name.to_owned(), uuid.to_owned(), d.alias.clone()));
            }
            set_or_remove(&self.memory_unused, &labels, m.unused_kib.map(bytes));
            set_or_remove(&self.memory_usable, &labels, m.usable_kib.map(bytes));
            set_or_remove(
                &self.memory_stall,
                &labels,
                m.stall.map(|s| s.some_now_pct()),
            );
            set_or_remove(
                &self.stats_age,
                &labels,
                m.last_report_s
                    .filter(|t| *t > 0.0)
                    .map(|t| (snapshot.wall_s() - t).max(0.0)),
            );
            let add = |c: &IntCounterVec, v: Option<u64>| {
                c.with_label_values(&labels).inc_by(v.unwrap_or(0));
            };
            add(&self.swap_in, m.swap_in_kib.map(|k| k * 1024));
            add(&self.swap_out, m.swap_out_kib.map(|k| k * 1024));
            add(&self.major_faults, m.major_faults);
            for (kind, managed) in [
                ("cpu", vm.control.cpu_managed),
                ("memory", vm.control.memory_managed),
            ] {
                self.vm_managed
                    .with_label_values(&[host, name, uuid, kind])
                    .set(i64::from(managed));
            }
            now.vms.insert((name.to_owned(), uuid.to_owned()));
        }
        // Decisions.
        self.pin_changes
            .with_label_values(&[host])
            .inc_by(record.pins.len() as u64);
        self.cpu_tunes
            .with_label_values(&[host])
            .inc_by(record.tunes.len() as u64);
        for b in &record.balloons {
            if let Some(uuid) = uuid_of.get(b.vm.as_str()) {
                self.balloon_target
                    .with_label_values(&[host, b.vm.as_str(), uuid])
                    .set(b.target_kib as f64 * KIB);
            }
            let (counter, diff) = if b.target_kib >= b.actual_kib {
                (&self.balloon_grants, b.target_kib - b.actual_kib)
            } else {
                (&self.balloon_reclaims, b.actual_kib - b.target_kib)
            };
            counter.with_label_values(&[host]).inc_by(diff * 1024);
        }
        self.virtio_mem_refusals
            .with_label_values(&[host])
            .inc_by(record.virtio_mem_refusals.len() as u64);
        for r in &record.rejected {
            self.guard_refusals
                .with_label_values(&[host, r.reason.label()])
                .inc();
        }
        self.actuation_errors
            .with_label_values(&[host])
            .inc_by(record.failed.len() as u64);
        for &(kind, policy, ref health) in policies {
            let labels = [host, kind, policy];
            let errors = self.policy_errors.with_label_values(&labels);
            let was = self.policy_quarantined.with_label_values(&labels).get();
            let (quarantined, fallback) = match health {
                PolicyHealth::Ok => (0, 0),
                PolicyHealth::Quarantined { fallback, .. } => (1, i64::from(*fallback)),
            };
            if quarantined == 1 && was == 0 {
                errors.inc();
            }
            self.policy_quarantined
                .with_label_values(&labels)
                .set(quarantined);
            self.policy_fallback
                .with_label_values(&labels)
                .set(fallback);
            if let (Ok(mut h), PolicyHealth::Quarantined { reason, .. }) =
                (self.health.lock(), health)
            {
                if let Some(entry) = h.get_mut(host) {
                    entry.problem = Some(format!("{kind} policy {policy} quarantined: {reason}"));
                }
            }
        }
        if let Some(shadow) = &record.shadow {
            let pins_differ = shadow.cpu_policy.is_some() && shadow.pins != record.pins;
            let balloons_differ =
                shadow.memory_policy.is_some() && shadow.balloons != record.balloons;
            for (kind, differ) in [("cpu", pins_differ), ("memory", balloons_differ)] {
                if differ {
                    self.shadow_disagreements
                        .with_label_values(&[host, kind])
                        .inc();
                }
            }
        }
        self.fleet(host, &uuid_of, fleet);
        let ksm = snapshot.host().ksm.as_ref();
        set_or_remove(
            &self.ksm_running,
            &[host],
            ksm.map(|k| f64::from(u8::from(k.running))),
        );
        set_or_remove(
            &self.ksm_saved,
            &[host],
            ksm.map(|k| k.saved_kib as f64 * 1024.0),
        );
        set_or_remove(&self.ksmd_cpu, &[host], ksm.and_then(|k| k.ksmd_cpu_pct));
        set_or_remove(
            &self.ksm_scan_rate,
            &[host],
            ksm.map(|k| k.settings().pages_per_s()),
        );
        set_or_remove(
            &self.ksm_managed,
            &[host],
            ksm.map(|k| f64::from(u8::from(k.managed))),
        );
        for (resource, stall) in snapshot.host().pressure.by_resource() {
            set_or_remove(
                &self.host_pressure,
                &[host, resource, "some"],
                stall.and_then(|s| s.some_pct),
            );
            set_or_remove(
                &self.host_pressure,
                &[host, resource, "full"],
                stall.and_then(|s| s.full_pct),
            );
        }
        // VMs and vCPUs that are gone lose their series.
        let before = self
            .series
            .lock()
            .ok()
            .and_then(|mut s| s.insert(host.to_owned(), now))
            .unwrap_or_default();
        let now_seen = self.series.lock().ok();
        if let Some(now_seen) = now_seen {
            if let Some(now) = now_seen.get(host) {
                for (vm, uuid, vcpu) in before.vcpus.difference(&now.vcpus) {
                    self.remove_vcpu(host, vm, uuid, vcpu);
                }
                for (vm, uuid, device) in before.devices.difference(&now.devices) {
                    self.remove_device(host, vm, uuid, device);
                }
                for (vm, uuid) in before.vms.difference(&now.vms) {
                    self.remove_vm(host, vm, uuid);
                }
                for (kind, policy) in before.policies.difference(&now.policies) {
                    self.remove_policy(host, kind, policy);
                }
                for pcpu in before.pcpus.difference(&now.pcpus) {
                    let _ = self.pcpu_load.remove_label_values(&[host, pcpu]);
                    let _ = self.pcpu_other_load.remove_label_values(&[host, pcpu]);
                    let _ = self.pcpu_other_wait.remove_label_values(&[host, pcpu]);
                    let _ = self.pcpu_other_wait.remove_label_values(&[host, pcpu]);
                }
            }
        }
        if let Ok(mut h) = self.health.lock() {
            if let Some(entry) = h.get_mut(host) {
                entry.last_ok_tick = Some(Instant::now());
                if policies.iter().all(|p| matches!(p.2, PolicyHealth::Ok)) {
                    entry.problem = None;
                }
            }
        }
    }

    /// The fleet's signals of a tick.
    fn fleet(&self, host: &str, uuid_of: &BTreeMap<&str, &str>, fleet: &FleetSignals) {
        for v in &fleet.vms {
            let Some(uuid) = uuid_of.get(v.vm.as_str()) else {
                continue;
            };
            let labels = [host, v.vm.as_str(), uuid];
            self.vm_cpu_wait_ratio
                .with_label_values(&labels)
                .set(v.cpu_wait_ratio);
            set_or_remove(&self.vm_cpu_ready, &labels, v.cpu_ready_pct);
            set_or_remove(
                &self.vm_dedicated,
                &labels,
                v.dedicated
                    .as_ref()
                    .map(|d| if d.is_ok() { 1.0 } else { 0.0 }),
            );
            self.vm_memory_short
                .with_label_values(&labels)
                .set(v.memory_short_kib as f64 * KIB);
            self.vm_contention.with_label_values(&labels).set(v.score);
            for kind in Kind::ALL {
                set_or_remove(
                    &self.vm_relief,
                    &[host, v.vm.as_str(), uuid, kind.key()],
                    v.relief(kind),
                );
            }
        }
        self.host_cpu_deficit
            .with_label_values(&[host])
            .set(fleet.cpu.amount);
        self.host_memory_deficit
            .with_label_values(&[host])
            .set(fleet.memory.amount * KIB);
        for kind in Kind::ALL {
            let deficit = fleet.deficit(kind);
            self.host_deficit_seconds
                .with_label_values(&[host, kind.key()])
                .set(deficit.lasted_s);
            self.host_cannot_satisfy
                .with_label_values(&[host, kind.key()])
                .set(i64::from(deficit.cannot_satisfy));
        }
    }

    fn remove_device(&self, host: &str, vm: &str, uuid: &str, device: &str) {
        let labels = [host, vm, uuid, device];
        for g in [
            &self.virtio_mem_size,
            &self.virtio_mem_requested,
            &self.virtio_mem_plugged,
        ] {
            let _ = g.remove_label_values(&labels);
        }
        let _ = self.virtio_mem_held.remove_label_values(&labels);
    }

    fn remove_vcpu(&self, host: &str, vm: &str, uuid: &str, vcpu: &str) {
        let labels = [host, vm, uuid, vcpu];
        let _ = self.vcpu_utilization.remove_label_values(&labels);
        let _ = self.vcpu_wait.remove_label_values(&labels);
        let _ = self.vcpu_pcpu.remove_label_values(&labels);
        let _ = self.vcpu_time.remove_label_values(&labels);
    }

    fn remove_vm(&self, host: &str, vm: &str, uuid: &str) {
        let labels = [host, vm, uuid];
        for g in [
            &self.balloon_actual,
            &self.balloon_target,
            &self.memory_unused,
            &self.memory_usable,
            &self.memory_stall,
            &self.stats_age,
            &self.vm_cpu_wait_ratio,
            &self.vm_cpu_ready,
            &self.vm_dedicated,
            &self.vm_memory_short,
            &self.vm_contention,
        ] {
            let _ = g.remove_label_values(&labels);
        }
        for kind in Kind::ALL {
            let _ = self
                .vm_relief
                .remove_label_values(&[host, vm, uuid, kind.key()]);
        }
        for c in [&self.swap_in, &self.swap_out, &self.major_faults] {
            let _ = c.remove_label_values(&labels);
        }
        for kind in ["cpu", "memory"] {
            let _ = self.vm_managed.remove_label_values(&[host, vm, uuid, kind]);
        }
    }

    /// A configuration reload was applied (`ok`) or refused.
    pub fn reload(&self, ok: bool) {
        self.reload_success.set(i64::from(ok));
        self.reload_timestamp.set(unix_now());
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// `Ok` when every host ticked within 3 intervals and none has a quarantined policy;
    /// otherwise one line per failing host saying why.
    pub fn health(&self) -> Result<String, String> {
        let h = self
            .health
            .lock()
            .map_err(|_| "health state unavailable".to_owned())?;
        let mut problems = Vec::new();
        for (name, host) in h.iter() {
            let limit = (host.interval * 3).max(Duration::from_secs(3));
            let since = host.last_ok_tick.unwrap_or(host.started).elapsed();
            if let Some(p) = &host.problem {
                problems.push(format!("{name}: {p}"));
            } else if since > limit {
                problems.push(format!(
                    "{name}: no successful tick for {:.0} s (limit {:.0} s)",
                    since.as_secs_f64(),
                    limit.as_secs_f64()
                ));
            }
        }
        if let Some(p) = self.record_problem.lock().ok().and_then(|p| p.clone()) {
            problems.push(p);
        }
        if problems.is_empty() {
            Ok(format!("ok: {} hosts\n", h.len()))
        } else {
            Err(problems.join("\n") + "\n")
        }
    }
}

fn set_or_remove(g: &GaugeVec, labels: &[&str], value: Option<f64>) {
    match value {
        Some(v) => g.with_label_values(labels).set(v),
        None => {
            let _ = g.remove_label_values(labels);
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::fqdn_in_hosts;

    #[test]
    fn the_fleet_name_is_the_first_qualified_name_of_the_host_in_etc_hosts() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 node1.old.example node1\n\
                     127.0.1.1 node1.example.org node1 # Debian's line\n";
        assert_eq!(
            fqdn_in_hosts(hosts, "node1").as_deref(),
            Some("node1.example.org")
        );
        // Only a name of this host, qualified: not a longer host name, not another host.
        assert_eq!(
            fqdn_in_hosts("10.0.0.1 node10.example.org node10\n", "node1"),
            None
        );
        assert_eq!(fqdn_in_hosts(hosts, "other"), None);
    }
}
