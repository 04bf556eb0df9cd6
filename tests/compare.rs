//! `vcoord compare`, shadow policies and `vcoord replay`, through the binary on the simulator.

mod common;

use std::path::{Path, PathBuf};

use common::{root, scratch, vcoord};
use vcoord_core::runtime::record::TickRecord;

fn spread_plugin() -> String {
    Path::new(env!("CARGO_BIN_EXE_vcoord"))
        .with_file_name("libvcoord_spread.so")
        .display()
        .to_string()
}

fn scenarios() -> String {
    root().join("examples/scenarios").display().to_string()
}

fn stdout_of(args: &[&str]) -> String {
    let out = vcoord(args);
    assert!(
        out.status.success(),
        "vcoord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compare_prints_a_table_per_scenario_writes_plots_and_repeats_exactly() {
    let dir = scratch("compare");
    let plots = dir.join("plots");
    let spread = spread_plugin();
    let args = [
        "compare",
        &scenarios(),
        "--cpu",
        "greedy-lpt",
        "--cpu",
        &spread,
        "--plot",
        plots.to_str().unwrap(),
    ];
    let first = stdout_of(&args);
    let second = stdout_of(&args);
    assert_eq!(first, second, "two runs differ");
    let shipped = std::fs::read_dir(root().join("examples/scenarios"))
        .unwrap()
        .count();
    assert_eq!(first.matches("\n== ").count() + 1, shipped, "{first}");
    assert!(first.contains("== cpu-t2-all-on-one (40 ticks)"), "{first}");
    assert!(first.contains("greedy-lpt vs vcoord_spread:"), "{first}");
    // T2: eight vCPUs on one of four pCPUs need six moves at least.
    let t2 = &first[first.find("== cpu-t2-all-on-one (").unwrap()..];
    let greedy = t2
        .lines()
        .find(|l| l.trim_start().starts_with("greedy-lpt "))
        .unwrap();
    let cols: Vec<&str> = greedy.split_whitespace().collect();
    assert_eq!(cols[6], "6", "fewest moves column: {greedy}");
    let svgs: Vec<PathBuf> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(svgs.len(), 2 * shipped);
    let t2_cpu = std::fs::read_to_string(plots.join("cpu-t2-all-on-one-cpu.svg")).unwrap();
    assert!(t2_cpu.contains("pCPU load (%)") && t2_cpu.contains("time (s)"));
    assert!(t2_cpu.contains(">greedy-lpt (") && t2_cpu.contains(">vcoord_spread ("));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_results_do_not_depend_on_the_number_of_threads() {
    let base = [
        "compare",
        &scenarios(),
        "--cpu",
        "greedy-lpt",
        "--cpu",
        "none",
    ];
    let one = stdout_of(&[&base[..], &["--format", "json", "--jobs", "1"]].concat());
    let four = stdout_of(&[&base[..], &["--format", "json", "--jobs", "4"]].concat());
    assert_eq!(one, four);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&one).unwrap();
    assert_eq!(rows.len() % 2, 0);
    let row = &rows[0];
    for key in [
        "ticks_to_balance",
        "final_stdev_pct",
        "vcpu_moves",
        "swap_out_mib",
        "moved_mib",
    ] {
        assert!(row.get(key).is_some(), "{key} missing from {row}");
    }
    let csv = stdout_of(&[&base[..], &["--format", "csv"]].concat());
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("scenario,policy,error,ticks_to_balance,"),
        "{header}"
    );
    assert_eq!(csv.lines().count(), rows.len() + 1);
}

#[test]
fn compare_by_config_files_and_bad_choices() {
    let dir = scratch("compare-cfg");
    for (name, threshold) in [("a", 100), ("b", 200)] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "[[host]]\nname = \"x\"\nuri = \"sim:unused.toml\"\n[host.memory_policy]\nname = \"threshold-balloon\"\nparams = {{ threshold_mib = {threshold} }}\n"
            ),
        )
        .unwrap();
    }
    let m1 = root().join("examples/scenarios/mem-m1-one-grows.toml");
    let out = stdout_of(&[
        "compare",
        m1.to_str().unwrap(),
        "--config",
        dir.join("a.toml").to_str().unwrap(),
        "--config",
        dir.join("b.toml").to_str().unwrap(),
    ]);
    assert!(out.contains("a vs b: better"), "{out}");
    let bad = vcoord(&[
        "compare",
        m1.to_str().unwrap(),
        "--cpu",
        "greedy",
        "--cpu",
        "none",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown CPU policy `greedy`"));
    let one = vcoord(&["compare", m1.to_str().unwrap(), "--cpu", "none"]);
    assert!(!one.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_recorded(dir: &Path, host_extra: &str) -> Vec<TickRecord> {
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\n{host_extra}\n",
            root()
                .join("examples/scenarios/cpu-t2-all-on-one.toml")
                .display()
        ),
    )
    .unwrap();
    let record = dir.join("trace.jsonl");
    stdout_of(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
    ]);
    std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn shadow_policies_are_recorded_and_never_applied() {
    let dir = scratch("shadow");
    let plain = run_recorded(&dir, "[host.cpu_policy]\nname = \"none\"\n");
    let shadowed = run_recorded(
        &dir,
        &format!(
            "[host.cpu_policy]\nname = \"none\"\n[host.shadow_cpu_policy]\nplugin = \"{}\"\n\
             [host.shadow_memory_policy]\nname = \"none\"\n",
            spread_plugin()
        ),
    );
    assert_eq!(plain.len(), shadowed.len());
    for (a, b) in plain.iter().zip(&shadowed) {
        assert!(b.pins.is_empty() && a.pins.is_empty());
        assert_eq!(
            a.vms, b.vms,
            "the shadow changed the run at tick {}",
            a.tick
        );
    }
    let shadow = shadowed[0].shadow.as_ref().expect("shadow recorded");
    assert_eq!(
        shadow.cpu_policy.as_deref(),
        Some(format!("plugin:{}", spread_plugin()).as_str())
    );
    // All eight on pCPU 0: the shadow would move six, on every tick (nothing is applied).
    assert_eq!(shadow.pins.len(), 6);
    assert!(shadowed
        .iter()
        .all(|r| r.shadow.as_ref().unwrap().pins.len() == 6));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_through_the_same_policy_repeats_the_run_and_others_differ() {
    let dir = scratch("replay");
    let records = run_recorded(&dir, "");
    assert!(records.iter().all(|r| r.snapshot.is_some()));
    let trace = dir.join("trace.jsonl");
    let same = dir.join("same.toml");
    std::fs::write(&same, "[[host]]\nname = \"sim\"\nuri = \"sim:x.toml\"\n").unwrap();
    let json = stdout_of(&[
        "replay",
        trace.to_str().unwrap(),
        "--config",
        same.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let ticks: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(ticks.len(), records.len());
    for t in &ticks {
        assert_eq!(t["pins"], t["recorded_pins"], "tick {}", t["tick"]);
    }
    let other = dir.join("none.toml");
    std::fs::write(
        &other,
        "[[host]]\nname = \"sim\"\nuri = \"sim:x.toml\"\n[host.cpu_policy]\nname = \"none\"\n",
    )
    .unwrap();
    let table = stdout_of(&[
        "replay",
        trace.to_str().unwrap(),
        "--config",
        other.to_str().unwrap(),
    ]);
    assert!(table.contains("Open loop"), "{table}");
    assert!(table.contains("recorded: 6 pins on 1 ticks"), "{table}");
    assert!(table.contains("replayed: 0 pins on 0 ticks"), "{table}");
    // A recording made without snapshots cannot be replayed.
    let stripped = dir.join("stripped.jsonl");
    let lines: Vec<String> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.snapshot = None;
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    std::fs::write(&stripped, lines.join("\n")).unwrap();
    let out = vcoord(&[
        "replay",
        stripped.to_str().unwrap(),
        "--config",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no snapshots"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_over_its_time_limit_is_stopped_and_reported_while_the_others_report() {
    use std::time::Duration;
    use vcoord_core::config::HostConfig;
    use vcoord_core::tools::compare::{run_all_within, Contender};

    vcoord_policies::link();
    let scenario = root().join("examples/scenarios/cpu-t2-all-on-one.toml");
    let contender = |label: &str| Contender {
        label: label.into(),
        host: HostConfig::new("x", "sim:", Path::new(".")),
    };
    let contenders = [contender("a"), contender("b")];
    // No time at all: every run stops at its first tick and says why.
    let out = run_all_within(
        std::slice::from_ref(&scenario),
        &contenders,
        2,
        100.0,
        Duration::ZERO,
        &|_, _| {},
    );
    assert_eq!(out.len(), 2);
    for o in &out {
        let why = o.error.as_deref().unwrap_or_default();
        assert!(why.contains("the limit per run"), "{why}");
    }
    // Enough time: the same runs finish.
    let out = run_all_within(
        &[scenario],
        &contenders,
        2,
        100.0,
        Duration::from_secs(300),
        &|_, _| {},
    );
    assert!(out.iter().all(|o| o.error.is_none() && o.cpu.is_some()));
}
