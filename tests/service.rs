//! `vcoord run` as a service, through the real binary and real signals: the systemd notify
//! protocol against a real datagram listener (READY, STATUS, WATCHDOG, RELOADING, STOPPING),
//! SIGTERM finishing the tick and leaving a complete record, SIGHUP reloading a good
//! configuration and refusing a broken one, and one instance per host.
//!
//! The binary is the workspace's, or the installed one when `VCOORD_BIN` names it (CI runs
//! these tests against the installed package too).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{http, metric, root, scratch, vcoord_bin};
use vcoord_core::runtime::record::read_trace;

/// A one-host configuration on the T2 scenario, run in real time with short ticks.
fn sim_config(dir: &Path, memory_params: &str) -> PathBuf {
    let path = dir.join("vcoord.toml");
    std::fs::write(
        &path,
        format!(
            "[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\ninterval_s = 0.2\n\
             [host.memory_policy]\nname = \"pressure-balloon\"\nparams = {{ {memory_params} }}\n",
            root()
                .join("examples/scenarios/cpu-t2-all-on-one.toml")
                .display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn ready_watchdog_and_a_clean_stop_that_keeps_the_whole_record() {
    let dir = scratch("service-stop");
    let config = sim_config(&dir, "");
    let record = dir.join("trace.jsonl");
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime", "--record", record.to_str().unwrap()])
        .notify(Duration::from_secs(1))
        .remove_dir_after()
        .spawn();
    let seen = s.until("READY=1", Duration::from_secs(20));
    let ready = seen.last().unwrap();
    assert!(ready.contains("STATUS=sim: 8 VMs, tick 1"), "{ready}");
    // The watchdog is petted at half its period while the tick loop runs.
    s.until("WATCHDOG=1", Duration::from_secs(5));
    s.until("WATCHDOG=1", Duration::from_secs(5));

    let stop_sent = Instant::now();
    s.signal("TERM");
    s.until("STOPPING=1", Duration::from_secs(5));
    let status = s.wait(Duration::from_secs(5));
    // Within one interval and a second, with exit code 0.
    assert!(status.success(), "{status}: {}", s.log());
    assert!(stop_sent.elapsed() < Duration::from_millis(1200 + 500));
    // Every tick done is in the record, the last line complete.
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.ends_with('\n'));
    let records = read_trace(&record).unwrap();
    assert!(records.len() >= 3, "{} records", records.len());
    assert_eq!(records.len(), text.lines().count());
    let ticks: Vec<u64> = records.iter().map(|r| r.tick).collect();
    assert_eq!(ticks, (0..records.len() as u64).collect::<Vec<_>>());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&record).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o640,
        "the record is readable by its owner and group only"
    );

    // A restart (as Restart=on-failure makes) keeps the run before: moved aside, not truncated,
    // even with no rotated files asked for.
    let mut again = Daemon::launch(&dir, &config)
        .args(&[
            "--realtime",
            "--record",
            record.to_str().unwrap(),
            "--record-keep",
            "0",
        ])
        .notify(Duration::from_secs(1))
        .spawn();
    again.until("READY=1", Duration::from_secs(20));
    again.signal("TERM");
    assert!(
        again.wait(Duration::from_secs(5)).success(),
        "{}",
        again.log()
    );
    let kept = dir.join("trace.jsonl.1");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        text,
        "the run before, whole"
    );
    let new = read_trace(&record).unwrap();
    assert!(
        !new.is_empty() && new[0].tick == 0,
        "the new run in a file of its own"
    );
}

#[test]
fn sigint_stops_as_cleanly_as_sigterm() {
    let dir = scratch("service-int");
    let config = sim_config(&dir, "");
    let record = dir.join("trace.jsonl");
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime", "--record", record.to_str().unwrap()])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    s.signal("INT");
    assert!(s.wait(Duration::from_secs(5)).success());
    assert!(!read_trace(&record).unwrap().is_empty());
}

#[test]
fn sighup_applies_a_good_configuration_and_refuses_a_broken_one() {
    let dir = scratch("service-reload");
    let config = sim_config(&dir, "threshold_mib = 100");
    let record = dir.join("trace.jsonl");
    let mut s = Daemon::launch(&dir, &config)
        .args(&[
            "--realtime",
            "--record",
            record.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));

    // A broken configuration: refused, the running one kept.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("threshold_mib = 100", "threshold_mib = -5"),
    )
    .unwrap();
    s.signal("HUP");
    s.until("RELOADING=1", Duration::from_secs(5));
    s.until("READY=1", Duration::from_secs(5));

    // A good one: taken at a tick boundary, the CPU policy (unchanged) keeps its state; and a
    // second host, which starts.
    sim_config(&dir, "threshold_mib = 150");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[[host]]\nname = \"sim2\"\nuri = \"sim:{}\"\ninterval_s = 0.2\n",
        root()
            .join("examples/scenarios/cpu-t1-balanced.toml")
            .display()
    ));
    std::fs::write(&config, text).unwrap();
    s.signal("HUP");
    s.until("RELOADING=1", Duration::from_secs(5));
    s.until("READY=1", Duration::from_secs(5));
    // Still ticking afterwards.
    s.until("WATCHDOG=1", Duration::from_secs(10));
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
    let log = s.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with = |msg: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(msg)))
            .collect()
    };
    let refused = with("reload refused");
    assert_eq!(refused.len(), 1, "{log}");
    let why = refused[0]["error"].as_str().unwrap();
    assert!(
        why.contains("vcoord.toml:7:") && why.contains("threshold_mib") && why.contains("-5"),
        "{why}"
    );
    assert_eq!(with("configuration reloaded").len(), 1, "{log}");
    let reconfigured = with("host reconfigured");
    assert_eq!(reconfigured.len(), 1, "{log}");
    assert_eq!(reconfigured[0]["new_cpu_policy"], false);
    assert_eq!(reconfigured[0]["new_memory_policy"], true);
    assert_eq!(
        with("host added by the new configuration").len(),
        1,
        "{log}"
    );
    // Both hosts' ticks are in the one record, each line whole.
    let records = read_trace(&record).unwrap();
    assert!(records.iter().any(|r| r.host == "sim2"));
    assert!(records.iter().any(|r| r.host == "sim"));
    // Tick lines carry host and tick fields.
    let tick = with("tick ");
    assert!(!tick.is_empty());
    assert_eq!(tick[0]["host"], "sim");
    assert!(tick[0]["tick"].is_u64());
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log that is not a terminal"
    );
}

#[test]
fn a_second_acting_instance_on_the_same_host_is_refused() {
    let dir = scratch("service-lock");
    // libvirt's in-process test driver: a real backend (so a lock) without a daemon.
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        "[[host]]\nname = \"t\"\nuri = \"test:///default\"\ninterval_s = 0.5\n\
         [host.cpu_policy]\nname = \"none\"\n[host.memory_policy]\nname = \"none\"\n",
    )
    .unwrap();
    let mut first = Daemon::launch(&dir, &config)
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    first.until("READY=1", Duration::from_secs(20));
    let second = Command::new(vcoord_bin())
        .args(["run", "--config", config.to_str().unwrap(), "--ticks", "1"])
        .env("VCOORD_RUN_DIR", dir.join("run"))
        .env("VCOORD_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("another vcoord (pid {})", first.pid()))
            && err.contains("test:///default"),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "{err}");
    // Another spelling of the same host is the same host.
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        "[[host]]\nname = \"u\"\nuri = \"test+unix:///default\"\ninterval_s = 0.5\n",
    )
    .unwrap();
    let second = Command::new(vcoord_bin())
        .args(["run", "--config", other.to_str().unwrap(), "--ticks", "1"])
        .env("VCOORD_RUN_DIR", dir.join("run"))
        .env("VCOORD_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("another vcoord (pid {})", first.pid()))
            && err.contains("test+unix:///default")
            && err.contains("as test:///default"),
        "{err}"
    );
    // A dry run does not take the lock.
    let dry = Command::new(vcoord_bin())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--ticks",
            "1",
            "--dry-run",
        ])
        .env("VCOORD_RUN_DIR", dir.join("run"))
        .env("VCOORD_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    first.signal("TERM");
    assert!(first.wait(Duration::from_secs(5)).success());
}

/// The installed package (`scripts/test.sh` runs this after it installs the `.deb`): the
/// command line of the installed unit, on the installed default configuration and the local
/// libvirtd, with a notify listener as systemd would.
#[test]
#[ignore = "needs the installed package (scripts/package.sh, dpkg -i); the test command runs it"]
fn the_installed_package_runs_the_way_its_unit_says() {
    let unit = std::fs::read_to_string("/lib/systemd/system/vcoord.service").unwrap();
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(
        exec,
        [
            "/usr/bin/vcoord",
            "run",
            "--config",
            "/etc/vcoord/vcoord.toml"
        ]
    );
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // The configuration is a conffile: upgrades keep local edits.
    let status = Command::new("dpkg")
        .args(["-s", "vcoord"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("/etc/vcoord/vcoord.toml"));

    let dir = scratch("installed");
    let mut s = Daemon::launch(&dir, Path::new("/etc/vcoord/vcoord.toml"))
        .notify(Duration::from_secs(4))
        .remove_dir_after()
        .spawn();
    let seen = s.until("READY=1", Duration::from_secs(60));
    assert!(seen.last().unwrap().contains("STATUS=local:"), "{seen:?}");
    s.until("WATCHDOG=1", Duration::from_secs(10));
    // A reload of a broken configuration is refused (the installed file is put back after,
    // whatever happens), then one of the valid file is applied.
    let installed = Path::new("/etc/vcoord/vcoord.toml");
    let good = std::fs::read_to_string(installed).unwrap();
    struct PutBack<'a>(&'a Path, String);
    impl Drop for PutBack<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, &self.1);
        }
    }
    let put_back = PutBack(installed, good.clone());
    std::fs::write(
        installed,
        good.replace("interval_s = 1.0", "interval_s = -1.0"),
    )
    .unwrap();
    s.signal("HUP");
    s.until("RELOADING=1", Duration::from_secs(5));
    s.until("READY=1", Duration::from_secs(10));
    drop(put_back);
    s.signal("HUP");
    s.until("RELOADING=1", Duration::from_secs(5));
    s.until("READY=1", Duration::from_secs(10));
    // A second acting instance on the same host is refused.
    let second = Command::new("/usr/bin/vcoord")
        .args(["run", "--config", "/etc/vcoord/vcoord.toml", "--ticks", "1"])
        .env("VCOORD_RUN_DIR", dir.join("run"))
        .env("VCOORD_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains(&format!("another vcoord (pid {})", s.pid())));
    // So is one that names the same daemon by another spelling of its socket's path.
    for uri in [
        "qemu:///system?socket=/run/libvirt/libvirt-sock",
        "qemu:///system?socket=/var/run/libvirt/libvirt-sock",
        "qemu:///system?socket=//run/libvirt/../libvirt/libvirt-sock",
    ] {
        let other = dir.join("socket.toml");
        std::fs::write(&other, format!("[[host]]\nname = \"s\"\nuri = \"{uri}\"\n")).unwrap();
        let second = Command::new("/usr/bin/vcoord")
            .args(["run", "--config", other.to_str().unwrap(), "--ticks", "1"])
            .env("VCOORD_RUN_DIR", dir.join("run"))
            .env("VCOORD_STATE_DIR", dir.join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "{uri}: {err}");
        assert!(
            err.contains(&format!("another vcoord (pid {})", s.pid())),
            "{uri}: {err}"
        );
    }
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success(), "{}", s.log());
    let log = s.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("/etc/vcoord/vcoord.toml:"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(!log.contains('\u{1b}'));
}

/// A free TCP port on the loopback (for a daemon's metrics endpoint).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration in `dir` with the metrics endpoint at `listen` and one host, `sim`, on the
/// T2 scenario ticking every 0.2 s, with `host_extra` under it.
fn t2_with_metrics(dir: &Path, listen: &str, host_extra: &str) -> PathBuf {
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{listen}\"\n[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\ninterval_s = 0.2\n{host_extra}",
            root().join("examples/scenarios/cpu-t2-all-on-one.toml").display()
        ),
    )
    .unwrap();
    config
}

/// The daemon on `config`, in real time, once it is ready.
fn ready_daemon(dir: &Path, config: &Path) -> Daemon {
    let mut s = Daemon::launch(dir, config)
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    s
}

/// Runs `promtool ARGS` (with `stdin`): whether it succeeded, and what it said. promtool must be
/// installed (scripts/setup-test.sh): the tests that call this are ignored by a plain
/// `cargo test` and fail, never pass, without it.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(root().join("packaging/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e} (scripts/setup-test.sh installs it)"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A live scrape passes `promtool check metrics` (names, types, help, units).
#[test]
#[ignore = "needs promtool (scripts/setup-test.sh); the test command runs it"]
fn a_live_scrape_passes_promtool() {
    let dir = scratch("promtool-scrape");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = t2_with_metrics(&dir, &addr, "");
    let mut s = ready_daemon(&dir, &config);
    let scrape = poll_scrape(&addr, |m| m.contains("vcoord_vcpu_utilization_percent{"));
    assert!(scrape.contains("# TYPE vcoord_"), "{scrape}");
    let (ok, out) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(ok, "promtool check metrics: {out}");
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
}

#[test]
fn metrics_health_and_status_are_served_and_follow_the_vms() {
    let dir = scratch("metrics");
    // Three VMs; `short` stops after 2 s. Real-time ticks of 0.2 s.
    let scenario = dir.join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"m\"\nduration_s = 600\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 8192\n\
         [[vm]]\nname = \"busy\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 90 }]\n\
         [[vm]]\nname = \"idle\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 5 }]\n\
         [[vm]]\nname = \"short\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 50 }]\nstop_s = 2\n",
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{addr}\"\nfleet_host = \"node1.example.org\"\n[[host]]\nname = \"sim\"\nuri = \"sim:s.toml\"\ninterval_s = 0.2\n"
        ),
    )
    .unwrap();
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    // Every series names the machine as the fleet knows it, and every VM's its UUID.
    let (_, scrape) = http(&addr, "GET", "/metrics");
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.contains("fqdn=\"node1.example.org\""), "{line}");
    }
    let (_, status) = http(&addr, "GET", "/status.json");
    let uuid = status
        .split("\"uuid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a VM's uuid in /status.json");
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("vcoord_vm_balloon_actual_bytes")
                && l.contains(&format!("uuid=\"{uuid}\""))),
        "no series with uuid {uuid}:\n{scrape}"
    );
    for line in scrape
        .lines()
        .filter(|l| l.starts_with("vcoord_vcpu_") || l.starts_with("vcoord_vm_"))
    {
        assert!(line.contains("uuid=\""), "{line}");
    }
    // `short` is there, then gone with all its series.
    let (code, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(metric(&scrape, "vcoord_vm_balloon_actual_bytes", &["vm=\"short\""]).is_some());
    let scrape = poll_scrape(&addr, |m| !m.contains("vm=\"short\""));
    assert!(!scrape.contains("vm=\"short\""), "{scrape}");
    for (name, labels) in [
        ("vcoord_build_info", &["version=\""][..]),
        ("vcoord_pcpu_load_percent", &["host=\"sim\"", "pcpu=\"1\""]),
        (
            "vcoord_vcpu_utilization_percent",
            &["vm=\"busy\"", "vcpu=\"0\""],
        ),
        ("vcoord_vcpu_wait_percent", &["vm=\"busy\""]),
        ("vcoord_vcpu_pcpu", &["vm=\"idle\""]),
        ("vcoord_vcpu_time_seconds_total", &["vm=\"busy\""]),
        ("vcoord_vm_balloon_actual_bytes", &["vm=\"idle\""]),
        ("vcoord_vm_memory_unused_bytes", &["vm=\"idle\""]),
        ("vcoord_vm_managed", &["vm=\"idle\"", "kind=\"cpu\""]),
        ("vcoord_ticks_total", &["outcome=\"ok\""]),
        ("vcoord_tick_duration_seconds_count", &["host=\"sim\""]),
        ("vcoord_collect_duration_seconds_bucket", &["le=\"0.01\""]),
        ("vcoord_backend_up", &["host=\"sim\""]),
        ("vcoord_config_last_reload_successful", &[]),
        ("vcoord_last_tick_timestamp_seconds", &["host=\"sim\""]),
        ("vcoord_vm_cpu_wait_ratio", &["vm=\"busy\""]),
        ("vcoord_vm_cpu_ready_percent", &["vm=\"busy\""]),
        ("vcoord_vm_memory_short_bytes", &["vm=\"idle\""]),
        ("vcoord_vm_contention_score", &["vm=\"idle\""]),
        ("vcoord_host_cpu_deficit_percent", &["host=\"sim\""]),
        ("vcoord_host_memory_deficit_bytes", &["host=\"sim\""]),
        ("vcoord_host_deficit_seconds", &["kind=\"cpu\""]),
        ("vcoord_host_cannot_satisfy", &["kind=\"memory\""]),
        (
            "vcoord_host_pressure_stall_percent",
            &["resource=\"memory\"", "scope=\"some\""],
        ),
    ] {
        assert!(
            metric(&scrape, name, labels).is_some(),
            "{name} {labels:?} missing:\n{scrape}"
        );
    }
    let busy = metric(&scrape, "vcoord_vcpu_utilization_percent", &["vm=\"busy\""]).unwrap();
    assert!((80.0..=100.0).contains(&busy), "busy at {busy}%");
    assert_eq!(
        metric(&scrape, "vcoord_backend_up", &["host=\"sim\""]),
        Some(1.0)
    );
    // Every metric the shipped dashboard and alert rules use exists.
    let dashboard =
        std::fs::read_to_string(root().join("packaging/grafana/vcoord-dashboard.json")).unwrap();
    let rules =
        std::fs::read_to_string(root().join("packaging/prometheus/vcoord-rules.yml")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    for text in [&dashboard, &rules] {
        for name in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(base) = name.strip_prefix("vcoord_") {
                let base = base.trim_end_matches("_bucket").trim_end_matches("_count");
                assert!(
                    scrape.contains(&format!("# TYPE vcoord_{base} ")),
                    "vcoord_{base} is used but not served"
                );
            }
        }
    }

    let (code, body) = http(&addr, "GET", "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok: 1 hosts\n"));
    let (code, json) = http(&addr, "GET", "/status.json");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["hosts"][0]["host"], "sim");
    assert_eq!(
        doc["hosts"][0]["snapshot"]["vms"].as_array().unwrap().len(),
        2
    );
    let status = Command::new(vcoord_bin())
        .args(["status", "--connect", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("host sim: 2 pCPUs") && table.contains("busy"),
        "{table}"
    );
    assert_eq!(http(&addr, "POST", "/metrics").0, 405);
    assert_eq!(http(&addr, "GET", "/admin").0, 404);
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
}

/// An endpoint on every interface is served, with a warning that says what that exposes; one
/// on the loopback has none.
#[test]
fn a_metrics_endpoint_beyond_the_loopback_is_warned_of() {
    for (listen, warned) in [("0.0.0.0", true), ("127.0.0.1", false)] {
        let dir = scratch(&format!("listen-{listen}"));
        let port = free_port();
        let config = t2_with_metrics(&dir, &format!("{listen}:{port}"), "");
        let mut s = ready_daemon(&dir, &config);
        assert_eq!(http(&format!("127.0.0.1:{port}"), "GET", "/healthz").0, 200);
        s.signal("TERM");
        assert!(s.wait(Duration::from_secs(5)).success());
        let log = s.log();
        let said = log.contains("WARN")
            && log.contains("listens beyond this machine (on every interface)");
        assert_eq!(said, warned, "{listen}: {log}");
    }
}

/// A scrape polled until `done` holds for it (10 s at most): the last one.
fn poll_scrape(addr: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (_, scrape) = http(addr, "GET", "/metrics");
        if done(&scrape) || started.elapsed() > Duration::from_secs(10) {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reload that removes a host takes every series of it away, and one that changes a
/// host's policy takes the old policy's series away (docs/metrics.md).
#[test]
fn a_reload_removes_the_series_of_a_removed_host_and_a_replaced_policy() {
    let dir = scratch("series-reload");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("vcoord.toml");
    let scenario = |name: &str| root().join(format!("examples/scenarios/{name}.toml"));
    let host = |name: &str, file: &str, cpu: &str| {
        format!(
            "[[host]]\nname = \"{name}\"\nuri = \"sim:{}\"\ninterval_s = 0.2\n[host.cpu_policy]\nname = \"{cpu}\"\n",
            scenario(file).display()
        )
    };
    let metrics = format!("[metrics]\nlisten = \"{addr}\"\n");
    std::fs::write(
        &config,
        format!(
            "{metrics}{}{}",
            host("sim", "cpu-t2-all-on-one", "stable-balance"),
            host("gone", "cpu-t1-balanced", "greedy-lpt")
        ),
    )
    .unwrap();
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    let series = |scrape: &str, label: &str| -> Vec<String> {
        scrape
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(label))
            .map(str::to_owned)
            .collect()
    };
    let before = poll_scrape(&addr, |m| {
        !series(m, "host=\"gone\"").is_empty() && !series(m, "policy=\"stable-balance\"").is_empty()
    });
    assert!(
        !series(&before, "vcoord_policy_quarantined{").is_empty(),
        "{before}"
    );
    std::fs::write(
        &config,
        format!(
            "{metrics}{}",
            host("sim", "cpu-t2-all-on-one", "greedy-lpt")
        ),
    )
    .unwrap();
    s.signal("HUP");
    s.until("RELOADING=1", Duration::from_secs(5));
    s.until("READY=1", Duration::from_secs(5));
    let after = poll_scrape(&addr, |m| {
        series(m, "host=\"sim\"")
            .iter()
            .any(|l| l.contains("policy=\"greedy-lpt\""))
    });
    assert!(
        series(&after, "policy=\"greedy-lpt\"")
            .iter()
            .any(|l| l.contains("host=\"sim\"")),
        "{after}"
    );
    assert_eq!(series(&after, "host=\"gone\""), Vec::<String>::new());
    assert_eq!(
        series(&after, "policy=\"stable-balance\""),
        Vec::<String>::new()
    );
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
}

/// `/healthz` polled until `done` holds for its status (10 s at most): its last answer.
fn poll_health(addr: &str, done: impl Fn(u16) -> bool) -> (u16, String) {
    let started = Instant::now();
    loop {
        let (code, body) = http(addr, "GET", "/healthz");
        if done(code) || started.elapsed() > Duration::from_secs(10) {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plugin refused by the permission checks, with a fallback: the fallback decides, and
/// check-config, /healthz and the fallback metric all say so (none says "ok").
#[test]
fn a_plugin_refused_for_its_permissions_shows_in_health_and_metrics() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch("refused-plugin");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("libspread.so");
    std::fs::copy(
        Path::new(env!("CARGO_BIN_EXE_vcoord")).with_file_name("libvcoord_spread.so"),
        &copy,
    )
    .unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = t2_with_metrics(
        &dir,
        &addr,
        &format!(
            "[host.cpu_policy]\nplugin = \"{}\"\nfallback = \"stable-balance\"\n",
            copy.display()
        ),
    );
    let checked = Command::new(vcoord_bin())
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        !checked.status.success(),
        "check-config passed a refused plugin: {err}"
    );
    assert!(
        err.contains("degraded")
            && err.contains("group- or world-writable")
            && err.contains("fallback"),
        "{err}"
    );
    let mut s = ready_daemon(&dir, &config);
    let (code, body) = poll_health(&addr, |code| code != 200);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("cpu policy plugin:")
            && body.contains("not loaded")
            && body.contains("world-writable"),
        "{body}"
    );
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(
        metric(
            &scrape,
            "vcoord_policy_fallback_active",
            &["kind=\"cpu\"", "policy=\"plugin:"]
        ),
        Some(1.0),
        "{scrape}"
    );
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
}

#[test]
fn a_quarantined_plugin_turns_health_to_503() {
    let dir = scratch("health");
    let addr = format!("127.0.0.1:{}", free_port());
    let plugin =
        Path::new(env!("CARGO_BIN_EXE_vcoord")).with_file_name("libvcoord_fixture_misbehave.so");
    let config = t2_with_metrics(
        &dir,
        &addr,
        &format!(
            "[host.cpu_policy]\nplugin = \"{}\"\nparams = {{ panic_at_tick = 3 }}\nfallback = \"stable-balance\"\n",
            plugin.display()
        ),
    );
    let mut s = ready_daemon(&dir, &config);
    let (code, body) = poll_health(&addr, |code| code != 200);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.starts_with("sim: cpu policy plugin:") && body.contains("quarantined"),
        "{body}"
    );
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(
        metric(&scrape, "vcoord_policy_quarantined", &["kind=\"cpu\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(&scrape, "vcoord_policy_fallback_active", &["kind=\"cpu\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(&scrape, "vcoord_policy_errors_total", &["kind=\"cpu\""]),
        Some(1.0)
    );
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
}

#[test]
#[ignore = "needs promtool (scripts/setup-test.sh); the test command runs it"]
fn the_alert_rules_check_and_fire_as_their_tests_say() {
    let (ok, out) = promtool(&["check", "rules", "vcoord-rules.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "vcoord-rules.test.yml"], None);
    assert!(ok, "{out}");
    // The series OpenStack Watcher queries, and its own two queries on them.
    let (ok, out) = promtool(&["check", "rules", "vcoord-watcher-rules.yml"], None);
    assert!(ok && out.contains("2 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "vcoord-watcher-rules.test.yml"], None);
    assert!(ok, "{out}");
}

/// A two-host configuration: `good` on a scenario of its own, `broken` on a scenario file that
/// is not there (so it can never start and is given up).
fn good_and_broken(dir: &Path, addr: &str, with_broken: bool) -> PathBuf {
    std::fs::write(
        dir.join("s.toml"),
        "name = \"s\"\nduration_s = 600\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 8192\n\
         [[vm]]\nname = \"a\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 50 }]\n",
    )
    .unwrap();
    let broken = "[[host]]\nname = \"broken\"\nuri = \"sim:not-there.toml\"\ninterval_s = 0.2\n";
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{addr}\"\n[[host]]\nname = \"good\"\nuri = \"sim:s.toml\"\ninterval_s = 0.2\n{}",
            if with_broken { broken } else { "" }
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_failed_host_stays_in_health_and_status_and_a_full_record_stops_only_the_record() {
    let dir = scratch("failed-host");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = good_and_broken(&dir, &addr, true);
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime", "--record", "/dev/full"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    let ticks = |scrape: &str| {
        metric(
            scrape,
            "vcoord_ticks_total",
            &["host=\"good\"", "outcome=\"ok\""],
        )
        .unwrap_or(0.0)
    };
    // The record fills its buffer within a few ticks, fails, and stops; `good` goes on.
    let started = Instant::now();
    let (code, health) = loop {
        let (code, health) = http(&addr, "GET", "/healthz");
        if health.contains("record /dev/full") || started.elapsed() > Duration::from_secs(20) {
            break (code, health);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("broken: failed: "), "{health}");
    assert!(
        health.contains("record /dev/full: stopped at tick") && health.contains("No space left"),
        "{health}"
    );
    let (_, before) = http(&addr, "GET", "/metrics");
    let after = poll_scrape(&addr, |m| ticks(m) >= ticks(&before) + 2.0);
    assert!(
        ticks(&after) >= ticks(&before) + 2.0,
        "good stopped ticking: {} then {}",
        ticks(&before),
        ticks(&after)
    );
    assert_eq!(
        metric(&after, "vcoord_host_failed", &["host=\"broken\""]),
        Some(1.0)
    );
    assert_eq!(
        metric(&after, "vcoord_host_failed", &["host=\"good\""]),
        Some(0.0)
    );
    assert_eq!(
        metric(&after, "vcoord_record_ok", &["file=\"/dev/full\""]),
        Some(0.0)
    );
    let (_, status) = http(&addr, "GET", "/status.json");
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(doc["hosts"][0]["host"], "good", "{status}");
    assert_eq!(doc["failed"][0]["host"], "broken", "{status}");
    assert!(
        doc["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not-there.toml"),
        "{status}"
    );
    s.signal("TERM");
    let exit = s.wait(Duration::from_secs(10));
    let log = s.log();
    assert!(!exit.success(), "{log}");
    assert!(log.contains("1 host failed"), "{log}");
    assert!(
        log.contains("the record /dev/full stopped at tick"),
        "{log}"
    );
    assert_eq!(
        log.matches("cannot write the record").count(),
        1,
        "said more than once: {log}"
    );
    drop(s);

    // A reload that removes the failed host forgets it: health is whole again.
    let dir = scratch("failed-host-reload");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = good_and_broken(&dir, &addr, true);
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    let (code, health) = http(&addr, "GET", "/healthz");
    assert_eq!(code, 503, "{health}");
    good_and_broken(&dir, &addr, false);
    s.signal("HUP");
    s.until("READY=1", Duration::from_secs(20));
    let (code, health) = http(&addr, "GET", "/healthz");
    assert_eq!((code, health.as_str()), (200, "ok: 1 hosts\n"));
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert!(!scrape.contains("host=\"broken\""), "{scrape}");
    let (_, status) = http(&addr, "GET", "/status.json");
    assert!(!status.contains("broken"), "{status}");

    // A reload that moves the endpoint is refused by name (the address changes at a restart
    // only); the old address keeps answering.
    let moved = format!("127.0.0.1:{}", free_port());
    good_and_broken(&dir, &moved, false);
    s.signal("HUP");
    s.until("READY=1", Duration::from_secs(20));
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(
        metric(&scrape, "vcoord_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert!(
        std::net::TcpStream::connect(&moved).is_err(),
        "{moved} answers"
    );
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(10)).success());
    let log = s.log();
    assert!(
        log.contains("reload refused: `metrics.listen` changed"),
        "{log}"
    );
}

/// `GET /healthz` on `addr` with a deadline: the status code and how long the answer took, or
/// why there was none.
fn timed_health(addr: &str, within: Duration) -> Result<(u16, Duration), String> {
    use std::io::Write as _;
    let started = Instant::now();
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&sock, within).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(within)).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an answer: {text:?}"))?;
    Ok((code, started.elapsed()))
}

#[test]
fn the_metrics_endpoint_outlasts_a_flood_and_a_slow_loris() {
    let dir = scratch("flood");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = good_and_broken(&dir, &addr, false);
    // A descriptor limit far below what the clients open, as a unit without LimitNOFILE has
    // against a larger flood.
    let mut s = Daemon::launch(&dir, &config)
        .under(&["prlimit", "--nofile=128:128"])
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    let second = Duration::from_secs(1);
    assert_eq!(timed_health(&addr, second).map(|(c, _)| c), Ok(200));
    let sock: std::net::SocketAddr = addr.parse().unwrap();

    // A flood: 400 connections that never send a byte, held open.
    let flood: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&sock, second).ok())
        .collect();
    assert!(flood.len() >= 300, "only {} connections made", flood.len());
    // Judged over many samples: an exhausted endpoint answers none of them, while a busy
    // test machine may delay one now and then.
    let mut answers: Vec<Result<(u16, Duration), String>> =
        (0..5).map(|_| timed_health(&addr, 3 * second)).collect();

    // A slow loris besides: 100 more connections each sending its request a byte every 200 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loris: Vec<_> = (0..100)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                use std::io::Write as _;
                let Ok(mut c) = std::net::TcpStream::connect_timeout(&sock, second) else {
                    return;
                };
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
                    .iter()
                    .cycle()
                {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || c.write_all(&[*b]).is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    let during = Instant::now();
    while during.elapsed() < Duration::from_secs(7) {
        answers.push(timed_health(&addr, 3 * second));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Every sample answered 200, and nine in ten within a second.
    assert!(
        answers.iter().all(|a| matches!(a, Ok((200, _)))),
        "during the flood and the slow loris: {answers:?}"
    );
    let quick = answers
        .iter()
        .filter(|a| matches!(a, Ok((_, took)) if *took < second))
        .count();
    assert!(
        quick * 10 >= answers.len() * 9,
        "{quick} of {} answers within 1 s: {answers:?}",
        answers.len()
    );
    // Slow and idle connections are cut at the deadline, not held forever.
    let mut buf = [0u8; 1];
    let mut first = flood.into_iter().next().unwrap();
    first.set_read_timeout(Some(second)).unwrap();
    assert!(
        matches!(first.read(&mut buf), Ok(0) | Err(_)),
        "an idle connection is still open"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in loris {
        t.join().unwrap();
    }
    drop(first);
    let started = Instant::now();
    let answer = loop {
        let answer = timed_health(&addr, second);
        if matches!(answer, Ok((200, _))) || started.elapsed() > Duration::from_secs(10) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(matches!(answer, Ok((200, _))), "after: {answer:?}");
    let (code, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(scrape.contains("vcoord_ticks_total"), "{scrape}");
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(10)).success());
    let log = s.log();
    assert!(log.contains("max_connections=32"), "{log}");
    // The unit sets its own limit, so the endpoint's budget does not depend on the default.
    let unit = std::fs::read_to_string(root().join("packaging/vcoord.service")).unwrap();
    let nofile: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .and_then(|v| v.trim().parse().ok())
        .expect("LimitNOFILE= in the unit");
    assert!(nofile >= 4096, "LimitNOFILE={nofile}");
}

/// A run with a tick limit ends when its hosts do, with the metrics endpoint on too (the
/// endpoint's accepting thread used to wait for a stop nobody asked for, so the process never
/// exited).
#[test]
fn a_tick_limit_ends_the_run_with_the_endpoint_on() {
    let dir = scratch("ticks-endpoint");
    let config = dir.join("vcoord.toml");
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{addr}\"\n[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\ninterval_s = 0.2\n",
            root()
                .join("examples/scenarios/cpu-t2-all-on-one.toml")
                .display()
        ),
    )
    .unwrap();
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime"])
        .ticks(3)
        .remove_dir_after()
        .spawn();
    let status = s.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", s.log());
}

/// Two dedicated VMs on a 2-pCPU host: `lat` (one vCPU) gets pCPU 1; `big` (two vCPUs) cannot
/// have pCPUs of its own (one core stays shared) and is left shared, counted where an operator
/// looks: `vcoord_vm_dedicated` 1 and 0, the fleet's CPU cannot-satisfy signal at 1, and
/// `/status.json` saying which pCPU `lat` has and why `big` has none.
#[test]
fn a_dedicated_vm_left_shared_is_counted_in_metrics_and_status() {
    let dir = scratch("dedicated");
    std::fs::write(
        dir.join("s.toml"),
        "name = \"d\"\nduration_s = 600\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 8192\n\
         [[vm]]\nname = \"lat\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 20 }]\n\
         [[vm]]\nname = \"big\"\nvcpus = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 50 }]\n\
         [[vm]]\nname = \"web\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 50 }]\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{addr}\"\n[[host]]\nname = \"sim\"\nuri = \"sim:s.toml\"\ninterval_s = 0.2\n\
             [[host.vm]]\nmatch = \"lat\"\nplacement = \"dedicated\"\n\
             [[host.vm]]\nmatch = \"big\"\nplacement = \"dedicated\"\n"
        ),
    )
    .unwrap();
    let mut s = Daemon::launch(&dir, &config)
        .args(&["--realtime"])
        .notify(Duration::from_secs(10))
        .remove_dir_after()
        .spawn();
    s.until("READY=1", Duration::from_secs(20));
    let scrape = poll_scrape(&addr, |m| m.contains("vcoord_vm_dedicated"));
    let read = |name: &str, labels: &[&str]| {
        metric(&scrape, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}:\n{scrape}"))
    };
    assert_eq!(read("vcoord_vm_dedicated", &["vm=\"lat\""]), 1.0);
    assert_eq!(read("vcoord_vm_dedicated", &["vm=\"big\""]), 0.0);
    assert!(metric(&scrape, "vcoord_vm_dedicated", &["vm=\"web\""]).is_none());
    assert_eq!(read("vcoord_host_cannot_satisfy", &["kind=\"cpu\""]), 1.0);
    let (_, status) = http(&addr, "GET", "/status.json");
    assert!(status.contains("\"Ok\":[1]"), "{status}");
    assert!(status.contains("it needs 2 pCPUs of their own"), "{status}");
    s.signal("TERM");
    assert!(s.wait(Duration::from_secs(5)).success());
    assert_eq!(
        s.log().matches("a dedicated VM is left shared").count(),
        1,
        "{}",
        s.log()
    );
}
