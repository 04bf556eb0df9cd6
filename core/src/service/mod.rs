//! Running as a host service: the daemon that supervises every host ([`daemon`]), the systemd
//! notify protocol ([`notify`]) and one instance per host ([`lock`]), and what it shows of
//! itself: Prometheus metrics and health ([`metrics`]), the last snapshot of each host
//! ([`status`]), served over HTTP ([`http`]). The loops report to it through
//! [`crate::runtime::Observer`]; it depends on them, never the other way.

use std::sync::Arc;

use crate::runtime::{Observer, TickReport};

pub mod daemon;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod notify;
pub mod status;

/// What the service watches each tick with: metrics and the status board.
#[derive(Clone, Debug)]
pub struct Observers {
    /// Prometheus metrics and host health.
    pub metrics: Arc<metrics::Metrics>,
    /// The last snapshot of each host.
    pub status: Arc<status::StatusBoard>,
}

impl Observers {
    /// Fresh metrics (every series labelled with `fleet_host`) and an empty status board.
    pub fn new(fleet_host: &str) -> Self {
        Self {
            metrics: Arc::new(metrics::Metrics::new(fleet_host)),
            status: Arc::new(status::StatusBoard::default()),
        }
    }
}

impl Default for Observers {
    fn default() -> Self {
        Self::new(&metrics::machine_fqdn())
    }
}

impl Observer for Observers {
    fn tick_failed(&self, host: &str) {
        self.metrics.tick_failed(host);
    }

    fn tick(&self, host: &str, r: &TickReport<'_>) {
        self.metrics.tick(r);
        // The VMs an action was held back from this tick because libvirt had them busy.
        let left_alone = r
            .record
            .rejected
            .iter()
            .filter(|x| x.reason == crate::runtime::guard::Refusal::Busy)
            .map(|x| (x.vm.clone(), x.why.clone()))
            .collect();
        self.status.update(host, r.snapshot, r.fleet, left_alone);
    }
}
