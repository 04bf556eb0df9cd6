//! Whether guests follow their virtio-mem requests. A guest plugs or unplugs in its own time
//! (here ~1-2 s per 256 MiB under TCG); one that stays behind its request for [`FOLLOW_S`]
//! without progress refuses it (no driver, or memory it cannot give back). vcoord then says so
//! once, withdraws the request (asks for what the guest has), and leaves the device where it
//! is for [`HOLD_S`]: never a request retried in a loop. The device's `held` flag tells
//! policies and the guard that only its plugged memory is reachable meanwhile.
//!
//! Requests and plugged sizes are read from the domain each tick, so this works the same after
//! a restart of vcoord (a request left behind by the last run is judged like a new one).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::VmSample;

/// How long a guest may stay behind a request without progress before it counts as refused.
pub const FOLLOW_S: f64 = 20.0;

/// How long a device that refused is left where it is.
pub const HOLD_S: f64 = 300.0;

/// A request the guest did not follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRefusal {
    /// Domain name.
    pub vm: String,
    /// The device's alias.
    pub device: String,
    /// What it was asked to plug.
    pub requested_kib: u64,
    /// What it has plugged (and is asked for from now on).
    pub current_kib: u64,
}

#[derive(Debug)]
struct Track {
    /// Since when the guest has been behind its request without progress.
    behind_since_s: Option<f64>,
    /// Plugged at the last tick.
    current_kib: u64,
    /// Left alone until then.
    held_until_s: Option<f64>,
}

/// Tracks every virtio-mem device of a host, by domain UUID and alias.
#[derive(Debug, Default)]
pub struct Follow {
    tracks: HashMap<(String, String), Track>,
}

impl Follow {
    /// Judges this tick's sample (taken at `now_s`): marks devices held, and returns the
    /// requests refused now (to be reported and withdrawn).
    pub fn observe(&mut self, vms: &mut [VmSample], now_s: f64) -> Vec<DeviceRefusal> {
        let mut seen = Vec::new();
        let mut refused = Vec::new();
        for vm in vms.iter_mut() {
            for d in vm.memory.virtio_mem.iter_mut() {
                let key = (vm.uuid.clone(), d.alias.clone());
                seen.push(key.clone());
                let t = self.tracks.entry(key).or_insert(Track {
                    behind_since_s: None,
                    current_kib: d.current_kib,
                    held_until_s: None,
                });
                if t.held_until_s.is_some_and(|until| now_s >= until) {
                    t.held_until_s = None;
                }
                let progress = d.current_kib != t.current_kib;
                t.current_kib = d.current_kib;
                if t.held_until_s.is_some() {
                    // Left alone: a withdrawn request is not judged again until the hold ends.
                    t.behind_since_s = None;
                } else if d.requested_kib == d.current_kib || progress {
                    t.behind_since_s = (d.requested_kib != d.current_kib).then_some(now_s);
                } else {
                    let since = *t.behind_since_s.get_or_insert(now_s);
                    if now_s - since >= FOLLOW_S {
                        refused.push(DeviceRefusal {
                            vm: vm.name.clone(),
                            device: d.alias.clone(),
                            requested_kib: d.requested_kib,
                            current_kib: d.current_kib,
                        });
                        t.held_until_s = Some(now_s + HOLD_S);
                        t.behind_since_s = None;
                    }
                }
                d.held |= t.held_until_s.is_some();
            }
        }
        self.tracks.retain(|key, _| seen.contains(key));
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemorySample;
    use vcoord_api::VirtioMemView;

    fn vm(requested: u64, current: u64) -> VmSample {
        VmSample {
            cputune: Default::default(),
            name: "a".into(),
            uuid: "u".into(),
            vcpus: Vec::new(),
            memory: MemorySample {
                virtio_mem: vec![VirtioMemView {
                    alias: "virtiomem0".into(),
                    size_kib: 1 << 20,
                    block_kib: 2048,
                    requested_kib: requested,
                    current_kib: current,
                    node: Some(0),
                    held: false,
                }],
                ..MemorySample::default()
            },
            oom_events: None,
            metadata: None,
        }
    }

    #[test]
    fn a_guest_behind_without_progress_refuses_once_and_is_held() {
        let mut f = Follow::default();
        // Asked for 256 MiB, the guest never plugs.
        let mut refusals = Vec::new();
        let mut held = Vec::new();
        for t in 0..400 {
            let mut vms = vec![vm(256 << 10, 0)];
            refusals.extend(f.observe(&mut vms, t as f64));
            held.push(vms[0].memory.virtio_mem[0].held);
        }
        assert_eq!(
            refusals.len(),
            2,
            "once, then once more after the hold: {refusals:?}"
        );
        assert_eq!(held.iter().position(|&h| h), Some(FOLLOW_S as usize));
        assert!(!held[FOLLOW_S as usize + HOLD_S as usize]);
    }

    #[test]
    fn a_slow_guest_that_progresses_is_not_refused() {
        let mut f = Follow::default();
        for t in 0..100u64 {
            // 1 GiB asked, 8 MiB more plugged every 10 s.
            let current = (t / 10) * (8 << 10);
            let mut vms = vec![vm(1 << 20, current)];
            assert!(f.observe(&mut vms, t as f64).is_empty(), "tick {t}");
        }
        let mut done = vec![vm(1 << 20, 1 << 20)];
        assert!(f.observe(&mut done, 100.0).is_empty());
    }
}
