//! What a policy returns: the changes it wants this tick. Plans are wishes: the guard checks
//! every one before anything is applied.

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::snapshot::CpuTune;

/// Pin one vCPU to a set of pCPUs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuPin {
    /// Domain name.
    pub vm: String,
    /// vCPU number.
    pub vcpu: u32,
    /// pCPUs the vCPU may run on.
    pub cpus: CpuSet,
}

/// Set one VM's CPU weight, quota or emulator affinity (the fields it names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTune {
    /// Domain name.
    pub vm: String,
    /// What to set; unset fields are left as they are.
    pub tune: CpuTune,
}

/// What a CPU policy wants this tick. An empty plan changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPlan {
    /// Desired pinning; vCPUs not named keep theirs.
    pub pins: Vec<VcpuPin>,
    /// Desired weights, quotas and emulator affinities; VMs not named keep theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunes: Vec<VmTune>,
    /// Why, in a few words with the figures that decided it.
    pub reason: String,
}

impl CpuPlan {
    /// A plan that changes nothing, with its reason.
    pub fn keep(reason: impl Into<String>) -> Self {
        Self {
            pins: Vec::new(),
            tunes: Vec::new(),
            reason: reason.into(),
        }
    }

    /// Adds a tune of `vm`.
    pub fn tune(&mut self, vm: &str, tune: CpuTune) {
        self.tunes.push(VmTune {
            vm: vm.to_owned(),
            tune,
        });
    }

    /// Adds a pin of `vm`'s vCPU `vcpu` to `cpus`.
    pub fn pin(&mut self, vm: &str, vcpu: u32, cpus: &[u32]) {
        self.pins.push(VcpuPin {
            vm: vm.to_owned(),
            vcpu,
            cpus: cpus.iter().copied().collect(),
        });
    }
}

/// Set one VM's balloon target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalloonTarget {
    /// Domain name.
    pub vm: String,
    /// Memory the VM should have. Signed so that a nonsensical plan (from a plugin, say) stays
    /// representable and is rejected by the guard rather than wrapped around.
    pub target_kib: i64,
    /// Why this VM gets this target.
    pub reason: String,
}

/// The kernel's same-page merging (KSM) on the host, as a memory plan wants it: ksmd's three
/// settings (`/sys/kernel/mm/ksm/{run,pages_to_scan,sleep_millisecs}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsmPlan {
    /// ksmd merges (`run` = 1) or stops (`run` = 0: what it merged stays merged until written;
    /// a plan never unmerges everything at once, `run` = 2, which would take that memory back
    /// from a host that is short of it).
    pub run: bool,
    /// Pages scanned per wakeup.
    pub pages_to_scan: u64,
    /// Sleep between wakeups, ms.
    pub sleep_ms: u64,
}

/// Pages per wakeup the guard lets a plan set: the range oVirt MOM keeps ksmd in.
pub const KSM_PAGES_TO_SCAN: std::ops::RangeInclusive<u64> = 64..=1250;
/// Sleep between wakeups the guard lets a plan set, ms (10 ms: the shortest MOM and ksmtuned
/// use; with 1,250 pages, about 490 MiB scanned a second at 4 KiB pages).
pub const KSM_SLEEP_MS: std::ops::RangeInclusive<u64> = 10..=10_000;
/// The guard lets KSM's settings change at most once in this long, s (MOM's policy period).
pub const KSM_CHANGE_INTERVAL_S: f64 = 10.0;

impl KsmPlan {
    /// Pages scanned a second.
    pub fn pages_per_s(&self) -> f64 {
        self.pages_to_scan as f64 * 1000.0 / self.sleep_ms.max(1) as f64
    }
}

/// What a memory policy wants this tick. An empty plan changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Desired balloon targets; VMs not named keep theirs.
    pub targets: Vec<BalloonTarget>,
    /// Why, in a few words.
    pub reason: String,
    /// KSM as the host should run it; `None` leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm: Option<KsmPlan>,
}

impl MemoryPlan {
    /// A plan that changes nothing, with its reason.
    pub fn keep(reason: impl Into<String>) -> Self {
        Self {
            targets: Vec::new(),
            reason: reason.into(),
            ksm: None,
        }
    }

    /// Adds a balloon target for `vm`.
    pub fn target(&mut self, vm: &str, target_kib: i64, reason: impl Into<String>) {
        self.targets.push(BalloonTarget {
            vm: vm.to_owned(),
            target_kib,
            reason: reason.into(),
        });
    }
}
