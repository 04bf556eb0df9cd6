//! What each tick saw and did, as one JSON line (`--record FILE`) and as data for tests and
//! comparisons.

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::guard::{BalloonChange, Rejection};
use crate::policy::VcpuPin;
use crate::snapshot::{stdev, Snapshot};

const MIB: f64 = 1024.0;

/// One vCPU in a tick record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VcpuRecord {
    /// vCPU number.
    pub id: u32,
    /// Load over the last interval, percent of one pCPU.
    pub load_pct: Option<f64>,
    /// Run-queue wait over the last interval, percent.
    pub wait_pct: Option<f64>,
    /// pCPU it last ran on.
    pub pcpu: Option<u32>,
    /// pCPUs it may run on (before this tick's actions).
    pub affinity: CpuSet,
}

/// One VM in a tick record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Domain name.
    pub name: String,
    /// vCPUs.
    pub vcpus: Vec<VcpuRecord>,
    /// Most memory it may have.
    pub max_mib: f64,
    /// Memory it has.
    pub actual_mib: f64,
    /// Memory its guest leaves unused (fresh statistics only).
    pub unused_mib: Option<f64>,
    /// Swapped out over the last interval.
    pub swap_out_mib: Option<f64>,
    /// Swapped in over the last interval.
    pub swap_in_mib: Option<f64>,
    /// OOM kills over the last interval, where the backend can tell.
    pub oom_events: Option<u64>,
}

/// What shadow policies would have done on one tick: their plans after the guard, never
/// carried out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// The shadow CPU policy, if any.
    pub cpu_policy: Option<String>,
    /// The shadow memory policy, if any.
    pub memory_policy: Option<String>,
    /// Its CPU reason.
    pub cpu_reason: String,
    /// Its memory reason.
    pub memory_reason: String,
    /// Pins it would have carried out (only those that change something).
    pub pins: Vec<VcpuPin>,
    /// Balloon changes it would have carried out.
    pub balloons: Vec<BalloonChange>,
    /// Its actions the guard would have refused or trimmed.
    pub rejected: Vec<Rejection>,
}

/// Everything about one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TickRecord {
    /// Host name.
    pub host: String,
    /// Tick number, from 0.
    pub tick: u64,
    /// Time since the first tick.
    pub time_s: f64,
    /// Load of each pCPU, percent.
    pub pcpu_load_pct: Vec<f64>,
    /// Standard deviation of `pcpu_load_pct`, percent points.
    pub pcpu_stdev_pct: f64,
    /// Host memory free.
    pub host_free_mib: f64,
    /// Memory grantable to guests (free, or less under a budget).
    pub guest_free_mib: f64,
    /// VMs.
    pub vms: Vec<VmRecord>,
    /// Why the CPU policy did what it did.
    pub cpu_reason: String,
    /// Why the memory policy did what it did.
    pub memory_reason: String,
    /// Pins carried out (or that would be, in a dry run).
    pub pins: Vec<VcpuPin>,
    /// Balloon changes carried out (or that would be, in a dry run).
    pub balloons: Vec<BalloonChange>,
    /// Actions refused or trimmed by the guard.
    pub rejected: Vec<Rejection>,
    /// Actions the backend failed to carry out.
    pub failed: Vec<String>,
    /// Whether this tick changed nothing by configuration.
    pub dry_run: bool,
    /// Hypervisor calls made to sample.
    pub sample_calls: u32,
    /// Hypervisor calls made to actuate.
    pub actuate_calls: u32,
    /// Ids of the pCPUs, in the order of `pcpu_load_pct`.
    #[serde(default)]
    pub pcpus: Vec<u32>,
    /// What the shadow policies would have done this tick (never carried out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord>,
    /// The snapshot the policies decided on, when recording for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

impl TickRecord {
    /// The parts of a record that come from the snapshot alone.
    pub fn from_snapshot(host: &str, snapshot: &Snapshot, start_wall_s: f64) -> Self {
        let vms = snapshot
            .vms()
            .iter()
            .map(|vm| VmRecord {
                name: vm.name.clone(),
                vcpus: vm
                    .vcpus
                    .iter()
                    .map(|v| VcpuRecord {
                        id: v.id,
                        load_pct: v.load_pct,
                        wait_pct: v.wait_pct,
                        pcpu: v.pcpu,
                        affinity: v.affinity.clone(),
                    })
                    .collect(),
                max_mib: vm.memory.max_kib as f64 / MIB,
                actual_mib: vm.memory.actual_kib as f64 / MIB,
                unused_mib: vm.memory.unused_kib.map(|k| k as f64 / MIB),
                swap_out_mib: vm.memory.swap_out_kib.map(|k| k as f64 / MIB),
                swap_in_mib: vm.memory.swap_in_kib.map(|k| k as f64 / MIB),
                oom_events: vm.oom_events,
            })
            .collect();
        Self {
            host: host.to_string(),
            tick: snapshot.tick(),
            time_s: snapshot.wall_s() - start_wall_s,
            pcpu_load_pct: snapshot.pcpu_loads(),
            pcpu_stdev_pct: stdev(&snapshot.pcpu_loads()),
            host_free_mib: snapshot.host().mem_free_kib as f64 / MIB,
            guest_free_mib: snapshot.host().guest_free_kib as f64 / MIB,
            vms,
            cpu_reason: String::new(),
            memory_reason: String::new(),
            pins: Vec::new(),
            balloons: Vec::new(),
            rejected: Vec::new(),
            failed: Vec::new(),
            dry_run: false,
            sample_calls: 0,
            actuate_calls: 0,
            pcpus: snapshot.pcpu_ids(),
            shadow: None,
            snapshot: None,
        }
    }
}
