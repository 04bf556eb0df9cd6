//! The command line: configuration errors name file:line:col and key and exit non-zero; the
//! demo runs; `policies` lists the built-ins.

mod common;

use common::{root, scratch, vcoord};

fn check(config_text: &str) -> (bool, String) {
    let dir = scratch("cfg");
    let path = dir.join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = vcoord(&["check-config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), stderr)
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["sim-demo.toml", "local.toml", "ab/seed.toml", "ab/new.toml"] {
        let path = root().join("examples").join(name);
        let out = vcoord(&["check-config", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn syntax_error_names_line_and_column() {
    let (ok, err) = check("[[host]]\nname = \"a\"\nuri = sim:x\n");
    assert!(!ok);
    assert!(err.contains("bad.toml:3:7"), "{err}");
}

#[test]
fn unknown_host_key_is_named() {
    let (ok, err) = check("[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\nintervall_s = 2\n");
    assert!(!ok);
    assert!(err.contains("bad.toml:4:1"), "{err}");
    assert!(err.contains("intervall_s"), "{err}");
}

#[test]
fn unknown_policy_is_named_with_the_choices() {
    let (ok, err) = check(
        "[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\n[host.cpu_policy]\nname = \"greedy\"\n",
    );
    assert!(!ok);
    assert!(err.contains("bad.toml:5:8"), "{err}");
    assert!(err.contains("host[0].cpu_policy.name"), "{err}");
    assert!(err.contains("greedy-lpt"), "{err}");
}

#[test]
fn bad_policy_parameters_are_named() {
    let (ok, err) = check(
        "[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\n[host.memory_policy]\nname = \"threshold-balloon\"\nparams = { threshold_mib = -5 }\n",
    );
    assert!(!ok);
    assert!(err.contains("bad.toml:6:12"), "{err}");
    assert!(
        err.contains("host[0].memory_policy.params.threshold_mib"),
        "{err}"
    );
    assert!(err.contains("out of range"), "{err}");

    let (ok, err) = check(
        "[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\n[host.cpu_policy]\nname = \"greedy-lpt\"\n[host.cpu_policy.params]\ntrigger = 1\n",
    );
    assert!(!ok);
    assert!(err.contains("bad.toml:7:1"), "{err}");
    assert!(err.contains("unknown parameter"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let (ok, err) = check("[[host]]\nname = \"a\"\nuri = \"sim:x.toml\"\ninterval_s = 0\n");
    assert!(!ok);
    assert!(
        err.contains("bad.toml:4:14") && err.contains("interval_s"),
        "{err}"
    );
    let (ok, err) =
        check("[[host]]\nname = \"a\"\nuri = \"sim:x\"\n[[host]]\nname = \"a\"\nuri = \"sim:y\"\n");
    assert!(!ok);
    assert!(err.contains("used twice"), "{err}");
    let (ok, err) = check("# nothing\n");
    assert!(!ok);
    assert!(err.contains("no [[host]]"), "{err}");
}

#[test]
fn bad_scenario_fails_the_run_with_its_location() {
    let dir = scratch("scen");
    std::fs::write(
        dir.join("s.toml"),
        "name = \"x\"\nduration_s = 5\n[host]\npcpus = 2\nmemory_mib = 1024\n[[vm]]\nname = \"v\"\nmax_memory_mib = 512\nmemory_mib = 256\npins = [5]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("c.toml"),
        "[[host]]\nname = \"a\"\nuri = \"sim:s.toml\"\n",
    )
    .unwrap();
    let out = vcoord(&["run", "--config", dir.join("c.toml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("s.toml:10:8") && err.contains("pCPU 5 does not exist"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out = vcoord(&["run", "--config", "/nonexistent/vcoord.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vcoord.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let out = vcoord(&["run", "--tick", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let out = vcoord(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_runs_and_balances() {
    let dir = scratch("demo");
    let record = dir.join("r.jsonl");
    let demo = root().join("examples/sim-demo.toml");
    let out = vcoord(&[
        "run",
        "--config",
        demo.to_str().unwrap(),
        "--ticks",
        "6",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(&record).unwrap();
    assert_eq!(lines.lines().count(), 6);
    let last: vcoord_core::runtime::record::TickRecord =
        serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert!(last.pcpu_stdev_pct <= 5.0, "{}", last.pcpu_stdev_pct);
}

#[test]
fn dry_run_changes_nothing() {
    let dir = scratch("dry");
    let record = dir.join("r.jsonl");
    let demo = root().join("examples/sim-demo.toml");
    let out = vcoord(&[
        "run",
        "--config",
        demo.to_str().unwrap(),
        "--ticks",
        "5",
        "--dry-run",
        "--record",
        record.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let records: Vec<vcoord_core::runtime::record::TickRecord> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // the plan is reported every tick but the host stays as it was: all on pCPU0
    assert!(records
        .iter()
        .skip(1)
        .all(|r| !r.pins.is_empty() && r.dry_run));
    let last = records.last().unwrap();
    assert!(last
        .vms
        .iter()
        .all(|vm| vm.vcpus[0].affinity.only() == Some(0)));
}

#[test]
fn policies_lists_built_ins_with_parameters() {
    let out = vcoord(&["policies"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "greedy-lpt",
        "threshold-balloon",
        "none",
        "trigger_rel = 0.05",
        "threshold_mib = 100 [MiB]",
    ] {
        assert!(text.contains(needle), "missing {needle}: {text}");
    }
}

#[test]
fn status_on_the_simulator_prints_a_table() {
    let scenario = root().join("examples/scenarios/cpu-t2-all-on-one.toml");
    let out = vcoord(&[
        "status",
        "--connect",
        &format!("sim:{}", scenario.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 pCPUs") && text.contains("vm8"), "{text}");
}

/// Domain names come from outside: one with a newline and terminal escapes must not forge a log
/// line or recolour the terminal, and a long one must not shift the table's columns.
#[test]
fn hostile_and_long_vm_names_are_escaped_and_fitted() {
    let dir = scratch("names");
    let long = "a-very-long-domain-name-of-some-tenant-web-frontend-07";
    std::fs::write(
        dir.join("s.toml"),
        format!(
            "name = \"names\"\nduration_s = 10\n[host]\npcpus = 2\nmemory_mib = 8192\n\
             [[vm]]\nname = \"evil\\u001b[31mRED\\u0007\\nFAKE line\"\nmax_memory_mib = 1024\n\
             memory_mib = 1024\ncpu = [{{ pct = 50 }}]\n\
             [[vm]]\nname = \"{long}\"\nmax_memory_mib = 1024\nmemory_mib = 1024\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("c.toml"),
        "[[host]]\nname = \"h\"\nuri = \"sim:s.toml\"\n",
    )
    .unwrap();
    let run = vcoord(&[
        "run",
        "--config",
        dir.join("c.toml").to_str().unwrap(),
        "--ticks",
        "3",
        "--log-level",
        "info",
    ]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("new domain"), "{log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log:?}");
    assert!(
        log.lines().all(|l| l.starts_with("20")),
        "a line that is not a log event: {log}"
    );
    assert!(
        log.contains("evil\\u{1b}[31mRED\\u{7}\\nFAKE line"),
        "{log}"
    );

    let status = vcoord(&[
        "status",
        "--connect",
        &format!("sim:{}", dir.join("s.toml").display()),
    ]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(
        !table.contains('\u{1b}') && !table.lines().any(|l| l.starts_with("FAKE")),
        "{table}"
    );
    // Every row's vCPU column ends where the header's does.
    let lines: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("VM "))
        .collect();
    let end = |l: &str| l.find(" vCPU").map(|i| i + 5);
    let header_end = end(lines[0]).expect("header");
    for row in &lines[1..] {
        let b = row.as_bytes();
        assert!(
            b[header_end - 1].is_ascii_digit() && b[header_end] == b' ',
            "{table}"
        );
    }
    assert!(
        table.contains("a-very-long-domain-n~ant-web-frontend-07"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_policies_times_every_cpu_policy_at_scale() {
    let out = vcoord(&["bench", "policies", "--repeat", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for (vcpus, pcpus) in [(1000, 64), (1000, 256), (10000, 64), (10000, 256)] {
        for policy in ["greedy-lpt", "stable-balance"] {
            assert!(
                text.lines().any(|l| {
                    let c: Vec<&str> = l.split_whitespace().collect();
                    c.len() == 4
                        && c[0] == policy
                        && c[1] == vcpus.to_string()
                        && c[2] == pcpus.to_string()
                        && c[3].parse::<f64>().is_ok()
                }),
                "{policy} at {vcpus}/{pcpus} missing:\n{text}"
            );
        }
    }
}

#[test]
fn every_command_has_its_own_help_and_completions_and_man_page_come_from_it() {
    for cmd in [
        &["run"][..],
        &["compare"],
        &["replay"],
        &["bench", "collect"],
        &["bench", "soak"],
        &["status"],
        &["policies"],
        &["check-config"],
    ] {
        let out = vcoord(&[cmd, &["--help"][..]].concat());
        assert!(out.status.success(), "{cmd:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Usage: vcoord {}", cmd.join(" "))),
            "{text}"
        );
    }
    let run_help = String::from_utf8_lossy(&vcoord(&["run", "--help"]).stdout).into_owned();
    assert!(run_help.contains("--record <FILE>") && run_help.contains("-c, --config"));

    let bash = vcoord(&["completions", "bash"]);
    assert!(bash.status.success());
    let bash = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.contains("check-config") && bash.contains("--dry-run"),
        "{bash}"
    );
    let man = vcoord(&["man"]);
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH vcoord 1") && man.contains("check\\-config"),
        "{man}"
    );
}

#[test]
fn config_is_given_either_way_and_bad_numbers_are_usage_errors() {
    let demo = root().join("examples/sim-demo.toml");
    let out = vcoord(&[
        "run",
        &format!("--config={}", demo.display()),
        "--ticks",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vcoord(&["run", "-c", demo.to_str().unwrap(), "--ticks", "1"]);
    assert!(out.status.success());
    for bad in [
        &[
            "compare",
            "x",
            "--cpu",
            "none",
            "--cpu",
            "greedy-lpt",
            "--jobs",
            "0",
        ][..],
        &[
            "compare",
            "x",
            "--cpu",
            "none",
            "--cpu",
            "greedy-lpt",
            "--threshold-mib",
            "nan",
        ],
        &["status", "--connect", "sim:x", "--window-s", "0"],
    ] {
        let out = vcoord(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("error:").count(), 1, "{err}");
    }
}

/// The README's command synopsis says every flag `--help` lists, and no flag it does not.
#[test]
fn the_readme_synopsis_matches_the_help_of_every_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("## Commands")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("a code block under ## Commands");
    let help = |words: &[&str]| -> String {
        let mut args = words.to_vec();
        args.push("--help");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcoord"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "vcoord {words:?} --help");
        String::from_utf8(out.stdout).unwrap()
    };
    // The flags of one help text, each as its spellings (`-c`, `--config`).
    let is_flag = |w: &str| {
        let name = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
        name.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_alphabetic()))
    };
    let flags = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(str::trim_start)
            .filter(|l| l.split([',', ' ']).next().is_some_and(is_flag))
            .map(|l| {
                l.split([',', ' '])
                    .take_while(|w| w.is_empty() || is_flag(w) || w.starts_with('<'))
                    .filter(|w| is_flag(w))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|f| !f.iter().any(|w| w == "--help" || w == "--version"))
            .collect()
    };
    let mut commands = Vec::new();
    for line in block.lines().filter_map(|l| l.strip_prefix("vcoord ")) {
        // `bench collect ... | bench policies ...`: one synopsis a subcommand (a `|` inside a
        // synopsis, between choices, is not followed by the command's name).
        let first = line.split_whitespace().next().unwrap();
        let mut parts: Vec<String> = Vec::new();
        for piece in line.split(" | ") {
            match parts.last_mut() {
                Some(last) if !piece.starts_with(&format!("{first} ")) => {
                    last.push_str(" | ");
                    last.push_str(piece);
                }
                _ => parts.push(piece.to_owned()),
            }
        }
        for part in &parts {
            let words: Vec<&str> = part.split_whitespace().collect();
            let name: Vec<&str> = match words[0] {
                "bench" | "scenario" => words[..2].to_vec(),
                _ => words[..1].to_vec(),
            };
            let written: Vec<&str> = words
                .iter()
                .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')')))
                .filter(|w| is_flag(w))
                .collect();
            let listed = flags(&help(&name));
            for flag in &listed {
                assert!(
                    flag.iter().any(|f| written.contains(&f.as_str())),
                    "README's `vcoord {}` lacks {}",
                    name.join(" "),
                    flag.join(", ")
                );
            }
            for w in &written {
                assert!(
                    listed.iter().flatten().any(|f| f == w),
                    "README's `vcoord {}` has {w}, which its --help does not list",
                    name.join(" ")
                );
            }
            commands.push(name[0].to_owned());
        }
    }
    // Every command of `vcoord --help` has a synopsis.
    let top = help(&[]);
    let listed: Vec<&str> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(listed.len() >= 10, "{top}");
    for c in listed {
        assert!(
            commands.iter().any(|k| k == c),
            "README has no synopsis of `vcoord {c}`"
        );
    }
}

/// A guest memory budget below what the guests' floors add up to holds every guest at its
/// floor: said once, with both figures, however many ticks it lasts.
#[test]
fn a_budget_below_the_guests_floors_is_warned_of_once() {
    let dir = scratch("budget-short");
    let config = dir.join("c.toml");
    for (budget, warned) in [(300, true), (4096, false)] {
        std::fs::write(
            &config,
            format!(
                "[[host]]\nname = \"a\"\nuri = \"sim:{}\"\nguest_memory_budget_mib = {budget}\n",
                root()
                    .join("examples/scenarios/cpu-t2-all-on-one.toml")
                    .display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vcoord"))
            .args(["run", "-c", config.to_str().unwrap(), "--ticks", "5"])
            .env("VCOORD_RUN_DIR", dir.join("run"))
            .env("VCOORD_STATE_DIR", dir.join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let said = err.matches("below what the guests' floors").count();
        // 8 guests at the default floor of 200 MiB: 1600 MiB.
        assert_eq!(said, usize::from(warned), "budget {budget}: {err}");
        if warned {
            assert!(
                err.contains("budget_mib=300") && err.contains("floors_mib=1600"),
                "{err}"
            );
        }
    }
}
