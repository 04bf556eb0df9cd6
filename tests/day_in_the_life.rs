//! A day in the life of a host, on the simulator: 24 simulated hours of mixed phases (idle
//! stretches, CPU bursts, a guest that grows and frees, VMs arriving and leaving, a guest
//! without a balloon driver, memory crunches, restarts of vcoord, one mid-growth), run with
//! the default policies, with invariants checked at every tick:
//! - no guest is OOM-killed;
//! - no guest stays under its threshold for more than 3 ticks while the host has memory to
//!   give;
//! - memory a guest frees is reclaimed down to the band within 30 s;
//! - no VM is re-pinned during steady phases (restarts included);
//! - the host keeps its reserve.

mod common;

use std::fmt::Write as _;
use std::time::Instant;

use vcoord_core::config::HostConfig;
use vcoord_core::runtime::control::Control;
use vcoord_core::runtime::record::TickRecord;
use vcoord_core::runtime::{Coordinator, RunOptions};

/// One cycle of the day, s: 72 of them make 24 hours.
const CYCLE_S: u64 = 1200;
/// Within each cycle (offsets, s): the grower grows at GROW for 40 s and frees at FREE; a
/// visitor arrives at ARRIVE and leaves at LEAVE; the burst VM is busy from BURST for 120 s.
const GROW: u64 = 300;
const FREE: u64 = 460;
const ARRIVE: u64 = 400;
const LEAVE: u64 = 700;
const BURST: u64 = 600;
/// Steady windows (offsets): nothing changes in the load.
const STEADY: [(u64, u64); 2] = [(90, 390), (800, 1200)];
/// Cycles with a memory crunch: a large guest without a balloon driver comes from offset 760
/// to 1000.
const CRUNCH_CYCLES: [u64; 3] = [10, 40, 41];
/// Restarts of vcoord: (cycle, offset); offset 310 is mid-growth, 200 a steady stretch.
const RESTARTS: [(u64, u64); 6] = [
    (2, 200),
    (5, 310),
    (20, 200),
    (33, 310),
    (50, 1000),
    (70, 310),
];

const THRESHOLD: f64 = 100.0;
const BAND: f64 = 200.0;
const RESERVE: f64 = 200.0;

/// The day's scenario: `cycles` cycles.
fn scenario(cycles: u64) -> String {
    let mut s = format!(
        "name = \"day\"\ndescription = \"a day in the life of a host\"\nduration_s = {}\nseed = 7\n\
         pinning = \"round-robin\"\n\n[host]\npcpus = 4\nmemory_mib = 16384\nhost_used_mib = 2048\n",
        cycles * CYCLE_S
    );
    for (name, pct) in [("web1", 35), ("web2", 35), ("web3", 20), ("web4", 20)] {
        let _ = write!(
            s,
            "\n[[vm]]\nname = \"{name}\"\nmax_memory_mib = 2048\nmemory_mib = 1024\n\
             cpu = [{{ pct = {pct} }}]\ncpu_noise_pct = 2\nmemory = [{{ use_mib = 300 }}]\n"
        );
    }
    // The burst VM: 10% but for 120 s a cycle.
    let mut cpu = Vec::new();
    for _ in 0..cycles {
        cpu.push(format!("{{ pct = 10, for_s = {BURST} }}"));
        cpu.push("{ pct = 90, for_s = 120 }".to_string());
        cpu.push(format!("{{ pct = 10, for_s = {} }}", CYCLE_S - BURST - 120));
    }
    let _ = write!(
        s,
        "\n[[vm]]\nname = \"burst\"\nmax_memory_mib = 2048\nmemory_mib = 1024\ncpu = [{}]\ncpu_noise_pct = 2\n",
        cpu.join(", ")
    );
    // The grower: grows 20 MiB/s for 40 s, holds, frees.
    let mut memory = Vec::new();
    for c in 0..cycles {
        let hold_first = if c == 0 { GROW } else { CYCLE_S - FREE + GROW };
        memory.push(format!("{{ hold_s = {hold_first} }}"));
        memory.push("{ grow_mib_s = 20, to_mib = 800 }".to_string());
        memory.push(format!("{{ hold_s = {} }}", FREE - GROW - 40));
        memory.push("{ free = true }".to_string());
    }
    let _ = write!(
        s,
        "\n[[vm]]\nname = \"grower\"\nmax_memory_mib = 3072\nmemory_mib = 1024\ncpu = [{{ pct = 15 }}]\nmemory = [{}]\n",
        memory.join(", ")
    );
    let _ = write!(
        s,
        "\n[[vm]]\nname = \"nodriver\"\nmax_memory_mib = 1024\nmemory_mib = 1024\nballoon = false\ncpu = [{{ pct = 25 }}]\n"
    );
    for c in 0..cycles {
        let at = c * CYCLE_S;
        let _ = write!(
            s,
            "\n[[vm]]\nname = \"visitor{c}\"\nmax_memory_mib = 2048\nmemory_mib = 1024\nstart_s = {}\nstop_s = {}\n\
             cpu = [{{ pct = 30 }}]\nmemory = [{{ use_mib = 300 }}]\n",
            at + ARRIVE,
            at + LEAVE
        );
    }
    for c in CRUNCH_CYCLES.iter().filter(|&&c| c < cycles) {
        let at = c * CYCLE_S;
        let _ = write!(
            s,
            "\n[[vm]]\nname = \"hog{c}\"\nmax_memory_mib = 6144\nmemory_mib = 6144\nballoon = false\nstart_s = {}\nstop_s = {}\n",
            at + 760,
            at + 1000
        );
    }
    s
}

/// Where in its cycle a time is.
fn offset(time_s: f64) -> u64 {
    time_s as u64 % CYCLE_S
}

/// Runs `cycles` cycles with the default policies (or `memory` as the memory policy),
/// restarting vcoord as listed; the records.
fn run(cycles: u64, memory: Option<&str>) -> Vec<TickRecord> {
    vcoord_policies::link();
    let dir = common::scratch("day");
    let path = dir.join("day.toml");
    std::fs::write(&path, scenario(cycles)).unwrap();
    let mut host = HostConfig::new("day", &format!("sim:{}", path.display()), &dir);
    if let Some(name) = memory {
        host.memory_policy = vcoord_core::config::PolicyChoice::builtin(name, toml::Table::new());
    }
    let mut c = Coordinator::open(&host, &RunOptions::default()).expect("opens");
    let control = Control::new();
    let mut records = Vec::new();
    let mut restarts: Vec<u64> = RESTARTS
        .iter()
        .map(|&(cycle, off)| cycle * CYCLE_S + off)
        .collect();
    while !c.finished() {
        if let Some(r) = c.tick() {
            if restarts.first().is_some_and(|&t| r.time_s >= t as f64) {
                restarts.remove(0);
                c.restart().expect("restarts");
            }
            records.push(r);
        }
        c.wait(&control);
    }
    let _ = std::fs::remove_dir_all(&dir);
    records
}

/// What the invariants found, as lines: the per-tick ones every day shares
/// ([`common::tick_violations`]), the host's reserve, and the grower's free reclaimed.
fn violations(records: &[TickRecord]) -> Vec<String> {
    let ticks: Vec<(f64, &TickRecord)> = records.iter().map(|r| (r.time_s, r)).collect();
    let steady = |t: f64| {
        let off = offset(t);
        STEADY.iter().any(|&(a, b)| off >= a && off < b)
    };
    let mut out = common::tick_violations(&ticks, THRESHOLD, RESERVE, steady);
    let mut freed_at: Option<f64> = None;
    for r in records {
        let t = r.time_s;
        if r.host_free_mib() < RESERVE - 1.0 {
            out.push(format!(
                "{t:.0} s: host free {:.0} MiB, under the reserve",
                r.host_free_mib()
            ));
        }
        // The grower frees at FREE: 30 s later it is back in the band.
        if offset(t) == FREE {
            freed_at = Some(t);
        }
        if let Some(f) = freed_at.filter(|&f| t >= f + 30.0) {
            freed_at = None;
            let u = r
                .vms
                .iter()
                .find(|v| v.name == "grower")
                .and_then(|v| v.unused_mib());
            if u.is_none_or(|u| u > BAND + 16.0) {
                out.push(format!(
                    "{t:.0} s: grower freed at {f:.0} s still has {u:?} MiB unused"
                ));
            }
        }
    }
    out
}

#[test]
fn a_simulated_day_keeps_every_invariant() {
    let started = Instant::now();
    let records = run(72, None);
    let elapsed = started.elapsed();
    assert_eq!(
        records.len() as u64,
        72 * CYCLE_S,
        "one tick per simulated second"
    );
    let found = violations(&records);
    let pins: usize = records.iter().map(|r| r.pins.len()).sum();
    let moved: f64 = records
        .iter()
        .flat_map(|r| &r.balloons)
        .map(|b| b.target_kib.abs_diff(b.actual_kib) as f64 / 1024.0)
        .sum();
    let lowest = records
        .iter()
        .flat_map(|r| r.vms.iter().filter_map(|v| v.unused_mib()))
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "day: {} ticks in {:.1} s of wall time; {pins} pins, {moved:.0} MiB of balloon moves, lowest unused {lowest:.0} MiB, {} violations",
        records.len(),
        elapsed.as_secs_f64(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "{}",
        found[..found.len().min(20)].join("\n")
    );
}

/// The invariants can fail: an hour of the day run with no memory policy breaks them.
#[test]
fn the_invariants_catch_a_policy_that_does_nothing() {
    let found = violations(&run(3, Some("none")));
    assert!(
        found.iter().any(|v| v.contains("grower freed")),
        "{found:?}"
    );
}
