//! Regression scenarios: each real-host flaw found so far, reproduced in the simulator. Each
//! scenario in `examples/scenarios/mem-r*.toml` fails with the earlier behaviour (a variant of
//! `pressure-balloon` registered in this test only, with that one fix taken out) and passes
//! with today's policy.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::root;
use vcoord_api::{MemoryPlan, MemoryPolicy, ParamError, Policy, Snapshot, VmView};
use vcoord_core::config::{HostConfig, PolicyChoice};
use vcoord_core::runtime::record::TickRecord;
use vcoord_core::tools::compare::{run_one, Contender};
use vcoord_core::tools::metrics::memory_metrics;
use vcoord_policies::pressure_balloon::{
    law, remember, track, Need, PressureBalloonParams, Reading, Tracked, QUIET_S,
};

/// How earlier versions of `pressure-balloon` read a guest, each of which failed on real hosts.
/// The law and its parts are today's; only the reading of the guest is taken back.
#[derive(Clone, Copy, Default)]
struct Flaws {
    /// Growth seen while a balloon inflates is believed (the balloon's own inflation read as
    /// guest growth holds back reclaim).
    believe_inflation: bool,
    /// Readings with more unused memory than the VM has are used (a grant in flight is clawed
    /// back from a growing guest).
    use_inconsistent: bool,
    /// A VM may give memory back right after a grant.
    no_settle: bool,
    /// A reading is new only when a figure changes, and the rate falls by 0.7/0.3 a reading (an
    /// idle guest that stopped growing stays "growing" for ever).
    rate_on_change_only: bool,
    /// A VM seen for the first time is trusted to need only the threshold.
    trust_first_sight: bool,
    /// Use is judged as `actual - unused`, the balloon size read now and the guest's figures
    /// from its last report, even where the host gives the report's own total.
    mixed_moments: bool,
}

/// The law's view of `vm` as an earlier version with `flaws` formed it. Every earlier version
/// also covered growth `lead_s` ahead however slowly the guest reported.
fn read_as_before<'a>(
    flaws: Flaws,
    params: &PressureBalloonParams,
    snapshot: &Snapshot,
    vm: &'a VmView,
    state: Option<Tracked>,
) -> (Option<Tracked>, Option<Need<'a>>) {
    let memory = &vm.memory;
    let one_moment =
        !flaws.mixed_moments && memory.available_kib.is_some() && memory.unavailable_kib.is_some();
    let consistent = one_moment
        || flaws.use_inconsistent
        || memory.unused_kib.is_some_and(|u| u < memory.actual_kib);
    let used = if one_moment {
        memory.used_kib()
    } else {
        memory
            .unused_kib
            .map(|u| memory.actual_kib.saturating_sub(u))
    };
    let (Some(used), true, true, true) = (
        used,
        consistent,
        memory.stats_fresh,
        vm.control.memory_managed,
    ) else {
        return (state, None);
    };
    let (used, actual, now) = (used as f64, memory.actual_kib as f64, snapshot.wall_s());
    let mut state = state.unwrap_or_else(|| Tracked::new(vm, used, now));
    let report = memory.last_report_s.filter(|_| !flaws.rate_on_change_only);
    let changed = memory.unused_kib != state.unused_kib;
    let new = match (report, state.report_s) {
        _ if flaws.rate_on_change_only => changed,
        (Some(t), Some(previous)) => t > previous,
        (Some(_), None) => true,
        (None, _) => changed || now - state.growth.at_s >= QUIET_S,
    };
    if new {
        let inflating = actual < state.actual_kib - 1024.0 || state.balloon.inflating(actual);
        let before = state.growth.clone();
        let at_s = report.unwrap_or(now);
        state.growth.update(Reading {
            at_s,
            used_kib: used,
            believable: flaws.believe_inflation || one_moment || !inflating,
        });
        let dt = at_s - before.at_s;
        if flaws.rate_on_change_only && before.readings > 0 && dt > 0.0 {
            let inst = (used - before.used_kib) / dt;
            state.growth.rate_kib_s = if inst > before.rate_kib_s {
                inst
            } else {
                0.7 * before.rate_kib_s + 0.3 * inst.min(before.rate_kib_s)
            };
        }
        state.report_s = report;
        state.unused_kib = memory.unused_kib;
    }
    state.actual_kib = actual;
    let size = match (memory.available_kib, memory.unavailable_kib) {
        (Some(a), Some(u)) if one_moment => ((a + u) as f64).min(actual),
        _ => actual,
    };
    state.balloon.observe(actual, size, now);
    let mut need = Need::of(params, snapshot, vm, &state, used, size);
    need.lead_s = params.lead_s;
    need.measured |= flaws.trust_first_sight;
    need.settling &= !flaws.no_settle;
    (Some(state), Some(need))
}

/// Declares a test-only memory policy: today's law fed by an earlier reading of the guest.
macro_rules! earlier_variant {
    ($type:ident, $name:literal, $($flag:ident),+) => {
        struct $type(PressureBalloonParams, HashMap<String, Tracked>);

        impl Policy for $type {
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = "pressure-balloon with an earlier flaw (tests only)";
            type Params = PressureBalloonParams;

            fn new(mut params: PressureBalloonParams) -> Result<Self, ParamError> {
                // The earlier default, whatever else is switched back.
                params.release_ratio = 0.25;
                Ok(Self(params, HashMap::new()))
            }
        }

        impl MemoryPolicy for $type {
            fn decide(&mut self, snapshot: &Snapshot) -> MemoryPlan {
                let flaws = Flaws { $($flag: true,)+ ..Flaws::default() };
                let params = &self.0;
                let needs = track(&mut self.1, snapshot, |vm, state| {
                    read_as_before(flaws, params, snapshot, vm, state)
                });
                let (plan, _) = law(params, snapshot, &needs);
                remember(&mut self.1, snapshot, &plan);
                plan
            }
        }

        vcoord_api::builtin_memory_policy!($type);
    };
}

earlier_variant!(
    BelievesInflation,
    "earlier-believes-inflation",
    mixed_moments,
    believe_inflation
);
earlier_variant!(
    UsesInconsistent,
    "earlier-uses-inconsistent",
    mixed_moments,
    use_inconsistent
);
earlier_variant!(NoSettle, "earlier-no-settle", mixed_moments, no_settle);
earlier_variant!(
    RateOnChange,
    "earlier-rate-on-change",
    rate_on_change_only,
    trust_first_sight
);
earlier_variant!(
    TrustsFirstSight,
    "earlier-trusts-first-sight",
    trust_first_sight
);

fn scenario(name: &str) -> PathBuf {
    root()
        .join("examples/scenarios")
        .join(format!("{name}.toml"))
}

/// The records of `memory` (with no CPU policy) on scenario `name`.
fn run(name: &str, memory: &str) -> Vec<TickRecord> {
    vcoord_policies::link();
    let mut host = HostConfig::new("r", "sim:", &root());
    host.cpu_policy = PolicyChoice::builtin("none", toml::Table::new());
    host.memory_policy = PolicyChoice::builtin(memory, toml::Table::new());
    let contender = Contender {
        label: memory.into(),
        host,
    };
    let outcome = run_one(&scenario(name), &contender, 100.0);
    assert!(
        outcome.error.is_none(),
        "{name}/{memory}: {:?}",
        outcome.error
    );
    if let Ok(only) = std::env::var("VCOORD_SHOW") {
        for r in &outcome.records {
            let vms: Vec<String> = r
                .vms
                .iter()
                .filter(|v| only.is_empty() || v.name == only)
                .map(|v| {
                    let target = r.balloons.iter().find(|b| b.vm == v.name);
                    format!(
                        "{} {:.0}/{:.0}{}",
                        v.name,
                        v.actual_mib(),
                        v.unused_mib().unwrap_or(-1.0),
                        target.map_or(String::new(), |b| format!("->{}", b.target_kib / 1024))
                    )
                })
                .collect();
            eprintln!("{memory} {} {}", r.tick, vms.join(" | "));
        }
    }
    outcome.records
}

/// Balloon moves of `vm`: (tick, target MiB, actual MiB then).
fn moves(records: &[TickRecord], vm: &str) -> Vec<(u64, f64, f64)> {
    records
        .iter()
        .flat_map(|r| {
            r.balloons.iter().filter(|b| b.vm == vm).map(|b| {
                (
                    r.tick,
                    b.target_kib as f64 / 1024.0,
                    b.actual_kib as f64 / 1024.0,
                )
            })
        })
        .collect()
}

fn unused(r: &TickRecord, vm: &str) -> Option<f64> {
    r.vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.unused_mib())
}

/// The threshold of `pressure-balloon` at its defaults, and its band (two thresholds).
const THRESHOLD: f64 = 100.0;
const BAND: f64 = 200.0;

/// Runs `scenario` with today's policy and with `earlier`, and checks `holds` on each: it
/// must be Ok for today's and an Err for the earlier one. Returns today's records.
fn fails_before_and_holds_now(
    scenario: &str,
    earlier: &str,
    holds: impl Fn(&[TickRecord]) -> Result<(), String>,
) -> Vec<TickRecord> {
    let before = run(scenario, earlier);
    assert!(
        holds(&before).is_err(),
        "{scenario}: the earlier behaviour ({earlier}) passes: the scenario does not show its flaw"
    );
    let now = run(scenario, "pressure-balloon");
    if let Err(why) = holds(&now) {
        panic!("{scenario}: {why}");
    }
    now
}

/// A real-host flaw: the balloon's own inflation, read between two guest reports, looked like
/// guest growth: idle guests were given memory back and their reclaim held back.
#[test]
fn inflation_is_never_read_as_growth() {
    fails_before_and_holds_now(
        "mem-r1-inflation-is-not-growth",
        "earlier-believes-inflation",
        |records| {
            for vm in ["idle1", "idle2", "idle3"] {
                if let Some((tick, target, actual)) =
                    moves(records, vm).into_iter().find(|m| m.1 > m.2)
                {
                    return Err(format!(
                        "idle {vm} given memory at tick {tick}: {actual:.0} -> {target:.0} MiB"
                    ));
                }
                // 2.8 GiB to give back, at most 128 MiB a tick, each move read about a second
                // late: done within a minute.
                let late = unused(records.last().unwrap(), vm).unwrap_or(f64::INFINITY);
                if late > BAND + 16.0 {
                    return Err(format!(
                        "{vm} still has {late:.0} MiB unused after a minute"
                    ));
                }
            }
            Ok(())
        },
    );
}

/// A real-host flaw: a reading with more unused memory than the balloon's size (guest figures
/// newer than it) was believed: a grant in flight to a growing guest was taken for excess,
/// clawed back, given again, and the guest went short.
#[test]
fn a_grant_in_flight_is_never_clawed_back() {
    fails_before_and_holds_now(
        "mem-r2-grant-in-flight",
        "earlier-uses-inconsistent",
        |records| {
            let m = memory_metrics(records, THRESHOLD);
            if m.oom_events > 0 {
                return Err(format!("{} OOM kills", m.oom_events));
            }
            let lowest = m.lowest_unused_mib["grower"];
            if lowest < THRESHOLD {
                return Err(format!("grower down to {lowest:.0} MiB unused"));
            }
            // Growing 40 MiB/s from 8 s to 48 s: fed to threshold + rate x lead (260 MiB),
            // never hoarding far beyond.
            for r in &records[14..46] {
                let u = unused(r, "grower").unwrap_or(0.0);
                if u > 400.0 {
                    return Err(format!("grower holds {u:.0} MiB unused at tick {}", r.tick));
                }
            }
            Ok(())
        },
    );
}

/// A real-host flaw: memory was asked back from a guest right after a grant, before its
/// figures showed the grant (a grant still landing looks like excess), so balloons swung.
#[test]
fn no_memory_is_taken_back_right_after_a_grant() {
    let records = fails_before_and_holds_now(
        "mem-r3-settle-after-grant",
        "earlier-no-settle",
        |records| {
            let m = memory_metrics(records, THRESHOLD);
            if m.oom_events > 0 {
                return Err(format!("{} OOM kills", m.oom_events));
            }
            let mut last_grant: Option<u64> = None;
            for (tick, target, actual) in moves(records, "stepper") {
                if target > actual {
                    last_grant = Some(tick);
                } else if let Some(g) = last_grant.filter(|&g| tick < g + 5) {
                    return Err(format!(
                        "stepper given memory at tick {g} and asked back at {tick}: {actual:.0} -> {target:.0} MiB"
                    ));
                }
            }
            Ok(())
        },
    );
    // And it was fed: each step of 150 MiB came with a grant.
    let grants = moves(&records, "stepper")
        .iter()
        .filter(|m| m.1 > m.2)
        .count();
    assert!(grants >= 3, "{grants} grants");
}

/// A real-host flaw: the growth rate changed only when a guest's figures did, so a guest that
/// stopped growing (an idle guest reports the same figures again and again) stayed "growing"
/// and kept what it was fed ahead of its growth for ever.
#[test]
fn a_guest_that_stops_growing_gives_back_its_lead_within_30_s() {
    fails_before_and_holds_now("mem-r4-growth-stops", "earlier-rate-on-change", |records| {
        // Grows 50 MiB/s from 10 s to 30 s; then holds with the same figures.
        for r in &records[60..] {
            let u = unused(r, "grower").unwrap_or(0.0);
            if u > BAND + 16.0 {
                return Err(format!(
                    "grower still holds {u:.0} MiB unused at tick {} (stopped growing at 30 s)",
                    r.tick
                ));
            }
        }
        Ok(())
    });
}

/// A real-host flaw: a guest first seen while it grows (arriving growing, or vcoord restarted
/// mid-growth) was trusted to need only the threshold until its rate was measured two reports
/// later, and went short meanwhile.
#[test]
fn a_guest_first_seen_mid_growth_keeps_enough_until_its_rate_is_known() {
    fails_before_and_holds_now(
        "mem-r5-seen-mid-growth",
        "earlier-trusts-first-sight",
        |records| {
            let m = memory_metrics(records, THRESHOLD);
            let lowest = m.lowest_unused_mib["arrives"];
            if m.oom_events > 0 || lowest < THRESHOLD {
                return Err(format!(
                    "{} OOM kills, lowest unused {lowest:.0} MiB",
                    m.oom_events
                ));
            }
            Ok(())
        },
    );
}
