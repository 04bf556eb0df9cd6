//! `stable-balance` and `pressure-balloon` as a plugin, compiled from the very files the
//! built-ins are compiled from (`policies/src/`). A policy's source depends on vcoord-api
//! alone, so it builds either way unchanged; `tests/plugins.rs` checks that the built-in and
//! its plugin twin decide the same, tick for tick, on every shipped scenario.

#[path = "../../../policies/src/stable_balance.rs"]
mod stable_balance;

#[path = "../../../policies/src/pressure_balloon.rs"]
mod pressure_balloon;

#[path = "../../../policies/src/ksm.rs"]
mod ksm;

vcoord_plugin::export_plugin! {
    name: "twins",
    description: "stable-balance and pressure-balloon, built from the built-ins' source",
    cpu: stable_balance::StableBalance,
    memory: pressure_balloon::PressureBalloon,
}

/// The policies' unit tests need their helpers to compile (they run in vcoord-policies).
#[cfg(test)]
#[path = "../../../policies/src/testutil.rs"]
mod testutil;
