//! What `vcoord compare` makes of its runs: per scenario and contender the mean of each figure
//! over the seeds with its 95% confidence interval, paired verdicts between contenders, and a
//! summary across scenarios (won / lost / tied per figure, worst case); as a table, JSON or CSV.
//!
//! Contenders that run the same CPU policy and get the same CPU figures in every run share one
//! CPU row (likewise for memory): the memory policy does not move vCPUs, so a grid of CPU x
//! memory choices shows each CPU policy once.
//!
//! The analysis is here; [`write`] renders it.

mod write;

pub use write::{
    csv, grid, header, json, row, scenario_rows, scenario_text, show, summary_rows, table, Row,
};

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
            Some(c.ticks_to_balance.unwrap_or(o.ticks as u64) as f64)
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
        key: "worst_vm_ready_pct",
        title: "worst ready %",
        lower_is_better: true,
        doc: "CPU ready of the worst-served VM: the share of the time its vCPUs waited runnable for a pCPU, averaged over its vCPUs (as VMware's CPU ready) and over the run, percent",
        get: |o| Some(o.cpu.as_ref()?.worst_vm_ready_pct),
    },
    Metric {
        key: "host_wait_pct",
        title: "host wait %",
        lower_is_better: true,
        doc: "run-queue wait of the host's own work (processes outside the VMs), summed over the pCPUs, mean over ticks, percent of one pCPU: what host processes wanted and did not get",
        get: |o| Some(o.cpu.as_ref()?.host_wait_pct),
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
        key: "saved_pct",
        title: "saved %",
        lower_is_better: false,
        doc: "guest memory saved against no memory policy (the VMs kept at the sizes they started at), mean over the run, percent",
        get: |o| Some(o.memory.as_ref()?.saved_pct()),
    },
    Metric {
        key: "saved_of_max_pct",
        title: "of max %",
        lower_is_better: false,
        doc: "guest memory saved against the VMs' maximum sizes (what they were provisioned), mean over the run, percent",
        get: |o| Some(o.memory.as_ref()?.saved_of_max_pct()),
    },
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
        key: "below_threshold_pct",
        title: "below %",
        lower_is_better: true,
        doc: "VM-ticks with less unused memory than the threshold, percent of the VM-ticks measured",
        get: |o| Some(o.memory.as_ref()?.below_threshold_pct()),
    },
    Metric {
        key: "host_short_ticks",
        title: "host short",
        lower_is_better: true,
        doc: "ticks the host had no memory free (its guests held more than it has)",
        get: |o| Some(o.memory.as_ref()?.host_short_ticks as f64),
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
    Metric {
        key: "ksm_saved_mib",
        title: "KSM MiB",
        lower_is_better: false,
        doc: "memory KSM's merging saved on the host, mean over the run, MiB",
        get: |o| Some(o.memory.as_ref()?.ksm_saved_mib),
    },
];

pub use vcoord_api::Kind;

/// What `compare` reports of each kind.
pub trait KindExt {
    /// The figures of this kind.
    fn metrics(self) -> &'static [Metric];
    /// The contender's policy choice of this kind.
    fn choice(self, c: &Contender) -> &PolicyChoice;
}

impl KindExt for Kind {
    fn metrics(self) -> &'static [Metric] {
        match self {
            Kind::Cpu => CPU_METRICS,
            Kind::Memory => MEMORY_METRICS,
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

pub(crate) fn short_name(choice: &PolicyChoice) -> String {
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
        self.runs(scenario, 0).first().map_or(0, |o| o.ticks)
    }

    /// Fewest moves that balance a scenario's start, when known (the first seed's).
    pub fn fewest_moves(&self, scenario: &str) -> Option<usize> {
        self.outcomes
            .iter()
            .find(|o| o.scenario == scenario && o.fewest_moves.is_some())
            .and_then(|o| o.fewest_moves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostConfig;
    use crate::tools::metrics::{CpuMetrics, MemoryMetrics};
    use std::collections::BTreeMap;

    fn contender(label: &str, cpu: &str, memory: &str) -> Contender {
        let mut host = HostConfig::new(label, "sim:", std::path::Path::new("."));
        host.cpu_policy = PolicyChoice::builtin(cpu, toml::Table::new());
        host.memory_policy = PolicyChoice::builtin(memory, toml::Table::new());
        Contender {
            label: label.into(),
            host,
        }
    }

    fn cpu(moves: usize, wait: f64) -> CpuMetrics {
        CpuMetrics {
            ticks_to_balance: Some(2),
            final_stdev_pct: 1.0,
            final_demand_stdev_pct: 1.0,
            mean_stdev_after_balance_pct: Some(1.0),
            fairness_pct: 50.0,
            vcpu_moves: moves,
            vcpu_moves_after_balance: 0,
            pcpu_set_changes: moves,
            pcpu_set_changes_after_balance: 0,
            mean_wait_pct: wait,
            worst_vm_ready_pct: wait,
            host_wait_pct: 0.0,
        }
    }

    fn memory() -> MemoryMetrics {
        MemoryMetrics {
            oom_events: 0,
            swap_out_mib: 0.0,
            vm_ticks_below_threshold: 0,
            vm_ticks: 100,
            host_short_ticks: 0,
            longest_below_threshold_ticks: 0,
            lowest_unused_mib: BTreeMap::from([("vm".to_string(), 150.0)]),
            lowest_guest_free_mib: 1000.0,
            lowest_host_free_mib: 1000.0,
            moved_mib: 100.0,
            committed_mib: 900.0,
            ksm_saved_mib: 0.0,
            unmanaged_mib: 1000.0,
            provisioned_mib: 2000.0,
        }
    }

    /// Runs of `label` on `scenario`: one a seed, its vCPU moves and a wait that differs by
    /// seed (so the paired test has a spread to work with).
    fn runs(scenario: &str, label: &str, moves: usize, wait: f64) -> Vec<Outcome> {
        (0..5)
            .map(|seed| Outcome {
                scenario: scenario.into(),
                policy: label.into(),
                seed,
                error: None,
                cpu: Some(cpu(moves + (seed as usize % 2), wait + seed as f64)),
                memory: Some(memory()),
                fewest_moves: Some(4),
                ticks: 10,
                records: Vec::new(),
            })
            .collect()
    }

    fn meta() -> Meta {
        Meta {
            version: "test".into(),
            command: "compare".into(),
            seeds: 5,
            threshold_mib: 100.0,
        }
    }

    #[test]
    fn rows_merge_what_ran_alike_and_tallies_count_significant_differences_only() {
        let contenders = [
            contender("a", "stable-balance", "pressure-balloon"),
            contender("b", "greedy-lpt", "pressure-balloon"),
        ];
        let mut outcomes = Vec::new();
        // s1: a moves 4-5 vCPUs, b 8-9, same wait: a wins on moves, ties on wait.
        outcomes.extend(runs("s1", "a", 4, 10.0));
        outcomes.extend(runs("s1", "b", 8, 10.0));
        // s2: alike on every figure.
        outcomes.extend(runs("s2", "a", 4, 20.0));
        outcomes.extend(runs("s2", "b", 4, 20.0));
        let study = Study::new(meta(), &contenders, &outcomes);
        assert_eq!(study.scenarios, ["s1", "s2"]);
        // Two CPU rows; one memory row (same choice, same figures in every run).
        assert_eq!(study.cpu.len(), 2);
        assert_eq!(study.memory.len(), 1);
        assert_eq!(study.memory[0].members, [0, 1]);

        let moves = CPU_METRICS
            .iter()
            .position(|m| m.key == "vcpu_moves")
            .unwrap();
        let wait = CPU_METRICS
            .iter()
            .position(|m| m.key == "mean_wait_pct")
            .unwrap();
        let tallies = study.tallies(Kind::Cpu);
        let (a, b) = (&tallies[0][moves], &tallies[1][moves]);
        assert_eq!((a.won, a.lost, a.tied), (1, 0, 1));
        assert_eq!((b.won, b.lost, b.tied), (0, 1, 1));
        assert_eq!(b.worst_scenario.as_deref(), Some("s1"));
        // The wait never differs between rows: tied everywhere; its worst is s2 (the higher).
        let w = &tallies[0][wait];
        assert_eq!((w.won, w.lost, w.tied), (0, 0, 2));
        assert_eq!(w.worst_scenario.as_deref(), Some("s2"));
        assert_eq!(
            study.differences("s1", Kind::Cpu, &CPU_METRICS[moves]),
            [(0, vec![1])]
        );
        assert!(study
            .differences("s2", Kind::Cpu, &CPU_METRICS[moves])
            .is_empty());
    }
}
