//! Helpers for whole-program tests: run the `vcoord` binary on a scenario and read its record.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use vcoord_core::runtime::record::TickRecord;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vcoord-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `vcoord` with `args`.
pub fn vcoord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(args)
        .env("VCOORD_LOG", "warn")
        .output()
        .expect("vcoord runs")
}

/// What `vcoord run` on a one-host simulator configuration gave.
pub struct Run {
    /// Exit status was success.
    pub ok: bool,
    /// Its log.
    pub stderr: String,
    /// Its tick records.
    pub records: Vec<TickRecord>,
}

/// Writes a one-host config for `scenario` with extra TOML lines (policies, ...) and runs it,
/// recording, with `args` added to `vcoord run`.
pub fn run_sim(scenario: &Path, extra: &str, args: &[&str]) -> Run {
    let dir = scratch("run");
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\n{extra}\n",
            scenario.display()
        ),
    )
    .unwrap();
    let record = dir.join("record.jsonl");
    let mut all = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = vcoord(&all);
    let records = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record line is a TickRecord"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        records,
    }
}

/// Runs `scenario` to its end with extra host lines and returns the tick records; the run
/// must succeed.
pub fn run_scenario(scenario: &Path, extra: &str) -> Vec<TickRecord> {
    let run = run_sim(scenario, extra, &[]);
    assert!(
        run.ok,
        "vcoord failed on {}: {}",
        scenario.display(),
        run.stderr
    );
    run.records
}

/// The pCPU each VM's vCPU 0 is pinned to in a record (None when not pinned to one pCPU).
pub fn pinned_cpu(record: &TickRecord, vm: &str) -> Option<u32> {
    record
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.vcpus[0].affinity.only())
}
/// In a grower's (time s, actual MiB, unused MiB) series: where it freed (the first jump of
/// over 300 MiB in unused memory), its lowest unused memory before that, and how long after the
/// free its unused memory was back in the band (216 MiB: 2 thresholds and a step's slack).
pub fn free_and_back(series: &[(f64, f64, f64)]) -> (usize, f64, Option<f64>) {
    let free_at = series
        .windows(2)
        .position(|w| w[1].2 > w[0].2 + 300.0)
        .expect("the free is recorded")
        + 1;
    let lowest = series[..free_at]
        .iter()
        .map(|s| s.2)
        .fold(f64::INFINITY, f64::min);
    let t_free = series[free_at].0;
    let back_s = series[free_at..]
        .iter()
        .find(|s| s.2 <= 216.0)
        .map(|s| s.0 - t_free);
    (free_at, lowest, back_s)
}

/// A recording and its simulation from the scenario derived from it make the same decisions
/// within the stated tolerances: vCPU moves within 1, the last move within 3 ticks, the
/// grower's lowest unused memory before its free within 80 MiB, and the time from its free back
/// into the band within 15 s (figures land up to a guest report apart).
pub fn assert_plays_alike(real: &[TickRecord], sim: &[TickRecord], grower: &str) {
    let moves = |r: &[TickRecord]| r.iter().map(|t| t.pins.len()).sum::<usize>();
    let last_move = |r: &[TickRecord]| r.iter().rfind(|t| !t.pins.is_empty()).map_or(0, |t| t.tick);
    let series = |r: &[TickRecord]| -> Vec<(f64, f64, f64)> {
        r.iter()
            .filter_map(|t| {
                let v = t.vms.iter().find(|v| v.name == grower)?;
                Some((t.time_s, v.actual_mib, v.unused_mib?))
            })
            .collect()
    };
    let (_, real_low, real_back) = free_and_back(&series(real));
    let (_, sim_low, sim_back) = free_and_back(&series(sim));
    let said = format!(
        "moves real {} sim {}; last move at tick real {} sim {}; lowest unused real {real_low:.0} sim {sim_low:.0} MiB; back in the band real {real_back:?} sim {sim_back:?} s",
        moves(real),
        moves(sim),
        last_move(real),
        last_move(sim)
    );
    eprintln!("derived scenario vs recording: {said}");
    assert!(moves(real).abs_diff(moves(sim)) <= 1, "{said}");
    assert!(last_move(real).abs_diff(last_move(sim)) <= 3, "{said}");
    assert!((real_low - sim_low).abs() <= 80.0, "{said}");
    let (Some(real_back), Some(sim_back)) = (real_back, sim_back) else {
        panic!("a reclaim is missing: {said}");
    };
    assert!((real_back - sim_back).abs() <= 15.0, "{said}");
}

pub mod libvirt;
