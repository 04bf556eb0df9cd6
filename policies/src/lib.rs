//! vcoord's built-in policies, registered under their configuration names. Each policy's file
//! depends on vcoord-api alone, so the same file also builds into a plugin (`plugins/twins`
//! does that for `stable-balance` and `pressure-balloon`).
//!
//! - `greedy-lpt`: the original design's CPU policy (largest load first onto the least-loaded
//!   pCPU, whenever pCPU loads spread too much).
//! - `stable-balance` (default): balances smoothed demand with the fewest moves, then stays
//!   still.
//! - `group-balance`: each VM on a group of pCPUs (NUMA node, socket or core), whole VMs moved
//!   between groups only when they are imbalanced; weights, caps and emulator threads set.
//! - `threshold-balloon`: the original design's memory policy (keep a band of unused memory in
//!   every VM; idle VMs give back, needy ones get more; the host keeps a reserve).
//! - `pressure-balloon` (default): grants sized to each VM's growth rate, gradual reclaim,
//!   pressure signals, host levels.
//! - `none`: a CPU and a memory policy that never act (observe only).

pub mod greedy_lpt;
pub mod group_balance;
pub mod ksm;
pub mod none;
pub mod pressure_balloon;
pub mod stable_balance;
pub mod threshold_balloon;

vcoord_api::builtin_cpu_policy!(greedy_lpt::GreedyLpt);
vcoord_api::builtin_cpu_policy!(stable_balance::StableBalance);
vcoord_api::builtin_cpu_policy!(group_balance::GroupBalance);
vcoord_api::builtin_cpu_policy!(none::NoCpuPolicy);
vcoord_api::builtin_memory_policy!(threshold_balloon::ThresholdBalloon);
vcoord_api::builtin_memory_policy!(pressure_balloon::PressureBalloon);
vcoord_api::builtin_memory_policy!(none::NoMemoryPolicy);

/// Call from a binary to make sure this crate (and so its registrations) is linked in.
pub fn link() {}

#[cfg(test)]
mod testutil;

/// The README's example plugin policy, compiled here unchanged as a built-in: a policy's
/// source does not care which way it is built.
#[cfg(test)]
#[path = "../../plugins/examples/minimal/src/one_move.rs"]
mod one_move;

#[cfg(test)]
vcoord_api::builtin_cpu_policy!(one_move::OneMove);

#[cfg(test)]
mod built_either_way {
    use crate::testutil::{cpu_snapshot, pins_of};

    #[test]
    fn the_readme_policy_registers_and_decides_as_a_built_in() {
        let entry = vcoord_api::policy::find_cpu_policy("one-move").expect("registered");
        assert_eq!((entry.params)()[0].key, "gap_pct");
        let mut policy = (entry.build)(&toml::Table::new()).unwrap();
        // 3 busy vCPUs on pCPU 0 of 2: the busiest that fits the gap moves to pCPU 1.
        let plan = policy.decide(&cpu_snapshot(2, &[(40.0, 0), (30.0, 0), (20.0, 0)]));
        assert_eq!(pins_of(&plan), vec![1]);
        assert_eq!(plan.pins[0].vm, "vm0");
        let err = (entry.build)(&"gap_pct = 500".parse().unwrap())
            .err()
            .expect("out of range");
        assert_eq!(err.key, "gap_pct");
    }
}
