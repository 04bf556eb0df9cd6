//! Bad input, everywhere it enters: configurations, scenarios, recordings and the command line.
//! Each case must end with a non-zero exit and one located error (file and line, or the key,
//! or the flag), never a panic, an abort or a hang (every run has a time limit). Then
//! property-based mutations of valid configurations and scenarios, fed to the parsers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{root, scratch};
use proptest::prelude::*;
use vcoord_core::backend::sim::Scenario;
use vcoord_core::config::Config;

/// How a bad input must be reported.
struct Case {
    /// What is wrong, for failure messages.
    what: &'static str,
    /// Texts that must all appear in the error.
    expect: Vec<String>,
}

/// Runs `vcoord args` in `dir` with a time limit; returns (exit code, stderr).
fn run_limited(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(args)
        .current_dir(dir)
        .env("VCOORD_LOG", "error")
        .env("VCOORD_RUN_DIR", dir.join("run"))
        .env("VCOORD_STATE_DIR", dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("vcoord {args:?} hung (killed after 30 s)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(case: &Case, code: Option<i32>, err: &str) {
    assert!(
        matches!(code, Some(c) if c != 0),
        "{}: exit {code:?}\n{err}",
        case.what
    );
    // A panic of vcoord's own prints `thread '...' panicked at` and a backtrace hint.
    assert!(!err.contains("thread '"), "{}: a panic\n{err}", case.what);
    assert!(
        !err.contains("RUST_BACKTRACE"),
        "{}: a panic\n{err}",
        case.what
    );
    let errors = err.matches("error").count();
    assert!(
        (1..=2).contains(&errors),
        "{}: said {errors} times\n{err}",
        case.what
    );
    for want in &case.expect {
        assert!(
            err.contains(want.as_str()),
            "{}: no `{want}` in\n{err}",
            case.what
        );
    }
}

fn scenario_path() -> String {
    root()
        .join("examples/scenarios/cpu-t2-all-on-one.toml")
        .display()
        .to_string()
}

/// Configurations that must be refused by `check-config` and `run`, with what the error
/// must say (`c.toml:LINE` and the key, when there is one).
fn bad_configs() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let sim = scenario_path();
    let host = format!("[[host]]\nname = \"a\"\nuri = \"sim:{sim}\"\n");
    let plugin = |stem: &str| {
        Path::new(env!("CARGO_BIN_EXE_vcoord"))
            .with_file_name(format!("lib{stem}.so"))
            .display()
            .to_string()
    };
    vec![
        ("empty file", String::new(), vec!["no [[host]] table"]),
        ("not TOML", "[[host]\nname=".into(), vec!["c.toml:1"]),
        ("unknown top key", format!("colour = 1\n{host}"), vec!["c.toml:1", "colour"]),
        ("unknown host key", format!("{host}colour = 1\n"), vec!["c.toml:4", "colour"]),
        ("empty host name", format!("[[host]]\nname = \" \"\nuri = \"sim:{sim}\"\n"), vec!["c.toml:2", "host[0].name"]),
        ("host name with a newline", format!("[[host]]\nname = \"a\\nb\"\nuri = \"sim:{sim}\"\n"), vec!["c.toml:2", "host[0].name", "`a\\nb` has control or reordering characters"]),
        ("host name of a megabyte", format!("[[host]]\nname = \"{}\"\nuri = \"sim:{sim}\"\n", "h".repeat(1 << 20)), vec!["c.toml:2", "host[0].name", "1048576 characters: a host name has at most 253"]),
        ("host name that reverses the line", format!("[[host]]\nname = \"a\u{202e}b\"\nuri = \"sim:{sim}\"\n"), vec!["c.toml:2", "host[0].name", "\\u{202e}"]),
        ("host name twice", format!("{host}{host}"), vec!["c.toml:5", "used twice"]),
        ("empty uri", "[[host]]\nname = \"a\"\nuri = \"\"\n".into(), vec!["c.toml:3", "host[0].uri"]),
        ("interval 0", format!("{host}interval_s = 0\n"), vec!["c.toml:4", "interval_s"]),
        ("interval nan", format!("{host}interval_s = nan\n"), vec!["c.toml:4", "interval_s"]),
        ("interval huge", format!("{host}interval_s = 1e300\n"), vec!["c.toml:4", "interval_s"]),
        ("stats period 0", format!("{host}memory_stats_period_s = 0\n"), vec!["c.toml:4", "memory_stats_period_s"]),
        ("budget 0", format!("{host}guest_memory_budget_mib = 0\n"), vec!["c.toml:4", "guest_memory_budget_mib"]),
        ("budget negative", format!("{host}guest_memory_budget_mib = -5\n"), vec!["c.toml:4"]),
        ("memory interval negative", format!("{host}memory_interval_s = -1\n"), vec!["c.toml:4", "memory_interval_s"]),
        ("unknown CPU capacity", format!("{host}cpu_capacity = \"some\"\n"), vec!["c.toml:4", "cpu_capacity", "measured", "whole"]),
        ("unknown KSM mode", format!("{host}ksm = \"sometimes\"\n"), vec!["c.toml:4", "ksm", "auto", "leave"]),
        ("KSM cool time negative", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ ksm_cool_s = -1 }}\n"), vec!["c.toml:6", "ksm_cool_s", "out of range"]),
        ("unknown CPU policy", format!("{host}[host.cpu_policy]\nname = \"greedy\"\n"), vec!["c.toml:5", "unknown CPU policy `greedy`"]),
        ("unknown memory policy", format!("{host}[host.memory_policy]\nname = \"x\"\n"), vec!["c.toml:5", "unknown memory policy"]),
        ("unknown parameter", format!("{host}[host.cpu_policy]\nname = \"stable-balance\"\nparams = {{ trigger = 5 }}\n"), vec!["c.toml:6", "params.trigger", "unknown parameter"]),
        ("parameter of the wrong type", format!("{host}[host.cpu_policy]\nname = \"stable-balance\"\nparams = {{ half_life_s = \"x\" }}\n"), vec!["c.toml:6", "params.half_life_s", "expected a number"]),
        ("parameter out of range", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ threshold_mib = -5 }}\n"), vec!["c.toml:6", "threshold_mib", "out of range"]),
        ("parameter nan", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ lead_s = nan }}\n"), vec!["c.toml:6", "lead_s"]),
        ("parameter huge", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ lead_s = 1e308 }}\n"), vec!["c.toml:6", "1e308"]),
        ("critical above pressure", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ critical_pct = 50, pressure_pct = 10 }}\n"), vec!["c.toml:6", "critical_pct", "above pressure_pct"]),
        ("per-VM min above max", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ min_mib = {{ a = 900 }}, max_mib = {{ a = 100 }} }}\n"), vec!["c.toml:6", "min_mib.a"]),
        ("per-VM value of the wrong type", format!("{host}[host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ shares = {{ a = \"x\" }} }}\n"), vec!["c.toml:6", "shares.a"]),
        ("VM rule mode", format!("{host}[[host.vm]]\nmatch = \"x\"\ncpu = \"off\"\n"), vec!["c.toml:"]),
        ("VM rule min above max", format!("{host}[[host.vm]]\nmatch = \"x\"\nmin_mib = 9\nmax_mib = 3\n"), vec!["c.toml:4", "vm[0].min_mib"]),
        ("VM rule shares 0", format!("{host}[[host.vm]]\nmatch = \"x\"\nshares = 0\n"), vec!["c.toml:4", "vm[0].shares"]),
        ("VM rule placement", format!("{host}[[host.vm]]\nmatch = \"x\"\nplacement = \"spread\"\n"), vec!["c.toml:", "spread", "pin", "group", "ignore"]),
        ("VM rule CPU weight out of range", format!("{host}[[host.vm]]\nmatch = \"x\"\ncpu_shares = 1\n"), vec!["c.toml:4", "vm[0].cpu_shares", "out of range [2, 262144]"]),
        ("VM rule CPU minimum above maximum", format!("{host}[[host.vm]]\nmatch = \"x\"\ncpu_min_pct = 80\ncpu_max_pct = 50\n"), vec!["c.toml:4", "vm[0].cpu_min_pct", "above cpu_max_pct"]),
        ("VM rules whose sizes contradict", format!("{host}[[host.vm]]\nmatch = \"vm*\"\nmin_mib = 900\n[[host.vm]]\nmatch = \"vm1\"\nmax_mib = 300\n"), vec!["c.toml:7", "host[0].vm[1]", "`vm1`", "min_mib = 900 from host[0].vm[0] (match = \"vm*\")", "max_mib = 300 from host[0].vm[1] (match = \"vm1\")"]),
        ("VM rules whose CPU bounds contradict", format!("{host}[[host.vm]]\nmatch = \"*\"\ncpu_min_pct = 80\n[[host.vm]]\nmatch = \"db-*\"\ncpu_max_pct = 20\n"), vec!["c.toml:7", "host[0].vm[1]", "cpu_min_pct = 80 from host[0].vm[0]", "cpu_max_pct = 20"]),
        ("VM rule with cpu and placement that contradict", format!("{host}[[host.vm]]\nmatch = \"x\"\ncpu = \"manage\"\nplacement = \"ignore\"\n"), vec!["c.toml:4", "vm[0].placement", "contradicts"]),
        ("budget below one guest's floor", format!("{host}guest_memory_budget_mib = 1\n"), vec!["c.toml:4", "guest_memory_budget_mib", "out of range [200,"]),
        ("guard limit beyond any host", format!("{host}[host.guard]\nhost_reserve_mib = 18446744073709551615\n"), vec!["c.toml:", "guard.host_reserve_mib", "out of range"]),
        ("guard floor below a live guest", format!("{host}[host.guard]\nguest_floor_mib = 1\n"), vec!["c.toml:", "guard.guest_floor_mib", "out of range [64,"]),
        ("VM rule CPU maximum 0", format!("{host}[[host.vm]]\nmatch = \"x\"\ncpu_max_pct = 0\n"), vec!["c.toml:4", "vm[0].cpu_max_pct"]),
        ("group-balance grouping unknown", format!("{host}[host.cpu_policy]\nname = \"group-balance\"\nparams = {{ group_by = \"llc\" }}\n"), vec!["c.toml:6", "group_by", "\"node\", \"socket\" or \"core\""]),
        ("VM rule without a pattern", format!("{host}[[host.vm]]\nmatch = \"\"\n"), vec!["c.toml:4", "vm[0].match"]),
        ("metrics address", format!("[metrics]\nlisten = \"localhost\"\n{host}"), vec!["c.toml:2", "metrics.listen"]),
        ("empty fleet host", format!("[metrics]\nlisten = \"127.0.0.1:9477\"\nfleet_host = \" \"\n{host}"), vec!["c.toml:3", "metrics.fleet_host", "host name"]),
        ("log level", format!("log_level = \"loud\"\n{host}"), vec!["c.toml:1", "log_level"]),
        ("guard key unknown", format!("{host}[host.guard]\nreserve = 1\n"), vec!["c.toml:"]),
        ("guard value negative", format!("{host}[host.guard]\nguest_floor_mib = -1\n"), vec!["c.toml:5"]),
        ("plugin missing", format!("{host}[host.cpu_policy]\nplugin = \"libnothing.so\"\n"), vec!["c.toml:5", "not found"]),
        ("plugin not a library", format!("{host}[host.cpu_policy]\nplugin = \"c.toml\"\n"), vec!["c.toml:5", "cannot be loaded as a shared library"]),
        ("plugin of the other kind", format!("{host}[host.memory_policy]\nplugin = \"{}\"\n", plugin("vcoord_spread")), vec!["c.toml:5", "has no memory policy"]),
        ("plugin panicking while built", format!("{host}[host.cpu_policy]\nplugin = \"{}\"\nparams = {{ panic_in_new = true }}\n", plugin("vcoord_fixture_misbehave")), vec!["c.toml:", "panicked: deliberate panic while building"]),
        ("plugin parameter refused", format!("{host}[host.cpu_policy]\nplugin = \"{}\"\nparams = {{ rebalance = 3 }}\n", plugin("vcoord_spread")), vec!["c.toml:6", "params.rebalance"]),
        ("shadow policy unknown", format!("{host}[host.shadow_cpu_policy]\nname = \"x\"\n"), vec!["c.toml:5", "unknown CPU policy"]),
        ("shadow plugin missing", format!("{host}[host.shadow_memory_policy]\nplugin = \"libnothing.so\"\n"), vec!["c.toml:5", "not found"]),
        ("fallback unknown", format!("{host}[host.cpu_policy]\nplugin = \"{}\"\nfallback = \"x\"\n", plugin("vcoord_spread")), vec!["c.toml:", "unknown CPU policy `x`"]),
        ("decide budget of the wrong type", format!("{host}[host.cpu_policy]\nplugin = \"{}\"\ndecide_budget_ms = \"fast\"\n", plugin("vcoord_spread")), vec!["c.toml:6", "`host.cpu_policy.decide_budget_ms`"]),
        ("a megabyte value", format!("{host}[host.cpu_policy]\nname = \"{}\"\n", "x".repeat(1 << 20)), vec!["c.toml:5", "characters left out"]),
        ("one host twice under two URIs", "[[host]]\nname = \"a\"\nuri = \"qemu:///system\"\n[[host]]\nname = \"b\"\nuri = \"qemu+unix:///system\"\n".into(), vec!["c.toml:6", "host[1].uri", "`qemu+unix:///system` reaches the same host as host `a` (`qemu:///system`)"]),
        ("one host twice through its socket", "[[host]]\nname = \"a\"\nuri = \"qemu:///system\"\n[[host]]\nname = \"b\"\nuri = \"qemu:///system?socket=/var/run/libvirt/../libvirt//libvirt-sock\"\n".into(), vec!["c.toml:6", "host[1].uri", "reaches the same host as host `a`"]),
        ("missing scenario", "[[host]]\nname = \"a\"\nuri = \"sim:nothing.toml\"\n".into(), vec!["nothing.toml"]),
    ]
}

#[test]
fn bad_configurations_are_refused_once_and_located() {
    let dir = scratch("bad-config");
    let path = dir.join("c.toml");
    let cases = bad_configs();
    for (what, text, expect) in &cases {
        std::fs::write(&path, text).unwrap();
        let case = Case {
            what,
            expect: expect.iter().map(|s| s.to_string()).collect(),
        };
        let (code, err) = run_limited(&dir, &["check-config", path.to_str().unwrap()]);
        check(&case, code, &err);
        // `run` refuses the same, before it does anything.
        let (code, err) = run_limited(&dir, &["run", "-c", path.to_str().unwrap(), "--ticks", "2"]);
        check(&case, code, &err);
    }
    let _ = std::fs::remove_dir_all(&dir);
    report("configurations", cases.len());
}

/// Scenarios that must be refused, with what the error must say.
fn bad_scenarios() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let head = "name = \"s\"\nduration_s = 20\n[host]\npcpus = 2\nmemory_mib = 4096\n";
    let vm = "[[vm]]\nname = \"v\"\nmax_memory_mib = 1024\nmemory_mib = 512\n";
    let with = |extra: &str| format!("{head}{vm}{extra}");
    vec![
        (
            "a shareable share over 100%",
            with("ksm_shareable_pct = 150\n"),
            vec!["s.toml:10", "ksm_shareable_pct", "out of range"],
        ),
        (
            "duration inf",
            format!("name = \"s\"\nduration_s = inf\n[host]\npcpus = 2\nmemory_mib = 4096\n{vm}"),
            vec!["s.toml:2", "duration_s"],
        ),
        (
            "duration huge",
            format!("name = \"s\"\nduration_s = 1e12\n[host]\npcpus = 2\nmemory_mib = 4096\n{vm}"),
            vec!["s.toml:2", "duration_s", "1e12"],
        ),
        (
            "duration negative",
            format!("name = \"s\"\nduration_s = -5\n[host]\npcpus = 2\nmemory_mib = 4096\n{vm}"),
            vec!["s.toml:2", "duration_s"],
        ),
        (
            "duration nan",
            format!("name = \"s\"\nduration_s = nan\n[host]\npcpus = 2\nmemory_mib = 4096\n{vm}"),
            vec!["s.toml:2", "duration_s"],
        ),
        (
            "no pCPUs",
            "name = \"s\"\nduration_s = 20\n[host]\npcpus = 0\nmemory_mib = 4096\n".into(),
            vec!["s.toml:4", "host.pcpus"],
        ),
        (
            "host memory 0",
            "name = \"s\"\nduration_s = 20\n[host]\npcpus = 2\nmemory_mib = 0\n".into(),
            vec!["s.toml:5", "host.memory_mib"],
        ),
        (
            "host used above host memory",
            format!("{head}host_used_mib = 9000\n"),
            vec!["s.toml:6", "host_used_mib"],
        ),
        (
            "balloon rate 0",
            format!("{head}balloon_rate_mib_s = 0\n"),
            vec!["s.toml:6", "balloon_rate_mib_s"],
        ),
        (
            "balloon rate nan",
            format!("{head}balloon_rate_mib_s = nan\n"),
            vec!["s.toml:6", "balloon_rate_mib_s"],
        ),
        (
            "SMT not dividing",
            format!("{head}threads_per_core = 3\n"),
            vec!["s.toml:", "threads_per_core"],
        ),
        (
            "a hundred million vCPUs",
            with("vcpus = 100000000\n"),
            vec!["s.toml:10", "vcpus"],
        ),
        ("count 0", with("count = 0\n"), vec!["s.toml:10", "count"]),
        (
            "too many vCPUs in all",
            with("count = 10000\nvcpus = 100\n"),
            vec!["s.toml:10", "count"],
        ),
        (
            "noise nan",
            with("cpu_noise_pct = nan\n"),
            vec!["s.toml:10", "cpu_noise_pct"],
        ),
        (
            "negative growth",
            with("memory = [{ grow_mib_s = -5, to_mib = 600 }]\n"),
            vec!["s.toml:10", "memory"],
        ),
        (
            "growth beyond the VM",
            with("memory = [{ grow_mib_s = 5, to_mib = 6000 }]\n"),
            vec!["s.toml:10", "to_mib"],
        ),
        (
            "hold nan",
            with("memory = [{ hold_s = nan }]\n"),
            vec!["s.toml:10", "hold_s"],
        ),
        (
            "two things in one phase",
            with("memory = [{ use_mib = 5, free = true }]\n"),
            vec!["s.toml:10", "memory"],
        ),
        (
            "stop before start",
            with("start_s = 10\nstop_s = 5\n"),
            vec!["s.toml:11", "stop_s"],
        ),
        (
            "a job that ends before it starts",
            with("jobs = [[5, 2]]\n"),
            vec!["s.toml:10", "jobs[0]", "not after it starts"],
        ),
        (
            "a job after the end",
            with("jobs = [[500, 600]]\n"),
            vec!["s.toml:10", "jobs[0]"],
        ),
        (
            "start after the end",
            with("start_s = 50\n"),
            vec!["s.toml:10", "start_s"],
        ),
        (
            "used above the VM's size",
            with("base_used_mib = 900\n"),
            vec!["s.toml:10", "base_used_mib"],
        ),
        (
            "memory above max",
            format!("{head}[[vm]]\nname = \"v\"\nmax_memory_mib = 512\nmemory_mib = 1024\n"),
            vec!["s.toml:9", "memory_mib"],
        ),
        (
            "demand above 100",
            with("cpu = [{ pct = 150 }]\n"),
            vec!["s.toml:10", "cpu"],
        ),
        (
            "phase of no length",
            with("cpu = [{ pct = 50, for_s = 0 }, { pct = 10 }]\n"),
            vec!["s.toml:10", "cpu"],
        ),
        (
            "one vCPU's demand above 100",
            with("vcpus = 2\nvcpu_cpu = [[{ pct = 50 }], [{ pct = 300 }]]\n"),
            vec!["s.toml:11", "vm[0].vcpu_cpu", "out of range"],
        ),
        (
            "pins out of range",
            with("pins = [7]\n"),
            vec!["s.toml:10", "pCPU 7 does not exist"],
        ),
        (
            "host load on a missing pCPU",
            format!("name = \"s\"\nduration_s = 20\n[host]\npcpus = 2\nmemory_mib = 4096\nother_load = [{{ pcpu = 2, cpu = [{{ pct = 50 }}] }}]\n{vm}"),
            vec!["s.toml:6", "host.other_load[0].pcpu", "pCPU 2 does not exist"],
        ),
        (
            "host load above 100",
            format!("name = \"s\"\nduration_s = 20\n[host]\npcpus = 2\nmemory_mib = 4096\nother_load = [{{ pcpu = 1, cpu = [{{ pct = 150 }}] }}]\n{vm}"),
            vec!["s.toml:6", "host.other_load[0].cpu", "out of range"],
        ),
        (
            "virtio-mem device off its block",
            with("virtio_mem_mib = 1023\nvirtio_mem_block_mib = 2\n"),
            vec![
                "s.toml:10",
                "virtio_mem_mib",
                "not a multiple of virtio_mem_block_mib",
            ],
        ),
        (
            "virtio-mem block of 0",
            with("virtio_mem_mib = 1024\nvirtio_mem_block_mib = 0\n"),
            vec!["s.toml:11", "virtio_mem_block_mib"],
        ),
        (
            "unknown key",
            with("colour = 1\n"),
            vec!["s.toml:10", "colour"],
        ),
        (
            "VM name twice",
            format!("{head}{vm}{vm}"),
            vec!["s.toml:", "used twice"],
        ),
    ]
}

#[test]
fn bad_scenarios_are_refused_once_and_located() {
    let dir = scratch("bad-scenario");
    std::fs::write(
        dir.join("a.toml"),
        "[[host]]\nname = \"a\"\nuri = \"sim:s.toml\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.toml"),
        "[[host]]\nname = \"b\"\nuri = \"sim:s.toml\"\n[host.cpu_policy]\nname = \"none\"\n",
    )
    .unwrap();
    let cases = bad_scenarios();
    for (what, text, expect) in &cases {
        std::fs::write(dir.join("s.toml"), text).unwrap();
        let case = Case {
            what,
            expect: expect.iter().map(|s| s.to_string()).collect(),
        };
        // check-config reads the scenarios the configuration names.
        let (code, err) = run_limited(&dir, &["check-config", "a.toml"]);
        check(&case, code, &err);
        let (code, err) = run_limited(&dir, &["run", "-c", "a.toml", "--ticks", "3"]);
        check(&case, code, &err);
        let (code, err) = run_limited(&dir, &["compare", "s.toml", "-c", "a.toml", "-c", "b.toml"]);
        check(&case, code, &err);
    }
    let _ = std::fs::remove_dir_all(&dir);
    report("scenarios", cases.len());
}

#[test]
fn bad_command_lines_and_recordings_are_refused_once() {
    let dir = scratch("bad-cli");
    let sim = scenario_path();
    std::fs::write(
        dir.join("c.toml"),
        format!("[[host]]\nname = \"a\"\nuri = \"sim:{sim}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("not-a-trace.jsonl"), "hello\n").unwrap();
    std::fs::write(dir.join("empty.jsonl"), "").unwrap();
    std::fs::write(dir.join("future.jsonl"), "{\"schema\": 99, \"tick\": 0}\n").unwrap();
    std::fs::write(dir.join("old.jsonl"), "{\"tick\": 0, \"host\": \"a\"}\n").unwrap();
    std::fs::write(dir.join("binary.jsonl"), b"\n\n\xff\xfe\x00garbage\n").unwrap();
    // A good recording of host `a`.
    let (code, err) = run_limited(
        &dir,
        &[
            "run",
            "-c",
            "c.toml",
            "--ticks",
            "2",
            "--record",
            "rec.jsonl",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let recorded = std::fs::read(dir.join("rec.jsonl")).unwrap();
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let fifo = dir.join("c.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "a configuration that is a FIFO",
            vec!["check-config", "c.fifo"],
            vec!["c.fifo", "a FIFO, not a regular file"],
        ),
        (
            "a configuration that is a FIFO, to run",
            vec!["run", "-c", "c.fifo", "--ticks", "1"],
            vec!["c.fifo", "a FIFO, not a regular file"],
        ),
        (
            "a configuration that never ends",
            vec!["check-config", "/dev/zero"],
            vec!["/dev/zero", "a device, not a regular file"],
        ),
        (
            "--jobs 0",
            vec![
                "compare",
                "x",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--jobs",
                "0",
            ],
            vec!["--jobs"],
        ),
        (
            "--threshold-mib nan",
            vec![
                "compare",
                "x",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--threshold-mib",
                "nan",
            ],
            vec!["--threshold-mib"],
        ),
        (
            "--threshold-mib negative",
            vec![
                "compare",
                "x",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--threshold-mib=-1",
            ],
            vec!["--threshold-mib"],
        ),
        (
            "--ticks negative",
            vec!["run", "--ticks=-1"],
            vec!["--ticks"],
        ),
        (
            "--ticks a word",
            vec!["run", "--ticks", "many"],
            vec!["--ticks"],
        ),
        (
            "--ticks 0 (a run that would do nothing)",
            vec!["run", "-c", "c.toml", "--ticks", "0"],
            vec!["--ticks", "0"],
        ),
        (
            "status of an empty URI",
            vec!["status", "--connect", ""],
            vec!["--connect", "empty URI"],
        ),
        (
            "a scenario written over its own recording",
            vec!["scenario", "from-record", "rec.jsonl", "-o", "./rec.jsonl"],
            vec!["rec.jsonl", "is the recording itself"],
        ),
        (
            "a scenario of a host the recording does not hold",
            vec![
                "scenario",
                "from-record",
                "rec.jsonl",
                "-o",
                "s.toml",
                "--host",
                "nosuch",
            ],
            vec!["rec.jsonl", "holds host `a`, not `nosuch`"],
        ),
        (
            "a recording that is not text",
            vec!["replay", "binary.jsonl", "-c", "c.toml"],
            vec!["binary.jsonl:3", "not UTF-8"],
        ),
        ("unknown command", vec!["frobnicate"], vec!["frobnicate"]),
        ("unknown flag", vec!["run", "--fast"], vec!["--fast"]),
        (
            "--window-s 0",
            vec!["status", "--connect", "sim:x", "--window-s", "0"],
            vec!["--window-s"],
        ),
        (
            "--log-level loud",
            vec!["run", "--log-level", "loud"],
            vec!["--log-level"],
        ),
        (
            "--format xml",
            vec!["compare", "x", "--cpu", "none", "--format", "xml"],
            vec!["--format"],
        ),
        (
            "--record-max-mib 0",
            vec!["run", "--record-max-mib", "0"],
            vec!["--record-max-mib"],
        ),
        (
            "one contender",
            vec!["compare", &sim, "--cpu", "none"],
            vec!["two or more contenders"],
        ),
        (
            "scenario missing",
            vec![
                "compare",
                "nothing.toml",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
            ],
            vec!["nothing.toml"],
        ),
        (
            "config is a directory",
            vec!["run", "-c", "a-directory"],
            vec!["a-directory", "a directory, not a regular file"],
        ),
        (
            "config missing",
            vec!["run", "-c", "nothing.toml"],
            vec!["nothing.toml"],
        ),
        (
            "--host unknown",
            vec!["run", "-c", "c.toml", "--host", "b"],
            vec!["no host named `b`"],
        ),
        (
            "record into a directory",
            vec!["run", "-c", "c.toml", "--record", "a-directory"],
            vec!["a-directory"],
        ),
        (
            "replay of no trace",
            vec!["replay", "not-a-trace.jsonl", "-c", "c.toml"],
            vec!["not-a-trace.jsonl:1", "not a vcoord tick record"],
        ),
        (
            "replay of an empty trace",
            vec!["replay", "empty.jsonl", "-c", "c.toml"],
            vec!["no ticks"],
        ),
        (
            "replay of a future schema",
            vec!["replay", "future.jsonl", "-c", "c.toml"],
            vec!["future.jsonl:1", "schema 99"],
        ),
        (
            "replay of an old trace",
            vec!["replay", "old.jsonl", "-c", "c.toml"],
            vec!["old.jsonl:1", "before schema versions"],
        ),
        (
            "replay of a missing trace",
            vec!["replay", "nothing.jsonl", "-c", "c.toml"],
            vec!["nothing.jsonl"],
        ),
        (
            "status of a bad URI",
            vec!["status", "--connect", "sim:nothing.toml"],
            vec!["nothing.toml"],
        ),
        (
            "status of no endpoint",
            vec!["status", "--connect", "http://127.0.0.1:1"],
            vec!["127.0.0.1:1"],
        ),
        (
            "--seeds 0",
            vec![
                "compare",
                "x",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--seeds",
                "0",
            ],
            vec!["--seeds"],
        ),
        (
            "--seeds a word",
            vec![
                "compare",
                "x",
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--seeds",
                "many",
            ],
            vec!["--seeds"],
        ),
        (
            "report into a directory",
            vec![
                "compare",
                &sim,
                "--cpu",
                "none",
                "--cpu",
                "greedy-lpt",
                "--report",
                "a-directory",
            ],
            vec!["a-directory"],
        ),
        (
            "scenario from no trace",
            vec![
                "scenario",
                "from-record",
                "not-a-trace.jsonl",
                "-o",
                "s.toml",
            ],
            vec!["not-a-trace.jsonl:1", "not a vcoord tick record"],
        ),
        (
            "scenario from an empty trace",
            vec!["scenario", "from-record", "empty.jsonl", "-o", "s.toml"],
            vec!["empty.jsonl"],
        ),
        (
            "scenario from a future schema",
            vec![
                "scenario",
                "from-record",
                "future.jsonl",
                "-o",
                "a-directory",
            ],
            vec!["future.jsonl:1", "schema 99"],
        ),
        (
            "scenario without output",
            vec!["scenario", "from-record", "empty.jsonl"],
            vec!["--output"],
        ),
    ];
    for (what, args, expect) in &cases {
        let case = Case {
            what,
            expect: expect.iter().map(|s| s.to_string()).collect(),
        };
        let (code, err) = run_limited(&dir, args);
        check(&case, code, &err);
    }
    assert_eq!(
        std::fs::read(dir.join("rec.jsonl")).unwrap(),
        recorded,
        "the recording was changed"
    );
    let _ = std::fs::remove_dir_all(&dir);
    report("command lines and recordings", cases.len());
}

/// The header of a GWA-T-12 file, as published.
const GWA_HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

fn gwa_row(t: u64, pct: &str, used: &str) -> String {
    format!("{t};\t2;\t5000.0;\t50.0;\t{pct};\t4194304.0;\t{used};\t0.0;\t0.0;\t0.0;\t0.0")
}

#[test]
fn bad_traces_are_refused_once_and_located() {
    let dir = scratch("bad-trace");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write(
        "good.csv",
        format!(
            "{GWA_HEADER}\n{}\n{}\n",
            gwa_row(0, "5.0", "1000.0"),
            gwa_row(300, "5.0", "1000.0")
        ),
    );
    write(
        "comma.csv",
        GWA_HEADER.replace(";\t", ",") + "\n0,2,5000,50,5,4194304,1000,0,0,0,0\n",
    );
    write(
        "columns.csv",
        "Timestamp [ms];\tCPU cores;\tCPU usage [%]\n0;\t2;\t5.0\n".into(),
    );
    write(
        "negative.csv",
        format!("{GWA_HEADER}\n{}\n", gwa_row(0, "5.0", "-1000.0")),
    );
    write(
        "nan.csv",
        format!("{GWA_HEADER}\n{}\n", gwa_row(0, "NaN", "1000.0")),
    );
    write(
        "words.csv",
        format!("{GWA_HEADER}\n{}\n", gwa_row(0, "five", "1000.0")),
    );
    write("empty.csv", String::new());
    write("header-only.csv", format!("{GWA_HEADER}\n"));
    write(
        "backwards.csv",
        format!(
            "{GWA_HEADER}\n{}\n{}\n",
            gwa_row(300, "5.0", "1.0"),
            gwa_row(0, "5.0", "1.0")
        ),
    );
    write("short-row.csv", format!("{GWA_HEADER}\n0;\t2;\t5000.0\n"));
    write(
        "zeros.csv",
        format!("{GWA_HEADER}\n0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0;\t0\n"),
    );
    write("azure.csv", "0,vmA,1,9,40\n300,vmA,1,9\n".into());
    write(
        "plain.csv",
        "vm,time_s,vcpus,memory_mib,cpu_pct\na,0,1,1024,5\n".into(),
    );
    write(
        "plain-vcpus.csv",
        "vm,time_s,vcpus,memory_mib,cpu_pct,used_mib\na,0,0.5,1024,5,10\n".into(),
    );
    // A 2 GiB file (sparse: no disk is used) and a FIFO: refused without reading them.
    std::fs::File::create(dir.join("huge.csv"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let fifo = dir.join("fifo.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let from = |file: &'static str| vec!["scenario", "from-trace", file, "-o", "s.toml"];
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "wrong separator",
            from("comma.csv"),
            vec!["comma.csv:1:1", "`;`"],
        ),
        (
            "missing columns",
            from("columns.csv"),
            vec!["columns.csv:1", "Memory capacity provisioned"],
        ),
        (
            "negative",
            from("negative.csv"),
            vec!["negative.csv:2:", "Memory usage", "negative"],
        ),
        (
            "NaN",
            from("nan.csv"),
            vec!["nan.csv:2:", "CPU usage [%]", "finite"],
        ),
        (
            "not a number",
            from("words.csv"),
            vec!["words.csv:2:", "`five` is not a number"],
        ),
        (
            "empty",
            from("empty.csv"),
            vec!["empty.csv:1:1", "empty file"],
        ),
        (
            "header only",
            from("header-only.csv"),
            vec!["header-only.csv:1", "no rows"],
        ),
        (
            "time backwards",
            from("backwards.csv"),
            vec!["backwards.csv:3:1", "not after"],
        ),
        (
            "short row",
            from("short-row.csv"),
            vec!["short-row.csv:2:", "fields"],
        ),
        (
            "never runs",
            from("zeros.csv"),
            vec!["no VM of the trace ever runs"],
        ),
        (
            "2 GiB",
            from("huge.csv"),
            vec!["huge.csv", "larger than 256 MiB"],
        ),
        ("a FIFO", from("fifo.csv"), vec!["fifo.csv", "FIFO"]),
        ("no such file", from("nothing.csv"), vec!["nothing.csv"]),
        (
            "azure row",
            vec![
                "scenario",
                "from-trace",
                "--format",
                "azure",
                "azure.csv",
                "-o",
                "s.toml",
            ],
            vec!["azure.csv:2:1", "4 fields"],
        ),
        (
            "plain header",
            vec![
                "scenario",
                "from-trace",
                "--format",
                "csv",
                "plain.csv",
                "-o",
                "s.toml",
            ],
            vec!["plain.csv:1:1", "`used_mib`"],
        ),
        (
            "plain vcpus",
            vec![
                "scenario",
                "from-trace",
                "--format",
                "csv",
                "plain-vcpus.csv",
                "-o",
                "s.toml",
            ],
            vec!["plain-vcpus.csv:2:", "vCPU count"],
        ),
        (
            "time scale",
            vec![
                "scenario",
                "from-trace",
                "good.csv",
                "-o",
                "s.toml",
                "--time-scale",
                "0",
            ],
            vec!["--time-scale"],
        ),
        (
            "overcommit",
            vec![
                "scenario",
                "from-trace",
                "good.csv",
                "-o",
                "s.toml",
                "--memory-overcommit=-1",
            ],
            vec!["--memory-overcommit"],
        ),
        (
            "hours",
            vec![
                "scenario",
                "from-trace",
                "good.csv",
                "-o",
                "s.toml",
                "--hours",
                "0",
            ],
            vec!["--hours"],
        ),
    ];
    for (what, args, expect) in &cases {
        let case = Case {
            what,
            expect: expect.iter().map(|s| s.to_string()).collect(),
        };
        let (code, err) = run_limited(&dir, args);
        check(&case, code, &err);
    }
    assert!(
        !dir.join("s.toml").exists(),
        "a refused trace wrote a scenario"
    );
    let (code, err) = run_limited(&dir, &from("good.csv"));
    assert_eq!(code, Some(0), "{err}");
    Scenario::from_file(&dir.join("s.toml")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    report("trace files", cases.len());
}

/// Says how many cases a test tried, on the terminal.
fn report(what: &str, n: usize) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "bad input: {n} {what} refused as they should be"
    );
}

/// A valid text with one mutation: a line dropped, doubled or cut, or a number replaced.
fn mutate(text: &str, kind: u8, at: usize, number: f64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = at % lines.len().max(1);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match kind % 4 {
        0 => {
            out.remove(i);
        }
        1 => out.insert(i, lines[i].to_owned()),
        2 => out[i] = lines[i].chars().take(lines[i].len() / 2).collect(),
        _ => {
            if let Some((k, _)) = lines[i].split_once('=') {
                let v = if number.is_nan() {
                    "nan".to_owned()
                } else if number.is_infinite() {
                    if number > 0.0 { "inf" } else { "-inf" }.to_owned()
                } else {
                    format!("{number:?}")
                };
                out[i] = format!("{k}= {v}");
            }
        }
    }
    out.join("\n") + "\n"
}

fn numbers() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(0.0),
        Just(1e300),
        Just(-1e300),
        any::<f64>(),
        0.0..1e6,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Mutated configurations parse or are refused with the file named; never a panic.
    #[test]
    fn mutated_configurations_never_panic(kind in 0u8..4, at in 0usize..64, number in numbers()) {
        let text = "log_level = \"info\"\n[metrics]\nlisten = \"127.0.0.1:9477\"\n\
            [[host]]\nname = \"local\"\nuri = \"qemu:///system\"\ninterval_s = 1.0\n\
            memory_stats_period_s = 1\nguest_memory_budget_mib = 4096\n\
            [host.cpu_policy]\nname = \"stable-balance\"\nparams = { trigger_points = 5 }\n\
            [host.memory_policy]\nname = \"pressure-balloon\"\n\
            params = { threshold_mib = 100, min_mib = { db = 1024 } }\n\
            [host.guard]\nguest_floor_mib = 200\nhost_reserve_mib = 200\n\
            [[host.vm]]\nmatch = \"db-*\"\ncpu = \"ignore\"\nmin_mib = 512\nshares = 2\n";
        let mutated = mutate(text, kind, at, number);
        let path = PathBuf::from("/etc/vcoord/mutated.toml");
        if let Err(e) = Config::parse(&mutated, &path) {
            prop_assert!(e.to_string().contains("mutated.toml"), "{}", e);
        }
    }

    /// Mutated scenarios parse or are refused with the file named; never a panic.
    #[test]
    fn mutated_scenarios_never_panic(
        file in proptest::sample::select(vec!["cpu-t2-all-on-one", "mem-m3-flow", "mem-m1-one-grows", "cpu-unpinned-alternating"]),
        kind in 0u8..4,
        at in 0usize..64,
        number in numbers(),
    ) {
        let text = std::fs::read_to_string(root().join(format!("examples/scenarios/{file}.toml"))).unwrap();
        let mutated = mutate(&text, kind, at, number);
        match Scenario::parse(&mutated, Path::new("m.toml")) {
            Ok(s) => {
                // Whatever is accepted is within the stated limits.
                prop_assert!(s.duration_s.is_finite() && s.duration_s <= 7.0 * 86_400.0);
                prop_assert!(s.vms.iter().all(|v| v.cpu_noise_pct.is_finite()));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("m.toml"), "{}", e),
        }
    }
}

/// A configuration others could have written chooses the plugins vcoord runs: refused, saying
/// how to fix it.
#[test]
fn configurations_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("config-mode");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[[host]]\nname = \"a\"\nuri = \"sim:{}\"\n",
            scenario_path()
        ),
    )
    .unwrap();
    let args = ["check-config", path.to_str().unwrap()];
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run_limited(&dir, &args);
    assert_eq!(code, Some(0), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = run_limited(&dir, &args);
    let case = Case {
        what: "world-writable configuration",
        expect: vec![
            format!("config {}: refused", path.display()),
            "mode 666; fix: chmod go-w".into(),
        ],
    };
    check(&case, code, &err);
    let (code, err) = run_limited(&dir, &["run", "-c", path.to_str().unwrap(), "--ticks", "1"]);
    check(&case, code, &err);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let chowned = Command::new("chown")
        .args(["65534", path.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if chowned {
        let (code, err) = run_limited(&dir, &args);
        let case = Case {
            what: "configuration owned by another user",
            expect: vec!["is owned by uid 65534".into(), "fix: chown".into()],
        };
        check(&case, code, &err);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
