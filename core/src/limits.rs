//! The limits and settings that several layers share: the guard's settings as the
//! configuration writes them, and the scheduler's bounds on CPU weights and quotas. A leaf:
//! it imports nothing of vcoord's but units.

use serde::{Deserialize, Serialize};

use crate::units::Kib;
use vcoord_api::snapshot::GuardLimits;

/// Limits the guard enforces, from the host configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSettings {
    /// No balloon target below this.
    #[serde(default = "default_floor")]
    pub guest_floor_mib: u64,
    /// Grants never take the memory available to guests below this.
    #[serde(default = "default_reserve")]
    pub host_reserve_mib: u64,
    /// A shrink never leaves a guest less than this above what it uses.
    #[serde(default = "default_margin")]
    pub shrink_margin_mib: u64,
}

fn default_floor() -> u64 {
    200
}
fn default_reserve() -> u64 {
    200
}
fn default_margin() -> u64 {
    64
}

/// The smallest guest floor: below it no Linux guest keeps running.
pub const MIN_GUEST_FLOOR_MIB: u64 = 64;
/// The largest figure any memory setting takes, MiB (1 PiB): a typo, not a host, above it.
pub const MAX_MEMORY_MIB: u64 = 1 << 30;

impl GuardSettings {
    /// Checks each limit is within its range; returns the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v, low) in [
            ("guest_floor_mib", self.guest_floor_mib, MIN_GUEST_FLOOR_MIB),
            ("host_reserve_mib", self.host_reserve_mib, 0),
            ("shrink_margin_mib", self.shrink_margin_mib, 0),
        ] {
            if !(low..=MAX_MEMORY_MIB).contains(&v) {
                return Err((
                    key,
                    format!("{v} is out of range [{low}, {MAX_MEMORY_MIB}] MiB"),
                ));
            }
        }
        Ok(())
    }

    /// The limits as policies see them in each snapshot.
    pub fn limits(&self) -> GuardLimits {
        GuardLimits {
            guest_floor_kib: Kib::from_mib(self.guest_floor_mib).get(),
            host_reserve_kib: Kib::from_mib(self.host_reserve_mib).get(),
        }
    }
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            guest_floor_mib: default_floor(),
            host_reserve_mib: default_reserve(),
            shrink_margin_mib: default_margin(),
        }
    }
}

/// Bounds of a CPU weight: those of the cgroup v1 `cpu.shares` libvirt writes (v2's weight
/// maps into the same range).
pub const SHARES: std::ops::RangeInclusive<u64> = 2..=262_144;
/// Bounds of a vCPU period, µs (the kernel's CFS bandwidth limits).
pub const PERIOD_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// Bounds of a vCPU quota, µs (-1, no limit, is also taken).
pub const QUOTA_US: std::ops::RangeInclusive<i64> = 1_000..=17_592_186_044_415;
