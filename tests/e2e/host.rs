//! The daemon on a real host: libvirtd restarts, the fast path against libvirt, benches, per-VM
//! metadata and the metrics endpoint.

use super::*;

/// Starts libvirtd again if it is not running (after the restart test, even a failed one).
struct LibvirtdBack;

impl Drop for LibvirtdBack {
    fn drop(&mut self) {
        let running = Command::new("pgrep")
            .args(["-x", "libvirtd"])
            .stdout(Stdio::null())
            .status();
        if !running.is_ok_and(|s| s.success()) {
            let _ = Command::new("libvirtd")
                .arg("-d")
                .stdout(Stdio::null())
                .status();
        }
    }
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn libvirtd_restart_is_survived_by_reconnecting() {
    require_e2e();
    let mut guests = Guests::new("restart");
    // declared after the guests so that it is dropped first: libvirtd must be up to destroy them
    let _back = LibvirtdBack;
    let vm = guests.start(GuestSpec::new("a", "vc.cpu=30"));
    guests.wait_booted(Duration::from_secs(120));

    // the shipped local config drives this host
    let local = common::root().join("examples/local.toml");
    let out = common::vcoord(&[
        "run",
        "--config",
        local.to_str().unwrap(),
        "--ticks",
        "3",
        "--dry-run",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut daemon = run_vcoord(&guests.dir, "", 400);
    daemon.wait_until("first ticks", Duration::from_secs(120), &|d| {
        d.ticks_with(&vm) >= 3
    });
    let before = daemon.ticks_with(&vm);
    assert!(Command::new("pkill")
        .args(["-x", "libvirtd"])
        .status()
        .unwrap()
        .success());
    // Until vcoord has seen the connection go (not a fixed time: a loaded machine notices late).
    daemon.wait_until("the lost connection seen", Duration::from_secs(60), &|d| {
        d.log().contains("connection lost")
    });
    assert!(daemon.running(), "vcoord exited when libvirtd went away");
    assert!(Command::new("libvirtd")
        .arg("-d")
        .status()
        .unwrap()
        .success());
    // reconnects (backoff: 1 s doubling) and samples the guest again
    daemon.wait_until("ticks after reconnect", Duration::from_secs(120), &|d| {
        d.ticks_with(&vm) >= before + 3
    });
    let log = std::fs::read_to_string(guests.dir.join("vcoord.log")).unwrap_or_default();
    assert!(log.contains("reconnected"), "{log}");
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn fast_path_and_libvirt_give_the_same_utilization_and_fallback_works() {
    use vcoord_core::backend::libvirt::{LibvirtBackend, LibvirtOptions};
    use vcoord_core::backend::Backend;
    require_e2e();
    let mut guests = Guests::new("fastpath");
    for (n, w, cpu) in [
        ("a", "vc.cpu=100", 0),
        ("b", "vc.cpu=30", 1),
        ("c", "vc.cpu=60", 1),
    ] {
        guests.start(GuestSpec::new(n, w).pinned(&[cpu]));
    }
    guests.wait_booted(Duration::from_secs(120));
    let options = |fast_path| LibvirtOptions {
        fast_path,
        memory_interval: Duration::from_secs(2),
        ..Default::default()
    };
    let mut fast = LibvirtBackend::connect_with(URI, &options(true)).unwrap();
    let mut slow = LibvirtBackend::connect_with(URI, &options(false)).unwrap();
    // A fast path that cannot find any domain's threads falls back to libvirt per domain.
    let empty = guests.dir.join("no-status-files");
    std::fs::create_dir_all(&empty).unwrap();
    let mut fallback = LibvirtBackend::connect_with(
        URI,
        &LibvirtOptions {
            qemu_run_dir: empty,
            ..options(true)
        },
    )
    .unwrap();
    assert!(fast.describe().contains("/proc"), "{}", fast.describe());
    assert!(!slow.describe().contains("/proc"), "{}", slow.describe());
    // Both paths read the same counters (each vCPU thread's run time), so compare counters at
    // the same moments, not utilizations over intervals that a busy machine offsets: two reads
    // of one thread's run time differ by at most the time between them (a thread runs at most
    // as fast as the clock), plus the counters' granularity.
    type Read = (vcoord_core::model::Sample, Instant, Instant);
    let read = |b: &mut LibvirtBackend| -> Read {
        let before = Instant::now();
        let sample = b.sample().unwrap();
        (sample, before, Instant::now())
    };
    let agree = |what: &str, x: &Read, y: &Read| {
        let window = x.2.max(y.2) - x.1.min(y.1);
        let slack = window.as_nanos() as u64 + 25_000_000;
        let mine = |s: &vcoord_core::model::Sample| -> BTreeMap<String, (u64, Vec<u32>)> {
            s.vms
                .iter()
                .filter(|v| v.name.starts_with(&guests.prefix))
                .map(|v| {
                    (
                        v.name.clone(),
                        (v.vcpus[0].run_time_ns, v.vcpus[0].affinity.iter().collect()),
                    )
                })
                .collect()
        };
        let (a, b) = (mine(&x.0), mine(&y.0));
        assert_eq!(a.len(), 3, "{what}: {a:?}");
        for (name, (run, affinity)) in &a {
            let (other, other_affinity) = &b[name];
            assert!(
                run.abs_diff(*other) <= slack,
                "{what}: {name} ran {run} ns by one path, {other} ns by the other, read within {} ms",
                window.as_millis()
            );
            assert_eq!(affinity, other_affinity, "{what}: {name}");
        }
    };
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let f = read(&mut fast);
        let s = read(&mut slow);
        agree("/proc vs libvirt", &f, &s);
        let f = read(&mut fast);
        let b = read(&mut fallback);
        agree("/proc vs per-domain fallback", &f, &b);
    }
    // And utilization over one shared interval: the busy guest near 100% both ways.
    let (f0, s0) = (read(&mut fast), read(&mut slow));
    std::thread::sleep(Duration::from_secs(3));
    let (f1, s1) = (read(&mut fast), read(&mut slow));
    let busy = |a: &Read, b: &Read| {
        let vm = |s: &vcoord_core::model::Sample| {
            s.vms
                .iter()
                .find(|v| v.name == guests.name("a"))
                .map(|v| v.vcpus[0].run_time_ns)
                .unwrap()
        };
        (vm(&b.0) - vm(&a.0)) as f64 / (b.2 - a.1).as_nanos() as f64 * 100.0
    };
    let (pf, ps) = (busy(&f0, &f1), busy(&s0, &s1));
    // The two windows differ by the time each read took: so may the figures, by that share.
    let offset = (s0.1.max(f0.1) - s0.1.min(f0.1)) + (s1.2.max(f1.2) - s1.2.min(f1.2));
    let bound = 5.0 + 100.0 * offset.as_secs_f64() / 3.0;
    assert!(
        pf > 10.0 && ps > 10.0,
        "busy guest at {pf:.1}% (/proc), {ps:.1}% (libvirt)"
    );
    assert!(
        (pf - ps).abs() <= bound,
        "busy guest at {pf:.1}% (/proc) vs {ps:.1}% (libvirt), bound {bound:.1}"
    );
    eprintln!("busy guest over 3 s: /proc {pf:.1}%, libvirt {ps:.1}%");
    // Each pCPU's busy time over the same 3 s: /proc/stat on the fast path, libvirt's
    // virNodeGetCPUStats (kernel + user) on the other, where /proc is not this machine's. Both
    // pCPUs carry busy guests (100% on 0, 30 + 60% on 1).
    let pcpu_busy = |a: &Read, b: &Read| -> Vec<f64> {
        let window = (b.2 - a.1).as_nanos() as f64;
        a.0.host
            .pcpu_busy_ns
            .iter()
            .map(|(id, before)| {
                let after = b.0.host.pcpu_busy_ns.iter().find(|(j, _)| j == id);
                let after = after
                    .map(|x| x.1)
                    .unwrap_or_else(|| panic!("pCPU {id} gone"));
                (after - before) as f64 / window * 100.0
            })
            .collect()
    };
    let (bf, bs) = (pcpu_busy(&f0, &f1), pcpu_busy(&s0, &s1));
    eprintln!("pCPU busy over 3 s: /proc {bf:.1?}%, libvirt {bs:.1?}%");
    assert_eq!((bf.len(), bs.len()), (2, 2), "{bf:?} {bs:?}");
    for (x, y) in bf.iter().zip(&bs) {
        assert!(*x > 50.0 && *y > 50.0, "/proc {bf:?}, libvirt {bs:?}");
        assert!(
            (x - y).abs() <= bound + 5.0,
            "/proc {bf:?}, libvirt {bs:?}, bound {bound:.1}"
        );
    }
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn bench_collect_and_a_short_soak_run_on_the_live_host() {
    require_e2e();
    let mut guests = Guests::new("bench");
    guests.start(GuestSpec::new("a", "vc.cpu=30"));
    guests.wait_booted(Duration::from_secs(120));
    let out = Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(["bench", "collect", "--connect", URI, "--ticks", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in [
        "CPU-path tick",
        "full tick",
        "libvirt only",
        "per-domain poller",
        "bare bulk call",
    ] {
        assert!(text.contains(mode), "{mode} missing:\n{text}");
    }
    // The CPU-path tick makes one libvirt call (the domain list).
    let cpu_path = text.lines().find(|l| l.contains("CPU-path tick")).unwrap();
    let calls: f64 = cpu_path.split_whitespace().nth(8).unwrap().parse().unwrap();
    assert_eq!(calls, 1.0, "{cpu_path}");
    let config = guests.dir.join("soak.toml");
    std::fs::write(
        &config,
        format!("[[host]]\nname = \"soak\"\nuri = \"{URI}\"\ninterval_s = 0.05\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args([
            "bench",
            "soak",
            "--config",
            config.to_str().unwrap(),
            "--ticks",
            "200",
            "--every",
            "100",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("KiB")).collect();
    assert_eq!(rows.len(), 3, "{text}");
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn a_vm_opted_out_in_its_metadata_is_never_touched_and_a_restart_changes_nothing() {
    require_e2e();
    let mut guests = Guests::new("optout");
    for n in ["a", "b", "c"] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[0]));
    }
    let out = guests.start(GuestSpec::new("d", BUSY).pinned(&[0]).metadata(
        "<vcoord:vm xmlns:vcoord='https://vcoord.dev/xmlns/vm/1' cpu='ignore' memory='ignore'/>",
    ));
    guests.wait_booted(Duration::from_secs(120));
    guests.wait_balloons_settled(512, Duration::from_secs(60));
    let names = guests.names.clone();
    let balloon_of = |vm: &str| balloons(std::slice::from_ref(&vm.to_owned()))[vm]["current"];
    let d_before = balloon_of(&out);

    // The defaults on four busy guests pinned to pCPU 0, the fourth set aside by its metadata,
    // until the host is settled (four ticks in a row without a pin or a balloon change); then a
    // stop.
    let mut daemon = run_vcoord(&guests.dir, "", 150);
    let settled = |d: &Daemon| {
        let r = d.records();
        r.len() >= 10
            && r[r.len() - 4..]
                .iter()
                .all(|t| t.pins.is_empty() && t.balloons.is_empty())
    };
    let mut polls = Vec::new();
    let started = Instant::now();
    while !settled(&daemon) {
        assert!(daemon.running(), "vcoord ended early: {}", log_of(&guests));
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "never settled"
        );
        polls.push(
            names
                .iter()
                .map(|n| (n.clone(), affinity(n)))
                .collect::<BTreeMap<_, _>>(),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    daemon.stop();
    assert!(
        daemon.wait(Duration::from_secs(10)).success(),
        "{}",
        log_of(&guests)
    );
    polls.push(names.iter().map(|n| (n.clone(), affinity(n))).collect());
    assert!(
        polls.iter().all(|p| p[&out] == vec![0]),
        "{out} moved: {polls:?}"
    );
    assert_eq!(affinity(&out), vec![0]);
    assert_eq!(balloon_of(&out), d_before, "{out}'s balloon changed");
    let records = daemon.records();
    for r in &records {
        assert!(
            r.pins.iter().all(|p| p.vm != out),
            "tick {}: {:?}",
            r.tick,
            r.pins
        );
        assert!(r.balloons.iter().all(|b| b.vm != out), "tick {}", r.tick);
    }
    // The others balanced around it: two per pCPU at the end.
    assert!(two_each(polls.last().unwrap()), "{polls:?}");
    assert!(log_of(&guests).contains("operator settings from the domain's metadata"));

    // A restart on the settled host adopts it as it is: no pin and no balloon move.
    let mut again = run_vcoord(&guests.dir, "", 6);
    assert!(
        again.wait(Duration::from_secs(60)).success(),
        "{}",
        log_of(&guests)
    );
    let records = again.records();
    assert_eq!(records.len(), 6);
    for r in &records {
        assert!(
            r.pins.is_empty(),
            "restart re-pinned at tick {}: {:?}",
            r.tick,
            r.pins
        );
        assert!(
            r.balloons.is_empty(),
            "restart moved balloons at tick {}: {:?}",
            r.tick,
            r.balloons
        );
    }
}

/// Every mode of the domain metadata on real guests, as libvirt really hands it over (without
/// its namespace): each side managed or left alone, `min_mib` / `max_mib` / `shares` taken, a
/// live change with `virsh metadata --live` followed, and metadata vcoord cannot parse
/// reported with its real reason and the VM left alone. Four idle, unpinned guests at 512 MiB
/// of 1024; each expectation differs from what a VM with no metadata, or with metadata that is
/// not understood, would get.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn domain_metadata_is_understood_in_every_mode_and_followed_live() {
    require_e2e();
    const NS: &str = "https://vcoord.dev/xmlns/vm/1";
    let element = |attrs: &str| format!("<vcoord:vm xmlns:vcoord='{NS}' {attrs}/>");
    let mut guests = Guests::new("meta");
    // Defaults: pinned on first sight, memory managed.
    let plain = guests.start(GuestSpec::new("plain", ""));
    // CPU left alone; memory managed and held at least at 640 MiB (an idle guest otherwise
    // stays at or below its 512).
    let floor = guests.start(
        GuestSpec::new("floor", "").metadata(&element("cpu='ignore' min_mib='640' shares='3'")),
    );
    // CPU managed (pinned), memory left alone; later changed live to memory managed under a
    // 384 MiB ceiling.
    let cpuonly = guests
        .start(GuestSpec::new("cpuonly", "").metadata(&element("cpu='manage' memory='ignore'")));
    // Not understood: left alone on both sides, and said why.
    let garbled = guests.start(GuestSpec::new("garbled", "").metadata(&element("cpu='sometimes'")));
    guests.wait_booted(Duration::from_secs(120));
    guests.wait_balloons_settled(512, Duration::from_secs(60));
    let current_mib =
        |vm: &str| balloons(std::slice::from_ref(&vm.to_owned()))[vm]["current"] / 1024;
    let garbled_before = current_mib(&garbled);
    let cpuonly_before = current_mib(&cpuonly);
    let unpinned = affinity(&plain);
    assert!(unpinned.len() > 1, "guests start unpinned: {unpinned:?}");

    let mut daemon = run_vcoord(&guests.dir, "", 400);
    let actual_of = |r: &TickRecord, vm: &str| {
        r.vms
            .iter()
            .find(|v| v.name == vm)
            .map_or(0.0, |v| v.actual_mib())
    };
    daemon.wait_until(
        "the floor guest grown to its min_mib",
        Duration::from_secs(120),
        &|d| {
            d.records()
                .last()
                .is_some_and(|r| actual_of(r, &floor) >= 636.0)
        },
    );
    // A second vcoord on the same libvirtd under another spelling of its URI is refused.
    let other = guests.dir.join("other.toml");
    std::fs::write(
        &other,
        "[[host]]\nname = \"other\"\nuri = \"qemu+unix:///system\"\ninterval_s = 1.0\n",
    )
    .unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(["run", "--config", other.to_str().unwrap(), "--ticks", "1"])
        .env("VCOORD_RUN_DIR", daemon.run_dir())
        .env("VCOORD_STATE_DIR", daemon.run_dir().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("already coordinating"),
        "a second vcoord ran beside the first: {err}"
    );
    let changed_at = daemon.records().last().map_or(0, |r| r.tick);
    virsh(&[
        "metadata",
        &cpuonly,
        NS,
        "--key",
        "vcoord",
        "--set",
        "<vm memory='manage' max_mib='384'/>",
        "--live",
    ])
    .expect("virsh metadata --set --live");
    daemon.wait_until(
        "the live change taken (cpuonly at its new 384 MiB ceiling)",
        Duration::from_secs(90),
        &|d| {
            d.records()
                .last()
                .is_some_and(|r| actual_of(r, &cpuonly) <= 388.0)
        },
    );
    daemon.stop();
    assert!(
        daemon.wait(Duration::from_secs(20)).success(),
        "{}",
        log_of(&guests)
    );
    let records = daemon.records();
    let log = log_of(&guests);

    let pinned = |vm: &str| records.iter().any(|r| r.pins.iter().any(|p| p.vm == vm));
    let ballooned_before = |vm: &str, tick: u64| {
        records
            .iter()
            .filter(|r| r.tick <= tick)
            .any(|r| r.balloons.iter().any(|b| b.vm == vm))
    };
    let control = |vm: &str| {
        let snapshot = records
            .last()
            .and_then(|r| r.snapshot.as_ref())
            .expect("records carry their snapshot");
        snapshot
            .vms()
            .iter()
            .find(|v| v.name == vm)
            .unwrap_or_else(|| panic!("{vm} not in the last snapshot"))
            .control
            .clone()
    };
    const MIB: u64 = 1024;

    // No metadata: the defaults.
    assert!(pinned(&plain), "{plain} was never pinned");
    assert_eq!(affinity(&plain).len(), 1, "{plain}: {:?}", affinity(&plain));

    // cpu=ignore, min_mib, shares: never pinned, grown to its floor, settings as written.
    assert!(
        !pinned(&floor),
        "{floor} was pinned though its metadata says cpu=ignore"
    );
    assert_eq!(affinity(&floor), unpinned, "{floor}'s affinity changed");
    assert!(
        records
            .iter()
            .flat_map(|r| r.vms.iter().filter(|v| v.name == floor))
            .all(|v| v.vcpus.iter().all(|c| c.affinity.len() == unpinned.len())),
        "{floor} was pinned by someone"
    );
    assert!(
        current_mib(&floor) >= 636,
        "{floor} at {} MiB",
        current_mib(&floor)
    );
    let c = control(&floor);
    assert!(!c.cpu_managed && c.memory_managed, "{floor}: {c:?}");
    assert_eq!(
        (c.min_kib, c.shares),
        (Some(640 * MIB), Some(3.0)),
        "{floor}: {c:?}"
    );

    // cpu=manage memory=ignore, then memory=manage max_mib=384 live.
    assert!(
        pinned(&cpuonly),
        "{cpuonly} was never pinned though its metadata says cpu=manage"
    );
    assert!(
        !ballooned_before(&cpuonly, changed_at),
        "{cpuonly}'s balloon moved while its metadata said memory=ignore"
    );
    assert_eq!(cpuonly_before, 512);
    assert!(
        current_mib(&cpuonly) <= 388,
        "{cpuonly} at {} MiB",
        current_mib(&cpuonly)
    );
    let c = control(&cpuonly);
    assert!(c.cpu_managed && c.memory_managed, "{cpuonly}: {c:?}");
    assert_eq!(c.max_kib, Some(384 * MIB), "{cpuonly}: {c:?}");

    // Not understood: both sides left alone, the reason said once.
    assert!(
        !pinned(&garbled) && !ballooned_before(&garbled, u64::MAX),
        "{garbled} was touched"
    );
    assert_eq!(affinity(&garbled), unpinned);
    assert_eq!(current_mib(&garbled), garbled_before);
    let c = control(&garbled);
    assert!(!c.cpu_managed && !c.memory_managed, "{garbled}: {c:?}");
    let reasons: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&garbled) && l.contains("cpu: `sometimes` is not manage or ignore"))
        .collect();
    assert_eq!(reasons.len(), 1, "said {} times: {log}", reasons.len());
    assert!(log.contains("operator settings from the domain's metadata"));
    assert!(
        !log.contains("not a <vm> element"),
        "metadata refused: {log}"
    );
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn a_live_daemon_is_scraped_and_agrees_with_libvirt() {
    require_e2e();
    let mut guests = Guests::new("scrape");
    let _back = LibvirtdBack;
    let busy = guests.start(GuestSpec::new("busy", "vc.cpu=100").pinned(&[0]));
    // Two busy guests share pCPU 1: 300% of demand on two pCPUs, which their run time alone
    // (200%) would hide.
    let light = guests.start(GuestSpec::new("light", "vc.cpu=100").pinned(&[1]));
    let gone = guests.start(GuestSpec::new("gone", "vc.cpu=100").pinned(&[1]));
    guests.wait_booted(Duration::from_secs(120));
    guests.wait_balloons_settled(512, Duration::from_secs(60));
    let addr = loopback_addr();
    // Policies that change nothing: libvirt's figures stay put between the daemon's sample and
    // virsh's reading.
    let mut daemon = run_vcoord_with(
        &guests.dir,
        &format!("[metrics]\nlisten = \"{addr}\""),
        "[host.cpu_policy]\nname = \"none\"\n[host.memory_policy]\nname = \"none\"\n",
        400,
    );
    daemon.wait_until("ticks", Duration::from_secs(120), &|d| {
        d.ticks_with(&busy) >= 4
    });
    let (code, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    // promtool accepts the scrape.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    {
        use std::io::Write as _;
        check
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Balloon sizes exactly as libvirt has them.
    let b = balloons(&guests.names);
    for vm in &guests.names {
        let virsh = b[vm]["current"] as f64 * 1024.0;
        let ours = metric(
            &scrape,
            "vcoord_vm_balloon_actual_bytes",
            &[&format!("vm=\"{vm}\"")],
        );
        assert_eq!(ours, Some(virsh), "{vm}");
    }
    // vCPU run time as libvirt counts it, read right after the scrape: the daemon's sample is
    // at most its interval (and a tick) older, never newer. Utilization is served too (its
    // agreement with libvirt's figures is the fast-path test's).
    let after_scrape = Instant::now();
    let stats = common::libvirt::virsh(&["domstats", "--vcpu", &busy, &light]).unwrap();
    let since_scrape = after_scrape.elapsed().as_secs_f64();
    for vm in [&busy, &light] {
        let block = stats
            .split("Domain: ")
            .find(|b| b.contains(vm.as_str()))
            .unwrap();
        let virsh_s = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("vcpu.0.time="))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap()
            / 1e9;
        let ours = metric(
            &scrape,
            "vcoord_vcpu_time_seconds_total",
            &[&format!("vm=\"{vm}\"")],
        )
        .unwrap();
        assert!(
            ours <= virsh_s + 0.05 && virsh_s - ours <= 3.0 + since_scrape,
            "{vm}: vcoord {ours:.3} s, virsh {virsh_s:.3} s"
        );
        assert!(metric(
            &scrape,
            "vcoord_vcpu_utilization_percent",
            &[&format!("vm=\"{vm}\"")]
        )
        .is_some());
    }
    assert_eq!(
        metric(&scrape, "vcoord_vcpu_pcpu", &[&format!("vm=\"{busy}\"")]),
        Some(0.0)
    );
    // What a fleet balancer reads: the host wants about a pCPU more than it has (run time plus
    // run-queue wait); the two guests sharing pCPU 1 each wait about half the time they want,
    // the one alone on pCPU 0 far less; moving either of them relieves most of the deficit.
    let read = |name: &str, labels: &[&str]| {
        metric(&scrape, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}:\n{scrape}"))
    };
    let deficit = read("vcoord_host_cpu_deficit_percent", &["host=\"e2e\""]);
    assert!((30.0..=170.0).contains(&deficit), "CPU deficit {deficit}%");
    let wait = |vm: &str| read("vcoord_vm_cpu_wait_ratio", &[&format!("vm=\"{vm}\"")]);
    for vm in [&light, &gone] {
        assert!((0.25..=0.75).contains(&wait(vm)), "{vm} waits {}", wait(vm));
        assert!(
            wait(&busy) < wait(vm),
            "{busy} waits {}, {vm} {}",
            wait(&busy),
            wait(vm)
        );
        let relief = read(
            "vcoord_vm_relief_ratio",
            &[&format!("vm=\"{vm}\""), "kind=\"cpu\""],
        );
        assert!(relief >= 0.5, "moving {vm} relieves {relief}");
    }
    // CPU ready, per VM: the guests sharing pCPU 1 wait for it more of the tick than the one
    // alone on pCPU 0, and a one-vCPU guest's ready is its vCPU's wait of the same tick.
    let ready = |vm: &str| read("vcoord_vm_cpu_ready_percent", &[&format!("vm=\"{vm}\"")]);
    for vm in [&busy, &light, &gone] {
        let vcpu_wait = read("vcoord_vcpu_wait_percent", &[&format!("vm=\"{vm}\"")]);
        assert!(
            (ready(vm) - vcpu_wait).abs() < 1e-9,
            "{vm}: ready {} against its vCPU's wait {vcpu_wait}",
            ready(vm)
        );
    }
    for vm in [&light, &gone] {
        assert!(
            ready(vm) > ready(&busy),
            "{vm} ready {}%, {busy} {}%",
            ready(vm),
            ready(&busy)
        );
    }
    assert_eq!(
        read("vcoord_host_memory_deficit_bytes", &["host=\"e2e\""]),
        0.0
    );
    // The host kernel's own pressure stall figures: three busy vCPU threads on two cores keep
    // some task waiting for a CPU most of the time; a resource the kernel has no file for is
    // absent, never 0.
    let cpu_stall = read(
        "vcoord_host_pressure_stall_percent",
        &["resource=\"cpu\"", "scope=\"some\""],
    );
    assert!(cpu_stall > 20.0, "CPU pressure stall {cpu_stall}%");
    eprintln!(
        "fleet: CPU deficit {deficit:.0}%, wait {:.2} / {:.2} / {:.2}, CPU stall {cpu_stall:.0}%",
        wait(&busy),
        wait(&light),
        wait(&gone)
    );
    for resource in ["cpu", "memory", "io"] {
        let served = metric(
            &scrape,
            "vcoord_host_pressure_stall_percent",
            &[&format!("resource=\"{resource}\""), "scope=\"some\""],
        );
        let exists = Path::new("/proc/pressure").join(resource).exists();
        assert_eq!(served.is_some(), exists, "{resource}");
    }
    // The host's same-page merging as the kernel shows it, with what ksmd costs (vcoord reads
    // it and, with `ksm = "leave"`, changes nothing).
    let ksm = Path::new("/sys/kernel/mm/ksm");
    let running = metric(&scrape, "vcoord_host_ksm_running", &["host=\"e2e\""]);
    if ksm.exists() {
        let read_ksm = |name: &str| -> f64 {
            std::fs::read_to_string(ksm.join(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let run = read_ksm("run");
        assert_eq!(
            running,
            Some(if run == 1.0 { 1.0 } else { 0.0 }),
            "run = {run}"
        );
        let saved = metric(&scrape, "vcoord_host_ksm_saved_bytes", &["host=\"e2e\""]).unwrap();
        if run != 1.0 {
            // Not merging: the figure stands still.
            assert_eq!(saved, read_ksm("pages_sharing") * 4096.0);
        }
        let ksmd = metric(&scrape, "vcoord_host_ksmd_cpu_percent", &["host=\"e2e\""]);
        assert!(
            ksmd.is_some_and(|c| (0.0..=100.0).contains(&c)),
            "ksmd {ksmd:?}"
        );
        // The scan rate it is set to, and who runs it (these tests leave it to the operator).
        let rate = metric(
            &scrape,
            "vcoord_host_ksm_scan_pages_per_second",
            &["host=\"e2e\""],
        );
        let set = read_ksm("pages_to_scan") * 1000.0 / read_ksm("sleep_millisecs").max(1.0);
        assert_eq!(rate, Some(set));
        let managed = metric(&scrape, "vcoord_host_ksm_managed", &["host=\"e2e\""]);
        assert_eq!(managed, Some(0.0));
    } else {
        assert_eq!(running, None);
    }
    assert_eq!(http(&addr, "GET", "/healthz").0, 200);

    // A destroyed VM's series go.
    guests.destroy(&gone);
    let before = daemon.ticks_with(&busy);
    daemon.wait_until("ticks after the destroy", Duration::from_secs(60), &|d| {
        d.ticks_with(&busy) >= before + 3
    });
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert!(!scrape.contains(&format!("vm=\"{gone}\"")), "{scrape}");
    assert!(scrape.contains(&format!("vm=\"{light}\"")));

    // libvirtd away: 503 within a few intervals; back: 200 again.
    assert!(Command::new("pkill")
        .args(["-x", "libvirtd"])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    loop {
        let (code, body) = http(&addr, "GET", "/healthz");
        if code == 503 {
            assert!(body.starts_with("e2e: no successful tick"), "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still healthy: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(
        metric(&scrape, "vcoord_backend_up", &["host=\"e2e\""]),
        Some(0.0)
    );
    assert!(Command::new("libvirtd")
        .arg("-d")
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    while http(&addr, "GET", "/healthz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never healthy again"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, scrape) = http(&addr, "GET", "/metrics");
    assert_eq!(
        metric(&scrape, "vcoord_backend_up", &["host=\"e2e\""]),
        Some(1.0)
    );
    assert!(
        metric(
            &scrape,
            "vcoord_backend_reconnects_total",
            &["host=\"e2e\""]
        ) >= Some(1.0)
    );
    daemon.stop();
    assert!(daemon.wait(Duration::from_secs(10)).success());
}

/// Debian's Prometheus server on the loopback, with `rules` loaded, scraping `target` every
/// second; stopped with the test.
struct PrometheusServer {
    child: Child,
    addr: String,
}

impl PrometheusServer {
    fn start(dir: &Path, target: &str, rules: &Path) -> Self {
        let addr = loopback_addr();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: vcoord\n    honor_labels: true\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's package) is installed");
        let server = Self { child, addr };
        let start = Instant::now();
        while std::net::TcpStream::connect(&server.addr).is_err()
            || http(&server.addr, "GET", "/-/ready").0 != 200
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus not ready: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        server
    }

    /// The single value `promql` gives at `at` (Unix seconds), if any.
    /// Polls `promql` (a condition, evaluated now) until it gives a value (60 s at most).
    fn wait_for(&self, what: &str, promql: &str) {
        let started = std::time::Instant::now();
        while self.query(promql, unix_now()).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus: no {what} within 60 s ({promql})"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn query(&self, promql: &str, at: f64) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={encoded}&time={at:.3}"),
        );
        assert_eq!(code, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A guest's vCPU run time in all (ns) and memory in use (KiB: the balloon's size less what the
/// guest leaves unused), as virsh reads them.
fn virsh_cpu_and_memory(vm: &str) -> (f64, f64) {
    let stats = virsh(&["domstats", "--vcpu", "--balloon", vm]).unwrap();
    let field = |key: &str| -> f64 {
        stats
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {stats}"))
    };
    (
        field("vcpu.0.time="),
        field("balloon.current=") - field("balloon.unused="),
    )
}

/// The CPU and memory queries OpenStack Watcher's Prometheus datasource sends for an instance
/// of one vCPU over `period_s`, built by Watcher's own code (a mean, as its strategies ask;
/// `fqdn` and `resource` as its labels).
fn watchers_queries(uuid: &str, period_s: u32) -> [String; 2] {
    const BUILD: &str = "
import sys, types
from watcher.decision_engine.datasources.prometheus_base import PrometheusBase as P
me = types.SimpleNamespace(prometheus_fqdn_label='fqdn', _get_instance_uuid_label=lambda: 'resource')
uuid, period, mean = sys.argv[1], int(sys.argv[2]), P.AGGREGATES_MAP['mean']
print(P._build_prometheus_query(me, mean, P.METRIC_MAP['instance_cpu_usage'], uuid, period, types.SimpleNamespace(vcpus=1)))
print(P._build_prometheus_query(me, mean, P.METRIC_MAP['instance_ram_usage'], uuid, period))
";
    let python = "/var/lib/vcoord/watcher-venv/bin/python";
    let out = Command::new(python)
        .args(["-c", BUILD, uuid, &period_s.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{python} (scripts/setup-host.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "Watcher's query builder: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines
        .try_into()
        .unwrap_or_else(|l| panic!("two queries, not {l:?}"))
}

/// A fleet balancer's view: Prometheus scrapes a live vcoord on real guests with the Watcher
/// recording rules loaded, and the two instance queries OpenStack Watcher's Prometheus
/// datasource builds (python-watcher's own `PrometheusBase._build_prometheus_query`, from the
/// virtualenv `scripts/setup-host.sh` installs) give, for each guest's UUID, CPU within 5
/// points of what virsh's counters give over the same window and memory within 5%.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn watchers_queries_on_a_live_vcoord_agree_with_libvirt() {
    require_e2e();
    let mut guests = Guests::new("fleet");
    let busy = guests.start(GuestSpec::new("busy", "vc.cpu=100").pinned(&[0]));
    let light = guests.start(GuestSpec::new("light", "vc.cpu=30").pinned(&[1]));
    guests.wait_booted(Duration::from_secs(120));
    guests.wait_balloons_settled(512, Duration::from_secs(60));
    let addr = loopback_addr();
    let mut daemon = run_vcoord_with(
        &guests.dir,
        &format!("[metrics]\nlisten = \"{addr}\"\nfleet_host = \"compute1.example.org\""),
        "[host.cpu_policy]\nname = \"none\"\n[host.memory_policy]\nname = \"none\"\n",
        300,
    );
    daemon.wait_until("ticks", Duration::from_secs(60), &|d| {
        d.ticks_with(&busy) >= 2
    });
    let rules = common::root().join("packaging/prometheus/vcoord-watcher-rules.yml");
    let prometheus = PrometheusServer::start(&guests.dir, &addr, &rules);
    // Some history first (two scrapes of every series stored), then one window measured both
    // ways.
    prometheus.wait_for(
        "two scrapes stored",
        "count_over_time(vcoord_build_info[5m]) >= 2",
    );
    let window_s = 30.0;
    let before: Vec<(f64, f64)> = [&busy, &light]
        .iter()
        .map(|vm| virsh_cpu_and_memory(vm))
        .collect();
    std::thread::sleep(Duration::from_secs_f64(window_s));
    let at = unix_now();
    let after: Vec<(f64, f64)> = [&busy, &light]
        .iter()
        .map(|vm| virsh_cpu_and_memory(vm))
        .collect();
    // Scrapes and rule evaluations lag the window's end: wait for both to pass it.
    for series in [
        "vcoord_build_info",
        "ceilometer_cpu",
        "ceilometer_memory_usage",
    ] {
        prometheus.wait_for(
            &format!("{series} stored past the window"),
            &format!("max(timestamp({series})) >= {at:.3}"),
        );
    }
    for (i, vm) in [&busy, &light].into_iter().enumerate() {
        let uuid = virsh(&["domuuid", vm]).unwrap().trim().to_owned();
        let cpu_virsh = (after[i].0 - before[i].0) / (window_s * 1e9) * 100.0;
        let [cpu_query, memory_query] = watchers_queries(&uuid, window_s as u32);
        assert!(
            cpu_query.contains("ceilometer_cpu") && cpu_query.contains(&uuid),
            "{cpu_query}"
        );
        let cpu = prometheus
            .query(&cpu_query, at)
            .unwrap_or_else(|| panic!("{vm}: no answer to {cpu_query}"));
        assert!(
            (cpu - cpu_virsh).abs() <= 5.0,
            "{vm}: Watcher's query {cpu:.1}%, virsh {cpu_virsh:.1}%"
        );
        let memory = prometheus
            .query(&memory_query, at)
            .unwrap_or_else(|| panic!("{vm}: no answer to {memory_query}"));
        let memory_virsh = (before[i].1 + after[i].1) / 2.0 / 1024.0;
        assert!(
            (memory - memory_virsh).abs() <= 0.05 * memory_virsh,
            "{vm}: Watcher's query {memory:.0} MB, virsh {memory_virsh:.0} MiB"
        );
        eprintln!("{vm}: CPU {cpu:.1}% (virsh {cpu_virsh:.1}%), memory {memory:.0} MB (virsh {memory_virsh:.0})");
    }
    // The host label Watcher's fqdn_label matches is on vcoord's series.
    assert_eq!(
        prometheus.query("count(vcoord_build_info{fqdn='compute1.example.org'})", at),
        Some(1.0)
    );
    daemon.stop();
    assert!(daemon.wait(Duration::from_secs(10)).success());
}
