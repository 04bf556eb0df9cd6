//! CPU placement on real guests: the seed and default CPU policies and a CPU plugin spread a
//! crowded host, pair heavy with light, and leave a balanced one alone.

use super::*;

/// Runs vcoord with `host_toml` for `ticks` on the started guests, polling their pins; returns
/// the finished daemon, the polls and the first poll with two guests per pCPU.
fn spread_four_on_pcpu0(
    guests: &mut Guests,
    host_toml: &str,
    ticks: u32,
) -> (Daemon, Vec<BTreeMap<String, Vec<u32>>>, usize) {
    guests.wait_booted(Duration::from_secs(120));
    let names = guests.names.clone();
    let mut daemon = run_vcoord(&guests.dir, host_toml, ticks);
    let polls = poll_pins(&mut daemon, &names);
    assert!(
        daemon.wait(Duration::from_secs(30)).success(),
        "{}",
        log_of(guests)
    );
    let first = polls
        .iter()
        .position(two_each)
        .unwrap_or_else(|| panic!("never two per pCPU: {polls:?}\n{}", log_of(guests)));
    (daemon, polls, first)
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn cpu_all_on_pcpu0_spreads_two_per_pcpu_then_stays() {
    require_e2e();
    let mut guests = Guests::new("spread");
    for n in ["a", "b", "c", "d"] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[0]));
    }
    let (daemon, _, _) = spread_four_on_pcpu0(&mut guests, CPU_ONLY, 18);
    // Judged on its own records (how many polls fit in a tick depends on the machine's load):
    // two per pCPU decided within a few ticks, and every later decision keeps two per pCPU.
    let records = daemon.records();
    assert_eq!(records.len(), 18);
    let first = records
        .iter()
        .position(|r| two_each(&decided(r)))
        .unwrap_or_else(|| panic!("never two per pCPU\n{}", log_of(&guests)));
    // (LPT can place 3 + 1 when one load reads above the other three together, which a busy
    // machine's noise sometimes shows for a tick.)
    assert!(first <= 6, "two per pCPU only at tick {first}");
    for r in &records[first..] {
        assert!(two_each(&decided(r)), "tick {}: {:?}", r.tick, decided(r));
    }
    assert_libvirt_has_the_last_decision(&guests.names, &records);
    let repins = repins_justified(&records, 2);
    eprintln!("re-pins after balance (noise above the trigger): ticks {repins:?}");
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn cpu_balanced_start_stays_balanced_and_repins_only_on_its_trigger() {
    require_e2e();
    let mut guests = Guests::new("balanced");
    for (n, cpu) in [("a", 0), ("b", 1), ("c", 0), ("d", 1)] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[cpu]));
    }
    guests.wait_booted(Duration::from_secs(120));
    let names = guests.names.clone();
    let mut daemon = run_vcoord(&guests.dir, CPU_ONLY, 14);
    let polls = poll_pins(&mut daemon, &names);
    assert!(daemon.wait(Duration::from_secs(30)).success());
    // Judged by the policy's own records, not by what a busy machine's noise does between two
    // polls: every re-pin was on its trigger (a measured stdev above it), ...
    let records = daemon.records();
    assert_eq!(records.len(), 14);
    let repins = repins_justified(&records, 0);
    // ... and until the first such re-pin, the start stayed exactly as it was.
    let first_repin = repins.first().copied().unwrap_or(u64::MAX);
    for r in records.iter().filter(|r| r.tick < first_repin) {
        assert!(two_each(&decided(r)), "tick {}: {:?}", r.tick, decided(r));
    }
    // Every decision, re-pins included, keeps two per pCPU; libvirt ends with the last one.
    for r in &records {
        assert!(two_each(&decided(r)), "tick {}: {:?}", r.tick, decided(r));
    }
    assert_libvirt_has_the_last_decision(&names, &records);
    if repins.is_empty() {
        assert!(
            polls.iter().all(two_each),
            "moved without a re-pin: {polls:?}"
        );
    }
    eprintln!("re-pins of a balanced start (noise above the trigger): ticks {repins:?}");
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn cpu_heavy_and_light_are_paired() {
    require_e2e();
    let mut guests = Guests::new("pair");
    // Not saturating (70+70+20+20 < 200): at 100/30 every pCPU can read ~100% whatever the
    // grouping, and utilization alone cannot see an unpaired placement (seen once here, as in
    // the saturated variant of simulator T3).
    for (n, load, cpu) in [
        ("heavy1", 70, 0),
        ("heavy2", 70, 0),
        ("light1", 20, 1),
        ("light2", 20, 1),
    ] {
        guests.start(GuestSpec::new(n, &format!("vc.cpu={load}")).pinned(&[cpu]));
    }
    guests.wait_booted(Duration::from_secs(120));
    let names = guests.names.clone();
    let mut daemon = run_vcoord(&guests.dir, CPU_ONLY, 14);
    let _ = poll_pins(&mut daemon, &names);
    assert!(daemon.wait(Duration::from_secs(30)).success());
    let records = daemon.records();
    repins_justified(&records, 0);
    // What vcoord decided is what libvirt has.
    assert_libvirt_has_the_last_decision(&names, &records);
    let end = decided(records.last().unwrap());
    // Its rule, judged on what it measured: the last re-pin is LPT on the loads of that tick,
    // and the end is that re-pin.
    let Some(repin) = records.iter().rev().find(|r| !r.pins.is_empty()) else {
        panic!(
            "the unpaired start was never re-pinned: {}",
            log_of(&guests)
        );
    };
    let loads: Vec<f64> = repin
        .vms
        .iter()
        .map(|vm| vm.vcpus[0].load_pct.unwrap_or(0.0))
        .collect();
    let lpt: BTreeMap<String, Vec<u32>> = repin
        .vms
        .iter()
        .zip(vcoord_policies::greedy_lpt::lpt_assign(&loads, 2))
        .map(|(vm, bin)| (vm.name.clone(), vec![repin.pcpus[bin]]))
        .collect();
    assert_eq!(decided(repin), lpt, "tick {}: loads {loads:?}", repin.tick);
    assert_eq!(end, lpt, "moved after the last re-pin");
    // LPT pairs a heavy with a light whenever it measured both heavies above both lights and
    // the lighter heavy with the heavier light outweighs the heavier heavy; otherwise both
    // lights join the lighter heavy, which is LPT too (seen once on a busy host: 45 / 30 + 15 + 9).
    let of = |kind: &str| -> Vec<f64> {
        repin
            .vms
            .iter()
            .zip(&loads)
            .filter(|(vm, _)| vm.name.contains(kind))
            .map(|(_, &l)| l)
            .collect()
    };
    let (heavies, lights) = (of("heavy"), of("light"));
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    if min(&heavies) > max(&lights) && min(&heavies) + max(&lights) >= max(&heavies) {
        let g = groups(&end);
        assert_eq!(g.len(), 2, "{g:?}\n{}", log_of(&guests));
        for vms in g.values() {
            let heavy = vms.iter().filter(|n| n.contains("heavy")).count();
            assert_eq!(
                (heavy, vms.len()),
                (1, 2),
                "{g:?} after loads {heavies:?} / {lights:?}"
            );
        }
    } else {
        eprintln!("loads {heavies:?} / {lights:?} at the last re-pin: LPT need not pair them");
    }
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn plugin_spread_pins_real_guests_once_and_never_again() {
    require_e2e();
    let plugin = Path::new(env!("CARGO_BIN_EXE_vcoord"))
        .with_file_name("libvcoord_spread.so")
        .display()
        .to_string();
    let mut guests = Guests::new("plugin");
    for n in ["a", "b", "c", "d"] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[0]));
    }
    let host = format!(
        "[host.cpu_policy]\nplugin = \"{plugin}\"\n[host.memory_policy]\nname = \"none\"\n"
    );
    let (daemon, polls, first) = spread_four_on_pcpu0(&mut guests, &host, 12);
    assert!(first <= 2, "two per pCPU only at poll {first}: {polls:?}");
    assert!(
        polls[first..].iter().all(two_each),
        "balance lost: {polls:?}"
    );
    // The plugin pins on first sight only: two vCPUs move at tick 0, nothing after.
    let records = daemon.records();
    assert!(records.len() >= 10, "{} ticks recorded", records.len());
    assert_eq!(records[0].pins.len(), 2, "{:?}", records[0]);
    assert!(
        records[1..].iter().all(|r| r.pins.is_empty()),
        "pins after tick 0: {:?}",
        records.iter().map(|r| r.pins.len()).collect::<Vec<_>>()
    );
    assert!(log_of(&guests).contains("plugin loaded"));
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn stable_balance_spreads_with_the_fewest_moves_then_never_repins() {
    require_e2e();
    let mut guests = Guests::new("stable");
    for n in ["a", "b", "c", "d"] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[0]));
    }
    let (daemon, polls, first) = spread_four_on_pcpu0(&mut guests, STABLE, 18);
    assert!(first <= 5, "two per pCPU only at poll {first}: {polls:?}");
    assert!(
        polls[first..].iter().all(two_each),
        "balance lost: {polls:?}"
    );
    let records = daemon.records();
    let (quiet, moves) = quiet_tail(&records);
    // Four on one of two pCPUs: two must move, and nothing after.
    assert_eq!(moves, 2, "{}", log_of(&guests));
    // From a saturated start (utilization reads 100% on pCPU 0 whatever it carries) balanced
    // within 3 ticks, by its own records: the run-queue wait shows the demand.
    let last_move = records.iter().rfind(|r| !r.pins.is_empty()).unwrap();
    assert!(
        last_move.tick <= 3,
        "last move at tick {}: {}",
        last_move.tick,
        log_of(&guests)
    );
    assert!(
        quiet >= 10,
        "only {quiet} ticks without pin changes at the end"
    );
}

#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn stable_balance_leaves_a_balanced_start_alone() {
    require_e2e();
    let mut guests = Guests::new("stable-bal");
    for (n, cpu) in [("a", 0), ("b", 1), ("c", 0), ("d", 1)] {
        guests.start(GuestSpec::new(n, BUSY).pinned(&[cpu]));
    }
    guests.wait_booted(Duration::from_secs(120));
    let names = guests.names.clone();
    let mut daemon = run_vcoord(&guests.dir, STABLE, 14);
    let polls = poll_pins(&mut daemon, &names);
    assert!(daemon.wait(Duration::from_secs(30)).success());
    assert!(polls.iter().all(two_each), "balance lost: {polls:?}");
    let (_, moves) = quiet_tail(&daemon.records());
    assert_eq!(
        moves,
        0,
        "a balanced start was re-pinned: {}",
        log_of(&guests)
    );
}

/// Summed run-queue wait of a guest's vCPU threads, ns (their own schedstat).
fn vcpu_wait_ns(name: &str) -> u64 {
    vcpu_schedstat_ns(name, 1)
}

/// A host process bound to pCPU 0 for at most `limit`, killed when dropped. One process
/// (taskset execs the interpreter, which keeps its own clock), so killing it ends it: a
/// `timeout` in between would leave its child spinning.
struct Hog(Child);

impl Hog {
    /// A busy loop.
    fn on_pcpu0(limit: Duration) -> Self {
        let script = format!("while [ $SECONDS -lt {} ]; do :; done", limit.as_secs());
        Self::spawn_on_pcpu0(&["bash", "-c", &script])
    }

    /// A duty cycle: busy for the first `busy_ms` of every `period_ms`, asleep for the rest;
    /// `realtime`: under SCHED_FIFO (as a host's polling, packet or audio thread runs), so
    /// whatever shares its pCPU waits out each burst.
    fn duty_cycle_on_pcpu0(limit: Duration, busy_ms: u32, period_ms: u32, realtime: bool) -> Self {
        let (busy, period) = (f64::from(busy_ms) / 1e3, f64::from(period_ms) / 1e3);
        let script = format!(
            "import time\nend = time.monotonic() + {}\nstart = time.monotonic()\n\
             while start < end:\n    while time.monotonic() < start + {busy}: pass\n    \
             time.sleep(max(0.0, start + {period} - time.monotonic()))\n    \
             start = max(start + {period}, time.monotonic() - {period})\n",
            limit.as_secs()
        );
        let python = ["python3", "-c", &script];
        if realtime {
            Self::spawn_on_pcpu0(&[&["chrt", "-f", "10"][..], &python].concat())
        } else {
            Self::spawn_on_pcpu0(&python)
        }
    }

    fn spawn_on_pcpu0(command: &[&str]) -> Self {
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .args(command)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("taskset");
        Hog(child)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Real pCPU capacity on real guests: a host process busy on pCPU 0 beside a busy guest there
/// and a light one on pCPU 1. Taking every pCPU as wholly free (`cpu_capacity = "whole"`),
/// stable-balance sees 100% against 20% whichever way it places the two and leaves the busy
/// guest sharing pCPU 0 with the process; measuring it, it sees the process's time on pCPU 0
/// and swaps the guests. The two guests' run-queue wait, from their vCPU threads' own
/// schedstat over the same 10 s of each run (after 8 ticks), is lower measured than not; each
/// run's records say why (the non-VM load recorded, the swap decided on it, none without).
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn measured_capacity_moves_a_busy_guest_off_a_pcpu_busy_with_host_work_then_group_balance() {
    require_e2e();
    let mut guests = Guests::new("capacity");
    let busy = guests.start(GuestSpec::new("busy", BUSY).pinned(&[0]));
    let light = guests.start(GuestSpec::new("light", "vc.cpu=20").pinned(&[1]));
    guests.wait_booted(Duration::from_secs(120));
    let hog = Hog::on_pcpu0(Duration::from_secs(240));
    let run = |capacity: &str| -> (Vec<TickRecord>, u64) {
        // Each run starts from the same placement.
        for (vm, cpu) in [(&busy, "0"), (&light, "1")] {
            virsh(&["vcpupin", vm, "0", cpu, "--live"]).unwrap();
        }
        let dir = guests.dir.join(capacity);
        std::fs::create_dir_all(&dir).unwrap();
        let host = format!(
            "cpu_capacity = \"{capacity}\"\n[host.cpu_policy]\nname = \"stable-balance\"\n[host.memory_policy]\nname = \"none\"\n"
        );
        let mut d = run_vcoord(&dir, &host, 22);
        d.wait_until("8 ticks", Duration::from_secs(60), &|d| {
            d.records().len() >= 8
        });
        let before = vcpu_wait_ns(&busy) + vcpu_wait_ns(&light);
        std::thread::sleep(Duration::from_secs(10));
        let waited = vcpu_wait_ns(&busy) + vcpu_wait_ns(&light) - before;
        assert!(d.wait(Duration::from_secs(60)).success(), "{}", d.log());
        (d.records(), waited)
    };
    let (whole, waited_whole) = run("whole");
    let (measured, waited_measured) = run("measured");
    let hog_pid = hog.0.id().to_string();
    drop(hog);
    // Gone with its process: nothing left spinning for the tests after this one.
    assert!(
        !Path::new(&format!("/proc/{hog_pid}")).exists(),
        "the busy loop {hog_pid} is still there"
    );
    let other0 = |r: &TickRecord| r.pcpu_other_pct.first().copied().flatten();
    let pins = |records: &[TickRecord]| -> Vec<(u64, String)> {
        records
            .iter()
            .flat_map(|r| {
                r.pins
                    .iter()
                    .map(move |p| (r.tick, format!("{} -> {}", p.vm, p.cpus)))
            })
            .collect()
    };
    eprintln!(
        "capacity: wait over 10 s whole {:.1} s, measured {:.1} s; pCPU 0 non-VM load {:?}; pins whole {:?}, measured {:?}",
        waited_whole as f64 / 1e9,
        waited_measured as f64 / 1e9,
        measured.iter().map(other0).collect::<Vec<_>>(),
        pins(&whole),
        pins(&measured)
    );
    // Both runs recorded the process's time on pCPU 0 (the record measures it either way) ...
    for records in [&whole, &measured] {
        let seen = records.iter().filter_map(other0).fold(0.0, f64::max);
        assert!(seen > 30.0, "pCPU 0 non-VM load at most {seen:.0}%");
    }
    // ... the whole-pCPU run never moved the busy guest off pCPU 0; the measured one did, and
    // kept it off.
    let busy_cpu = |r: &TickRecord| pinned_cpu(r, &busy);
    assert!(
        whole.iter().all(|r| busy_cpu(r) == Some(0)),
        "{:?}",
        pins(&whole)
    );
    let moved = measured
        .iter()
        .position(|r| r.pins.iter().any(|p| p.vm == busy))
        .unwrap_or_else(|| panic!("never moved: {:?}", pins(&measured)));
    assert!(moved <= 8, "moved at tick {moved}");
    assert!(
        measured[moved + 1..].iter().all(|r| busy_cpu(r) == Some(1)),
        "{:?}",
        pins(&measured)
    );
    assert_libvirt_has_the_last_decision(&guests.names, &measured);
    // The point of it: less waiting for a pCPU.
    assert!(
        waited_measured < waited_whole,
        "waited {waited_measured} ns measured, {waited_whole} ns whole"
    );
    // The same two guests, booted once, for group-balance (the busy loop is gone).
    group_balance_gives_each_vm_a_group_and_sets_weight_cap_and_emulator(&guests, &busy, &light);
}

/// group-balance on a two-group layout (`group_by = "core"`: this host's two cores), both
/// guests crowded on pCPU 0 to start, the busy one with `cpu_shares = 2048` and a cap of 60% of
/// a pCPU from its `[[host.vm]]` rule. The policy's own records show each VM given its group's
/// set, the two on different groups, and no pin or tune after the first ticks; libvirt reads back the
/// last decision, the weight and quota (`virsh schedinfo`, which read 1024 and no quota
/// before) and the emulator affinity it recorded (`virsh emulatorpin`); and the cap holds: the
/// busy guest's vCPU ran at most ~60% over 10 s alone on its pCPU, where it ran ~100% before.
fn group_balance_gives_each_vm_a_group_and_sets_weight_cap_and_emulator(
    guests: &Guests,
    busy: &str,
    light: &str,
) {
    for vm in [busy, light] {
        virsh(&["vcpupin", vm, "0", "0", "--live"]).unwrap();
    }
    let schedinfo = |vm: &str| -> BTreeMap<String, String> {
        virsh(&["schedinfo", vm, "--live"])
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    };
    let before = schedinfo(busy);
    assert_eq!(
        before.get("cpu_shares").map(String::as_str),
        Some("1024"),
        "{before:?}"
    );
    let dir = guests.dir.join("groups");
    std::fs::create_dir_all(&dir).unwrap();
    let host = format!(
        "[host.cpu_policy]\nname = \"group-balance\"\nparams = {{ group_by = \"core\" }}\n\
         [host.memory_policy]\nname = \"none\"\n\
         [[host.vm]]\nmatch = \"{busy}\"\ncpu_shares = 2048\ncpu_max_pct = 60\n"
    );
    let mut d = run_vcoord(&dir, &host, 22);
    d.wait_until("10 ticks", Duration::from_secs(60), &|d| {
        d.records().len() >= 10
    });
    let ran = |vm: &str| vcpu_schedstat_ns(vm, 0);
    let (busy0, light0, t0) = (ran(busy), ran(light), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let secs = t0.elapsed().as_secs_f64();
    let busy_pct = (ran(busy) - busy0) as f64 / 1e7 / secs;
    let light_pct = (ran(light) - light0) as f64 / 1e7 / secs;
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", d.log());
    let records = d.records();
    let pin_ticks: Vec<(u64, String)> = records
        .iter()
        .flat_map(|r| {
            r.pins
                .iter()
                .map(move |p| (r.tick, format!("{} -> {{{}}}", p.vm, p.cpus)))
        })
        .collect();
    eprintln!(
        "groups: pins {pin_ticks:?}; busy ran {busy_pct:.0}%, light {light_pct:.0}%; reasons {:?}",
        records
            .iter()
            .map(|r| r.cpu_reason.as_str())
            .collect::<Vec<_>>()
    );
    // Each VM on one group's set ({0} or {1}), the two apart, decided early and kept.
    let last = decided(records.last().unwrap());
    let (b, l) = (&last[busy], &last[light]);
    assert!(b.len() == 1 && l.len() == 1 && b != l, "{last:?}");
    let settled = pin_ticks.last().map_or(0, |(t, _)| *t);
    assert!(
        settled <= 4,
        "pins as late as tick {settled}: {pin_ticks:?}"
    );
    assert_libvirt_has_the_last_decision(&guests.names, &records);
    // Tunes are sent only when they change something: at first sight and when the emulator
    // threads follow the busier group, never again once libvirt has them (the domain XML is
    // read afresh every 10 s and agrees).
    let late_tunes: Vec<u64> = records
        .iter()
        .filter(|r| r.tick > 4 && !r.tunes.is_empty())
        .map(|r| r.tick)
        .collect();
    assert!(
        late_tunes.is_empty(),
        "tunes sent again at ticks {late_tunes:?}"
    );
    // Weight and quota as the policy set them, read back from libvirt; the light guest's not.
    let after = schedinfo(busy);
    for (key, want) in [
        ("cpu_shares", "2048"),
        ("vcpu_period", "100000"),
        ("vcpu_quota", "60000"),
    ] {
        assert_eq!(
            after.get(key).map(String::as_str),
            Some(want),
            "{key}: {after:?}"
        );
    }
    assert_eq!(
        schedinfo(light).get("cpu_shares").map(String::as_str),
        Some("1024")
    );
    // Emulator threads where the record says they were sent: off the busier group.
    for vm in [busy, light] {
        let sent = records
            .iter()
            .rev()
            .flat_map(|r| r.tunes.iter())
            .filter(|t| t.vm == vm)
            .find_map(|t| t.tune.emulator.clone())
            .unwrap_or_else(|| panic!("no emulator affinity sent for {vm}"));
        let out = virsh(&["emulatorpin", vm, "--live"]).unwrap();
        let read: Vec<u32> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("*:"))
            .flat_map(|list| common::libvirt::parse_cpulist(list.trim()))
            .collect();
        assert_eq!(read, sent.as_slice(), "{vm}: virsh emulatorpin says {out}");
        assert!(
            !sent.contains(b[0]),
            "{vm}'s emulator threads on the busy group {b:?}"
        );
    }
    // The cap holds: alone on its pCPU, the busy guest runs at most its 60% (it ran ~100%).
    assert!(
        busy_pct < 70.0,
        "busy guest ran {busy_pct:.0}% under a 60% cap"
    );
    assert!(busy_pct > 40.0, "busy guest ran only {busy_pct:.0}%");
    assert!(
        light_pct < busy_pct,
        "light {light_pct:.0}%, busy {busy_pct:.0}%"
    );
}

/// Field `field` of a guest's vCPU threads' `/proc/<tid>/schedstat`, summed (0: run time, 1:
/// run-queue wait), ns; the threads named in libvirt's status file.
fn vcpu_schedstat_ns(name: &str, field: usize) -> u64 {
    let status = std::fs::read_to_string(format!("/run/libvirt/qemu/{name}.xml")).unwrap();
    let threads: Vec<&str> = status
        .split("<vcpu id=")
        .skip(1)
        .filter_map(|s| s.split("pid='").nth(1)?.split('\'').next())
        .collect();
    assert!(!threads.is_empty(), "no vCPU threads for {name}");
    threads
        .iter()
        .map(|tid| {
            let stat = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).unwrap();
            stat.split_whitespace()
                .nth(field)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// The defaults beside host work that is not a constant loop: a real-time host thread with a
/// duty cycle on pCPU 0 (SCHED_FIFO, busy the first 25 ms of every 50 ms) and three light
/// guests (30% each; two on pCPU 0, one on pCPU 1: one must move). Whichever vCPU shares
/// pCPU 0 waits out the bursts, and its wait goes with it nowhere: a law that takes demand to
/// move with a vCPU unchanged predicts a balance that a swap fails to bring, and swaps again.
/// Judged from libvirt, polled every second from before the daemon starts: at most two pin
/// changes in 60 ticks, and settled where it went (no guest sent back to pCPUs it was moved
/// off); and from the daemon's records: at most two ticks that pinned. The law before it
/// judged its moves by their outcomes fails it here (libvirt saw 7 and 9 changes in two runs,
/// swaps back and forth predicted to reach a spread of 2-7 points that stayed at 10-17). A light ordinary process beside the
/// thread (busy 2 ms of every 20) checks that the host's own wait is counted: the records'
/// host wait on pCPU 0 holds at least what its schedstat says it waited.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn the_defaults_settle_beside_a_host_process_with_a_duty_cycle() {
    require_e2e();
    let mut guests = Guests::new("duty");
    for (n, cpu) in [("a", 0), ("b", 0), ("c", 1)] {
        guests.start(GuestSpec::new(n, "vc.cpu=30").pinned(&[cpu]));
    }
    guests.wait_booted(Duration::from_secs(120));
    let names = guests.names.clone();
    let limit = Duration::from_secs(180);
    let duty = Hog::duty_cycle_on_pcpu0(limit, 25, 50, true);
    let probe = Hog::duty_cycle_on_pcpu0(limit, 2, 20, false);
    // The host's load is seen for a few seconds before the daemon starts.
    std::thread::sleep(Duration::from_secs(3));
    let probe_pid = probe.0.id();
    let probe_waited = || {
        std::fs::read_to_string(format!("/proc/{probe_pid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .expect("the probe's schedstat")
    };
    let before: BTreeMap<String, Vec<u32>> =
        names.iter().map(|n| (n.clone(), affinity(n))).collect();
    let mut daemon = run_vcoord(&guests.dir, "", 60);
    let probe_wait_before = probe_waited();
    let mut polls = vec![before];
    polls.extend(poll_pins(&mut daemon, &names));
    let probe_wait = probe_waited() - probe_wait_before;
    assert!(
        daemon.wait(Duration::from_secs(30)).success(),
        "{}",
        log_of(&guests)
    );
    let pids = [duty.0.id(), probe_pid].map(|p| p.to_string());
    drop((duty, probe));
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the host process {pid} is still there"
        );
    }
    let records = daemon.records();
    assert_eq!(records.len(), 60);
    let changed: Vec<usize> = polls
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] != w[1])
        .map(|(i, _)| i + 1)
        .collect();
    let pinned: Vec<u64> = records
        .iter()
        .filter(|r| !r.pins.is_empty())
        .map(|r| r.tick)
        .collect();
    let reasons: Vec<String> = records
        .iter()
        .filter(|r| !r.pins.is_empty())
        .map(|r| format!("tick {}: {}", r.tick, r.cpu_reason))
        .collect();
    eprintln!(
        "duty cycle: libvirt placement changed at polls {changed:?} of {}; pinned at ticks {pinned:?}: {reasons:#?}; every 10th tick: {:#?}",
        polls.len(),
        records
            .iter()
            .step_by(10)
            .map(|r| format!("tick {} other {:?}: {}", r.tick, r.pcpu_other_pct, r.cpu_reason))
            .collect::<Vec<_>>()
    );
    // The process was there, and seen: pCPU 0's non-VM load.
    let seen = records
        .iter()
        .filter_map(|r| r.pcpu_other_pct.first().copied().flatten())
        .fold(0.0, f64::max);
    assert!(seen > 25.0, "pCPU 0 non-VM load at most {seen:.0}%");
    // ... and what the host's own work waited there, which the law counts in its demand: over
    // the run, the host's wait counted on pCPU 0 holds at least the probe's own (read from its
    // schedstat; less a second of slack, the records starting a tick late).
    let counted_s: f64 = records
        .windows(2)
        .filter_map(|w| {
            let pct = w[1].pcpu_other_wait_pct.first().copied().flatten()?;
            Some(pct / 100.0 * (w[1].time_s - w[0].time_s))
        })
        .sum();
    let probe_s = probe_wait as f64 / 1e9;
    eprintln!("duty cycle: the probe waited {probe_s:.1} s on pCPU 0, the records count {counted_s:.1} s of host wait there");
    assert!(
        probe_s > 0.5,
        "the probe waited only {probe_s:.2} s: nothing to measure"
    );
    assert!(
        counted_s >= probe_s - 1.0,
        "the records count {counted_s:.1} s of host wait on pCPU 0, the probe alone waited {probe_s:.1} s"
    );
    assert!(
        changed.len() <= 2,
        "libvirt's placement changed at polls {changed:?}: {reasons:#?}"
    );
    assert!(
        pinned.len() <= 2,
        "pinned at ticks {pinned:?}: {reasons:#?}"
    );
    // Settled where it went: no guest is ever sent back to the pCPUs it was moved off.
    for name in &names {
        let mut places: Vec<&Vec<u32>> = polls.iter().map(|p| &p[name]).collect();
        places.dedup();
        let went_back = (1..places.len()).any(|i| places[..i - 1].contains(&places[i]));
        assert!(
            !went_back,
            "{name} was sent back where it had been moved off, by libvirt's placement {places:?}: {reasons:#?}"
        );
    }
    assert_libvirt_has_the_last_decision(&names, &records);
}

/// Emulator threads' affinity of a guest as libvirt reads it back.
fn emulator_affinity(vm: &str) -> Vec<u32> {
    let out = virsh(&["emulatorpin", vm, "--live"]).unwrap();
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("*:"))
        .flat_map(|list| common::libvirt::parse_cpulist(list.trim()))
        .collect()
}

/// The dedicated class on real guests: `lat` (a light 15% duty cycle, as latency-sensitive
/// guests are) of the dedicated class beside three busy shared guests, all started on pCPU 1
/// of this 2-pCPU host. The defaults give `lat` pCPU 1 alone and put the three busy ones and every emulator thread on pCPU 0 (read back with
/// virsh). Over the same 8 s, `lat`'s vCPU waits under 1% of the time while a shared one waits
/// most of it (their threads' own schedstat). Then two shared guests are paused (their load
/// gone) and resumed: `lat` keeps pCPU 1 in every record, and nothing else is ever put there.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn a_dedicated_guest_has_a_pcpu_alone_beside_three_busy_ones() {
    require_e2e();
    let mut guests = Guests::new("dedicated");
    let lat = guests.start(GuestSpec::new("lat", "vc.cpu=15").pinned(&[1]));
    let shared: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| guests.start(GuestSpec::new(n, BUSY).pinned(&[1])))
        .collect();
    guests.wait_booted(Duration::from_secs(120));
    let host = format!(
        "[[host.vm]]\nmatch = \"{}lat\"\nplacement = \"dedicated\"\n",
        guests.prefix
    );
    let mut daemon = run_vcoord(&guests.dir, &host, 32);
    daemon.wait_until("6 ticks", Duration::from_secs(60), &|d| {
        d.records().len() >= 6
    });
    // CPU ready over the same 8 s: the dedicated guest's against a shared one's.
    let (lat0, a0) = (vcpu_wait_ns(&lat), vcpu_wait_ns(&shared[0]));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let window = started.elapsed().as_nanos() as f64;
    let ready = |before: u64, vm: &str| 100.0 * (vcpu_wait_ns(vm) - before) as f64 / window;
    let (lat_ready, a_ready) = (ready(lat0, &lat), ready(a0, &shared[0]));
    let emulators: Vec<(String, Vec<u32>)> = guests
        .names
        .iter()
        .map(|n| (n.clone(), emulator_affinity(n)))
        .collect();
    // The shared guests' load changes: two of them paused for a while, then resumed.
    for vm in &shared[1..] {
        virsh(&["suspend", vm]).unwrap();
    }
    daemon.wait_until("22 ticks", Duration::from_secs(60), &|d| {
        d.records().len() >= 22
    });
    for vm in &shared[1..] {
        virsh(&["resume", vm]).unwrap();
    }
    assert!(
        daemon.wait(Duration::from_secs(60)).success(),
        "{}",
        log_of(&guests)
    );
    let records = daemon.records();
    eprintln!(
        "dedicated: ready over 8 s {lat_ready:.2}% ({lat}), {a_ready:.1}% ({}); emulators {emulators:?}",
        shared[0]
    );
    // From libvirt: lat alone on pCPU 1, the others and every emulator thread on pCPU 0.
    assert_eq!(affinity(&lat), [1]);
    for vm in &shared {
        assert_eq!(affinity(vm), [0], "{vm}");
    }
    for (vm, cpus) in &emulators {
        assert_eq!(cpus, &[0], "{vm}'s emulator threads");
    }
    assert!(lat_ready < 1.0, "{lat} waited {lat_ready:.2}% of the time");
    assert!(a_ready > 20.0, "{} waited only {a_ready:.1}%", shared[0]);
    // From its records: lat on pCPU 1 from the first tick's pins on, through the pause and the
    // resume; nothing else sent there, ever.
    for r in &records[1..] {
        assert_eq!(pinned_cpu(r, &lat), Some(1), "tick {}", r.tick);
    }
    for r in &records {
        for pin in r.pins.iter().filter(|p| p.vm != lat) {
            assert!(
                !pin.cpus.contains(1),
                "tick {}: {} sent to pCPU 1",
                r.tick,
                pin.vm
            );
        }
    }
    let refused: Vec<_> = records
        .iter()
        .flat_map(|r| &r.rejected)
        .filter(|x| x.reason == vcoord_core::runtime::guard::Refusal::Dedicated)
        .collect();
    assert!(
        refused.is_empty(),
        "the defaults' own plans intruded: {refused:?}"
    );
}
