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

/// What a memory policy wants this tick. An empty plan changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Desired balloon targets; VMs not named keep theirs.
    pub targets: Vec<BalloonTarget>,
    /// Why, in a few words.
    pub reason: String,
}

impl MemoryPlan {
    /// A plan that changes nothing, with its reason.
    pub fn keep(reason: impl Into<String>) -> Self {
        Self {
            targets: Vec::new(),
            reason: reason.into(),
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
