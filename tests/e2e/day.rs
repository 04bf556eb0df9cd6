//! Ten minutes of a host's life on real guests, checked against the simulated day's invariants.

use super::*;

/// Times of the real-guest day, s after the guests' workloads started.
mod times {
    /// The burst VM runs at 70% instead of 10% for 60 s from here.
    pub const BURST: f64 = 60.0;
    /// A visitor (30% busy) is there between these.
    pub const VISITOR: (f64, f64) = (165.0, 285.0);
    /// A driverless 1 GiB guest squeezes the memory budget between these ...
    pub const HOG: (f64, f64) = (330.0, 480.0);
    /// ... while the grower grows 20 MiB/s to 500 MiB from here (25 s) and frees 30 s later.
    pub const GROW: f64 = 345.0;
    /// vcoord is stopped and started again at these: steady, mid-growth in the crunch, steady.
    pub const RESTARTS: [f64; 3] = [230.0, 357.0, 540.0];
    pub const END: f64 = 600.0;
    /// Guest memory budget and reserve (MiB): the hog and the growth crowd it.
    pub const BUDGET_MIB: f64 = 3800.0;
    pub const RESERVE_MIB: f64 = 200.0;
    /// How long after a change of load the policy may still be answering it.
    pub const SETTLE_S: f64 = 45.0;

    /// When the CPU load changes: the burst, the visitor, the hog's boot, and the grower's
    /// growth and free (a guest touching or releasing 500 MiB uses its vCPU for it, heavily so
    /// under TCG: one free read as a 5 s burst of demand here).
    pub fn load_changes() -> Vec<f64> {
        vec![
            0.0,
            BURST,
            BURST + 60.0,
            VISITOR.0,
            VISITOR.1,
            HOG.0,
            GROW,
            GROW + 25.0,
            GROW + 55.0,
        ]
    }

    /// A steady moment: no load change in the `SETTLE_S` before it or the 5 s after.
    pub fn steady(t: f64) -> bool {
        load_changes()
            .iter()
            .all(|&c| !(t - SETTLE_S..=t + 5.0).contains(&c))
    }
}

/// What the day's invariants found in its ticks (guest time, record), as lines: the per-tick
/// ones every day shares ([`common::tick_violations`]), the memory budget, and the grower's
/// free reclaimed.
fn day_violations(ticks: &[(f64, TickRecord)], grower: &str) -> Vec<String> {
    const THRESHOLD: f64 = 100.0;
    let by_ref: Vec<(f64, &TickRecord)> = ticks.iter().map(|(t, r)| (*t, r)).collect();
    let mut out = common::tick_violations(&by_ref, THRESHOLD, times::RESERVE_MIB, times::steady);
    for (t, r) in ticks {
        // The reserve under the budget (8 MiB of slack for balloons in motion).
        let guests: f64 = r.vms.iter().map(|v| v.actual_mib()).sum();
        if guests > times::BUDGET_MIB - times::RESERVE_MIB + 8.0 {
            out.push(format!(
                "{t:.0} s: guests hold {guests:.0} MiB, the budget leaves {:.0}",
                times::BUDGET_MIB - times::RESERVE_MIB
            ));
        }
    }
    let series: Vec<(f64, f64, f64)> = ticks
        .iter()
        .filter_map(|(t, r)| {
            let v = r.vms.iter().find(|v| v.name == grower)?;
            Some((*t, v.actual_mib(), v.unused_mib()?))
        })
        .collect();
    let found = frees(&series);
    if found.len() != 1 {
        out.push(format!(
            "{} frees of the grower seen, not 1: {series:?}",
            found.len()
        ));
    }
    for free in found {
        match free.back_s {
            Some(s) if s <= 30.0 => {}
            back => out.push(format!(
                "{:.0} s: the grower's free was back in the band only after {back:?} s",
                free.t
            )),
        }
    }
    out
}

/// Ten minutes of a host's life on real guests with the default policies: steady loads, a CPU
/// burst, a visitor that comes and goes, a guest without a balloon driver, a memory crunch
/// under a budget (a driverless 1 GiB guest arrives, then a guest grows and frees) and three
/// restarts of vcoord (one mid-growth, two in steady stretches). The invariants of the
/// simulated day hold at every tick: no OOM, no guest short for more than 3 ticks while memory
/// can be given, a free back in the band within 30 s, no re-pin in a steady phase (restarts
/// included), the reserve kept under the budget.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn a_ten_minute_day_on_real_guests_keeps_every_invariant() {
    require_e2e();
    let mut guests = Guests::new("day");
    let mem = format!("vc.mem=hold:{},grow:20:500,hold:30,free", times::GROW);
    let grower = guests.start(GuestSpec::new("grower", &mem));
    guests.start(GuestSpec::new("web1", "vc.cpu=40"));
    guests.start(GuestSpec::new("web2", "vc.cpu=25"));
    guests.start(GuestSpec::new(
        "burst",
        &format!("vc.cpu=10@{},70@60,10", times::BURST),
    ));
    let mut nodriver = GuestSpec::new("nodriver", "vc.cpu=20");
    nodriver.balloon_driver = false;
    guests.start(nodriver);
    guests.wait_booted(Duration::from_secs(120));
    let t0 = Instant::now();
    let now = || t0.elapsed().as_secs_f64();
    guests.wait_balloons_settled(512, Duration::from_secs(60));
    let config = format!(
        "guest_memory_budget_mib = {}\n[host.guard]\nhost_reserve_mib = {}\n",
        times::BUDGET_MIB,
        times::RESERVE_MIB
    );
    // One daemon per stretch between restarts, each with its own record, all with one state
    // directory (as a service's restarts share /var/lib/vcoord); the guest time its first tick
    // stands for.
    let mut stretches: Vec<(f64, Daemon)> = Vec::new();
    let base = guests.dir.clone();
    let state = base.join("state");
    let start_stretch = |n: usize| {
        let dir = base.join(format!("stretch{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let daemon = launch_vcoord(&dir, "", &config)
            .ticks(100_000)
            .record()
            .state_dir(&state)
            .spawn();
        (now(), daemon)
    };
    // Stretches that started with a learned-state file there: each must say it took it back.
    let mut relearning = Vec::new();
    stretches.push(start_stretch(0));
    let mut restarts = times::RESTARTS.to_vec();
    // Guests that come and go: (short name, CPU load, driver, from, to), and whether each is
    // still to come (0), there (1) or gone (2).
    let visitors = [
        ("visitor", "vc.cpu=30", true, times::VISITOR),
        ("hog", "", false, times::HOG),
    ];
    let mut stage = [0u8; 2];
    while now() < times::END {
        let running = stretches.last_mut().unwrap();
        assert!(running.1.running(), "vcoord exited");
        let t = now();
        if restarts.first().is_some_and(|&r| t >= r) {
            restarts.remove(0);
            running.1.stop();
            assert!(running.1.wait(Duration::from_secs(30)).success());
            let n = stretches.len();
            let kept = std::fs::read_dir(&state)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().to_string_lossy().ends_with(".learned.toml"))
                })
                .unwrap_or(false);
            if kept {
                relearning.push(n);
            }
            stretches.push(start_stretch(n));
        }
        for (i, &(name, load, driver, (from, to))) in visitors.iter().enumerate() {
            if stage[i] == 0 && t >= from {
                let mut spec = GuestSpec::new(name, load);
                spec.balloon_driver = driver;
                guests.start(spec);
                stage[i] = 1;
            } else if stage[i] == 1 && t >= to {
                guests.destroy(&guests.name(name));
                stage[i] = 2;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let last = stretches.last_mut().unwrap();
    last.1.stop();
    assert!(last.1.wait(Duration::from_secs(30)).success());
    assert_no_oom(&guests);
    let mut ticks: Vec<(f64, TickRecord)> = Vec::new();
    for (at, d) in &stretches {
        let records = d.records();
        assert!(records.len() > 20, "a stretch of {} ticks", records.len());
        ticks.extend(records.into_iter().map(|r| (at + r.time_s, r)));
    }
    let mut found = day_violations(&ticks, &grower);
    // What the CPU policy learned (its prediction error, once a move has been judged) went
    // over each restart that had it.
    for &n in &relearning {
        if !stretches[n]
            .1
            .log()
            .contains("what it learned before the restart taken back")
        {
            found.push(format!(
                "stretch {n} started as new beside a learned-state file"
            ));
        }
    }
    eprintln!(
        "real day: {} of {} restarts had a learned-state file to take back",
        relearning.len(),
        times::RESTARTS.len()
    );
    let pins: usize = ticks.iter().map(|(_, r)| r.pins.len()).sum();
    let moved: f64 = ticks
        .iter()
        .flat_map(|(_, r)| &r.balloons)
        .map(|b| b.target_kib.abs_diff(b.actual_kib) as f64 / 1024.0)
        .sum();
    let lowest = ticks
        .iter()
        .flat_map(|(_, r)| r.vms.iter().filter_map(|v| v.unused_mib()))
        .fold(f64::INFINITY, f64::min);
    let peak = ticks
        .iter()
        .map(|(_, r)| r.vms.iter().map(|v| v.actual_mib()).sum::<f64>())
        .fold(0.0, f64::max);
    let steady = ticks.iter().filter(|(t, _)| times::steady(*t)).count();
    eprintln!(
        "real day: {} ticks ({steady} steady) over {:.0} s, {pins} pins, {moved:.0} MiB of balloon moves, lowest unused {lowest:.0} MiB, guests' peak {peak:.0} MiB of {:.0}, {} violations",
        ticks.len(),
        now(),
        times::BUDGET_MIB - times::RESERVE_MIB,
        found.len()
    );
    // The day did what it says: the crunch squeezed the budget, steady phases were long.
    assert!(
        peak > times::BUDGET_MIB - times::RESERVE_MIB - 400.0,
        "no crunch: guests' peak {peak:.0} MiB"
    );
    assert!(steady > 150, "only {steady} steady ticks");
    assert!(
        found.is_empty(),
        "{}\n{}",
        found[..found.len().min(20)].join("\n"),
        std::fs::read_to_string(base.join("stretch3/vcoord.log")).unwrap_or_default()
    );
}
