//! A study rendered: the table `compare` prints, its JSON and its CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{describe, short_name, Kind, KindExt, Study, Tally, CPU_METRICS, MEMORY_METRICS, TEST};
use crate::config::PolicyChoice;
use crate::tools::compare::{Contender, Outcome};
use crate::tools::stats::Estimate;

/// A figure for a table: an integer as such with one seed, else one decimal (and the
/// interval).
pub fn show(e: &Estimate) -> String {
    if e.ci95.is_none() && (e.mean - e.mean.round()).abs() < 1e-9 {
        format!("{:.0}", e.mean)
    } else {
        e.show(1)
    }
}

/// Columns padded: the first left-aligned, the others right-aligned, two spaces of indent.
pub fn grid(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .chain(std::iter::once(&header[c]))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let mut out = String::from(" ");
        for (c, cell) in cells.iter().enumerate() {
            let pad = width[c].saturating_sub(cell.chars().count());
            if c == 0 {
                let _ = write!(out, " {cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Rows of the summary table of a kind: per row, won/lost/tied of each figure.
pub fn summary_rows(study: &Study, kind: Kind, tallies: &[Vec<Tally>]) -> Vec<Vec<String>> {
    study
        .groups(kind)
        .iter()
        .zip(tallies)
        .map(|(g, t)| {
            std::iter::once(g.label.clone())
                .chain(t.iter().map(|t| format!("{}/{}/{}", t.won, t.lost, t.tied)))
                .collect()
        })
        .collect()
}

/// Rows of a scenario's table of a kind: per row its figures (mean ±interval), or why its runs
/// failed.
pub fn scenario_rows(study: &Study, scenario: &str, kind: Kind) -> Vec<Vec<String>> {
    study
        .groups(kind)
        .iter()
        .map(|g| match study.failure(scenario, g) {
            Some(e) => vec![g.label.clone(), format!("failed: {e}")],
            None => std::iter::once(g.label.clone())
                .chain(kind.metrics().iter().map(|m| {
                    study
                        .estimate(scenario, g, m)
                        .map_or("-".to_owned(), |e| show(&e))
                }))
                .collect(),
        })
        .collect()
}

/// A table's header row: the kind, then each figure's title.
pub fn header(kind: Kind) -> Vec<String> {
    std::iter::once(kind.to_string())
        .chain(kind.metrics().iter().map(|m| m.title.to_owned()))
        .collect()
}

/// The human-readable report: the summary across scenarios first, then (with `detail`) per
/// scenario a CPU and a memory table and the significant differences.
pub fn table(study: &Study, detail: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vcoord {} compare: {} scenario(s) x {} contender(s) x {} seed(s)",
        study.meta.version,
        study.scenarios.len(),
        study.contenders.len(),
        study.meta.seeds
    );
    for c in study.contenders {
        let _ = writeln!(
            out,
            "  {}: {} + {}",
            c.label,
            describe(&c.host.cpu_policy),
            describe(&c.host.memory_policy)
        );
    }
    let _ = writeln!(out, "{}\n", study.method());
    let _ = writeln!(
        out,
        "== summary over {} scenario(s): won/lost/tied per figure",
        study.scenarios.len()
    );
    let tallies = [study.tallies(Kind::Cpu), study.tallies(Kind::Memory)];
    for (kind, t) in Kind::ALL.into_iter().zip(&tallies) {
        out.push_str(&grid(&header(kind), &summary_rows(study, kind, t)));
    }
    let _ = writeln!(out, "worst case (the worst scenario mean of each figure):");
    for (kind, tallies) in Kind::ALL.into_iter().zip(&tallies) {
        for (g, t) in study.groups(kind).iter().zip(tallies) {
            let parts: Vec<String> = kind
                .metrics()
                .iter()
                .zip(t)
                .filter_map(|(m, t)| {
                    Some(format!(
                        "{} {} ({})",
                        m.title,
                        show(&Estimate {
                            mean: t.worst?,
                            ci95: None,
                            n: 1
                        }),
                        t.worst_scenario.as_deref()?
                    ))
                })
                .collect();
            let _ = writeln!(out, "  {} {}: {}", kind, g.label, parts.join(", "));
        }
    }
    if detail {
        out.push('\n');
        for s in &study.scenarios {
            out.push_str(&scenario_text(study, s));
        }
    }
    out
}

fn seed_text(seeds: &[u64]) -> String {
    match seeds {
        [] => String::new(),
        [one] => format!("seed {one}"),
        [first, .., last] if *last == first + seeds.len() as u64 - 1 => {
            format!("seeds {first}..{last}")
        }
        many => format!(
            "seeds {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// One scenario's tables and differences.
pub fn scenario_text(study: &Study, scenario: &str) -> String {
    let mut out = String::new();
    let fewest = study.fewest_moves(scenario).map_or(String::new(), |f| {
        format!("; fewest moves to balance the start: {f}")
    });
    let _ = writeln!(
        out,
        "== {scenario} ({} ticks; {}{fewest})",
        study.ticks(scenario),
        seed_text(&study.seeds(scenario))
    );
    for kind in Kind::ALL {
        let groups = study.groups(kind);
        out.push_str(&grid(&header(kind), &scenario_rows(study, scenario, kind)));
        for m in kind.metrics() {
            let diffs = study.differences(scenario, kind, m);
            if diffs.is_empty() {
                continue;
            }
            let said: Vec<String> = diffs
                .iter()
                .map(|(w, losers)| {
                    let names: Vec<&str> =
                        losers.iter().map(|&l| groups[l].label.as_str()).collect();
                    format!("{} better than {}", groups[*w].label, names.join(", "))
                })
                .collect();
            let _ = writeln!(out, "    {}: {}", m.title, said.join("; "));
        }
    }
    out.push('\n');
    out
}

/// One run as a flat row, for JSON and CSV (units in the names).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Contender label.
    pub policy: String,
    /// Noise seed.
    pub seed: u64,
    /// Error, when the run failed.
    pub error: Option<String>,
    /// Every figure by key (`None` when it does not apply or the run failed).
    #[serde(flatten)]
    pub figures: BTreeMap<&'static str, Option<f64>>,
    /// Fewest moves that balance the start (exact, small instances).
    pub fewest_moves: Option<usize>,
    /// pCPU utilization stdev at the last tick.
    pub final_stdev_pct: Option<f64>,
    /// VM with the lowest unused memory.
    pub lowest_unused_vm: Option<String>,
    /// Lowest free host memory.
    pub lowest_host_free_mib: Option<f64>,
    /// Lowest memory grantable to guests.
    pub lowest_guest_free_mib: Option<f64>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One run's row.
pub fn row(o: &Outcome) -> Row {
    let figures = CPU_METRICS
        .iter()
        .chain(MEMORY_METRICS)
        .map(|m| (m.key, m.of(o).map(round2)))
        .collect();
    let mem = o.memory.as_ref();
    Row {
        scenario: o.scenario.clone(),
        policy: o.policy.clone(),
        seed: o.seed,
        error: o.error.clone(),
        figures,
        fewest_moves: o.fewest_moves,
        final_stdev_pct: o.cpu.as_ref().map(|c| round2(c.final_stdev_pct)),
        lowest_unused_vm: mem.and_then(|m| {
            m.lowest_unused_mib
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(vm, _)| vm.clone())
        }),
        lowest_host_free_mib: mem.map(|m| round2(m.lowest_host_free_mib)),
        lowest_guest_free_mib: mem.map(|m| round2(m.lowest_guest_free_mib)),
    }
}

/// A contender as JSON: its label, policies and parameters.
fn contender_json(c: &Contender) -> serde_json::Value {
    let choice = |p: &PolicyChoice| {
        serde_json::json!({
            "name": short_name(p),
            "plugin": p.plugin.as_ref().map(|_| p.name.clone()),
            "params": serde_json::to_value(&p.params).unwrap_or_default(),
        })
    };
    serde_json::json!({
        "label": c.label,
        "cpu_policy": choice(&c.host.cpu_policy),
        "memory_policy": choice(&c.host.memory_policy),
    })
}

/// Everything as one JSON document: what was run (version, command, seeds, contenders with
/// their parameters, the test), every run, the per-scenario estimates and verdicts, and the
/// summary.
pub fn json(study: &Study) -> String {
    let estimates = |s: &str, kind: Kind| -> serde_json::Value {
        let groups = study.groups(kind);
        serde_json::Value::Array(
            groups
                .iter()
                .map(|g| {
                    let figures: serde_json::Map<String, serde_json::Value> = kind
                        .metrics()
                        .iter()
                        .map(|m| {
                            let e = study.estimate(s, g, m);
                            (m.key.to_owned(), serde_json::to_value(e).unwrap_or_default())
                        })
                        .collect();
                    let better_than: serde_json::Map<String, serde_json::Value> = kind
                        .metrics()
                        .iter()
                        .map(|m| {
                            let me = groups.iter().position(|x| x.label == g.label).unwrap_or(0);
                            let beaten: Vec<&str> = study
                                .differences(s, kind, m)
                                .into_iter()
                                .filter(|(w, _)| *w == me)
                                .flat_map(|(_, l)| l.into_iter().map(|l| groups[l].label.as_str()))
                                .collect();
                            (m.key.to_owned(), serde_json::json!(beaten))
                        })
                        .collect();
                    serde_json::json!({
                        "row": g.label,
                        "contenders": g.members.iter().map(|&i| &study.contenders[i].label).collect::<Vec<_>>(),
                        "error": study.failure(s, g),
                        "figures": figures,
                        "better_than": better_than,
                    })
                })
                .collect(),
        )
    };
    let summary = |kind: Kind| -> serde_json::Value {
        let tallies = study.tallies(kind);
        serde_json::Value::Array(
            study
                .groups(kind)
                .iter()
                .zip(tallies)
                .map(|(g, t)| {
                    let figures: serde_json::Map<String, serde_json::Value> = kind
                        .metrics()
                        .iter()
                        .zip(t)
                        .map(|(m, t)| {
                            (
                                m.key.to_owned(),
                                serde_json::to_value(t).unwrap_or_default(),
                            )
                        })
                        .collect();
                    serde_json::json!({ "row": g.label, "figures": figures })
                })
                .collect(),
        )
    };
    let doc = serde_json::json!({
        "vcoord": study.meta.version,
        "command": study.meta.command,
        "seeds_per_run": study.meta.seeds,
        "threshold_mib": study.meta.threshold_mib,
        "test": TEST,
        "contenders": study.contenders.iter().map(contender_json).collect::<Vec<_>>(),
        "summary": { "cpu": summary(Kind::Cpu), "memory": summary(Kind::Memory) },
        "scenarios": study.scenarios.iter().map(|s| serde_json::json!({
            "name": s,
            "ticks": study.ticks(s),
            "seeds": study.seeds(s),
            "fewest_moves": study.fewest_moves(s),
            "cpu": estimates(s, Kind::Cpu),
            "memory": estimates(s, Kind::Memory),
        })).collect::<Vec<_>>(),
        "runs": study.outcomes.iter().map(row).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// CSV columns: what was run, then every figure.
fn columns() -> Vec<&'static str> {
    let mut cols = vec![
        "vcoord_version",
        "scenario",
        "policy",
        "seed",
        "cpu_policy",
        "memory_policy",
        "error",
    ];
    cols.extend(CPU_METRICS.iter().chain(MEMORY_METRICS).map(|m| m.key));
    cols.extend([
        "fewest_moves",
        "final_stdev_pct",
        "lowest_unused_vm",
        "lowest_host_free_mib",
        "lowest_guest_free_mib",
    ]);
    cols
}

/// One line per run, with a header line; each row says the version, the seed and the
/// policies with their parameters.
pub fn csv(study: &Study) -> String {
    let cell = |v: &serde_json::Value| -> String {
        let text = match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let cols = columns();
    let mut out = cols.join(",");
    out.push('\n');
    for o in study.outcomes {
        let mut row = serde_json::to_value(row(o)).unwrap_or_default();
        if let Some(c) = study.contenders.iter().find(|c| c.label == o.policy) {
            row["cpu_policy"] = describe(&c.host.cpu_policy).into();
            row["memory_policy"] = describe(&c.host.memory_policy).into();
        }
        row["vcoord_version"] = study.meta.version.clone().into();
        let cells: Vec<String> = cols.iter().map(|k| cell(&row[*k])).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
