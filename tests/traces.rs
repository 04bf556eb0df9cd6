//! Real traces on the simulator: the shipped Bitbrains VMs become a scenario, vcoord's defaults
//! and the Proxmox and MOM re-implementations (loaded as plugins) run on it under several seeds,
//! and the trace benchmark prints its table and densities.

mod common;

use std::path::Path;

use common::{root, scratch, stdout_of};

fn plugin(file: &str) -> String {
    Path::new(env!("CARGO_BIN_EXE_vcoord"))
        .with_file_name(file)
        .display()
        .to_string()
}

fn shipped_traces() -> String {
    root()
        .join("examples/traces/bitbrains-rnd-2013-7")
        .display()
        .to_string()
}

/// The figure `key` of the memory row `row` of the first scenario: (mean, 95% half width).
fn figure(doc: &serde_json::Value, row: &str, key: &str) -> (f64, f64) {
    let rows = doc["scenarios"][0]["memory"].as_array().unwrap();
    let r = rows
        .iter()
        .find(|r| r["row"] == row)
        .unwrap_or_else(|| panic!("no memory row {row} in {rows:?}"));
    let e = &r["figures"][key];
    (
        e["mean"].as_f64().unwrap(),
        e["ci95"].as_f64().unwrap_or(0.0),
    )
}

#[test]
fn a_shipped_trace_replays_with_the_anchors_loaded_as_plugins() {
    let dir = scratch("traces");
    let scenario = dir.join("t.toml");
    let scenario = scenario.to_str().unwrap();
    let traces = shipped_traces();
    stdout_of(&[
        "scenario",
        "from-trace",
        &traces,
        "-o",
        scenario,
        "--hours",
        "6",
        "--vms",
        "8",
    ]);
    let (proxmox, mom) = (
        plugin("libvcoord_proxmox_balloon.so"),
        plugin("libvcoord_mom_balloon.so"),
    );
    let out = stdout_of(&[
        "compare",
        scenario,
        "--cpu",
        "stable-balance",
        "--memory",
        "pressure-balloon",
        "--memory",
        "none",
        "--memory",
        &proxmox,
        "--memory",
        &mom,
        "--seeds",
        "3",
        "--format",
        "json",
    ]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    for run in doc["runs"].as_array().unwrap() {
        assert!(run["error"].is_null(), "{run}");
    }
    // Six hours of eight real VMs at 1 s ticks.
    assert_eq!(doc["scenarios"][0]["ticks"], 21_600);
    // The defaults keep every guest alive and give back most of what the VMs were sized for
    // (these use a few percent of it), beyond what their startup sizes already leave out.
    let (oom, _) = figure(&doc, "pressure-balloon", "oom_events");
    assert_eq!(oom, 0.0);
    let (of_max, _) = figure(&doc, "pressure-balloon", "saved_of_max_pct");
    let (none_of_max, _) = figure(&doc, "none", "saved_of_max_pct");
    assert!(
        of_max > 80.0 && of_max > none_of_max + 20.0,
        "{of_max} {none_of_max}"
    );
    // The seeds vary memory behaviour: the interval of a memory figure is not zero.
    let (_, ci) = figure(&doc, "pressure-balloon", "moved_mib");
    assert!(ci > 0.0, "memory figures do not vary by seed");
    // Both anchors act (they move memory) and decide otherwise than nothing and each other.
    let (p_moved, _) = figure(&doc, "vcoord_proxmox_balloon", "moved_mib");
    let (m_moved, _) = figure(&doc, "vcoord_mom_balloon", "moved_mib");
    let (n_moved, _) = figure(&doc, "none", "moved_mib");
    assert!(
        p_moved > 0.0 && m_moved > 0.0 && n_moved == 0.0,
        "{p_moved} {m_moved} {n_moved}"
    );
    assert_ne!(p_moved, m_moved);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_trace_benchmark_prints_the_table_its_speed_and_densities() {
    let dir = scratch("trace-bench");
    let traces = shipped_traces();
    let work = dir.join("work");
    let out = stdout_of(&[
        "bench",
        "trace",
        &traces,
        "--hours",
        "2",
        "--vms",
        "4",
        "--seeds",
        "2",
        "--density",
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    for row in ["defaults", "seed", "none", "proxmox", "mom"] {
        assert!(
            out.contains(&format!("\n  {row} ")),
            "no row {row} in\n{out}"
        );
    }
    assert!(out.contains("VM-ticks/s per thread"), "{out}");
    let density = out.split("density:").nth(1).expect("densities");
    for label in ["defaults", "seed", "none", "proxmox", "mom"] {
        let line = density
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no density of {label} in\n{out}"));
        let vms: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(vms <= 4, "{line}");
    }
    assert!(work.join("trace.toml").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
