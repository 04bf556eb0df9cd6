//! Memory sizes as types. vcoord counts memory in KiB inside (libvirt's unit); configurations
//! and reports speak MiB. Convert only through these types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// KiB in one MiB.
pub const KIB_PER_MIB: u64 = 1024;
/// KiB in one MiB, for arithmetic in real numbers.
pub const KIB_PER_MIB_F64: f64 = KIB_PER_MIB as f64;

/// A memory size in KiB (the internal unit).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Kib(pub u64);

impl Kib {
    /// `mib` MiB.
    pub const fn from_mib(mib: u64) -> Self {
        Self(mib * KIB_PER_MIB)
    }

    /// The size in KiB.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The size in MiB, as a real number.
    pub fn as_mib_f64(self) -> f64 {
        self.0 as f64 / KIB_PER_MIB as f64
    }
}

impl fmt::Display for Kib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.0} MiB", self.as_mib_f64())
    }
}

/// A memory size given in MiB (how configurations and people write it); read it in KiB with
/// [`Mib::kib`] for arithmetic on snapshot figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mib(pub f64);

impl Mib {
    /// The size in KiB, as a real number.
    pub fn kib(self) -> f64 {
        self.0 * KIB_PER_MIB as f64
    }

    /// The size in MiB.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// `kib` KiB in MiB, for reports.
pub fn kib_to_mib(kib: f64) -> f64 {
    kib / KIB_PER_MIB as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Kib::from_mib(3).get(), 3072);
        assert_eq!(Mib(1.5).kib(), 1536.0);
        assert_eq!(Kib(512).as_mib_f64(), 0.5);
        assert_eq!(kib_to_mib(2048.0), 2.0);
        assert_eq!(Kib::from_mib(200).to_string(), "200 MiB");
    }
}
