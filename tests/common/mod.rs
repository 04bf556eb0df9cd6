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
pub mod libvirt;
