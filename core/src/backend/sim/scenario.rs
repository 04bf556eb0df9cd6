//! Simulator scenarios: a host and VMs with workloads over time, read from TOML.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::source::Located;

/// A scenario file that cannot be used, with the place and key at fault.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("scenario {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{0}")]
    Invalid(Located),
}

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// How long a run lasts unless told otherwise.
    pub duration_s: f64,
    /// Seed of the workload noise.
    #[serde(default)]
    pub seed: u64,
    /// Initial pinning of VMs that do not list their own `pins`.
    pub pinning: Option<Spanned<Pinning>>,
    /// The host.
    pub host: SimHost,
    /// The VMs.
    #[serde(rename = "vm", default)]
    pub vms: Vec<SimVm>,
}

/// Initial pinning of a scenario's VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pinning {
    /// Every vCPU may run on every pCPU.
    #[default]
    Unpinned,
    /// vCPU k (counting over all VMs in order) on pCPU k mod n.
    RoundRobin,
    /// Every vCPU on one pCPU.
    AllOn(u32),
    /// Each vCPU on a pCPU drawn from the seed.
    Random,
}

impl<'de> Deserialize<'de> for Pinning {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "unpinned" => Ok(Pinning::Unpinned),
            "round-robin" => Ok(Pinning::RoundRobin),
            "random" => Ok(Pinning::Random),
            other => other
                .strip_prefix("all-on-")
                .and_then(|n| n.parse().ok())
                .map(Pinning::AllOn)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown pinning `{other}` (expected unpinned, round-robin, random or all-on-N)"
                    ))
                }),
        }
    }
}

/// The simulated host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimHost {
    /// Number of pCPUs.
    pub pcpus: u32,
    /// SMT threads per core (pCPU ids of one core are consecutive).
    #[serde(default = "one")]
    pub threads_per_core: u32,
    /// NUMA nodes (pCPUs split evenly, in id order).
    #[serde(default = "one")]
    pub numa_nodes: u32,
    /// Host memory in total.
    pub memory_mib: u64,
    /// Memory the host itself uses, not available to guests.
    #[serde(default)]
    pub host_used_mib: u64,
    /// How fast a balloon moves toward its target.
    #[serde(default = "default_balloon_rate")]
    pub balloon_rate_mib_s: f64,
}

fn one() -> u32 {
    1
}

fn default_balloon_rate() -> f64 {
    256.0
}

/// One phase of a vCPU's demand.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuPhase {
    /// Demand in percent of one pCPU.
    pub pct: f64,
    /// How long the phase lasts; the last phase lasts forever.
    pub for_s: Option<f64>,
}

/// One phase of a guest's memory use (what its workload holds, beyond `base_used_mib`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemPhase {
    /// Hold this much at once.
    pub use_mib: Option<f64>,
    /// Grow at this rate ...
    pub grow_mib_s: Option<f64>,
    /// ... until this much is held.
    pub to_mib: Option<f64>,
    /// Keep what is held for this long.
    pub hold_s: Option<f64>,
    /// Release everything.
    #[serde(default)]
    pub free: bool,
}

/// A simulated VM (or `count` alike VMs).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimVm {
    /// Domain name; with `count` > 1, the VMs are named `<name>1`, `<name>2`, ...
    pub name: String,
    /// How many alike VMs this entry stands for.
    #[serde(default = "one")]
    pub count: u32,
    /// vCPUs per VM.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Most memory (balloon fully deflated).
    pub max_memory_mib: u64,
    /// Memory at start.
    pub memory_mib: u64,
    /// Guest memory used by its kernel and base system.
    #[serde(default = "default_base_used")]
    pub base_used_mib: f64,
    /// Guest swap space.
    #[serde(default)]
    pub swap_mib: f64,
    /// Whether the guest has a balloon driver (and so reports memory statistics).
    #[serde(default = "yes")]
    pub balloon: bool,
    /// Initial pCPU of each vCPU (overrides the scenario's `pinning`).
    pub pins: Option<Spanned<Vec<u32>>>,
    /// Demand of every vCPU over time.
    #[serde(default)]
    pub cpu: Vec<CpuPhase>,
    /// Demand per vCPU over time (overrides `cpu` for the vCPUs it lists).
    #[serde(default)]
    pub vcpu_cpu: Vec<Vec<CpuPhase>>,
    /// Random noise added to the demand each tick, in +- percent points.
    #[serde(default)]
    pub cpu_noise_pct: f64,
    /// Memory use of the workload over time.
    #[serde(default)]
    pub memory: Vec<MemPhase>,
    /// When the VM starts.
    #[serde(default)]
    pub start_s: f64,
    /// When the VM stops, if it does.
    pub stop_s: Option<f64>,
}

fn default_base_used() -> f64 {
    60.0
}

fn yes() -> bool {
    true
}

impl Scenario {
    /// Initial pinning of VMs without `pins`.
    pub fn initial_pinning(&self) -> Pinning {
        self.pinning
            .as_ref()
            .map(|p| p.get_ref().clone())
            .unwrap_or_default()
    }

    /// Reads and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates scenario text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Invalid(Located::from_toml(path, text, &e)))?;
        scenario.validate(path, text)?;
        Ok(scenario)
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ScenarioError> {
        let invalid = |span: Option<std::ops::Range<usize>>, key: &str, msg: String| {
            ScenarioError::Invalid(Located::new(path, text, span, key, msg))
        };
        if self.host.pcpus == 0 {
            return Err(invalid(None, "host.pcpus", "must be at least 1".into()));
        }
        if self.host.threads_per_core == 0
            || !self.host.pcpus.is_multiple_of(self.host.threads_per_core)
        {
            return Err(invalid(
                None,
                "host.threads_per_core",
                "must divide host.pcpus".into(),
            ));
        }
        if self.host.numa_nodes == 0 || !self.host.pcpus.is_multiple_of(self.host.numa_nodes) {
            return Err(invalid(
                None,
                "host.numa_nodes",
                "must divide host.pcpus".into(),
            ));
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return Err(invalid(None, "duration_s", "must be positive".into()));
        }
        if let Some(Pinning::AllOn(cpu)) = self.pinning.as_ref().map(|p| p.get_ref()) {
            if *cpu >= self.host.pcpus {
                return Err(invalid(
                    self.pinning.as_ref().map(|p| p.span()),
                    "pinning",
                    format!("pCPU {cpu} does not exist (host has {})", self.host.pcpus),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, vm) in self.vms.iter().enumerate() {
            let key = |k: &str| format!("vm[{i}].{k}");
            if vm.vcpus == 0 {
                return Err(invalid(None, &key("vcpus"), "must be at least 1".into()));
            }
            if vm.memory_mib > vm.max_memory_mib {
                return Err(invalid(
                    None,
                    &key("memory_mib"),
                    format!(
                        "{} exceeds max_memory_mib {}",
                        vm.memory_mib, vm.max_memory_mib
                    ),
                ));
            }
            if let Some(pins) = &vm.pins {
                if pins.get_ref().len() != vm.vcpus as usize {
                    return Err(invalid(
                        Some(pins.span()),
                        &key("pins"),
                        format!(
                            "lists {} pCPUs for {} vCPUs",
                            pins.get_ref().len(),
                            vm.vcpus
                        ),
                    ));
                }
                if let Some(bad) = pins.get_ref().iter().find(|&&c| c >= self.host.pcpus) {
                    return Err(invalid(
                        Some(pins.span()),
                        &key("pins"),
                        format!("pCPU {bad} does not exist (host has {})", self.host.pcpus),
                    ));
                }
            }
            if vm.vcpu_cpu.len() > vm.vcpus as usize {
                return Err(invalid(
                    None,
                    &key("vcpu_cpu"),
                    format!("lists {} vCPUs, the VM has {}", vm.vcpu_cpu.len(), vm.vcpus),
                ));
            }
            for phase in vm.cpu.iter().chain(vm.vcpu_cpu.iter().flatten()) {
                if !(0.0..=100.0).contains(&phase.pct) {
                    return Err(invalid(
                        None,
                        &key("cpu"),
                        format!("demand {} is outside 0..=100 percent", phase.pct),
                    ));
                }
            }
            for (j, phase) in vm.memory.iter().enumerate() {
                let set = [
                    phase.use_mib.is_some(),
                    phase.grow_mib_s.is_some(),
                    phase.hold_s.is_some(),
                    phase.free,
                ];
                if set.iter().filter(|&&s| s).count() != 1
                    || phase.grow_mib_s.is_some() != phase.to_mib.is_some()
                {
                    return Err(invalid(
                        None,
                        &key(&format!("memory[{j}]")),
                        "a phase is one of {use_mib}, {grow_mib_s, to_mib}, {hold_s} or {free = true}"
                            .into(),
                    ));
                }
            }
            for n in vm.instance_names() {
                if !names.insert(n.clone()) {
                    return Err(invalid(
                        None,
                        &key("name"),
                        format!("VM name {n} is used twice"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SimVm {
    /// Names of the VMs this entry stands for.
    pub fn instance_names(&self) -> Vec<String> {
        if self.count <= 1 {
            vec![self.name.clone()]
        } else {
            (1..=self.count)
                .map(|i| format!("{}{i}", self.name))
                .collect()
        }
    }
}
