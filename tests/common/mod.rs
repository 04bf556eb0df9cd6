//! Helpers for whole-program tests: run the `vcoord` binary on a scenario and read its record.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use vcoord_core::record::TickRecord;

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

/// Writes a one-host config for `scenario` with extra TOML lines (policies, ...), runs it to
/// the scenario's end and returns the tick records.
pub fn run_scenario(scenario: &Path, extra: &str) -> Vec<TickRecord> {
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
    let out = vcoord(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "vcoord failed on {}: {}",
        scenario.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&record).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text.lines()
        .map(|l| serde_json::from_str(l).expect("record line is a TickRecord"))
        .collect()
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
