//! A small set of physical CPU ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A set of pCPU ids, kept sorted and without duplicates.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<u32>", into = "Vec<u32>")]
pub struct CpuSet(Vec<u32>);

/// Sorts and deduplicates (a set read from a file may be written in any order).
impl From<Vec<u32>> for CpuSet {
    fn from(cpus: Vec<u32>) -> Self {
        cpus.into_iter().collect()
    }
}

impl From<CpuSet> for Vec<u32> {
    fn from(set: CpuSet) -> Self {
        set.0
    }
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// A set holding exactly one pCPU.
    pub fn single(cpu: u32) -> Self {
        Self(vec![cpu])
    }

    /// Builds a set from a libvirt cpumap (bit `i` of byte `i / 8` is pCPU `i`).
    pub fn from_cpumap(map: &[u8]) -> Self {
        let mut cpus = Vec::new();
        for (byte_index, byte) in map.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    cpus.push((byte_index * 8 + bit) as u32);
                }
            }
        }
        Self(cpus)
    }

    /// The libvirt cpumap of this set, `len_bytes` long.
    pub fn to_cpumap(&self, len_bytes: usize) -> Vec<u8> {
        let mut map = vec![0u8; len_bytes];
        for &cpu in &self.0 {
            if let Some(byte) = map.get_mut(cpu as usize / 8) {
                *byte |= 1 << (cpu % 8);
            }
        }
        map
    }

    /// Adds a pCPU to the set.
    pub fn insert(&mut self, cpu: u32) {
        if let Err(pos) = self.0.binary_search(&cpu) {
            self.0.insert(pos, cpu);
        }
    }

    /// Whether the set holds `cpu`.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    /// Number of pCPUs in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The only pCPU of a one-element set.
    pub fn only(&self) -> Option<u32> {
        match self.0.as_slice() {
            [cpu] => Some(*cpu),
            _ => None,
        }
    }

    /// The pCPU ids in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// The pCPU ids as a slice.
    pub fn as_slice(&self) -> &[u32] {
        &self.0
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut cpus: Vec<u32> = iter.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        Self(cpus)
    }
}

/// Prints the set in the compact form `0-3,6`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let cpus = &self.0;
        while i < cpus.len() {
            let start = cpus[i];
            let mut end = start;
            while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
                i += 1;
                end = cpus[i];
            }
            if start != cpus[0] {
                f.write_str(",")?;
            }
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpumap_round_trip() {
        let set: CpuSet = [0, 3, 9].into_iter().collect();
        let map = set.to_cpumap(2);
        assert_eq!(map, vec![0b0000_1001, 0b0000_0010]);
        assert_eq!(CpuSet::from_cpumap(&map), set);
    }

    #[test]
    fn display_compresses_ranges() {
        let set: CpuSet = [6, 0, 1, 2, 3, 3].into_iter().collect();
        assert_eq!(set.to_string(), "0-3,6");
        assert_eq!(CpuSet::single(5).to_string(), "5");
        assert_eq!(CpuSet::new().to_string(), "");
    }

    #[test]
    fn insert_keeps_order() {
        let mut set = CpuSet::new();
        set.insert(4);
        set.insert(1);
        set.insert(4);
        assert_eq!(set.as_slice(), &[1, 4]);
        assert_eq!(set.only(), None);
        assert_eq!(CpuSet::single(2).only(), Some(2));
    }
}
