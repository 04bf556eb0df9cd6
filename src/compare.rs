//! `vcoord compare`: argument handling and output around `vcoord_core::tools::compare`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vcoord_core::config::{Config, HostConfig, PolicyChoice};
use vcoord_core::policy::{policy_names, Kind};
use vcoord_core::tools::compare::{self, Contender};
use vcoord_core::tools::report;
use vcoord_core::tools::study::{self, Meta, Study};

use crate::cli::{CompareArgs, Format};

pub fn compare(args: CompareArgs) -> Result<()> {
    let scenarios = compare::scenario_files(&args.scenarios).map_err(anyhow::Error::msg)?;
    // Every scenario is read first: a bad one is an error of its own, before any run.
    for path in &scenarios {
        vcoord_core::backend::sim::Scenario::from_file(path)?;
    }
    let contenders = contenders(&args)?;
    if contenders.len() < 2 {
        bail!(
            "compare needs two or more contenders: --cpu or --memory twice, two --config files, \
             or one with two hosts"
        );
    }
    // Build every contender's policies once now: a bad choice fails here, not in every run.
    for c in &contenders {
        c.host
            .build_cpu_policy()
            .and_then(|_| c.host.build_memory_policy())
            .map_err(|e| anyhow::anyhow!("{}: {e}", c.label))?;
    }
    let jobs = jobs(args.jobs);
    // A progress bar on a terminal; nothing when stderr is a file or a pipe.
    let bar = ProgressBar::new((scenarios.len() * contenders.len()) as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs, {elapsed} elapsed, ~{eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    let plan = compare::Plan {
        scenarios: &scenarios,
        contenders: &contenders,
        seeds: args.seeds as usize,
        jobs,
        threshold_mib: args.threshold_mib,
        limit: std::time::Duration::from_secs(args.run_limit_s),
        keep_records: args.plot.is_some() || args.report.is_some(),
    };
    let outcomes = compare::run_seeds(&plan, &progress);
    bar.finish_and_clear();
    let meta = Meta {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        command: command_line(),
        seeds: args.seeds as usize,
        threshold_mib: args.threshold_mib,
    };
    let study = Study::new(meta, &contenders, &outcomes);
    let text = match args.format {
        Format::Table => study::table(&study, !args.summary_only),
        Format::Json => study::json(&study) + "\n",
        Format::Csv => study::csv(&study),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    if let Some(dir) = &args.plot {
        let files = report::plots(&study, dir)
            .with_context(|| format!("writing plots into {}", dir.display()))?;
        eprintln!("wrote {} plots into {}", files.len(), dir.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&study))
            .with_context(|| format!("writing the report {}", path.display()))?;
        eprintln!("wrote the report {}", path.display());
    }
    if outcomes.iter().any(|o| o.error.is_some()) {
        bail!("some runs failed (see the table)");
    }
    Ok(())
}

/// Parallel runs: as asked, else one per CPU.
pub fn jobs(asked: Option<u32>) -> usize {
    asked.map_or_else(
        || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        },
        |j| j as usize,
    )
}

/// The command line as given, words with spaces or quotes quoted, for the record of what ran.
fn command_line() -> String {
    let words: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "vcoord".to_owned() } else { a };
            if a.is_empty() || a.contains([' ', '"', '\'', '\\']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect();
    words.join(" ")
}

/// A policy named on the command line: a plugin file if it looks like a path, else a built-in.
fn choice(spec: &str, kind: Kind) -> Result<PolicyChoice> {
    if spec.contains('/') || spec.ends_with(".so") {
        return Ok(PolicyChoice::plugin(spec, toml::Table::new()));
    }
    let names = policy_names(kind);
    if !names.contains(&spec) {
        bail!(
            "unknown {kind} policy `{spec}` (built-in: {}; a plugin file is a path with `/` or ending in .so)",
            names.join(", ")
        );
    }
    Ok(PolicyChoice::builtin(spec, toml::Table::new()))
}

fn contenders(args: &CompareArgs) -> Result<Vec<Contender>> {
    let mut out = Vec::new();
    if !args.configs.is_empty() {
        for path in &args.configs {
            let config = Config::from_file(path)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let many = config.hosts.len() > 1;
            for host in config.hosts {
                let label = if many {
                    format!("{stem}/{}", host.name)
                } else {
                    stem.clone()
                };
                out.push(Contender { label, host });
            }
        }
        return Ok(out);
    }
    let default = HostConfig::new("compare", "sim:", Path::new("."));
    let cpus: Vec<Option<&String>> = if args.cpu.is_empty() {
        vec![None]
    } else {
        args.cpu.iter().map(Some).collect()
    };
    let mems: Vec<Option<&String>> = if args.memory.is_empty() {
        vec![None]
    } else {
        args.memory.iter().map(Some).collect()
    };
    for cpu in &cpus {
        for mem in &mems {
            let mut host = default.clone();
            let mut parts = Vec::new();
            if let Some(spec) = cpu {
                host.cpu_policy = choice(spec, Kind::Cpu)?;
                if args.cpu.len() > 1 || args.memory.len() <= 1 {
                    parts.push(short(spec));
                }
            }
            if let Some(spec) = mem {
                host.memory_policy = choice(spec, Kind::Memory)?;
                if args.memory.len() > 1 || args.cpu.is_empty() {
                    parts.push(short(spec));
                }
            }
            let label = if parts.is_empty() {
                "defaults".to_owned()
            } else {
                parts.join("+")
            };
            out.push(Contender { label, host });
        }
    }
    Ok(out)
}

/// A plugin path shortened to its file stem (without `lib`), a built-in name as is.
fn short(spec: &str) -> String {
    if spec.contains('/') || spec.ends_with(".so") {
        let stem = Path::new(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_owned());
        stem.strip_prefix("lib").unwrap_or(&stem).to_owned()
    } else {
        spec.to_owned()
    }
}
