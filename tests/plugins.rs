//! Policy plugins, end to end through the `vcoord` binary: the example plugins drive simulator
//! scenarios; every load failure names the file, the config key and what was expected; panics,
//! stalls and unsafe plans from a plugin are contained as documented.
//!
//! The plugin files are the workspace's cdylibs, next to the `vcoord` binary (built by
//! `cargo build --release --workspace`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{root, run_sim, scratch, Run};
use vcoord_core::tools::metrics::{cpu_metrics, memory_metrics};

/// A plugin file built by the workspace.
fn plugin(stem: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_vcoord")).parent().unwrap();
    let path = dir.join(format!("lib{stem}.so"));
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

fn scenario(name: &str) -> String {
    root()
        .join("examples/scenarios")
        .join(format!("{name}.toml"))
        .display()
        .to_string()
}

/// Runs `vcoord run` on a one-host config made of `host` lines (after name and uri) for
/// `scenario`, `ticks` ticks at info level.
fn run(scenario_name: &str, host: &str, ticks: Option<u32>) -> Run {
    let path = PathBuf::from(scenario(scenario_name));
    let n = ticks.map(|t| t.to_string());
    let mut args = vec!["--log-level", "info"];
    if let Some(n) = &n {
        args.extend(["--ticks", n.as_str()]);
    }
    run_sim(&path, host, &args)
}

/// `vcoord check-config` on a config whose first line is `top` and whose host has `host` lines.
fn check(top: &str, host: &str) -> (bool, String) {
    let dir = scratch("plugin-check");
    let path = dir.join("vcoord.toml");
    std::fs::write(
        &path,
        format!(
            "{top}\n[[host]]\nname = \"a\"\nuri = \"sim:{}\"\n{host}\n",
            scenario("cpu-t2-all-on-one")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cpu_plugin(stem: &str, extra: &str) -> String {
    format!(
        "[host.cpu_policy]\nplugin = \"{}\"\n{extra}",
        plugin(stem).display()
    )
}

#[test]
fn spread_plugin_balances_t2_and_then_never_moves() {
    let r = run("cpu-t2-all-on-one", &cpu_plugin("vcoord_spread", ""), None);
    assert!(r.ok, "{}", r.stderr);
    let m = cpu_metrics(&r.records, 5.0);
    assert!(m.ticks_to_balance.is_some_and(|t| t <= 2), "{m:?}");
    assert!(m.final_stdev_pct <= 5.0, "{m:?}");
    // 8 vCPUs all on pCPU 0: two stay, six move, once.
    assert_eq!(m.vcpu_moves, 6, "{m:?}");
    assert_eq!(m.vcpu_moves_after_balance, 0, "{m:?}");
    assert!(r.stderr.contains("plugin loaded"), "{}", r.stderr);
}

#[test]
fn spread_plugin_leaves_a_balanced_start_alone() {
    let r = run("cpu-t1-balanced", &cpu_plugin("vcoord_spread", ""), None);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(cpu_metrics(&r.records, 5.0).vcpu_moves, 0);
}

#[test]
fn proportional_share_plugin_runs_m1_without_starving_anyone() {
    let host = format!(
        "[host.memory_policy]\nplugin = \"{}\"\nparams = {{ headroom_mib = 300, max_step_mib = 200 }}\n",
        plugin("vcoord_proportional_share").display()
    );
    let r = run("mem-m1-one-grows", &host, None);
    assert!(r.ok, "{}", r.stderr);
    let m = memory_metrics(&r.records, 100.0);
    assert_eq!(m.oom_events, 0, "{m:?}");
    assert!(m.moved_mib > 500.0, "{m:?}");
    // Idle VMs gave memory back: each ends well under its start of 512 MiB.
    let last = r.records.last().unwrap();
    for vm in last.vms.iter().filter(|vm| vm.name != "vm1") {
        assert!(
            vm.actual_mib() < 450.0,
            "{} kept {} MiB",
            vm.name,
            vm.actual_mib()
        );
    }
}

#[test]
fn plugin_logs_reach_the_daemon_log_with_its_name() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin("vcoord_fixture_misbehave", ""),
        Some(3),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("tick 2: 8 VMs"), "{}", r.stderr);
    assert!(r.stderr.contains("misbehave"), "{}", r.stderr);
}

#[test]
fn missing_plugin_file_is_an_error_naming_where_it_looked() {
    let (ok, err) = check(
        "plugin_dirs = [\"/nonexistent/plugins\"]",
        "[host.cpu_policy]\nplugin = \"libnope.so\"\n",
    );
    assert!(!ok);
    assert!(err.contains("vcoord.toml:6:10"), "{err}");
    assert!(err.contains("host[0].cpu_policy.plugin"), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("/nonexistent/plugins/libnope.so"), "{err}");
}

#[test]
fn a_shared_library_that_is_no_plugin_is_refused() {
    let dir = scratch("noplugin");
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libm");
    let fake = dir.join("libm.so");
    std::fs::copy(libm, &fake).unwrap();
    let text = dir.join("libtext.so");
    std::fs::write(&text, "not an ELF file\n").unwrap();
    let (ok, err) = check(
        "",
        &format!("[host.cpu_policy]\nplugin = \"{}\"\n", fake.display()),
    );
    assert!(!ok);
    assert!(err.contains("is not a vcoord plugin"), "{err}");
    let (ok, err) = check(
        "",
        &format!("[host.cpu_policy]\nplugin = \"{}\"\n", text.display()),
    );
    assert!(!ok);
    assert!(
        err.contains("cannot be loaded as a shared library"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plugin_built_for_another_abi_version_is_refused_with_both_versions() {
    let (ok, err) = check("", &cpu_plugin("vcoord_fixture_old_abi", ""));
    assert!(!ok);
    assert!(err.contains("host[0].cpu_policy.plugin"), "{err}");
    assert!(err.contains("built for plugin ABI 0.0.1"), "{err}");
    assert!(
        err.contains(&format!("loads plugin ABI {}", vcoord_plugin::ABI_VERSION)),
        "{err}"
    );
}

#[test]
fn a_cpu_plugin_is_not_a_memory_policy() {
    let (ok, err) = check(
        "",
        &format!(
            "[host.memory_policy]\nplugin = \"{}\"\n",
            plugin("vcoord_spread").display()
        ),
    );
    assert!(!ok);
    assert!(err.contains("host[0].memory_policy.plugin"), "{err}");
    assert!(
        err.contains("has no memory policy (it offers: cpu)"),
        "{err}"
    );
}

#[test]
fn bad_plugin_params_are_named_by_key_and_line() {
    let (ok, err) = check(
        "",
        &cpu_plugin("vcoord_spread", "params = { rebalance = 3 }\n"),
    );
    assert!(!ok);
    assert!(err.contains("vcoord.toml:7:12"), "{err}");
    assert!(err.contains("host[0].cpu_policy.params.rebalance"), "{err}");
    assert!(err.contains("expected true or false"), "{err}");
    let (ok, err) = check(
        "",
        &cpu_plugin("vcoord_spread", "params = { rebalanse = true }\n"),
    );
    assert!(!ok);
    assert!(err.contains("`rebalanse`: unknown parameter"), "{err}");
}

#[test]
fn a_plugin_that_cannot_load_falls_back_when_told_to() {
    let r = run(
        "cpu-t2-all-on-one",
        "[host.cpu_policy]\nplugin = \"/nonexistent/libx.so\"\nfallback = \"greedy-lpt\"\n",
        Some(6),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("falling back to built-in `greedy-lpt`"),
        "{}",
        r.stderr
    );
    assert!(cpu_metrics(&r.records, 5.0).final_stdev_pct <= 5.0);
}

#[test]
fn a_panic_while_building_is_an_error_not_a_crash() {
    let (ok, err) = check(
        "",
        &cpu_plugin(
            "vcoord_fixture_misbehave",
            "params = { panic_in_new = true }\n",
        ),
    );
    assert!(!ok);
    assert!(err.contains("deliberate panic while building"), "{err}");
}

#[test]
fn a_panicking_plugin_is_quarantined_and_its_fallback_takes_over() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin(
            "vcoord_fixture_misbehave",
            "params = { panic_at_tick = 3 }\nfallback = \"greedy-lpt\"\n",
        ),
        Some(10),
    );
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.records.len(), 10);
    // Ticks 0-2: the plugin decided (no pins). From 3 on: the fallback, which balances.
    for rec in &r.records[..3] {
        assert!(
            rec.pins.is_empty() && rec.cpu_reason.starts_with("misbehave"),
            "{rec:?}"
        );
    }
    for rec in &r.records[3..] {
        assert!(rec.cpu_reason.contains("quarantined"), "{}", rec.cpu_reason);
        assert!(
            rec.cpu_reason.contains("deliberate panic at tick 3"),
            "{}",
            rec.cpu_reason
        );
    }
    assert!(!r.records[3].pins.is_empty(), "fallback acts at once");
    assert!(cpu_metrics(&r.records, 5.0).final_stdev_pct <= 5.0);
    assert_eq!(
        r.stderr.matches("plugin policy quarantined").count(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn a_panicking_plugin_without_fallback_changes_nothing_from_then_on() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin(
            "vcoord_fixture_misbehave",
            "params = { panic_at_tick = 0 }\n",
        ),
        Some(4),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.records.iter().all(|rec| rec.pins.is_empty()));
    assert!(r.records[3].cpu_reason.contains("no fallback, no change"));
}

#[test]
fn unsafe_plans_from_a_plugin_are_refused_by_the_guard() {
    let misbehave = plugin("vcoord_fixture_misbehave").display().to_string();
    let host = format!(
        "[host.cpu_policy]\nplugin = \"{misbehave}\"\nparams = {{ bad_plan = true }}\n\
         [host.memory_policy]\nplugin = \"{misbehave}\"\nparams = {{ bad_plan = true }}\n\
         [[host.vm]]\nmatch = \"*\"\ncpu_min_pct = 50\n"
    );
    let r = run("mem-m1-one-grows", &host, Some(5));
    assert!(r.ok, "{}", r.stderr);
    for rec in &r.records {
        assert!(rec.pins.is_empty() && rec.balloons.is_empty(), "{rec:?}");
        assert!(rec.tunes.is_empty(), "{rec:?}");
        // Each unsafe tune refused, with its reason counted.
        let mut reasons: Vec<&str> = rec
            .rejected
            .iter()
            .filter(|x| x.action.starts_with("tune "))
            .map(|x| x.reason.label())
            .collect();
        reasons.sort();
        assert_eq!(
            reasons,
            vec!["bad_pin", "bad_quota", "bad_weight", "below_minimum"],
            "{:?}",
            rec.rejected
        );
        // ... and nothing reached the VMs.
        assert!(rec.vms.iter().all(|vm| vm.cputune.is_empty()), "{rec:?}");
        assert!(rec.failed.is_empty(), "{rec:?}");
    }
    let why: Vec<&str> = r
        .records
        .iter()
        .flat_map(|rec| rec.rejected.iter().map(|x| x.why.as_str()))
        .collect();
    let has = |s: &str| why.iter().any(|w| w.contains(s));
    assert!(has("4096"), "{why:?}");
    assert!(has("negative"), "{why:?}");
    assert!(has("no such domain"), "{why:?}");
    // Memory untouched: every VM still has its starting 512 MiB.
    let last = r.records.last().unwrap();
    assert!(
        last.vms.iter().all(|vm| vm.actual_mib() == 512.0),
        "{last:?}"
    );
}

#[test]
fn a_slow_plugin_is_warned_then_quarantined() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin(
            "vcoord_fixture_misbehave",
            "params = { sleep_ms = 40 }\ndecide_budget_ms = 10\nmax_over_budget = 3\nfallback = \"greedy-lpt\"\n",
        ),
        Some(6),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.matches("plugin decide over budget").count() >= 3,
        "{}",
        r.stderr
    );
    assert!(
        r.records[3]
            .cpu_reason
            .contains("over its 10 ms budget 3 times"),
        "{}",
        r.records[3].cpu_reason
    );
}

#[test]
fn a_stalled_plugin_is_abandoned_at_ten_budgets() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin(
            "vcoord_fixture_misbehave",
            "params = { sleep_ms = 3000 }\ndecide_budget_ms = 20\n",
        ),
        Some(3),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.records[0].cpu_reason.contains("abandoned"),
        "{}",
        r.records[0].cpu_reason
    );
    assert!(r.records.iter().all(|rec| rec.pins.is_empty()));
}

#[test]
fn writable_plugin_files_are_refused_unless_allowed() {
    let dir = scratch("insecure");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("libspread.so");
    std::fs::copy(plugin("vcoord_spread"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let table = format!("[host.cpu_policy]\nplugin = \"{}\"\n", copy.display());
    let (ok, err) = check("", &table);
    assert!(!ok);
    assert!(err.contains("group- or world-writable"), "{err}");
    assert!(err.contains("allow_insecure"), "{err}");
    let (ok, err) = check("", &format!("{table}allow_insecure = true\n"));
    assert!(ok, "{err}");
    assert!(
        err.contains("WARN") && err.contains("fails the ownership and mode checks"),
        "loading anyway must warn: {err}"
    );
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, err) = check("", &table);
    assert!(ok, "{err}");

    // The directories above count too: one owned by someone else, or writable by others
    // two levels up.
    let nested = dir.join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let deep = nested.join("libspread.so");
    std::fs::copy(&copy, &deep).unwrap();
    let table = format!("[host.cpu_policy]\nplugin = \"{}\"\n", deep.display());
    std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, err) = check("", &table);
    assert!(!ok, "a world-writable grandparent was accepted");
    assert!(
        err.contains("directory") && err.contains("/a is group- or world-writable"),
        "{err}"
    );
    std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let foreign = std::process::Command::new("chown")
        .args(["65534", nested.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if foreign {
        let (ok, err) = check("", &table);
        assert!(!ok, "a directory owned by another user was accepted");
        assert!(err.contains("is owned by uid 65534"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policies_lists_plugins_with_name_version_and_kind() {
    let dir = scratch("list");
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "plugin_dirs = [\"{}\"]\n[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\n\
             [host.cpu_policy]\nplugin = \"libvcoord_spread.so\"\n\
             [host.memory_policy]\nplugin = \"libvcoord_proportional_share.so\"\n",
            plugin("vcoord_spread").parent().unwrap().display()
        ),
    )
    .unwrap();
    let out = common::vcoord(&["policies", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(str::to_owned)
    };
    let spread = line("spread").expect("spread listed");
    assert!(
        spread.contains("0.1.0") && spread.contains(" cpu "),
        "{spread}"
    );
    let share = line("proportional-share").expect("proportional-share listed");
    assert!(share.contains("memory"), "{share}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fenced block of `lang` that follows `marker` in the documentation (README.md, then
/// docs/*.md).
fn readme_block(marker: &str, lang: &str) -> String {
    let readme = common::documentation();
    let after = &readme[readme.find(marker).expect("marker in the documentation")..];
    let fence = format!("```{lang}\n");
    let start = after.find(&fence).expect("block after marker") + fence.len();
    let len = after[start..].find("```").unwrap();
    after[start..start + len].to_owned()
}

#[test]
fn the_readme_policy_is_the_one_built_and_tested_here() {
    let dir = root().join("plugins/examples/minimal");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(
        readme_block("The policy, `one_move.rs`:", "rust"),
        read("src/one_move.rs")
    );
    assert_eq!(readme_block("`src/lib.rs`:", "rust"), read("src/lib.rs"));
    // Cargo.toml: the same but for where vcoord's crates are found.
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("vcoord-"))
            .map(|l| l.split('#').next().unwrap().trim_end().to_owned())
            .collect()
    };
    assert_eq!(
        strip(&readme_block("**As a plugin**", "toml")),
        strip(&read("Cargo.toml"))
    );
}

#[test]
fn the_readme_plugin_balances_t2_one_move_at_a_time() {
    let r = run(
        "cpu-t2-all-on-one",
        &cpu_plugin("vcoord_one_move", ""),
        None,
    );
    assert!(r.ok, "{}", r.stderr);
    let m = cpu_metrics(&r.records, 5.0);
    assert!(m.final_stdev_pct <= 5.0, "{m:?}");
    assert!(r.records.iter().all(|rec| rec.pins.len() <= 1));
    // Saturated pCPUs read 100% whatever they carry: it stops once all read full.
    assert!((3..=6).contains(&m.vcpu_moves), "{m:?}");
    // Utilization is fooled, demand is not: short of the six moves T2 needs, the pCPUs' demand
    // (utilization + run-queue wait) is still uneven and the run is not called balanced.
    if m.vcpu_moves < 6 {
        assert_eq!(m.ticks_to_balance, None, "{m:?}");
        assert!(m.final_demand_stdev_pct > 5.0, "{m:?}");
    }
    assert!(r.stderr.contains("moving vm"), "{}", r.stderr);
    let (ok, err) = check(
        "",
        &cpu_plugin("vcoord_one_move", "params = { gap_pct = 500 }\n"),
    );
    assert!(!ok);
    assert!(err.contains("`host[0].cpu_policy.params.gap_pct`"), "{err}");
    assert!(err.contains("500 is out of range [1, 100]"), "{err}");
}

/// Every shipped scenario, by path.
fn all_scenarios() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("examples/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    all.sort();
    assert!(all.len() >= 10, "{all:?}");
    all
}

#[test]
fn built_in_policies_and_their_plugin_twins_decide_the_same_tick_for_tick() {
    // The twins plugin is compiled from the built-ins' own source files. A generous budget:
    // this compares decisions, not speed, on a machine that may be busy.
    let twins = plugin("vcoord_twins");
    let builtin = "[host.cpu_policy]\nname = \"stable-balance\"\n\
                   [host.memory_policy]\nname = \"pressure-balloon\"\n";
    let as_plugin = format!(
        "[host.cpu_policy]\nplugin = \"{0}\"\ndecide_budget_ms = 10000\n\
         [host.memory_policy]\nplugin = \"{0}\"\ndecide_budget_ms = 10000\n",
        twins.display()
    );
    for scenario in all_scenarios() {
        let a = common::run_scenario(&scenario, builtin);
        let b = common::run_scenario(&scenario, &as_plugin);
        assert_eq!(a.len(), b.len(), "{}", scenario.display());
        assert!(!a.is_empty());
        for (x, y) in a.iter().zip(&b) {
            let at = format!("{} tick {}", scenario.display(), x.tick);
            assert_eq!(x.pins, y.pins, "{at}");
            assert_eq!(x.balloons, y.balloons, "{at}");
            assert_eq!(x.rejected, y.rejected, "{at}");
            assert_eq!(x.cpu_reason, y.cpu_reason, "{at}");
            assert_eq!(x.memory_reason, y.memory_reason, "{at}");
            assert_eq!(x.vms, y.vms, "{at}");
        }
    }

    // And `vcoord compare` scores the two alike on every scenario.
    let dir = root().join("examples/scenarios");
    let out = common::vcoord(&[
        "compare",
        dir.to_str().unwrap(),
        "--cpu",
        "stable-balance",
        "--cpu",
        twins.to_str().unwrap(),
        "--memory",
        "pressure-balloon",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["runs"].as_array().unwrap();
    let by_scenario = |s: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["scenario"] == s).collect()
    };
    for scenario in all_scenarios() {
        let name = scenario.file_stem().unwrap().to_str().unwrap();
        let pair = by_scenario(name);
        assert_eq!(pair.len(), 2, "{name}: {pair:?}");
        let strip = |row: &serde_json::Value| {
            let mut row = row.clone();
            row.as_object_mut().unwrap().remove("policy");
            row
        };
        assert_eq!(strip(pair[0]), strip(pair[1]), "{name}");
        assert!(pair[0]["error"].is_null() && pair[1]["error"].is_null());
    }
}

/// A plugin that knows nothing of the dedicated class (`spread` pins every vCPU evenly over all
/// pCPUs) beside a dedicated VM: the guard refuses, counted as `dedicated`, every pin it plans
/// onto the dedicated VM's pCPU, so that pCPU carries the dedicated VM alone all run long.
#[test]
fn a_plugin_plan_onto_a_dedicated_pcpu_is_refused_by_the_guard() {
    let extra = format!(
        "{}\n[[host.vm]]\nmatch = \"vm1\"\nplacement = \"dedicated\"\n",
        cpu_plugin("vcoord_spread", "")
    );
    let r = run("cpu-t2-all-on-one", &extra, None);
    assert!(r.ok, "{}", r.stderr);
    let refused: Vec<&vcoord_core::runtime::guard::Rejection> = r
        .records
        .iter()
        .flat_map(|rec| &rec.rejected)
        .filter(|x| x.reason == vcoord_core::runtime::guard::Refusal::Dedicated)
        .collect();
    assert!(
        !refused.is_empty(),
        "nothing refused: the test shows nothing"
    );
    assert!(
        refused
            .iter()
            .all(|x| x.vm != "vm1" && x.why.contains("dedicated to vm1")),
        "{refused:?}"
    );
    for rec in &r.records {
        for pin in &rec.pins {
            assert!(
                pin.vm == "vm1" || !pin.cpus.contains(3),
                "tick {}: {} put on the dedicated pCPU",
                rec.tick,
                pin.vm
            );
        }
    }
}
