//! What `vcoord compare` makes of its runs: per scenario and contender the mean of each figure
//! over the seeds with its 95% confidence interval, paired verdicts between contenders, and a
//! summary across scenarios (won / lost / tied per figure, worst case); as a table, JSON or CSV.
//!
//! Contenders that run the same CPU policy and get the same CPU figures in every run share one
//! CPU row (likewise for memory): the memory policy does not move vCPUs, so a grid of CPU x
//! memory choices shows each CPU policy once.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::PolicyChoice;
use crate::tools::compare::{Contender, Outcome};
use crate::tools::stats::{paired, Estimate, Verdict};

/// What describes a comparison besides its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    /// vcoord's version.
    pub version: String,
    /// The command line, as given.
    pub command: String,
    /// Seeds per scenario and contender.
    pub seeds: usize,
    /// Unused memory a VM should keep, for the memory figures.
    pub threshold_mib: f64,
}

/// The test behind the verdicts, as said in every output.
pub const TEST: &str = "paired t-test on the per-seed differences, two-sided, 5% level";

/// One figure of merit.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// Key in JSON and CSV.
    pub key: &'static str,
    /// Column title in tables.
    pub title: &'static str,
    /// Whether less is better.
    pub lower_is_better: bool,
    /// What it means, for the report.
    pub doc: &'static str,
    get: fn(&Outcome) -> Option<f64>,
}

impl Metric {
    /// The figure of one run (`None` when the run failed).
    pub fn of(&self, o: &Outcome) -> Option<f64> {
        (self.get)(o)
    }
}

/// CPU figures, in table order.
pub const CPU_METRICS: &[Metric] = &[
    Metric {
        key: "ticks_to_balance",
        title: "balanced@",
        lower_is_better: true,
        doc: "tick from which the demand stdev stays within 5 points (a run that never balances counts its length)",
        get: |o| {
            let c = o.cpu.as_ref()?;
            Some(c.ticks_to_balance.unwrap_or(o.records.len() as u64) as f64)
        },
    },
    Metric {
        key: "vcpu_moves",
        title: "moves",
        lower_is_better: true,
        doc: "vCPU pin changes",
        get: |o| Some(o.cpu.as_ref()?.vcpu_moves as f64),
    },
    Metric {
        key: "vcpu_moves_after_balance",
        title: "after",
        lower_is_better: true,
        doc: "vCPU pin changes from the balance tick on",
        get: |o| Some(o.cpu.as_ref()?.vcpu_moves_after_balance as f64),
    },
    Metric {
        key: "demand_stdev_pct",
        title: "demand sd",
        lower_is_better: true,
        doc: "mean stdev of the pCPUs' demand (utilization + run-queue wait) from balance on, points",
        get: |o| {
            let c = o.cpu.as_ref()?;
            Some(
                c.mean_stdev_after_balance_pct
                    .unwrap_or(c.final_demand_stdev_pct),
            )
        },
    },
    Metric {
        key: "mean_wait_pct",
        title: "wait %",
        lower_is_better: true,
        doc: "mean run-queue wait of the vCPUs (demand left unmet), percent",
        get: |o| Some(o.cpu.as_ref()?.mean_wait_pct),
    },
    Metric {
        key: "fairness_pct",
        title: "fair %",
        lower_is_better: false,
        doc: "share of its demand the worst-served busy vCPU got, mean over ticks, percent",
        get: |o| Some(o.cpu.as_ref()?.fairness_pct),
    },
];

/// Memory figures, in table order.
pub const MEMORY_METRICS: &[Metric] = &[
    Metric {
        key: "oom_events",
        title: "OOM",
        lower_is_better: true,
        doc: "guest OOM kills",
        get: |o| Some(o.memory.as_ref()?.oom_events as f64),
    },
    Metric {
        key: "vm_ticks_below_threshold",
        title: "below thr",
        lower_is_better: true,
        doc: "VM-ticks with less unused memory than the threshold",
        get: |o| Some(o.memory.as_ref()?.vm_ticks_below_threshold as f64),
    },
    Metric {
        key: "lowest_unused_mib",
        title: "lowest MiB",
        lower_is_better: false,
        doc: "lowest unused memory of any VM, MiB",
        get: |o| {
            o.memory
                .as_ref()?
                .lowest_unused_mib
                .values()
                .copied()
                .reduce(f64::min)
        },
    },
    Metric {
        key: "swap_out_mib",
        title: "swap MiB",
        lower_is_better: true,
        doc: "guest swap-out, MiB",
        get: |o| Some(o.memory.as_ref()?.swap_out_mib),
    },
    Metric {
        key: "moved_mib",
        title: "moved MiB",
        lower_is_better: true,
        doc: "memory moved by ballooning, MiB",
        get: |o| Some(o.memory.as_ref()?.moved_mib),
    },
];

/// CPU or memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// CPU policies and figures.
    Cpu,
    /// Memory policies and figures.
    Memory,
}

impl Kind {
    /// The figures of this kind.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Kind::Cpu => CPU_METRICS,
            Kind::Memory => MEMORY_METRICS,
        }
    }

    /// Table heading.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Cpu => "CPU",
            Kind::Memory => "memory",
        }
    }

    fn choice(self, c: &Contender) -> &PolicyChoice {
        match self {
            Kind::Cpu => &c.host.cpu_policy,
            Kind::Memory => &c.host.memory_policy,
        }
    }
}

/// Contenders shown as one row of a kind: the same policy choice and the same figures in
/// every run.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// Row label.
    pub label: String,
    /// Indices of the contenders in it.
    pub members: Vec<usize>,
}

/// Won, lost and tied scenarios of one row on one figure, and its worst scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Scenarios where it was significantly better than another row and worse than none.
    pub won: usize,
    /// Scenarios where it was significantly worse than another row.
    pub lost: usize,
    /// The rest.
    pub tied: usize,
    /// Its worst scenario mean.
    pub worst: Option<f64>,
    /// The scenario of the worst mean.
    pub worst_scenario: Option<String>,
}

/// How a row did in one scenario on one figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Won,
    Lost,
    Tied,
}

/// The runs of a comparison, analysed.
pub struct Study<'a> {
    /// What was run and how.
    pub meta: Meta,
    /// The contenders.
    pub contenders: &'a [Contender],
    /// Every run.
    pub outcomes: &'a [Outcome],
    /// Scenario names, in order.
    pub scenarios: Vec<String>,
    /// CPU rows.
    pub cpu: Vec<Group>,
    /// Memory rows.
    pub memory: Vec<Group>,
}

/// A policy choice in a few words: its name (a plugin by file stem) and its parameters.
pub fn describe(choice: &PolicyChoice) -> String {
    let name = short_name(choice);
    if choice.params.is_empty() {
        return name;
    }
    let params: Vec<String> = choice
        .params
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{name} {{ {} }}", params.join(", "))
}

fn short_name(choice: &PolicyChoice) -> String {
    match &choice.plugin {
        Some(_) => {
            let stem = std::path::Path::new(&choice.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| choice.name.clone());
            stem.strip_prefix("lib").unwrap_or(&stem).to_owned()
        }
        None => choice.name.clone(),
    }
}

/// Whether two choices run the same policy the same way (where they were written aside).
fn same_choice(a: &PolicyChoice, b: &PolicyChoice) -> bool {
    a.name == b.name && a.plugin == b.plugin && a.params == b.params
}

impl<'a> Study<'a> {
    /// Analyses `outcomes` (as [`crate::tools::compare::run_seeds`] returns them).
    pub fn new(meta: Meta, contenders: &'a [Contender], outcomes: &'a [Outcome]) -> Self {
        let mut scenarios: Vec<String> = Vec::new();
        for o in outcomes {
            if !scenarios.contains(&o.scenario) {
                scenarios.push(o.scenario.clone());
            }
        }
        let mut study = Self {
            meta,
            contenders,
            outcomes,
            scenarios,
            cpu: Vec::new(),
            memory: Vec::new(),
        };
        study.cpu = study.group(Kind::Cpu);
        study.memory = study.group(Kind::Memory);
        study
    }

    /// The rows of a kind.
    pub fn groups(&self, kind: Kind) -> &[Group] {
        match kind {
            Kind::Cpu => &self.cpu,
            Kind::Memory => &self.memory,
        }
    }

    fn group(&self, kind: Kind) -> Vec<Group> {
        // Every figure of every run of a contender, to tell identical results.
        let figures = |i: usize| -> Vec<Option<f64>> {
            self.outcomes
                .iter()
                .filter(|o| o.policy == self.contenders[i].label)
                .flat_map(|o| kind.metrics().iter().map(move |m| m.of(o)))
                .collect()
        };
        let mut groups: Vec<Group> = Vec::new();
        for i in 0..self.contenders.len() {
            let mine = figures(i);
            let home = groups.iter_mut().find(|g| {
                let first = g.members[0];
                same_choice(
                    kind.choice(&self.contenders[first]),
                    kind.choice(&self.contenders[i]),
                ) && figures(first) == mine
            });
            match home {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    label: String::new(),
                    members: vec![i],
                }),
            }
        }
        for g in &mut groups {
            g.label = match g.members.as_slice() {
                [one] => self.contenders[*one].label.clone(),
                many => format!(
                    "{} (x{})",
                    short_name(kind.choice(&self.contenders[many[0]])),
                    many.len()
                ),
            };
        }
        // Two rows of the same name: say which contenders each stands for.
        let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
        for g in &mut groups {
            if labels.iter().filter(|l| **l == g.label).count() > 1 {
                let names: Vec<&str> = g
                    .members
                    .iter()
                    .map(|&i| self.contenders[i].label.as_str())
                    .collect();
                g.label = names.join(", ");
            }
        }
        groups
    }

    /// The runs of a contender on a scenario, in seed order.
    pub fn runs(&self, scenario: &str, contender: usize) -> Vec<&Outcome> {
        let label = &self.contenders[contender].label;
        self.outcomes
            .iter()
            .filter(|o| o.scenario == scenario && &o.policy == label)
            .collect()
    }

    /// The seeds a scenario ran under.
    pub fn seeds(&self, scenario: &str) -> Vec<u64> {
        self.runs(scenario, 0).iter().map(|o| o.seed).collect()
    }

    /// Why a row's runs on a scenario failed, if one did.
    pub fn failure(&self, scenario: &str, group: &Group) -> Option<String> {
        self.runs(scenario, group.members[0])
            .iter()
            .find_map(|o| o.error.clone())
    }

    /// A row's figure on a scenario, one value per seed; `None` if a run failed or the figure
    /// does not apply.
    pub fn values(&self, scenario: &str, group: &Group, metric: &Metric) -> Option<Vec<f64>> {
        let runs = self.runs(scenario, group.members[0]);
        if runs.is_empty() {
            return None;
        }
        runs.iter().map(|o| metric.of(o)).collect()
    }

    /// A row's mean and interval on a scenario.
    pub fn estimate(&self, scenario: &str, group: &Group, metric: &Metric) -> Option<Estimate> {
        Estimate::of(&self.values(scenario, group, metric)?)
    }

    /// Row `a` against row `b` on a scenario's figure; `None` when either has no value.
    pub fn verdict(
        &self,
        scenario: &str,
        kind: Kind,
        a: usize,
        b: usize,
        metric: &Metric,
    ) -> Option<Verdict> {
        let groups = self.groups(kind);
        let x = self.values(scenario, &groups[a], metric)?;
        let y = self.values(scenario, &groups[b], metric)?;
        Some(paired(&x, &y, metric.lower_is_better))
    }

    fn standing(&self, scenario: &str, kind: Kind, g: usize, metric: &Metric) -> Standing {
        let (mut better, mut worse) = (false, false);
        for other in (0..self.groups(kind).len()).filter(|&o| o != g) {
            match self.verdict(scenario, kind, g, other, metric) {
                Some(Verdict::Better) => better = true,
                Some(Verdict::Worse) => worse = true,
                _ => {}
            }
        }
        match (better, worse) {
            (_, true) => Standing::Lost,
            (true, false) => Standing::Won,
            _ => Standing::Tied,
        }
    }

    /// Each row's tally on each figure of a kind, over all scenarios.
    pub fn tallies(&self, kind: Kind) -> Vec<Vec<Tally>> {
        let groups = self.groups(kind);
        (0..groups.len())
            .map(|g| {
                kind.metrics()
                    .iter()
                    .map(|m| {
                        let mut t = Tally::default();
                        for s in &self.scenarios {
                            let Some(e) = self.estimate(s, &groups[g], m) else {
                                continue;
                            };
                            match self.standing(s, kind, g, m) {
                                Standing::Won => t.won += 1,
                                Standing::Lost => t.lost += 1,
                                Standing::Tied => t.tied += 1,
                            }
                            let worse = t.worst.is_none_or(|w| {
                                if m.lower_is_better {
                                    e.mean > w
                                } else {
                                    e.mean < w
                                }
                            });
                            if worse {
                                t.worst = Some(e.mean);
                                t.worst_scenario = Some(s.clone());
                            }
                        }
                        t
                    })
                    .collect()
            })
            .collect()
    }

    /// The significant differences of a scenario's figure: (winner, losers) by row index.
    pub fn differences(
        &self,
        scenario: &str,
        kind: Kind,
        metric: &Metric,
    ) -> Vec<(usize, Vec<usize>)> {
        let n = self.groups(kind).len();
        (0..n)
            .filter_map(|a| {
                let beaten: Vec<usize> = (0..n)
                    .filter(|&b| {
                        b != a
                            && self.verdict(scenario, kind, a, b, metric) == Some(Verdict::Better)
                    })
                    .collect();
                (!beaten.is_empty()).then_some((a, beaten))
            })
            .collect()
    }

    /// What the verdicts are based on, in a line.
    pub fn method(&self) -> String {
        if self.meta.seeds < 2 {
            "one seed per run: any difference is shown, none is tested (use --seeds 5 or more for \
             confidence intervals and tested verdicts)"
                .to_owned()
        } else {
            format!(
                "{} seeds per run (each scenario's own seed and the next ones); mean ±95% confidence \
                 interval (Student's t); verdicts: {TEST}",
                self.meta.seeds
            )
        }
    }

    /// Ticks of a scenario's runs.
    pub fn ticks(&self, scenario: &str) -> usize {
        self.runs(scenario, 0)
            .first()
            .map_or(0, |o| o.records.len())
    }

    /// Fewest moves that balance a scenario's start, when known (the first seed's).
    pub fn fewest_moves(&self, scenario: &str) -> Option<usize> {
        self.outcomes
            .iter()
            .find(|o| o.scenario == scenario && o.fewest_moves.is_some())
            .and_then(|o| o.fewest_moves)
    }
}

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
    std::iter::once(kind.title().to_owned())
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
    for (kind, t) in [Kind::Cpu, Kind::Memory].into_iter().zip(&tallies) {
        out.push_str(&grid(&header(kind), &summary_rows(study, kind, t)));
    }
    let _ = writeln!(out, "worst case (the worst scenario mean of each figure):");
    for (kind, tallies) in [Kind::Cpu, Kind::Memory].into_iter().zip(&tallies) {
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
            let _ = writeln!(out, "  {} {}: {}", kind.title(), g.label, parts.join(", "));
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
    for kind in [Kind::Cpu, Kind::Memory] {
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
