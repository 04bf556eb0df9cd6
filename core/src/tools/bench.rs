//! `vcoord bench`: what collection costs on a live libvirt host, how long policies take to
//! decide at scale, and a soak against a live libvirtd. Figures, not pass/fail: they go in the
//! README with the command that made them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::backend::libvirt::{ffi, LibvirtBackend, LibvirtOptions};
use crate::backend::Backend;
use crate::config::HostConfig;
use crate::policy::cpu_policies;
use crate::runtime::snapshot::synthetic_snapshot;
use crate::runtime::Coordinator;

/// Clock ticks per second of /proc stat times (USER_HZ; 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of process `pid`, seconds.
pub fn cpu_time_s(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let utime = crate::backend::libvirt::procfs::stat_field(&text, 14)?;
    let stime = crate::backend::libvirt::procfs::stat_field(&text, 15)?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The pid of the running libvirtd, if any.
pub fn libvirtd_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "libvirtd").then_some(name)
    })
}

/// One way of collecting, measured.
#[derive(Clone, Debug)]
pub struct CollectRow {
    /// What was measured.
    pub mode: &'static str,
    /// Wall time per tick, ms.
    pub ms_per_tick: f64,
    /// libvirt calls per tick.
    pub calls_per_tick: f64,
    /// CPU time libvirtd spent per tick, ms.
    pub libvirtd_ms_per_tick: Option<f64>,
    /// CPU time this process spent per tick, ms.
    pub own_ms_per_tick: Option<f64>,
}

/// Measures `ticks` ticks of each way of collecting on `uri`: vcoord's CPU-path tick (fast
/// path, balloon statistics from cache), its full tick (fast path plus the balloon call), the
/// libvirt-only path, a per-domain poller in the style of the original design (per domain:
/// vCPU info, memory statistics, domain info), and the bare bulk statistics call. Returns the
/// rows and the number of domains and vCPUs seen.
pub fn collect(uri: &str, ticks: u32) -> Result<(Vec<CollectRow>, usize, usize), String> {
    let fast = |interval: f64| LibvirtOptions {
        fast_path: true,
        memory_interval: Duration::from_secs_f64(interval),
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut seen = (0, 0);
    type Step<'a> = Box<dyn FnMut(&mut LibvirtBackend) -> Result<u32, String> + 'a>;
    let modes: Vec<(&'static str, LibvirtOptions, Step)> = vec![
        (
            "vcoord CPU-path tick (/proc, cached balloon stats)",
            fast(1e9),
            Box::new(|b: &mut LibvirtBackend| sample_calls(b)),
        ),
        (
            "vcoord full tick (/proc + balloon call)",
            fast(0.0),
            Box::new(|b: &mut LibvirtBackend| sample_calls(b)),
        ),
        (
            "libvirt only (bulk VCPU+BALLOON, vCPU info per domain)",
            LibvirtOptions {
                fast_path: false,
                ..fast(0.0)
            },
            Box::new(|b: &mut LibvirtBackend| sample_calls(b)),
        ),
        (
            "per-domain poller (vCPU info + memory stats + info)",
            fast(0.0),
            Box::new(|b: &mut LibvirtBackend| poll_per_domain(b)),
        ),
        (
            "bare bulk call (VCPU+BALLOON)",
            fast(0.0),
            Box::new(|b: &mut LibvirtBackend| poll_bulk_call(b)),
        ),
    ];
    let daemon = libvirtd_pid();
    let me = std::process::id().to_string();
    for (mode, options, mut step) in modes {
        let mut backend = LibvirtBackend::connect_with(uri, &options).map_err(|e| e.to_string())?;
        // Warm up: learn threads, fill caches.
        let s = backend.sample().map_err(|e| e.to_string())?;
        seen = (s.vms.len(), s.vms.iter().map(|v| v.vcpus.len()).sum());
        backend.take_calls();
        for _ in 0..2 {
            step(&mut backend)?;
        }
        let d0 = daemon.as_deref().and_then(cpu_time_s);
        let o0 = cpu_time_s(&me);
        let start = Instant::now();
        let mut calls = 0u64;
        for _ in 0..ticks {
            calls += step(&mut backend)? as u64;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let d1 = daemon.as_deref().and_then(cpu_time_s);
        let o1 = cpu_time_s(&me);
        let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 1000.0 / ticks as f64);
        rows.push(CollectRow {
            mode,
            ms_per_tick: elapsed * 1000.0 / ticks as f64,
            calls_per_tick: calls as f64 / ticks as f64,
            libvirtd_ms_per_tick: per(d0, d1),
            own_ms_per_tick: per(o0, o1),
        });
    }
    Ok((rows, seen.0, seen.1))
}

/// One round of a per-domain poller in the style of the original design: list the domains,
/// then per domain its vCPU info, memory statistics and domain info. Returns the libvirt calls
/// made.
fn poll_per_domain(b: &mut LibvirtBackend) -> Result<u32, String> {
    let maplen = b.cpumap_len();
    let conn = b.connection().map_err(|e| e.to_string())?;
    let doms = conn
        .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .map_err(|e| e.to_string())?;
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
fn poll_bulk_call(b: &mut LibvirtBackend) -> Result<u32, String> {
    let conn = b.connection().map_err(|e| e.to_string())?;
    ffi::all_domain_stats(
        conn,
        virt::sys::VIR_DOMAIN_STATS_VCPU | virt::sys::VIR_DOMAIN_STATS_BALLOON,
        virt::sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        0,
    )
    .map_err(|e| e.to_string())?;
    Ok(1)
}

fn sample_calls(b: &mut LibvirtBackend) -> Result<u32, String> {
    b.sample().map_err(|e| e.to_string())?;
    Ok(b.take_calls().sample_calls)
}

/// The collection table.
pub fn collect_table(rows: &[CollectRow], domains: usize, vcpus: usize, ticks: u32) -> String {
    let mut out = format!(
        "{domains} domains, {vcpus} vCPUs, {ticks} ticks each (CPU times have 10 ms resolution)\n"
    );
    let _ = writeln!(
        out,
        "{:<56} {:>9} {:>11} {:>15} {:>13}",
        "mode", "ms/tick", "calls/tick", "libvirtd ms/tick", "vcoord ms/tick"
    );
    let base = rows
        .iter()
        .find(|r| r.mode.starts_with("per-domain"))
        .map(|r| r.ms_per_tick);
    for r in rows {
        let ratio = match base {
            Some(b) if r.ms_per_tick > 0.0 => {
                format!("  per-domain poller / this: {:.1}", b / r.ms_per_tick)
            }
            _ => String::new(),
        };
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "{:<56} {:>9.3} {:>11.1} {:>15} {:>13}{}",
            r.mode,
            r.ms_per_tick,
            r.calls_per_tick,
            f(r.libvirtd_ms_per_tick),
            f(r.own_ms_per_tick),
            if r.mode.starts_with("per-domain") {
                String::new()
            } else {
                ratio
            }
        );
    }
    out
}

/// Decision time of every built-in CPU policy on synthetic hosts: (policy, vCPUs, pCPUs,
/// ms per decision on a fresh policy).
pub fn policies(repeat: u32) -> Vec<(&'static str, usize, usize, f64)> {
    let mut out = Vec::new();
    for (vcpus, pcpus) in [(1000, 64), (1000, 256), (10_000, 64), (10_000, 256)] {
        let snapshot = synthetic_snapshot(vcpus, pcpus, 42);
        for info in cpu_policies() {
            let mut best = f64::INFINITY;
            for _ in 0..repeat.max(1) {
                let Ok(mut policy) = (info.build)(&toml::Table::new()) else {
                    continue;
                };
                let start = Instant::now();
                let plan = policy.decide(&snapshot);
                best = best.min(start.elapsed().as_secs_f64() * 1000.0);
                std::hint::black_box(plan);
            }
            out.push((info.name, vcpus, pcpus, best));
        }
    }
    out
}

/// Resident memory (KiB) and open file descriptors of process `pid` (or `self`).
pub fn footprint(pid: &str) -> (Option<u64>, Option<usize>) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| crate::backend::libvirt::procfs::kib_field(&s, "VmRSS:"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count());
    (rss, fds)
}

/// Runs `ticks` dry-run ticks of `host`'s policies against its backend (at its interval) and
/// reports, through `line`, memory and descriptors of vcoord and libvirtd every `every` ticks.
pub fn soak(
    host: &HostConfig,
    ticks: u64,
    every: u64,
    line: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut coordinator = Coordinator::open(
        host,
        &crate::runtime::RunOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let daemon = libvirtd_pid();
    let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    line(&format!(
        "{:>7} {:>5} {:>14} {:>10} {:>14} {:>13} {:>9}",
        "tick", "VMs", "vcoord RSS", "vcoord fds", "libvirtd RSS", "libvirtd fds", "ms/tick"
    ));
    let mut done = 0;
    let mut window = Instant::now();
    let mut vms = 0;
    while done < ticks {
        if let Some(r) = coordinator.tick() {
            vms = r.vms.len();
        }
        done += 1;
        if done == 1 || done % every == 0 || done == ticks {
            let (rss, fds) = footprint("self");
            let (daemon_rss, daemon_fds) = daemon.as_deref().map_or((None, None), footprint);
            let ms = window.elapsed().as_secs_f64() * 1000.0 / every.min(done) as f64;
            window = Instant::now();
            line(&format!(
                "{:>7} {:>5} {:>10} KiB {:>10} {:>10} KiB {:>13} {:>9.2}",
                done,
                vms,
                rss.unwrap_or(0),
                fds.unwrap_or(0),
                shown(daemon_rss.map(|v| v.to_string())),
                shown(daemon_fds.map(|v| v.to_string())),
                ms
            ));
        }
        std::thread::sleep(Duration::from_secs_f64(host.interval_s));
    }
    Ok(())
}

/// What observing cost: ms per tick without and with metrics (every tick observed, and one
/// scrape of `/metrics` and `/status.json` encoded per tick), best of `rounds` alternating runs.
#[derive(Clone, Copy, Debug)]
pub struct MetricsOverhead {
    /// VMs on the host.
    pub vms: usize,
    /// ms per tick, plain.
    pub plain_ms: f64,
    /// ms per tick, observed and scraped.
    pub observed_ms: f64,
}

/// Ticks `host` (dry run) `ticks` times plainly and with metrics and a scrape per tick.
pub fn metrics_overhead(
    host: &HostConfig,
    ticks: u64,
    rounds: u32,
) -> Result<MetricsOverhead, String> {
    use std::sync::Arc;

    use crate::runtime::control::Control;
    use crate::runtime::RunOptions;
    use crate::service::Observers;

    let options = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let control = Control::new();
    let run = |observed: bool| -> Result<(f64, usize), String> {
        let mut c = Coordinator::open(host, &options).map_err(|e| e.to_string())?;
        let observers = Observers::default();
        if observed {
            observers
                .metrics
                .host_started(&host.name, Duration::from_secs_f64(host.interval_s));
            c.observe(Arc::new(observers.clone()));
        }
        // Warm up: the first ticks learn the VMs.
        for _ in 0..3 {
            c.tick();
            c.wait(&control);
        }
        let mut vms = 0;
        let mut busy = Duration::ZERO;
        for _ in 0..ticks {
            let started = Instant::now();
            if let Some(r) = c.tick() {
                vms = r.vms.len();
            }
            if observed {
                std::hint::black_box(observers.metrics.encode());
                std::hint::black_box(observers.status.to_json());
            }
            busy += started.elapsed();
            c.wait(&control);
        }
        Ok((busy.as_secs_f64() * 1000.0 / ticks.max(1) as f64, vms))
    };
    let (mut plain_ms, mut observed_ms, mut vms) = (f64::INFINITY, f64::INFINITY, 0);
    for _ in 0..rounds.max(1) {
        let (p, n) = run(false)?;
        let (o, _) = run(true)?;
        plain_ms = plain_ms.min(p);
        observed_ms = observed_ms.min(o);
        vms = n;
    }
    Ok(MetricsOverhead {
        vms,
        plain_ms,
        observed_ms,
    })
}
