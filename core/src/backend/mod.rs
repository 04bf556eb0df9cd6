//! Where samples come from and where actions go. The backend is chosen by the host's URI:
//! `sim:<scenario.toml>` for the embedded simulator, anything else is a libvirt URI.

pub mod libvirt;
pub mod sim;

use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::backend::sim::{ScenarioError, SimBackend};
use crate::cpuset::CpuSet;
use crate::model::Sample;

/// A failure of one backend operation, naming what it was about.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The domain is gone (destroyed or shut down mid-tick).
    #[error("domain {vm}: no longer exists")]
    VmGone {
        /// Domain name.
        vm: String,
    },
    /// The hypervisor refused an operation on a domain.
    #[error("domain {vm}: {op} refused: {message}")]
    Refused {
        /// Domain name.
        vm: String,
        /// What was attempted.
        op: &'static str,
        /// What the hypervisor said.
        message: String,
    },
    /// The connection to the hypervisor failed or was lost.
    #[error("connection to {uri}: {message}")]
    Connection {
        /// URI of the connection.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// The simulator scenario could not be loaded.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// What the backend reported cannot be true (a VM listed twice, say).
    #[error(transparent)]
    Inconsistent(#[from] crate::runtime::snapshot::InvalidSnapshot),
}

/// Counters of what the backend did during the last tick (for cost accounting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCalls {
    /// Calls made to the hypervisor API while sampling.
    pub sample_calls: u32,
    /// Calls made to the hypervisor API while actuating.
    pub actuate_calls: u32,
}

/// Sleeps for `duration`, uninterrupted (for callers with no stop to watch).
pub fn plain_sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// A source of samples and a sink of actions for one host.
pub trait Backend: Send {
    /// A short description (URI and what it drives) for logs.
    fn describe(&self) -> String;

    /// Samples the host and all running VMs now.
    fn sample(&mut self) -> Result<Sample, BackendError>;

    /// Lets the given vCPU run only on `cpus` (live).
    fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError>;

    /// Sets the VM's balloon target (live).
    fn set_balloon_target(&mut self, vm: &str, target_kib: u64) -> Result<(), BackendError>;

    /// Asks the guest to report memory statistics every `period_s` seconds.
    fn set_memory_stats_period(&mut self, vm: &str, period_s: u32) -> Result<(), BackendError>;

    /// Lets `interval` pass before the next tick: a real backend sleeps (through `sleep`, which
    /// the daemon cuts short on a stop request); the simulator advances its virtual clock.
    fn wait(&mut self, interval: Duration, sleep: &dyn Fn(Duration));

    /// True when the backend has nothing more to show (the end of a simulated scenario).
    fn finished(&self) -> bool {
        false
    }

    /// Hypervisor calls made since the last call of this method.
    fn take_calls(&mut self) -> BackendCalls {
        BackendCalls::default()
    }
}

/// Options of a backend that come from the host configuration.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Run the simulator in real time instead of as fast as possible.
    pub realtime: bool,
    /// The simulator's noise seed instead of the scenario's.
    pub sim_seed: Option<u64>,
    /// How a libvirt host is sampled.
    pub libvirt: libvirt::LibvirtOptions,
}

/// Opens the backend a URI names. `base_dir` resolves a relative scenario path (the directory
/// of the configuration file).
pub fn open(
    uri: &str,
    base_dir: &Path,
    options: &BackendOptions,
) -> Result<Box<dyn Backend>, BackendError> {
    match uri.strip_prefix("sim:") {
        Some(path) => {
            let mut scenario = sim::Scenario::from_file(&base_dir.join(path))?;
            if let Some(seed) = options.sim_seed {
                scenario.seed = seed;
            }
            Ok(Box::new(SimBackend::new(scenario, options.realtime)))
        }
        None => Ok(Box::new(libvirt::LibvirtBackend::connect_with(
            uri,
            &options.libvirt,
        )?)),
    }
}
