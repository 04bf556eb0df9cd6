//! `vcoord bench trace`: the trace benchmark. A public trace becomes a scenario on a host sized
//! from it; vcoord's defaults, the seed's policies, no memory policy and the example plugins
//! that re-implement Proxmox VE's and oVirt MOM's ballooning run on it under several seeds and
//! are compared as `vcoord compare` does; then each contender's density: the most VMs of the
//! trace a host of a fixed size holds.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vcoord_core::config::{HostConfig, PolicyChoice};
use vcoord_core::tools::compare::{self, Contender, Outcome};
use vcoord_core::tools::study::{self, Meta, Study};
use vcoord_core::tools::trace::{scenario_from_trace, TraceFormat, TraceOptions};

use crate::cli::TraceBenchArgs;

/// A run holds its VMs when no guest was OOM-killed, VMs spent at most this share of their
/// time below the threshold, and the host ran out of memory at most this share of the ticks,
/// percent.
pub const HOLD_BELOW_PCT: f64 = 0.1;

/// The example plugins the benchmark loads, by file name, and their labels.
const PLUGINS: [(&str, &str); 2] = [
    ("libvcoord_proxmox_balloon.so", "proxmox"),
    ("libvcoord_mom_balloon.so", "mom"),
];

/// The contenders: vCPU placement by `stable-balance` for all but the seed's (its own), so
/// that the memory policies are compared on the same CPU side.
fn contenders(plugin_dir: &Path) -> Result<Vec<Contender>> {
    let base = HostConfig::new("trace", "sim:", Path::new("."));
    let with = |label: &str, cpu: &str, memory: PolicyChoice| {
        let mut host = base.clone();
        host.cpu_policy = PolicyChoice::builtin(cpu, toml::Table::new());
        host.memory_policy = memory;
        Contender {
            label: label.into(),
            host,
        }
    };
    let builtin = |name: &str| PolicyChoice::builtin(name, toml::Table::new());
    let mut out = vec![
        with("defaults", "stable-balance", builtin("pressure-balloon")),
        with("seed", "greedy-lpt", builtin("threshold-balloon")),
        with("none", "stable-balance", builtin("none")),
    ];
    for (file, label) in PLUGINS {
        let path = plugin_dir.join(file);
        if !path.is_file() {
            bail!(
                "{}: not found: build the example plugins first (`cargo build --release --workspace`) or give --plugin-dir",
                path.display()
            );
        }
        let path = path.display().to_string();
        out.push(with(
            label,
            "stable-balance",
            PolicyChoice::plugin(&path, toml::Table::new()),
        ));
    }
    Ok(out)
}

/// Where the example plugins are by default: beside this executable (`target/release/`).
fn default_plugin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether a run held its VMs (see [`HOLD_BELOW_PCT`]).
fn holds(o: &Outcome) -> bool {
    let Some(m) = o.memory.as_ref().filter(|_| o.error.is_none()) else {
        return false;
    };
    let short_pct = 100.0 * m.host_short_ticks as f64 / o.ticks.max(1) as f64;
    m.oom_events == 0 && m.below_threshold_pct() <= HOLD_BELOW_PCT && short_pct <= HOLD_BELOW_PCT
}

pub fn bench_trace(args: TraceBenchArgs) -> Result<()> {
    if let Some(h) = args.hours.filter(|h| !(h.is_finite() && *h > 0.0)) {
        bail!("--hours {h}: must be a positive number of hours");
    }
    if !(args.density_overcommit.is_finite() && (0.01..=1000.0).contains(&args.density_overcommit))
    {
        bail!(
            "--density-overcommit {} is out of range [0.01, 1000]",
            args.density_overcommit
        );
    }
    let files = crate::scenario::trace_files(&args.traces)?;
    let plugin_dir = args.plugin_dir.clone().unwrap_or_else(default_plugin_dir);
    let contenders = contenders(&plugin_dir)?;
    for c in &contenders {
        c.host
            .build_cpu_policy()
            .and_then(|_| c.host.build_memory_policy())
            .map_err(|e| anyhow::anyhow!("{}: {e}", c.label))?;
    }
    let work = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vcoord-trace-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let options = TraceOptions {
        format: TraceFormat::Gwa,
        name: "trace".into(),
        vms: args.vms.map(|n| n as usize),
        length_s: args.hours.map(|h| h * 3600.0),
        time_scale: args.time_scale,
        memory_overcommit: args.memory_overcommit,
        ..TraceOptions::default()
    };
    let text = scenario_from_trace(&files, &options)?;
    let scenario_path = work.join("trace.toml");
    std::fs::write(&scenario_path, &text)
        .with_context(|| format!("writing {}", scenario_path.display()))?;
    let scenario = vcoord_core::backend::sim::Scenario::parse(&text, &scenario_path)?;
    let vms = scenario.vms.len();
    eprintln!("{}", scenario.description);
    let jobs = crate::compare::jobs(args.jobs);
    let limit = std::time::Duration::from_secs(args.run_limit_s);
    let progress = |done: usize, total: usize| eprint!("\r{done}/{total} runs");
    let started = Instant::now();
    let scenarios = [scenario_path.clone()];
    let plan = compare::Plan {
        scenarios: &scenarios,
        contenders: &contenders,
        seeds: args.seeds as usize,
        jobs,
        threshold_mib: 100.0,
        limit,
        keep_records: false,
    };
    let outcomes = compare::run_seeds(&plan, &progress);
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!();
    let meta = Meta {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        command: format!(
            "vcoord bench trace ({vms} VMs, {} h of trace, time scale {}, memory overcommit {})",
            args.hours.map_or("all".to_owned(), |h| h.to_string()),
            args.time_scale,
            args.memory_overcommit
        ),
        seeds: args.seeds as usize,
        threshold_mib: 100.0,
    };
    let study = Study::new(meta, &contenders, &outcomes);
    print!("{}", study::table(&study, true));
    let vm_ticks: usize = outcomes
        .iter()
        .filter_map(|o| o.memory.as_ref().map(|m| m.vm_ticks))
        .sum();
    println!(
        "\nspeed: {} runs in {elapsed:.0} s on {jobs} threads: {:.0} VM-ticks/s per thread",
        outcomes.len(),
        vm_ticks as f64 / elapsed.max(1e-9) / jobs as f64
    );
    if args.density {
        density(&args, &files, &contenders, &work, jobs, limit, &scenario)?;
    }
    if outcomes.iter().any(|o| o.error.is_some()) {
        bail!("some runs failed (see the table)");
    }
    Ok(())
}

/// Each contender's density: the most VMs of the trace (taken in order) that a host of fixed
/// size holds under seed 1, by bisection over the VM count.
fn density(
    args: &TraceBenchArgs,
    files: &[PathBuf],
    contenders: &[Contender],
    work: &Path,
    jobs: usize,
    limit: std::time::Duration,
    full: &vcoord_core::backend::sim::Scenario,
) -> Result<()> {
    let all = full.vms.len();
    let provisioned: f64 = full.vms.iter().map(|vm| vm.max_memory_mib as f64).sum();
    let host_used = full.host.host_used_mib;
    let memory = (provisioned / args.density_overcommit).ceil() as u64 + host_used;
    let pcpus = full.host.pcpus;
    println!(
        "\ndensity: the most of the {all} VMs (in trace order) a host of {pcpus} pCPUs and {memory} MiB holds \
         (no OOM kill, at most {HOLD_BELOW_PCT}% of VM-ticks below 100 MiB unused and of ticks with the host out of memory; seed 1)"
    );
    let probe = |k: usize| -> Result<Vec<bool>> {
        let options = TraceOptions {
            format: TraceFormat::Gwa,
            name: format!("trace-{k}"),
            vms: Some(k),
            length_s: args.hours.map(|h| h * 3600.0),
            time_scale: args.time_scale,
            pcpus: Some(pcpus),
            memory_mib: Some(memory),
            ..TraceOptions::default()
        };
        let path = work.join(format!("density-{k}.toml"));
        std::fs::write(&path, scenario_from_trace(files, &options)?)?;
        let scenarios = [path];
        let plan = compare::Plan {
            scenarios: &scenarios,
            contenders,
            seeds: 1,
            jobs,
            threshold_mib: 100.0,
            limit,
            keep_records: false,
        };
        Ok(compare::run_seeds(&plan, &|_, _| {})
            .iter()
            .map(holds)
            .collect())
    };
    // Bisection for every contender at once: each keeps the most VMs known held and the
    // fewest known not held; a probe runs the VM counts some contender still asks about.
    let n = contenders.len();
    let mut held = vec![0usize; n];
    let mut failed = vec![all + 1; n];
    let mut cache: std::collections::BTreeMap<usize, Vec<bool>> = Default::default();
    loop {
        let asks: std::collections::BTreeSet<usize> = (0..n)
            .filter(|&i| failed[i] - held[i] > 1)
            .map(|i| {
                if held[i] == 0 && failed[i] == all + 1 {
                    all
                } else {
                    (held[i] + failed[i]) / 2
                }
            })
            .collect();
        if asks.is_empty() {
            break;
        }
        for k in asks {
            if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(k) {
                eprintln!("density: {k} VMs ...");
                slot.insert(probe(k)?);
            }
        }
        for i in 0..n {
            // Every count probed so far narrows the bounds.
            for (&k, result) in &cache {
                if result[i] {
                    held[i] = held[i].max(k);
                } else {
                    failed[i] = failed[i].min(k);
                }
            }
            if held[i] >= failed[i] {
                // Not monotonic here: the largest count held below the first failure counts.
                held[i] = cache
                    .iter()
                    .filter(|(&k, r)| r[i] && k < failed[i])
                    .map(|(&k, _)| k)
                    .max()
                    .unwrap_or(0);
            }
        }
    }
    println!("  {:<10} {:>8}", "contender", "VMs");
    for (c, k) in contenders.iter().zip(&held) {
        let more = if *k == all { " (all)" } else { "" };
        println!("  {:<10} {:>8}{more}", c.label, k);
    }
    Ok(())
}
