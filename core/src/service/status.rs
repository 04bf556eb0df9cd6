//! What each host saw at its last tick, served at `/status.json` and shown by `vcoord status`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::runtime::fleet::FleetSignals;
use crate::runtime::snapshot::Snapshot;

/// The status of some hosts: what `/status.json` serves and `vcoord status --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// One entry per host, by name.
    pub hosts: Vec<HostStatus>,
    /// Hosts that stopped on an error, by name, with why (until a reload starts or removes
    /// them).
    #[serde(default)]
    pub failed: Vec<FailedHost>,
}

/// A host that stopped on an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedHost {
    /// Host name.
    pub host: String,
    /// Why it stopped.
    pub error: String,
}

/// One host's last snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Host name (or the URI sampled).
    pub host: String,
    /// The interval the loads are measured over, seconds.
    pub window_s: f64,
    /// What the host saw.
    pub snapshot: Snapshot,
    /// What a fleet balancer needs of it: contention, deficits, relief.
    #[serde(default)]
    pub fleet: FleetSignals,
    /// VMs vcoord leaves alone for now (paused, shut off, or in a libvirt job), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub left_alone: BTreeMap<String, String>,
}

/// The daemon's latest view of every host.
#[derive(Debug, Default)]
pub struct StatusBoard {
    hosts: Mutex<BTreeMap<String, HostStatus>>,
    failed: Mutex<BTreeMap<String, String>>,
}

impl StatusBoard {
    /// Records `host`'s latest snapshot.
    pub fn update(
        &self,
        host: &str,
        snapshot: &Snapshot,
        fleet: &FleetSignals,
        left_alone: BTreeMap<String, String>,
    ) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(
                host.to_owned(),
                HostStatus {
                    host: host.to_owned(),
                    window_s: snapshot.interval_s(),
                    snapshot: snapshot.clone(),
                    fleet: fleet.clone(),
                    left_alone,
                },
            );
        }
    }

    /// Forgets `host`.
    pub fn remove(&self, host: &str) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.remove(host);
        }
        if let Ok(mut failed) = self.failed.lock() {
            failed.remove(host);
        }
    }

    /// `host` stopped on an error: listed among the failed, its last snapshot gone.
    pub fn fail(&self, host: &str, error: &str) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.remove(host);
        }
        if let Ok(mut failed) = self.failed.lock() {
            failed.insert(host.to_owned(), error.to_owned());
        }
    }

    /// The document, as JSON.
    pub fn to_json(&self) -> String {
        let hosts = self
            .hosts
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        let failed = self
            .failed
            .lock()
            .map(|f| {
                f.iter()
                    .map(|(host, error)| FailedHost {
                        host: host.clone(),
                        error: error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::to_string(&StatusDocument { hosts, failed }).unwrap_or_default()
    }
}
