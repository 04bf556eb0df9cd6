//! vcoord's built-in policies, registered with `inventory` under their configuration names.
//!
//! - `greedy-lpt`: the original design's CPU policy (largest load first onto the least-loaded
//!   pCPU, whenever pCPU loads spread too much).
//! - `threshold-balloon`: the original design's memory policy (keep a band of unused memory in
//!   every VM; idle VMs give back, needy ones get more; the host keeps a reserve).
//! - `none`: a CPU and a memory policy that never act (observe only).

pub mod greedy_lpt;
pub mod none;
pub mod pressure_balloon;
pub mod stable_balance;
pub mod threshold_balloon;

/// Call from a binary to make sure this crate (and so its registrations) is linked in.
pub fn link() {}
#[cfg(test)]
mod testutil;
