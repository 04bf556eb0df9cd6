//! What each host saw at its last tick, served at `/status.json` and shown by `vcoord status`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::runtime::snapshot::Snapshot;

/// The status of some hosts: what `/status.json` serves and `vcoord status --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// One entry per host, by name.
    pub hosts: Vec<HostStatus>,
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
}

/// The daemon's latest view of every host.
#[derive(Debug, Default)]
pub struct StatusBoard {
    hosts: Mutex<BTreeMap<String, HostStatus>>,
}

impl StatusBoard {
    /// Records `host`'s latest snapshot.
    pub fn update(&self, host: &str, snapshot: &Snapshot) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.insert(
                host.to_owned(),
                HostStatus {
                    host: host.to_owned(),
                    window_s: snapshot.interval_s(),
                    snapshot: snapshot.clone(),
                },
            );
        }
    }

    /// Forgets `host`.
    pub fn remove(&self, host: &str) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.remove(host);
        }
    }

    /// The document, as JSON.
    pub fn to_json(&self) -> String {
        let hosts = self
            .hosts
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        serde_json::to_string(&StatusDocument { hosts }).unwrap_or_default()
    }
}
