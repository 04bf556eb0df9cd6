//! `vcoord compare`: every policy choice on every scenario, on the simulator, in parallel and
//! reproducibly (each run is its own deterministic simulation; results are gathered in input
//! order whatever the thread timing), then tables, JSON or CSV, summaries and plots.

use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::HostConfig;
use crate::runtime::record::TickRecord;
use crate::runtime::{Coordinator, RunOptions};
use crate::service::control::Control;
use crate::tools::metrics::{cpu_metrics, fewest_moves, memory_metrics, CpuMetrics, MemoryMetrics};
use crate::tools::plot::{render, Panel, Series};

/// Balance bound, stdev of pCPU loads in points.
pub const BALANCE_BOUND_PCT: f64 = 5.0;

/// One policy choice to compare: a host configuration whose URI is replaced by each scenario.
#[derive(Clone, Debug)]
pub struct Contender {
    /// Short name in tables.
    pub label: String,
    /// Everything but the URI.
    pub host: HostConfig,
}

/// One scenario run by one contender.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Scenario name (file stem).
    pub scenario: String,
    /// Contender label.
    pub policy: String,
    /// What went wrong, if the run failed.
    pub error: Option<String>,
    /// CPU figures.
    pub cpu: Option<CpuMetrics>,
    /// Memory figures.
    pub memory: Option<MemoryMetrics>,
    /// Fewest vCPU moves that balance the first measured tick (small instances only).
    pub fewest_moves: Option<usize>,
    /// The run's records (for plots).
    pub records: Vec<TickRecord>,
}

/// The scenario files named by `paths`: files as given, folders expanded to their `*.toml`
/// files, sorted by name.
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: no *.toml scenario files", path.display()));
            }
            out.extend(files);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(format!(
                "{}: no such scenario file or folder",
                path.display()
            ));
        }
    }
    Ok(out)
}

/// Runs every contender on every scenario with `jobs` threads; `progress(done, total)` is
/// called after each run. Results are in scenario-major, contender-minor order.
pub fn run_all(
    scenarios: &[PathBuf],
    contenders: &[Contender],
    jobs: usize,
    threshold_mib: f64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Outcome> {
    run_all_within(
        scenarios,
        contenders,
        jobs,
        threshold_mib,
        RUN_TIME_LIMIT,
        progress,
    )
}

/// Wall-clock time one run may take before it is stopped and reported as failed.
pub const RUN_TIME_LIMIT: Duration = Duration::from_secs(300);

/// [`run_all`] with a time limit per run.
pub fn run_all_within(
    scenarios: &[PathBuf],
    contenders: &[Contender],
    jobs: usize,
    threshold_mib: f64,
    limit: Duration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Outcome> {
    let work: Vec<(&PathBuf, &Contender)> = scenarios
        .iter()
        .flat_map(|s| contenders.iter().map(move |c| (s, c)))
        .collect();
    let results: Vec<Mutex<Option<Outcome>>> = work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(work.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((scenario, contender)) = work.get(i) else {
                    break;
                };
                // A run that panics (a policy's bug) is reported as failed; the others go on.
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run_one_within(scenario, contender, threshold_mib, limit)
                }))
                .unwrap_or_else(|payload| {
                    let why = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    failed_run(scenario, contender, format!("the run panicked: {why}"))
                });
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, work.len());
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every run finished")
        })
        .collect()
}

/// An outcome that says why a run failed.
fn failed_run(scenario: &Path, contender: &Contender, why: String) -> Outcome {
    Outcome {
        scenario: scenario
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        policy: contender.label.clone(),
        error: Some(why),
        cpu: None,
        memory: None,
        fewest_moves: None,
        records: Vec::new(),
    }
}

/// Runs one contender on one scenario to the scenario's end.
pub fn run_one(scenario: &Path, contender: &Contender, threshold_mib: f64) -> Outcome {
    run_one_within(scenario, contender, threshold_mib, RUN_TIME_LIMIT)
}

/// [`run_one`], stopped (and reported as failed) after `limit` of wall-clock time.
pub fn run_one_within(
    scenario: &Path,
    contender: &Contender,
    threshold_mib: f64,
    limit: Duration,
) -> Outcome {
    let name = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut host = contender.host.clone();
    let absolute = std::fs::canonicalize(scenario).unwrap_or_else(|_| scenario.to_path_buf());
    host.uri = format!("sim:{}", absolute.display());
    host.name = name.clone();
    host.dry_run = false;
    let mut outcome = Outcome {
        scenario: name,
        policy: contender.label.clone(),
        error: None,
        cpu: None,
        memory: None,
        fewest_moves: None,
        records: Vec::new(),
    };
    let mut records = Vec::new();
    let control = Control::new();
    let started = Instant::now();
    let mut timed_out = false;
    let result = Coordinator::open(&host, &RunOptions::default()).and_then(|mut c| {
        c.run(None, &control, |r| {
            records.push(r.clone());
            if started.elapsed() > limit {
                timed_out = true;
                control.request_stop();
            }
            Ok(())
        })
    });
    if let Err(e) = result {
        outcome.error = Some(e.to_string());
        return outcome;
    }
    if timed_out {
        outcome.error = Some(format!(
            "stopped after {} s of wall-clock time at tick {} (the limit per run)",
            limit.as_secs(),
            records.len()
        ));
        return outcome;
    }
    outcome.cpu = Some(cpu_metrics(&records, BALANCE_BOUND_PCT));
    outcome.memory = Some(memory_metrics(&records, threshold_mib));
    outcome.fewest_moves = fewest_moves(&records, BALANCE_BOUND_PCT);
    outcome.records = records;
    outcome
}

/// One flat row of figures, for JSON and CSV (units in the names).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Policy label.
    pub policy: String,
    /// Error, when the run failed.
    pub error: Option<String>,
    /// First tick from which pCPU stdev stayed within 5 points.
    pub ticks_to_balance: Option<u64>,
    /// Stdev at the last tick.
    pub final_stdev_pct: Option<f64>,
    /// Mean stdev from balance on.
    pub mean_stdev_after_balance_pct: Option<f64>,
    /// vCPU pin changes in all.
    pub vcpu_moves: Option<usize>,
    /// vCPU pin changes from balance on.
    pub vcpu_moves_after_balance: Option<usize>,
    /// Fewest moves that balance the start (exact, small instances).
    pub fewest_moves: Option<usize>,
    /// Mean vCPU run-queue wait (unmet demand).
    pub mean_wait_pct: Option<f64>,
    /// Guest OOM kills.
    pub oom_events: Option<u64>,
    /// Guest swap-out.
    pub swap_out_mib: Option<f64>,
    /// VM-ticks below the unused threshold.
    pub vm_ticks_below_threshold: Option<usize>,
    /// Longest run below the threshold by one VM.
    pub longest_below_threshold_ticks: Option<usize>,
    /// Lowest unused memory of any VM.
    pub lowest_unused_mib: Option<f64>,
    /// VM with the lowest unused memory.
    pub lowest_unused_vm: Option<String>,
    /// Lowest free host memory.
    pub lowest_host_free_mib: Option<f64>,
    /// Lowest memory grantable to guests.
    pub lowest_guest_free_mib: Option<f64>,
    /// Memory moved by ballooning.
    pub moved_mib: Option<f64>,
}

impl Outcome {
    /// This outcome as a flat row.
    pub fn row(&self) -> Row {
        let cpu = self.cpu.as_ref();
        let mem = self.memory.as_ref();
        let lowest = mem.and_then(|m| {
            m.lowest_unused_mib
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(vm, v)| (vm.clone(), *v))
        });
        Row {
            scenario: self.scenario.clone(),
            policy: self.policy.clone(),
            error: self.error.clone(),
            ticks_to_balance: cpu.and_then(|c| c.ticks_to_balance),
            final_stdev_pct: cpu.map(|c| round2(c.final_stdev_pct)),
            mean_stdev_after_balance_pct: cpu
                .and_then(|c| c.mean_stdev_after_balance_pct)
                .map(round2),
            vcpu_moves: cpu.map(|c| c.vcpu_moves),
            vcpu_moves_after_balance: cpu.map(|c| c.vcpu_moves_after_balance),
            fewest_moves: self.fewest_moves,
            mean_wait_pct: cpu.map(|c| round2(c.mean_wait_pct)),
            oom_events: mem.map(|m| m.oom_events),
            swap_out_mib: mem.map(|m| round2(m.swap_out_mib)),
            vm_ticks_below_threshold: mem.map(|m| m.vm_ticks_below_threshold),
            longest_below_threshold_ticks: mem.map(|m| m.longest_below_threshold_ticks),
            lowest_unused_mib: lowest.as_ref().map(|l| round2(l.1)),
            lowest_unused_vm: lowest.map(|l| l.0),
            lowest_host_free_mib: mem.map(|m| round2(m.lowest_host_free_mib)),
            lowest_guest_free_mib: mem.map(|m| round2(m.lowest_guest_free_mib)),
            moved_mib: mem.map(|m| round2(m.moved_mib)),
        }
    }
}

/// Scenario names in the order they first appear.
fn scenario_names(outcomes: &[Outcome]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for o in outcomes {
        if !names.contains(&o.scenario.as_str()) {
            names.push(&o.scenario);
        }
    }
    names
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn opt1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The human-readable report: per scenario a CPU and a memory table, one row per policy, then
/// one summary line per pair of policies.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for scenario in scenario_names(outcomes) {
        let rows: Vec<(&Outcome, Row)> = outcomes
            .iter()
            .filter(|o| o.scenario == scenario)
            .map(|o| (o, o.row()))
            .collect();
        let ticks = rows.first().map_or(0, |(o, _)| o.records.len());
        let _ = writeln!(out, "== {scenario} ({ticks} ticks)");
        let w = rows
            .iter()
            .map(|(_, r)| r.policy.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "  {:<w$}  {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7}",
            "CPU", "balanced@", "final sd", "mean sd", "moves", "after", "fewest", "wait %"
        );
        for (_, r) in &rows {
            if let Some(e) = &r.error {
                let _ = writeln!(out, "  {:<w$}  failed: {e}", r.policy);
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<w$}  {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7}",
                r.policy,
                opt(r.ticks_to_balance),
                opt1(r.final_stdev_pct),
                opt1(r.mean_stdev_after_balance_pct),
                opt(r.vcpu_moves),
                opt(r.vcpu_moves_after_balance),
                opt(r.fewest_moves),
                opt1(r.mean_wait_pct),
            );
        }
        let _ = writeln!(
            out,
            "  {:<w$}  {:>5} {:>8} {:>9} {:>7} {:>19} {:>9} {:>9}",
            "memory",
            "OOM",
            "swap MiB",
            "below thr",
            "longest",
            "lowest unused MiB",
            "host free",
            "moved MiB"
        );
        for (_, r) in rows.iter().filter(|(_, r)| r.error.is_none()) {
            let lowest = match (&r.lowest_unused_mib, &r.lowest_unused_vm) {
                (Some(v), Some(vm)) => format!("{v:.0} ({vm})"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {:<w$}  {:>5} {:>8} {:>9} {:>7} {:>19} {:>9} {:>9}",
                r.policy,
                opt(r.oom_events),
                opt1(r.swap_out_mib),
                opt(r.vm_ticks_below_threshold),
                opt(r.longest_below_threshold_ticks),
                lowest,
                r.lowest_host_free_mib
                    .map_or("-".into(), |v| format!("{v:.0}")),
                r.moved_mib.map_or("-".into(), |v| format!("{v:.0}")),
            );
        }
        for (i, (_, a)) in rows.iter().enumerate() {
            for (_, b) in &rows[i + 1..] {
                let _ = writeln!(out, "  {}", summary(a, b));
            }
        }
        out.push('\n');
    }
    out
}

/// One line saying which of two runs is better on which metric, by how much.
pub fn summary(a: &Row, b: &Row) -> String {
    if a.error.is_some() || b.error.is_some() {
        return format!(
            "{} vs {}: not comparable (a run failed)",
            a.policy, b.policy
        );
    }
    let mut notes: Vec<String> = Vec::new();
    // (name, a, b, lower is better, unit)
    let mut cmp = |name: &str, x: Option<f64>, y: Option<f64>, unit: &str, eps: f64| match (x, y) {
        (Some(x), Some(y)) if (x - y).abs() > eps => {
            let (better, by) = if x < y {
                (&a.policy, y - x)
            } else {
                (&b.policy, x - y)
            };
            notes.push(format!("{name}: {better} by {by:.1}{unit}"));
        }
        (Some(_), None) => notes.push(format!("{name}: only {} gets there", a.policy)),
        (None, Some(_)) => notes.push(format!("{name}: only {} gets there", b.policy)),
        _ => {}
    };
    let f = |v: Option<u64>| v.map(|v| v as f64);
    let u = |v: Option<usize>| v.map(|v| v as f64);
    cmp(
        "balance",
        f(a.ticks_to_balance),
        f(b.ticks_to_balance),
        " ticks",
        0.0,
    );
    cmp("moves", u(a.vcpu_moves), u(b.vcpu_moves), "", 0.0);
    cmp(
        "moves after balance",
        u(a.vcpu_moves_after_balance),
        u(b.vcpu_moves_after_balance),
        "",
        0.0,
    );
    cmp(
        "mean sd",
        a.mean_stdev_after_balance_pct,
        b.mean_stdev_after_balance_pct,
        " points",
        0.5,
    );
    cmp("wait", a.mean_wait_pct, b.mean_wait_pct, " points", 0.5);
    cmp("OOM", f(a.oom_events), f(b.oom_events), "", 0.0);
    cmp("swap", a.swap_out_mib, b.swap_out_mib, " MiB", 1.0);
    cmp(
        "ticks below threshold",
        u(a.vm_ticks_below_threshold),
        u(b.vm_ticks_below_threshold),
        "",
        0.0,
    );
    // Higher is better for the lowest unused memory.
    cmp(
        "lowest unused",
        a.lowest_unused_mib.map(|v| -v),
        b.lowest_unused_mib.map(|v| -v),
        " MiB",
        1.0,
    );
    if notes.is_empty() {
        format!("{} vs {}: no difference", a.policy, b.policy)
    } else {
        format!("{} vs {}: better {}", a.policy, b.policy, notes.join("; "))
    }
}

/// All rows as a JSON array.
pub fn json(outcomes: &[Outcome]) -> String {
    let rows: Vec<Row> = outcomes.iter().map(Outcome::row).collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

/// CSV columns, in the order of [`Row`]'s fields.
const COLUMNS: &[&str] = &[
    "scenario",
    "policy",
    "error",
    "ticks_to_balance",
    "final_stdev_pct",
    "mean_stdev_after_balance_pct",
    "vcpu_moves",
    "vcpu_moves_after_balance",
    "fewest_moves",
    "mean_wait_pct",
    "oom_events",
    "swap_out_mib",
    "vm_ticks_below_threshold",
    "longest_below_threshold_ticks",
    "lowest_unused_mib",
    "lowest_unused_vm",
    "lowest_host_free_mib",
    "lowest_guest_free_mib",
    "moved_mib",
];

/// All rows as CSV with a header line.
pub fn csv(outcomes: &[Outcome]) -> String {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| serde_json::to_value(o.row()).unwrap_or_default())
        .collect();
    let keys = COLUMNS;
    let mut out = keys.join(",");
    out.push('\n');
    for row in &rows {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| match &row[*k] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) if s.contains([',', '"', '\n']) => {
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Writes `<scenario>-cpu.svg` and `<scenario>-memory.svg` into `dir`; returns the files.
pub fn plots(outcomes: &[Outcome], dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for scenario in scenario_names(outcomes) {
        let runs: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.scenario == scenario && o.error.is_none())
            .collect();
        let cpu_panels: Vec<Panel> = runs.iter().map(|o| cpu_panel(o)).collect();
        let path = dir.join(format!("{scenario}-cpu.svg"));
        std::fs::write(
            &path,
            render(
                &format!("{scenario}: pCPU load per policy"),
                "time (s)",
                &cpu_panels,
            ),
        )?;
        written.push(path);
        let mut mem_panels: Vec<Panel> = runs.iter().map(|o| memory_panel(o)).collect();
        mem_panels.push(host_free_panel(&runs));
        let path = dir.join(format!("{scenario}-memory.svg"));
        std::fs::write(
            &path,
            render(
                &format!("{scenario}: guest memory per policy (solid: actual, dashed: unused)"),
                "time (s)",
                &mem_panels,
            ),
        )?;
        written.push(path);
    }
    Ok(written)
}

fn cpu_panel(o: &Outcome) -> Panel {
    let pcpus = o.records.first().map_or(0, |r| r.pcpu_load_pct.len());
    let series = (0..pcpus)
        .map(|i| Series {
            label: format!(
                "pCPU {}",
                o.records[0].pcpus.get(i).copied().unwrap_or(i as u32)
            ),
            points: o
                .records
                .iter()
                .filter_map(|r| r.pcpu_load_pct.get(i).map(|l| (r.time_s, *l)))
                .collect(),
            color: i,
            dashed: false,
        })
        .collect();
    let moves = o.cpu.as_ref().map_or(0, |c| c.vcpu_moves);
    Panel {
        title: format!("{} ({} moves)", o.policy, moves),
        y_label: "pCPU load (%)".into(),
        y_min: 0.0,
        series,
    }
}

fn memory_panel(o: &Outcome) -> Panel {
    let mut names: Vec<&str> = Vec::new();
    for r in &o.records {
        for vm in &r.vms {
            if !names.contains(&vm.name.as_str()) {
                names.push(&vm.name);
            }
        }
    }
    let mut series = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let points =
            |f: &dyn Fn(&crate::runtime::record::VmRecord) -> Option<f64>| -> Vec<(f64, f64)> {
                o.records
                    .iter()
                    .filter_map(|r| {
                        let vm = r.vms.iter().find(|v| v.name == *name)?;
                        Some((r.time_s, f(vm)?))
                    })
                    .collect()
            };
        series.push(Series {
            label: format!("{name} actual"),
            points: points(&|vm| Some(vm.actual_mib)),
            color: i,
            dashed: false,
        });
        series.push(Series {
            label: format!("{name} unused"),
            points: points(&|vm| vm.unused_mib),
            color: i,
            dashed: true,
        });
    }
    let oom = o.memory.as_ref().map_or(0, |m| m.oom_events);
    Panel {
        title: format!("{} ({} OOM)", o.policy, oom),
        y_label: "memory (MiB)".into(),
        y_min: 0.0,
        series,
    }
}

fn host_free_panel(runs: &[&Outcome]) -> Panel {
    Panel {
        title: "host free memory".into(),
        y_label: "free (MiB)".into(),
        y_min: 0.0,
        series: runs
            .iter()
            .enumerate()
            .map(|(i, o)| Series {
                label: o.policy.clone(),
                points: o
                    .records
                    .iter()
                    .map(|r| (r.time_s, r.host_free_mib))
                    .collect(),
                color: i,
                dashed: false,
            })
            .collect(),
    }
}
