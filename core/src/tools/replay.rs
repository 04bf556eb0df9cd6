//! `vcoord replay`: feeds the snapshots of a recorded run (`vcoord run --record`) to other
//! policies and reports what they would have done beside what was done. Open loop: the
//! replayed policies' actions do not change the snapshots that follow.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::HostConfig;
use crate::policy::VcpuPin;
use crate::runtime::changed_pins;
use crate::runtime::guard::{BalloonChange, Guard};
use crate::runtime::record::TickRecord;
use crate::units::KIB_PER_MIB_F64;

/// One replayed tick.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayTick {
    /// Tick number in the recording.
    pub tick: u64,
    /// Seconds since the recording started.
    pub time_s: f64,
    /// pCPU load stdev the recording measured.
    pub pcpu_stdev_pct: f64,
    /// Pins the recorded run carried out.
    pub recorded_pins: Vec<VcpuPin>,
    /// Balloon changes the recorded run carried out.
    pub recorded_balloons: Vec<BalloonChange>,
    /// Pins the replayed policy would have carried out.
    pub pins: Vec<VcpuPin>,
    /// Balloon changes the replayed policy would have carried out.
    pub balloons: Vec<BalloonChange>,
    /// Actions of the replayed policy the guard would have refused or trimmed.
    pub rejected: usize,
    /// The replayed CPU policy's reason.
    pub cpu_reason: String,
    /// The replayed memory policy's reason.
    pub memory_reason: String,
}

/// Replays `records` through the policies of `host`.
pub fn replay(records: &[TickRecord], host: &HostConfig) -> Result<Vec<ReplayTick>, String> {
    if records.is_empty() {
        return Err("the recording has no ticks".into());
    }
    if records.iter().all(|r| r.snapshot.is_none()) {
        return Err(
            "the recording has no snapshots: record with `vcoord run --record FILE`".into(),
        );
    }
    let mut cpu = host.build_cpu_policy()?;
    let mut memory = host.build_memory_policy()?;
    let mut guard = Guard::new(host.guard.clone());
    let mut out = Vec::new();
    for r in records {
        let Some(snapshot) = &r.snapshot else {
            continue;
        };
        let cpu_plan = cpu.decide(snapshot);
        let memory_plan = memory.decide(snapshot);
        let guarded = guard.check(snapshot, &cpu_plan, &memory_plan);
        out.push(ReplayTick {
            tick: r.tick,
            time_s: r.time_s,
            pcpu_stdev_pct: r.pcpu_stdev_pct,
            recorded_pins: r.pins.clone(),
            recorded_balloons: r.balloons.clone(),
            pins: changed_pins(snapshot, guarded.pins),
            balloons: guarded
                .balloons
                .into_iter()
                .filter(|b| b.target_kib != b.actual_kib)
                .collect(),
            rejected: guarded.rejected.len(),
            cpu_reason: cpu_plan.reason,
            memory_reason: memory_plan.reason,
        });
    }
    Ok(out)
}

/// The replay as a table: one line per tick where either side acted, then totals.
pub fn report(ticks: &[ReplayTick], host: &HostConfig, recording: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Replay of {recording} ({} ticks) through cpu: {}, memory: {}",
        ticks.len(),
        host.cpu_policy.label(),
        host.memory_policy.label()
    );
    let _ = writeln!(
        out,
        "Open loop: the replayed policies see the recorded snapshots; what they would do does \
         not change what follows.\n"
    );
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>6} | {:>13} {:>13} | {:>13} {:>13} {:>8}",
        "tick", "time s", "sd", "recorded pins", "balloons", "replay pins", "balloons", "refused"
    );
    for t in ticks.iter().filter(|t| {
        !(t.pins.is_empty()
            && t.balloons.is_empty()
            && t.recorded_pins.is_empty()
            && t.recorded_balloons.is_empty()
            && t.rejected == 0)
    }) {
        let _ = writeln!(
            out,
            "{:>5} {:>7.1} {:>6.1} | {:>13} {:>13} | {:>13} {:>13} {:>8}",
            t.tick,
            t.time_s,
            t.pcpu_stdev_pct,
            t.recorded_pins.len(),
            t.recorded_balloons.len(),
            t.pins.len(),
            t.balloons.len(),
            t.rejected
        );
    }
    let sum = |f: &dyn Fn(&ReplayTick) -> usize| ticks.iter().map(f).sum::<usize>();
    let mib = |changes: &dyn Fn(&ReplayTick) -> &Vec<BalloonChange>| {
        ticks
            .iter()
            .flat_map(|t| changes(t).iter())
            .map(|b| b.target_kib.abs_diff(b.actual_kib) as f64 / KIB_PER_MIB_F64)
            // From +0: an empty f64 sum is -0, printed "-0 MiB".
            .fold(0.0, |total, mib| total + mib)
    };
    let _ = writeln!(
        out,
        "\nrecorded: {} pins on {} ticks, {} balloon changes moving {:.0} MiB",
        sum(&|t| t.recorded_pins.len()),
        ticks.iter().filter(|t| !t.recorded_pins.is_empty()).count(),
        sum(&|t| t.recorded_balloons.len()),
        mib(&|t| &t.recorded_balloons)
    );
    let _ = writeln!(
        out,
        "replayed: {} pins on {} ticks, {} balloon changes moving {:.0} MiB, {} actions refused by the guard",
        sum(&|t| t.pins.len()),
        ticks.iter().filter(|t| !t.pins.is_empty()).count(),
        sum(&|t| t.balloons.len()),
        mib(&|t| &t.balloons),
        sum(&|t| t.rejected)
    );
    out
}
