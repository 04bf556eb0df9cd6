//! `vcoord compare`: every policy choice on every scenario under one or more noise seeds, on
//! the simulator, in parallel and reproducibly (each run is its own deterministic simulation;
//! results are gathered in input order whatever the thread timing); then a [`Study`](super::study::Study) of the
//! runs (means, 95% confidence intervals, paired verdicts, a summary across scenarios) as a
//! table, JSON, CSV, plots or an HTML report.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::HostConfig;
use crate::runtime::control::Control;
use crate::runtime::record::TickRecord;
use crate::runtime::{Coordinator, RunOptions};
use crate::tools::metrics::{CpuMetrics, Figures, MemoryMetrics};

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
    /// Noise seed of the run.
    pub seed: u64,
    /// What went wrong, if the run failed.
    pub error: Option<String>,
    /// CPU figures.
    pub cpu: Option<CpuMetrics>,
    /// Memory figures.
    pub memory: Option<MemoryMetrics>,
    /// Fewest vCPU moves that balance the first measured tick (small instances only).
    pub fewest_moves: Option<usize>,
    /// Ticks the run lasted.
    pub ticks: usize,
    /// The run's records, when kept (for plots and reports).
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

/// Wall-clock time one run may take before it is stopped and reported as failed.
pub const RUN_TIME_LIMIT: Duration = Duration::from_secs(300);

/// Runs every contender on every scenario (under its own seed) with `jobs` threads, each run
/// stopped after `limit`;
/// `progress(done, total)` is called after each run. Results are in scenario-major,
/// contender-minor order.
pub fn run_all_within(
    scenarios: &[PathBuf],
    contenders: &[Contender],
    jobs: usize,
    threshold_mib: f64,
    limit: Duration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Outcome> {
    run_seeds(
        &Plan {
            scenarios,
            contenders,
            seeds: 1,
            jobs,
            threshold_mib,
            limit,
            keep_records: true,
        },
        progress,
    )
}

/// What `vcoord compare` runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Scenario files.
    pub scenarios: &'a [PathBuf],
    /// Contenders.
    pub contenders: &'a [Contender],
    /// Runs per scenario and contender: seeds `s`, `s + 1`, ... from the scenario's own `s`.
    pub seeds: usize,
    /// Parallel runs.
    pub jobs: usize,
    /// Unused memory a VM should keep, for the memory figures.
    pub threshold_mib: f64,
    /// Wall-clock time limit per run.
    pub limit: Duration,
    /// Keep each run's records (plots and reports need them; a long run's take much memory).
    pub keep_records: bool,
}

/// The seeds a scenario runs under: its own seed and the next `n - 1` (a scenario that cannot
/// be read keeps 0..n: its runs fail and say why).
pub fn seeds_of(scenario: &Path, n: usize) -> Vec<u64> {
    let base = crate::backend::sim::Scenario::from_file(scenario).map_or(0, |s| s.seed);
    (0..n as u64).map(|i| base.wrapping_add(i)).collect()
}

/// Runs the plan; results in scenario-major, contender-next, seed-minor order.
pub fn run_seeds(plan: &Plan, progress: &(dyn Fn(usize, usize) + Sync)) -> Vec<Outcome> {
    let seeds: Vec<Vec<u64>> = plan
        .scenarios
        .iter()
        .map(|s| seeds_of(s, plan.seeds.max(1)))
        .collect();
    let work: Vec<(&PathBuf, &Contender, u64)> = plan
        .scenarios
        .iter()
        .zip(&seeds)
        .flat_map(|(s, seeds)| {
            plan.contenders
                .iter()
                .flat_map(move |c| seeds.iter().map(move |&seed| (s, c, seed)))
        })
        .collect();
    let results: Vec<Mutex<Option<Outcome>>> = work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.max(1).min(work.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(scenario, contender, seed)) = work.get(i) else {
                    break;
                };
                // A run that panics (a policy's bug) is reported as failed; the others go on.
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    run_seeded(scenario, contender, seed, plan)
                }))
                .unwrap_or_else(|payload| {
                    let why = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    failed_run(
                        scenario,
                        contender,
                        seed,
                        format!("the run panicked: {why}"),
                    )
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
fn failed_run(scenario: &Path, contender: &Contender, seed: u64, why: String) -> Outcome {
    Outcome {
        scenario: scenario
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        policy: contender.label.clone(),
        seed,
        error: Some(why),
        cpu: None,
        memory: None,
        fewest_moves: None,
        ticks: 0,
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
    let seed = seeds_of(scenario, 1)[0];
    let plan = Plan {
        scenarios: &[],
        contenders: &[],
        seeds: 1,
        jobs: 1,
        threshold_mib,
        limit,
        keep_records: true,
    };
    run_seeded(scenario, contender, seed, &plan)
}

/// One run under `seed`, stopped (and reported as failed) after `limit` of wall-clock time.
fn run_seeded(scenario: &Path, contender: &Contender, seed: u64, plan: &Plan) -> Outcome {
    let limit = plan.limit;
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
        seed,
        error: None,
        cpu: None,
        memory: None,
        fewest_moves: None,
        ticks: 0,
        records: Vec::new(),
    };
    let mut records = Vec::new();
    let mut figures = Figures::new(BALANCE_BOUND_PCT, plan.threshold_mib);
    let control = Control::new();
    let started = Instant::now();
    let mut timed_out = false;
    let options = RunOptions {
        sim_seed: Some(seed),
        ..RunOptions::default()
    };
    let result = Coordinator::open(&host, &options).and_then(|mut c| {
        c.run(None, &control, |r| {
            figures.push(r);
            if plan.keep_records {
                records.push(r.clone());
            }
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
            figures.ticks()
        ));
        return outcome;
    }
    outcome.cpu = Some(figures.cpu());
    outcome.memory = Some(figures.memory());
    outcome.fewest_moves = figures.fewest_moves();
    outcome.ticks = figures.ticks();
    outcome.records = records;
    outcome
}
