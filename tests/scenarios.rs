//! Every shipped scenario, run through the whole program with the seed policies, judged by the
//! reference pass criteria (pCPU stdev <= 5 points within 25 ticks, no needless re-pins,
//! memory kept above the thresholds without OOM, host reserve kept).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{longest_under, pinned_cpu, root, run_scenario};
use vcoord_core::runtime::record::TickRecord;
use vcoord_core::tools::metrics::{cpu_metrics, memory_metrics, CpuMetrics};

/// The original design's policies (the defaults are the newer ones).
const SEED: &str = "[host.cpu_policy]\nname = \"greedy-lpt\"\n[host.memory_policy]\nname = \"threshold-balloon\"\n";

fn scenario(name: &str) -> PathBuf {
    root()
        .join("examples/scenarios")
        .join(format!("{name}.toml"))
}

fn seed(name: &str) -> (Vec<TickRecord>, CpuMetrics) {
    let records = run_scenario(&scenario(name), SEED);
    let metrics = cpu_metrics(&records, 5.0);
    (records, metrics)
}

/// VMs per pCPU at the end of a run, by name.
fn final_groups(records: &[TickRecord]) -> BTreeMap<u32, Vec<String>> {
    let last = records.last().unwrap();
    let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for vm in &last.vms {
        let cpu = pinned_cpu(last, &vm.name).expect("every vCPU pinned to one pCPU");
        groups.entry(cpu).or_default().push(vm.name.clone());
    }
    groups
}

fn assert_converged_and_still(name: &str, m: &CpuMetrics) {
    let t = m
        .ticks_to_balance
        .unwrap_or_else(|| panic!("{name}: never balanced: {m:?}"));
    assert!(t <= 25, "{name}: balanced only at tick {t}");
    assert!(m.final_stdev_pct <= 5.0, "{name}: {m:?}");
    assert_eq!(
        m.pcpu_set_changes_after_balance, 0,
        "{name}: re-pinned after balance: {m:?}"
    );
}

#[test]
fn t1_balanced_start_changes_nothing() {
    for name in ["cpu-t1-balanced", "cpu-t1-balanced-16"] {
        let (_, m) = seed(name);
        assert_eq!(m.vcpu_moves, 0, "{name}: {m:?}");
        assert_eq!(m.ticks_to_balance, Some(1), "{name}: {m:?}");
    }
}

#[test]
fn t2_all_on_one_spreads_two_per_pcpu_then_stays() {
    for (name, pcpus) in [("cpu-t2-all-on-one", 4), ("cpu-t2-all-on-one-16", 8)] {
        let (records, m) = seed(name);
        assert_converged_and_still(name, &m);
        assert!(m.ticks_to_balance.unwrap() <= 5, "{name}: {m:?}");
        let groups = final_groups(&records);
        assert_eq!(groups.len(), pcpus, "{name}: {groups:?}");
        assert!(groups.values().all(|g| g.len() == 2), "{name}: {groups:?}");
    }
}

/// Heavy and light duty cycles: one of each per pCPU. Where duty cycles collide, utilization
/// depends on who shares a pCPU (a heavy vCPU alone reads 70%, beside a light one 62%, beside
/// another heavy one 47%), so the seed's LPT on utilization keeps re-pinning; stable-balance,
/// on demand (utilization plus run-queue wait), pairs them with the fewest moves and stays.
#[test]
fn t3_pairs_one_heavy_with_one_light() {
    for (name, pcpus) in [("cpu-t3-heavy-light", 4), ("cpu-t3-heavy-light-16", 8)] {
        let records = run_scenario(
            &scenario(name),
            "[host.cpu_policy]\nname = \"stable-balance\"\n[host.memory_policy]\nname = \"none\"\n",
        );
        let m = cpu_metrics(&records, 5.0);
        assert_converged_and_still(name, &m);
        assert!(m.ticks_to_balance.unwrap() <= 3, "{name}: {m:?}");
        let groups = final_groups(&records);
        assert_eq!(groups.len(), pcpus, "{name}: {groups:?}");
        for g in groups.values() {
            let heavy = g.iter().filter(|n| n.starts_with("heavy")).count();
            let light = g.iter().filter(|n| n.starts_with("light")).count();
            assert_eq!((heavy, light), (1, 1), "{name}: {groups:?}");
        }
        let (_, seed) = seed(name);
        assert!(
            seed.vcpu_moves > 4 * m.vcpu_moves,
            "{name}: the seed moved {} times, stable-balance {}",
            seed.vcpu_moves,
            m.vcpu_moves
        );
    }
}

#[test]
fn half_and_half_spreads() {
    let (records, m) = seed("cpu-half-and-half");
    assert_converged_and_still("half-and-half", &m);
    assert!(final_groups(&records).values().all(|g| g.len() == 2));
}

#[test]
fn unpinned_variants_stay_balanced() {
    for name in ["cpu-unpinned-equal", "cpu-unpinned-alternating"] {
        let (_, m) = seed(name);
        assert_converged_and_still(name, &m);
    }
}

/// The seed's relative trigger (5% of the mean) is below the noise at 30% load: greedy LPT keeps
/// re-pinning a host that is already balanced. This is the original design's behaviour, kept
/// on purpose; an absolute floor of 5 points stops it. (Colliding duty cycles make loads depend
/// on who shares a pCPU, so some re-pins land where collisions happen to balance the noise:
/// fewer re-pins than with independent vCPUs, but never none.)
#[test]
fn low_load_noise_makes_the_seed_trigger_thrash() {
    let path = scenario("cpu-low-load-noise");
    let records = run_scenario(&path, SEED);
    let m = cpu_metrics(&records, 5.0);
    assert!(m.final_stdev_pct <= 5.0, "{m:?}");
    assert!(
        m.pcpu_set_changes_after_balance >= 2,
        "seed trigger should re-pin under noise: {m:?}"
    );

    let records = run_scenario(
        &path,
        "[host.cpu_policy]\nname = \"greedy-lpt\"\nparams = { trigger_abs_points = 5.0 }",
    );
    let m = cpu_metrics(&records, 5.0);
    assert_eq!(m.vcpu_moves, 0, "{m:?}");
}

fn unused_of(r: &TickRecord, vm: &str) -> Option<f64> {
    r.vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.unused_mib())
}

fn actual_of(r: &TickRecord, vm: &str) -> f64 {
    r.vms.iter().find(|v| v.name == vm).unwrap().actual_mib()
}

/// Every shrink of `vm` takes at most a tenth of its unused memory (gradual release).
fn assert_gradual_release(records: &[TickRecord], vm: &str) {
    for r in records {
        for b in r
            .balloons
            .iter()
            .filter(|b| b.vm == vm && b.target_kib < b.actual_kib)
        {
            let step = (b.actual_kib - b.target_kib) as f64 / 1024.0;
            let unused = unused_of(r, vm).unwrap();
            assert!(
                step <= 0.1 * unused + 1.0,
                "{vm} tick {}: released {step:.0} of {unused:.0} MiB unused at once",
                r.tick
            );
        }
    }
}

#[test]
fn m1_one_grower_gets_memory_idle_ones_shrink() {
    let records = run_scenario(&scenario("mem-m1-one-grows"), SEED);
    let m = memory_metrics(&records, 100.0);
    assert_eq!(m.oom_events, 0, "{m:?}");
    assert_eq!(m.swap_out_mib, 0.0);
    // the grower reaches its max
    assert!(records.iter().any(|r| actual_of(r, "vm1") >= 2000.0));
    // its unused dips below the threshold (the seed's rule settles behind a steady grower, and
    // sees "falling" only on ticks with a new guest report, every 2 s), never to nothing
    assert!(m.lowest_unused_mib["vm1"] >= 25.0, "{m:?}");
    // idle VMs shrink into the band (threshold .. 2 x threshold) and stay there
    let last = records.last().unwrap();
    for idle in ["idle1", "idle2", "idle3"] {
        let unused = unused_of(last, idle).unwrap();
        assert!((100.0..=200.0).contains(&unused), "{idle}: {unused}");
        assert!(actual_of(last, idle) < 512.0);
        assert_gradual_release(&records, idle);
    }
    // after freeing, vm1 is reclaimed gradually, into the band
    assert!(unused_of(last, "vm1").unwrap() <= 200.0);
    assert_gradual_release(&records, "vm1");
    // the host never went below its reserve
    assert!(m.lowest_guest_free_mib >= 200.0, "{m:?}");
}

/// K1: six guests of one image on a host that cannot give them all they want. The defaults
/// start KSM once the host is short, merge what the guests share, and with it keep every grower
/// fed: no OOM kill, where the same policy with KSM left off (`ksm = "leave"`, KSM off) loses
/// guests; ksmd keeps to its budget; once the growers free and the host has been comfortable for
/// `ksm_cool_s`, ksmd stops. On a host that is never short (M1) KSM is never started.
#[test]
fn k1_ksm_merges_under_pressure_and_keeps_the_growers_fed_where_without_it_they_are_killed() {
    let params =
        "[host.memory_policy]\nname = \"pressure-balloon\"\nparams = { ksm_cool_s = 20 }\n";
    let auto = run_scenario(&scenario("mem-k1-ksm-one-image"), params);
    let leave = run_scenario(
        &scenario("mem-k1-ksm-one-image"),
        &format!("ksm = \"leave\"\n{params}"),
    );
    let (ma, ml) = (memory_metrics(&auto, 100.0), memory_metrics(&leave, 100.0));
    assert_eq!(ma.oom_events, 0, "{ma:?}");
    assert!(ml.oom_events > 0, "{ml:?}");
    assert!(
        ma.vm_ticks_below_threshold < ml.vm_ticks_below_threshold,
        "{ma:?} vs {ml:?}"
    );
    let saved_mib = |r: &TickRecord| r.ksm_saved_kib.unwrap_or(0) as f64 / 1024.0;
    let peak = auto.iter().map(saved_mib).fold(0.0, f64::max);
    assert!(peak > 1500.0, "KSM saved at most {peak:.0} MiB");
    assert!(leave.iter().all(|r| saved_mib(r) == 0.0 && r.ksm.is_none()));
    // Started once the host was short, within the guard's bounds, and stopped after the cool
    // time: the settings written, in order.
    let written: Vec<(f64, bool, u64)> = auto
        .iter()
        .filter_map(|r| r.ksm.map(|k| (r.time_s, k.run, k.pages_to_scan)))
        .collect();
    assert!(written.first().is_some_and(|w| w.1), "{written:?}");
    assert!(written.last().is_some_and(|w| !w.1), "{written:?}");
    assert!(
        written.windows(2).all(|w| w[1].0 - w[0].0 >= 10.0),
        "{written:?}"
    );
    assert!(
        written.iter().all(|w| (64..=1250).contains(&w.2)),
        "{written:?}"
    );
    // It stopped only after the growers freed (from 240 s) and the host stayed comfortable.
    let stopped_s = written.last().unwrap().0;
    assert!(stopped_s > 240.0, "{written:?}");
    // ksmd keeps near its 10% budget: it never passes it by more than a step's rounding.
    let ksmd_cpu = |r: &TickRecord| -> Option<f64> {
        let (_, after) = r.memory_reason.split_once("ksmd ")?;
        after.split_once("% CPU")?.0.parse().ok()
    };
    let most = auto.iter().filter_map(ksmd_cpu).fold(0.0, f64::max);
    assert!(
        (5.0..=11.0).contains(&most),
        "ksmd used at most {most:.1}% of a pCPU"
    );
    // A host that is never short: never started.
    let m1 = run_scenario(&scenario("mem-m1-one-grows"), "");
    assert!(m1.iter().all(|r| r.ksm.is_none()), "KSM planned on M1");
}

/// A daemon that started ksmd stops it as it stops (what it merged stays merged); one that
/// found it running, or leaves KSM to the operator, does not touch it.
#[test]
fn ksmd_started_by_a_daemon_stops_with_it() {
    let args = ["--ticks", "5", "--log-level", "info"];
    let run = common::run_sim(&scenario("mem-k1-ksm-one-image"), "", &args);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.records.iter().any(|r| r.ksm.is_some_and(|k| k.run)));
    assert!(
        run.stderr.contains("KSM stopped: this process started it"),
        "{}",
        run.stderr
    );
    let left = common::run_sim(&scenario("mem-k1-ksm-one-image"), "ksm = \"leave\"", &args);
    assert!(left.ok, "{}", left.stderr);
    assert!(!left.stderr.contains("KSM"), "{}", left.stderr);
}

#[test]
fn m2_all_grow_evenly_until_the_host_reserve() {
    let records = run_scenario(&scenario("mem-m2-all-grow"), SEED);
    let m = memory_metrics(&records, 100.0);
    // (Grants still landing count against what guests may be given while the balloon size is
    // read late, so that figure can touch 0; the host's own free memory keeps the reserve.)
    assert!(m.lowest_host_free_mib >= 200.0 - 1.0, "{m:?}");
    let names = ["vm1", "vm2", "vm3", "vm4"];
    let spread = records
        .iter()
        .map(|r| {
            let a: Vec<f64> = names.iter().map(|n| actual_of(r, n)).collect();
            a.iter().cloned().fold(f64::MIN, f64::max) - a.iter().cloned().fold(f64::MAX, f64::min)
        })
        .fold(0.0, f64::max);
    assert!(spread <= 50.0, "VMs grew unevenly: spread {spread} MiB");
    // giving stopped at the reserve: the workloads hit the wall (each one allocation failure)
    assert_eq!(m.oom_events, 4, "{m:?}");
    // and after they freed, memory was reclaimed from all
    let last = records.last().unwrap();
    assert!(names.iter().all(|n| actual_of(last, n) < 400.0));
}

#[test]
fn m3_memory_flows_from_vm1_to_vm2() {
    let records = run_scenario(&scenario("mem-m3-flow"), SEED);
    let m = memory_metrics(&records, 100.0);
    assert_eq!(m.oom_events, 0, "{m:?}");
    assert!(
        records.iter().any(|r| actual_of(r, "vm2") >= 2047.0),
        "vm2 never reached its max"
    );
    let peak_vm1 = records
        .iter()
        .map(|r| actual_of(r, "vm1"))
        .fold(0.0, f64::max);
    assert!(peak_vm1 > 600.0);
    let last = records.last().unwrap();
    assert!(actual_of(last, "vm1") < 300.0 && actual_of(last, "vm2") < 300.0);
    assert_gradual_release(&records, "vm1");
    assert!(m.lowest_guest_free_mib >= 200.0);
}

/// Every scenario file shipped is exercised by a test above.
#[test]
fn every_shipped_scenario_is_covered() {
    let source = concat!(include_str!("scenarios.rs"), include_str!("regressions.rs"));
    for entry in std::fs::read_dir(root().join("examples/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            source.contains(&format!("\"{stem}\"")),
            "scenario {stem} has no test"
        );
    }
}

/// Same scenario, same seed: identical records.
#[test]
fn runs_are_reproducible() {
    let a = run_scenario(&scenario("cpu-t3-heavy-light"), SEED);
    let b = run_scenario(&scenario("cpu-t3-heavy-light"), SEED);
    let strip = |rs: Vec<TickRecord>| -> Vec<String> {
        rs.into_iter()
            .map(|r| serde_json::to_string(&r).unwrap())
            .collect()
    };
    assert_eq!(strip(a), strip(b));
}

/// The evidence behind the defaults, on the simulator: on every shipped scenario (host-load
/// ones on memory only),
/// `stable-balance` balances at least as fast as the seed, never re-pins after balance, and
/// moves no more than the fewest possible + 1 (or, for unpinned vCPUs, pins each once);
/// `pressure-balloon` has no more OOM kills and swap than the seed and fewer VM-ticks below the
/// threshold where the seed has any.
#[test]
fn new_policies_match_or_beat_the_seed_on_every_shipped_scenario() {
    use vcoord_core::config::{HostConfig, PolicyChoice};
    use vcoord_core::tools::compare::{run_one, Contender};
    vcoord_policies::link();
    let contender = |label: &str, cpu: &str, memory: &str| {
        let mut host = HostConfig::new("x", "sim:", &root());
        host.cpu_policy = PolicyChoice::builtin(cpu, toml::Table::new());
        host.memory_policy = PolicyChoice::builtin(memory, toml::Table::new());
        Contender {
            label: label.into(),
            host,
        }
    };
    let seed = contender("seed", "greedy-lpt", "threshold-balloon");
    let new = contender("new", "stable-balance", "pressure-balloon");
    let dir = root().join("examples/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let (a, b) = (run_one(&file, &seed, 100.0), run_one(&file, &new, 100.0));
        let name = &a.scenario;
        let (ac, bc) = (a.cpu.as_ref().unwrap(), b.cpu.as_ref().unwrap());
        let (am, bm) = (a.memory.as_ref().unwrap(), b.memory.as_ref().unwrap());
        // VMs that arrive are pinned when they come: that is no re-pin, so scenarios whose VMs
        // come and go are judged on memory only; so are those where host processes come and go
        // (placements must follow them: judged against whole pCPUs in tests/compare.rs).
        let sim = vcoord_core::backend::sim::Scenario::from_file(&file).unwrap();
        let host_load = !sim.host.other_load.is_empty();
        // Where VMs' demand changes phase, placements must follow it too: no placement stays
        // balanced from the start. There, fewer moves than the seed and no more run-queue wait
        // (within a tenth of a point), both as means over five seeds: one seed's wait turns on
        // whether a marginal move cleared its bar by a hair.
        let phased = sim
            .vms
            .iter()
            .any(|vm| vm.cpu.len() > 1 || vm.vcpu_cpu.iter().any(|p| p.len() > 1));
        if phased && !host_load {
            memory_no_worse(name, am, bm);
            let plan = vcoord_core::tools::compare::Plan {
                scenarios: std::slice::from_ref(&file),
                contenders: &[seed.clone(), new.clone()],
                seeds: 5,
                jobs: 2,
                threshold_mib: 100.0,
                limit: vcoord_core::tools::compare::RUN_TIME_LIMIT,
                keep_records: false,
            };
            let runs = vcoord_core::tools::compare::run_seeds(&plan, &|_, _| {});
            let mean = |label: &str, figure: fn(&CpuMetrics) -> f64| {
                let of: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.policy == label)
                    .map(|r| figure(r.cpu.as_ref().unwrap()))
                    .collect();
                of.iter().sum::<f64>() / of.len() as f64
            };
            let moves = |c: &CpuMetrics| c.vcpu_moves as f64;
            let wait = |c: &CpuMetrics| c.mean_wait_pct;
            assert!(
                mean("new", moves) <= mean("seed", moves),
                "{name}: {} moves vs the seed's {}",
                mean("new", moves),
                mean("seed", moves)
            );
            assert!(
                mean("new", wait) <= mean("seed", wait) + 0.1,
                "{name}: {:.2}% wait vs the seed's {:.2}%",
                mean("new", wait),
                mean("seed", wait)
            );
            continue;
        }
        let steady = b
            .records
            .iter()
            .all(|r| r.vms.len() == b.records[0].vms.len());
        if !steady || host_load {
            memory_no_worse(name, am, bm);
            continue;
        }
        assert!(
            bc.ticks_to_balance.is_some()
                && bc.ticks_to_balance.unwrap_or(u64::MAX)
                    <= ac.ticks_to_balance.unwrap_or(u64::MAX),
            "{name}: balance {:?} vs seed {:?}",
            bc.ticks_to_balance,
            ac.ticks_to_balance
        );
        assert_eq!(bc.vcpu_moves_after_balance, 0, "{name}: {bc:?}");
        let vcpus: usize = b.records[0].vms.iter().map(|vm| vm.vcpus.len()).sum();
        match b.fewest_moves {
            Some(fewest) => assert!(
                bc.vcpu_moves <= fewest + 1,
                "{name}: {} moves, fewest {fewest}",
                bc.vcpu_moves
            ),
            None => assert!(
                bc.vcpu_moves <= vcpus,
                "{name}: {} moves for {vcpus} vCPUs",
                bc.vcpu_moves
            ),
        }
        memory_no_worse(name, am, bm);
    }
}

/// `pressure-balloon` (`new`) against the seed's `threshold-balloon` on one scenario: no more
/// OOM kills or swap, and fewer VM-ticks below the threshold where the seed has any.
fn memory_no_worse(
    name: &str,
    am: &vcoord_core::tools::metrics::MemoryMetrics,
    bm: &vcoord_core::tools::metrics::MemoryMetrics,
) {
    assert!(
        bm.oom_events <= am.oom_events,
        "{name}: OOM {} vs {}",
        bm.oom_events,
        am.oom_events
    );
    assert!(
        bm.swap_out_mib <= am.swap_out_mib + 1.0,
        "{name}: swap {bm:?} vs {am:?}"
    );
    if am.vm_ticks_below_threshold > 0 {
        assert!(
            bm.vm_ticks_below_threshold < am.vm_ticks_below_threshold,
            "{name}: below threshold {} vs {}",
            bm.vm_ticks_below_threshold,
            am.vm_ticks_below_threshold
        );
    } else {
        assert_eq!(bm.vm_ticks_below_threshold, 0, "{name}");
    }
}

#[test]
fn vms_the_operator_set_aside_are_never_touched_and_the_rest_balance_around_them() {
    let scenario = root().join("examples/scenarios/cpu-t2-all-on-one.toml");
    let records = common::run_scenario(
        &scenario,
        "[[host.vm]]\nmatch = \"vm1\"\ncpu = \"ignore\"\nmemory = \"ignore\"\n\
         [[host.vm]]\nmatch = \"vm[2-3]\"\ncpu = \"ignore\"\n",
    );
    // `vm[2-3]` is a literal name here (no such VM): only vm1 is set aside.
    assert!(!records.is_empty());
    for r in &records {
        assert!(
            r.pins.iter().all(|p| p.vm != "vm1"),
            "tick {}: {:?}",
            r.tick,
            r.pins
        );
        assert!(r.balloons.iter().all(|b| b.vm != "vm1"), "tick {}", r.tick);
        assert_eq!(common::pinned_cpu(r, "vm1"), Some(0), "tick {}", r.tick);
    }
    // The seven others spread over the three other pCPUs and pCPU 0 beside vm1.
    let last = records.last().unwrap();
    assert!(
        last.pcpu_stdev_pct <= 5.0 + 25.0,
        "{:?}",
        last.pcpu_load_pct
    );
    let on_zero = last
        .vms
        .iter()
        .filter(|vm| vm.vcpus[0].affinity.only() == Some(0))
        .count();
    assert!(on_zero <= 2, "{on_zero} VMs left on pCPU 0");
}

#[test]
fn operator_rules_are_checked_and_located() {
    let scenario = root().join("examples/scenarios/cpu-t2-all-on-one.toml");
    let dir = common::scratch("vm-rules");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[host]]\nname = \"a\"\nuri = \"sim:{}\"\n[[host.vm]]\nmatch = \"db-*\"\nmin_mib = 900\nmax_mib = 100\n",
            scenario.display()
        ),
    )
    .unwrap();
    let out = common::vcoord(&["check-config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.toml:4:")
            && err.contains("host[0].vm[0].min_mib")
            && err.contains("above max_mib"),
        "{err}"
    );
    std::fs::write(
        &config,
        format!(
            "[[host]]\nname = \"a\"\nuri = \"sim:{}\"\n[[host.vm]]\nmatch = \"db-*\"\ncpu = \"off\"\n",
            scenario.display()
        ),
    )
    .unwrap();
    let out = common::vcoord(&["check-config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("off") && err.contains("c.toml:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crowded host with an idle guest holding memory it does not use; `jobs` is the `jobs`
/// line of every VM (a job on each from 0 to 10 s, or none).
fn crowded_with_jobs(jobs: &str) -> String {
    let mut s = String::from(
        "name = \"jobs\"\nduration_s = 30\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 8192\n",
    );
    for (name, memory) in [("a", 512), ("b", 512), ("idle", 2048)] {
        s.push_str(&format!(
            "[[vm]]\nname = \"{name}\"\nmax_memory_mib = 4096\nmemory_mib = {memory}\n\
             pins = [0]\ncpu = [{{ pct = 90 }}]\n{jobs}\n"
        ));
    }
    s
}

/// A VM in the middle of a job (a migration, a dump) is neither pinned nor ballooned until the
/// job ends, each action it would have had is recorded as left alone, and the policies act
/// once it is over. The same scenario without the jobs acts within those ticks, so what the
/// first run shows is the gate, not a host that needed nothing.
#[test]
fn a_vm_in_a_job_is_left_alone_until_the_job_ends() {
    use vcoord_core::runtime::guard::Refusal;
    let dir = common::scratch("jobs");
    let run = |jobs: &str| {
        let path = dir.join(format!("s{}.toml", jobs.len()));
        std::fs::write(&path, crowded_with_jobs(jobs)).unwrap();
        run_scenario(&path, "")
    };
    let acted = |r: &TickRecord| !r.pins.is_empty() || !r.balloons.is_empty();
    let during = |r: &TickRecord| r.tick <= 9;

    let free = run("");
    assert!(
        free.iter()
            .filter(|r| during(r))
            .any(|r| !r.pins.is_empty())
            && free
                .iter()
                .filter(|r| during(r))
                .any(|r| !r.balloons.is_empty()),
        "without jobs the policies act early: the scenario shows nothing otherwise"
    );

    let busy = run("jobs = [[0, 10]]");
    for r in busy.iter().filter(|r| during(r)) {
        assert!(!acted(r), "tick {}: acted during the job: {r:?}", r.tick);
        assert!(r.failed.is_empty(), "tick {}: {:?}", r.tick, r.failed);
    }
    let left_alone = busy
        .iter()
        .filter(|r| during(r))
        .flat_map(|r| &r.rejected)
        .filter(|x| x.reason == Refusal::Busy)
        .count();
    assert!(left_alone > 0, "no action recorded as left alone");
    assert!(
        busy.iter()
            .filter(|r| r.tick >= 10)
            .any(|r| !r.pins.is_empty())
            && busy
                .iter()
                .filter(|r| r.tick >= 10)
                .any(|r| !r.balloons.is_empty()),
        "the policies did not act once the jobs ended"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a fleet balancer reads, on the simulator: a host whose vCPUs want more than its pCPUs
/// is in CPU deficit from the first measured tick and cannot satisfy its guests once that has
/// lasted a minute, with the busiest VM the one whose move relieves it most; a host whose
/// growers outgrow its memory (M2) falls into memory deficit when it reaches its reserve, and
/// the growers are the contended ones.
#[test]
fn deficits_contention_and_relief_are_what_a_fleet_balancer_reads() {
    use vcoord_core::runtime::fleet::{FleetSignals, HOLD_S};
    let run = |scenario: &std::path::Path| -> Vec<(f64, FleetSignals)> {
        observe_sim(scenario, |r| (r.record.time_s, r.fleet.clone()))
    };
    let dir = std::env::temp_dir().join(format!("vcoord-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let crowded = dir.join("crowded.toml");
    std::fs::write(
        &crowded,
        "name = \"crowded\"\nduration_s = 90\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 8192\n\
         [[vm]]\nname = \"big\"\nvcpus = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 95 }]\n\
         [[vm]]\nname = \"mid\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 90 }]\n\
         [[vm]]\nname = \"light\"\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{ pct = 10 }]\n",
    )
    .unwrap();
    let ticks = run(&crowded);
    let measured: Vec<_> = ticks.iter().filter(|(t, _)| *t >= 2.0).collect();
    assert!(
        measured.iter().all(|(_, f)| f.cpu.amount > 50.0),
        "{measured:?}"
    );
    let (before, after): (Vec<&(f64, FleetSignals)>, Vec<_>) = measured
        .iter()
        .copied()
        .partition(|(_, f)| f.cpu.lasted_s < HOLD_S);
    assert!(before.iter().all(|(_, f)| !f.cpu.cannot_satisfy));
    assert!(!after.is_empty() && after.iter().all(|(_, f)| f.cpu.cannot_satisfy));
    let (_, last) = ticks.last().unwrap();
    let relief = |vm: &str| {
        last.vms
            .iter()
            .find(|v| v.vm == vm)
            .and_then(|v| v.cpu_relief)
            .unwrap()
    };
    // 290 of demand on 200: moving either busy VM removes all 90 missing, the light one a ninth.
    assert!((last.cpu.amount - 90.0).abs() < 10.0, "{last:?}");
    assert_eq!((relief("big"), relief("mid")), (1.0, 1.0), "{last:?}");
    assert!(
        (relief("light") - 10.0 / last.cpu.amount).abs() < 0.02,
        "{last:?}"
    );
    let wait = |vm: &str| last.vms.iter().find(|v| v.vm == vm).unwrap().cpu_wait_ratio;
    assert!(wait("big") > 0.1 && wait("mid") > 0.1, "{last:?}");
    assert_eq!(last.memory.amount, 0.0, "{last:?}");
    // M2: four growers, a host that cannot feed them all.
    let ticks = run(&scenario("mem-m2-all-grow"));
    let short = ticks
        .iter()
        .find(|(_, f)| f.memory.amount > 0.0)
        .unwrap_or_else(|| panic!("never in memory deficit"));
    assert!(
        short
            .1
            .vms
            .iter()
            .any(|v| v.memory_short_kib > 0 && v.score > 0.0),
        "{short:?}"
    );
    assert!(
        short.1.vms.iter().all(|v| v.memory_relief.is_some()),
        "{short:?}"
    );
    // ...and out of it once they free.
    assert_eq!(ticks.last().unwrap().1.memory.amount, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// "Memory saved" is measured against the VMs kept at their starting sizes, which is what no
/// memory policy does: 0 for `none`, and the idle guests of T2 (512 MiB each, a few dozen used)
/// given back down to their band by the default.
#[test]
fn memory_saved_is_zero_without_a_policy_and_the_idle_guests_share_with_one() {
    use vcoord_core::tools::metrics::memory_metrics;
    let none = run_scenario(
        &scenario("cpu-t2-all-on-one"),
        "[host.memory_policy]\nname = \"none\"\n",
    );
    let m = memory_metrics(&none, 100.0);
    assert_eq!(m.saved_pct(), 0.0, "{m:?}");
    assert!(m.unmanaged_mib >= 8.0 * 512.0 - 1.0, "{m:?}");
    let default = run_scenario(&scenario("cpu-t2-all-on-one"), "");
    let m = memory_metrics(&default, 100.0);
    assert!((20.0..60.0).contains(&m.saved_pct()), "{m:?}");
    assert!(m.committed_mib < m.unmanaged_mib, "{m:?}");
}

/// The simulator's host memory pressure: none while the host has memory to spare; when host
/// processes leave it under its reclaim watermark, tasks stall, the default policy takes idle
/// guests down to their need, and the stall ends.
#[test]
fn the_simulated_host_stalls_on_memory_only_when_short_and_the_default_relieves_it() {
    let dir = std::env::temp_dir().join(format!("vcoord-psi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |host_used_mib: u64| {
        let path = dir.join(format!("psi-{host_used_mib}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"psi\"\nduration_s = 30\nseed = 1\n[host]\npcpus = 2\nmemory_mib = 4096\nhost_used_mib = {host_used_mib}\n\
                 [[vm]]\nname = \"idle\"\ncount = 2\nmax_memory_mib = 1024\nmemory_mib = 512\ncpu = [{{ pct = 5 }}]\n"
            ),
        )
        .unwrap();
        observe_sim(&path, |r| {
            let stall = r.snapshot.host().pressure.memory.and_then(|s| s.some_pct);
            let guests: f64 = r.record.vms.iter().map(|v| v.actual_mib()).sum();
            (r.record.time_s, stall, guests)
        })
    };
    // 2 GiB to spare: the signal is there, and it is 0.
    let calm = run(1024);
    assert!(
        calm.iter().skip(1).all(|(_, s, _)| *s == Some(0.0)),
        "{calm:?}"
    );
    // 72 MiB free under a 128 MiB watermark: some task stalls about a quarter of the time.
    let short = run(3000);
    let first = short[1].1.unwrap();
    assert!((15.0..35.0).contains(&first), "{short:?}");
    let (_, last_stall, last_guests) = *short.last().unwrap();
    assert_eq!(last_stall, Some(0.0), "{short:?}");
    assert!(last_guests < 1024.0 - 128.0, "{short:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `scenario` on the simulator with the default policies, collecting `take` of each tick's
/// report (what the service's observers see).
fn observe_sim<T: Send + 'static>(
    scenario: &std::path::Path,
    take: impl Fn(&vcoord_core::runtime::TickReport<'_>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    use std::sync::{Arc, Mutex};
    use vcoord_core::config::HostConfig;
    use vcoord_core::runtime::control::Control;
    use vcoord_core::runtime::{Coordinator, Observer, RunOptions, TickReport};

    struct Seen<T, F>(Mutex<Vec<T>>, F);
    impl<T: Send, F: Fn(&TickReport<'_>) -> T + Send + Sync> Observer for Seen<T, F> {
        fn tick_failed(&self, _: &str) {}
        fn tick(&self, _: &str, r: &TickReport<'_>) {
            let value = (self.1)(r);
            self.0.lock().unwrap().push(value);
        }
    }
    vcoord_policies::link();
    let dir = scenario.parent().unwrap();
    let host = HostConfig::new("sim", &format!("sim:{}", scenario.display()), dir);
    let mut c = Coordinator::open(&host, &RunOptions::default()).expect("simulator");
    let seen = Arc::new(Seen(Mutex::new(Vec::new()), take));
    c.observe(seen.clone());
    let control = Control::new();
    while !c.finished() {
        c.tick();
        c.wait(&control);
    }
    drop(c);
    let seen = Arc::try_unwrap(seen).ok().expect("the coordinator is gone");
    seen.0.into_inner().unwrap()
}

/// What `vm`'s virtio-mem device had plugged on each tick, MiB.
fn plugged(records: &[TickRecord], vm: &str) -> Vec<f64> {
    records
        .iter()
        .filter_map(|r| r.vms.iter().find(|v| v.name == vm))
        .map(|v| v.memory.plugged_kib() as f64 / 1024.0)
        .collect()
}

/// V1 with the defaults: the guest booted with 512 MiB grows through virtio-mem past its boot
/// size without OOM and never under the threshold for more than 3 ticks, and is unplugged
/// within 30 s of freeing; the guest whose driver never plugs is reported once and left alone
/// (never a request retried in a loop); the balloon-only guest is ballooned as before.
#[test]
fn v1_virtio_mem_grows_a_guest_past_its_boot_size_and_takes_it_back() {
    let records = run_scenario(&scenario("mem-v1-virtio-mem-grows"), "");
    let m = memory_metrics(&records, 100.0);
    assert_eq!(m.oom_events, 0, "{m:?}");
    assert_eq!(m.swap_out_mib, 0.0, "{m:?}");
    assert!(longest_under(&records, "plugged", 100.0) <= 3, "{m:?}");
    let p = plugged(&records, "plugged");
    let most = p.iter().cloned().fold(0.0, f64::max);
    assert!(most >= 500.0, "plugged at most {most} MiB");
    assert!(records.iter().any(|r| actual_of(r, "plugged") > 1000.0));
    // Freed at 20 + 900/20 + 20 = 85 s (the grower's phases), 1 s ticks.
    let freed = 85;
    let back = p.iter().skip(freed).position(|&mib| mib == 0.0);
    assert!(
        back.is_some_and(|s| s <= 30),
        "unplugged {back:?} s after the free: {p:?}"
    );
    // Every request to a device is whole blocks within the device.
    for plug in records.iter().flat_map(|r| &r.plugs) {
        assert!(
            plug.to_kib % 2048 == 0 && plug.to_kib <= 1 << 20,
            "{plug:?}"
        );
    }
    // The driverless guest: one refusal, its request withdrawn, then nothing more asked.
    let refusals: Vec<_> = records
        .iter()
        .flat_map(|r| &r.virtio_mem_refusals)
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].vm, "nodriver");
    let asked_after = records
        .iter()
        .filter(|r| r.tick > 30)
        .flat_map(|r| &r.plugs)
        .filter(|p| p.vm == "nodriver")
        .count();
    assert_eq!(asked_after, 0);
    // The balloon-only guest grows and shrinks by its balloon alone.
    assert!(records
        .iter()
        .all(|r| r.plugs.iter().all(|p| p.vm != "ballooned")));
    assert!(records.iter().any(|r| actual_of(r, "ballooned") > 800.0));
    assert!(longest_under(&records, "ballooned", 100.0) <= 3, "{m:?}");
}

/// V2: memory flows between virtio-mem guests through a host with room for one growth: the
/// first guest's blocks come back after its free and go to the second, which then grows past
/// its boot size too; the host's free memory never goes under the guard's reserve (200 MiB by
/// default), no OOM. With no memory policy the same scenario ends in OOM kills (compare).
#[test]
fn v2_virtio_mem_blocks_flow_from_one_guest_to_the_next_on_a_tight_host() {
    let records = run_scenario(&scenario("mem-v2-virtio-mem-flows"), "");
    let m = memory_metrics(&records, 100.0);
    assert_eq!(m.oom_events, 0, "{m:?}");
    assert_eq!(m.swap_out_mib, 0.0, "{m:?}");
    assert!(m.lowest_host_free_mib >= 200.0, "{m:?}");
    let (first, second) = (plugged(&records, "first"), plugged(&records, "second"));
    for (name, p) in [("first", &first), ("second", &second)] {
        let most = p.iter().cloned().fold(0.0, f64::max);
        assert!(most >= 500.0, "{name} plugged at most {most} MiB");
        assert!(longest_under(&records, name, 100.0) <= 3, "{name}: {m:?}");
    }
    // Room for one: never both grown; the second's blocks come after the first's went back.
    let both = first
        .iter()
        .zip(&second)
        .position(|(a, b)| *a > 256.0 && *b > 256.0);
    assert_eq!(both, None, "first {first:?}\nsecond {second:?}");
    let second_from = second.iter().position(|&mib| mib > 0.0).unwrap();
    let first_back = first.iter().rposition(|&mib| mib > 0.0).unwrap() + 1;
    assert!(
        first_back <= second_from,
        "the second plugged at {second_from} s, the first unplugged at {first_back} s"
    );
    // Both unplugged in the end.
    assert_eq!((first.last(), second.last()), (Some(&0.0), Some(&0.0)));
}

/// H1 and H2 on the simulator, as an operator reads one run: when a host process takes most of
/// a pCPU, `stable-balance` moves vCPUs off it (the run's own record shows the non-VM load it
/// acted on), and with no host load (the first 20 s of H1) it sees none.
#[test]
fn host_processes_are_seen_and_vcpus_move_off_their_pcpus() {
    for (name, busy_from, pcpu) in [
        ("cpu-h1-host-load", 20.0, 0),
        ("cpu-h2-host-load-numa", 40.0, 5),
    ] {
        let records = run_scenario(&scenario(name), "");
        let other = |r: &TickRecord| r.pcpu_other_pct.get(pcpu).copied().flatten();
        let vcpus_on = |r: &TickRecord| {
            r.vms
                .iter()
                .flat_map(|v| &v.vcpus)
                .filter(|v| v.affinity.only() == Some(pcpu as u32))
                .count()
        };
        let before: Vec<&TickRecord> = records.iter().filter(|r| r.time_s < busy_from).collect();
        let busy_at = records
            .iter()
            .position(|r| r.time_s >= busy_from + 10.0)
            .unwrap();
        let seen = records[busy_at..]
            .iter()
            .filter_map(other)
            .fold(0.0, f64::max);
        // (It shares its pCPU max-min fairly: beside a 45% vCPU, it runs about half.)
        assert!(
            seen > 30.0,
            "{name}: pCPU {pcpu} non-VM load at most {seen:.0}%"
        );
        if name == "cpu-h1-host-load" {
            let quiet = before.iter().filter_map(|r| other(r)).fold(0.0, f64::max);
            assert!(quiet < 5.0, "{name}: {quiet:.0}% before the process");
        }
        let (at_start, after) = (
            vcpus_on(before[before.len() - 1]),
            vcpus_on(records.last().unwrap()),
        );
        assert!(
            after < at_start,
            "{name}: {at_start} vCPUs on pCPU {pcpu} before its process, {after} at the end"
        );
    }
}

/// H3: a vCPU beside the host process's bursts waits behind them, so whichever vCPU is on
/// pCPU 0 reads twice its load and a swap never brings the balance it predicts. The defaults
/// move at most twice, all in the first 30 s, and their holds after a move name the miss they
/// learned (the predictions' error above zero).
#[test]
fn beside_host_bursts_the_defaults_learn_the_miss_and_stop_moving() {
    let records = run_scenario(&scenario("cpu-h3-host-bursts"), "");
    let pinned: Vec<u64> = records
        .iter()
        .filter(|r| !r.pins.is_empty())
        .map(|r| r.tick)
        .collect();
    let reasons = |from: u64| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.tick >= from)
            .map(|r| r.cpu_reason.as_str())
            .take(5)
            .collect()
    };
    assert!(
        pinned.len() <= 2 && pinned.iter().all(|&t| t <= 30),
        "pinned at ticks {pinned:?}: {:#?}",
        reasons(30)
    );
    let learned = records
        .iter()
        .filter(|r| r.cpu_reason.starts_with("hold:"))
        .filter_map(|r| r.cpu_reason.rsplit("the predictions' error ").next())
        .filter_map(|e| e.trim_end_matches(')').parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(learned > 5.0, "the largest error learned: {learned:.1}");
}

/// G1 under `group-balance`: every VM ends on one NUMA node's set with all its vCPUs (never
/// split, never one-to-one), the busy VMs are spread over both nodes once they turn busy, a VM
/// is only ever moved whole, and emulator threads are kept off the busiest node.
#[test]
fn group_balance_keeps_whole_vms_on_nodes_and_spreads_the_busy_ones() {
    let records = run_scenario(
        &scenario("cpu-g1-numa-groups"),
        "[host.cpu_policy]\nname = \"group-balance\"\n",
    );
    let nodes = ["0-3", "4-7"];
    let set_of = |vm: &vcoord_core::runtime::record::VmRecord| -> Vec<String> {
        vm.vcpus.iter().map(|v| v.affinity.to_string()).collect()
    };
    for r in &records[1..] {
        for vm in &r.vms {
            let sets = set_of(vm);
            assert!(
                nodes.contains(&sets[0].as_str()) && sets.iter().all(|s| *s == sets[0]),
                "tick {}: {} on {sets:?}",
                r.tick,
                vm.name
            );
        }
        // A VM moves whole: every pin of a tick for one VM names the same set.
        for pin in &r.pins {
            assert!(
                r.pins
                    .iter()
                    .filter(|p| p.vm == pin.vm)
                    .all(|p| p.cpus == pin.cpus),
                "tick {}: {:?}",
                r.tick,
                r.pins
            );
        }
    }
    let last = records.last().unwrap();
    let busy_on = |node: &str| {
        last.vms
            .iter()
            .filter(|vm| vm.name.starts_with("burst") && set_of(vm)[0] == node)
            .count()
    };
    assert!(
        busy_on(nodes[0]) >= 1 && busy_on(nodes[1]) >= 1,
        "the three busy VMs on one node: {:?}",
        last.vms
            .iter()
            .map(|v| (&v.name, set_of(v)))
            .collect::<Vec<_>>()
    );
    // Emulator threads were sent, always to one whole node (the one not busiest).
    let emulator: Vec<String> = records
        .iter()
        .flat_map(|r| r.tunes.iter())
        .filter_map(|t| t.tune.emulator.as_ref().map(|e| e.to_string()))
        .collect();
    assert!(!emulator.is_empty());
    assert!(
        emulator.iter().all(|e| nodes.contains(&e.as_str())),
        "{emulator:?}"
    );
}

/// CPU ready of the worst-served VM (its vCPUs' wait averaged over them and over the run):
/// with every vCPU left on pCPU 0 each VM waits most of the time; spread by the defaults the
/// worst waits far less. The worst VM is never better served than the mean vCPU.
#[test]
fn the_worst_vms_cpu_ready_shows_a_crowded_pcpu() {
    let run = |policy: &str| {
        let records = run_scenario(
            &scenario("cpu-t2-all-on-one"),
            &format!("[host.cpu_policy]\nname = \"{policy}\"\n"),
        );
        cpu_metrics(&records, 5.0)
    };
    let (crowded, spread) = (run("none"), run("stable-balance"));
    eprintln!(
        "worst ready {:.1}% crowded, {:.1}% spread",
        crowded.worst_vm_ready_pct, spread.worst_vm_ready_pct
    );
    assert!(crowded.worst_vm_ready_pct > 75.0, "{crowded:?}");
    assert!(
        spread.worst_vm_ready_pct < crowded.worst_vm_ready_pct - 20.0,
        "{spread:?}"
    );
    for m in [&crowded, &spread] {
        assert!(m.worst_vm_ready_pct >= m.mean_wait_pct, "{m:?}");
    }
}

/// Mean CPU ready of `vm` (its vCPU's wait) over the records from `from` on.
fn ready_of(records: &[TickRecord], vm: &str, from: usize) -> f64 {
    let waits: Vec<f64> = records[from..]
        .iter()
        .filter_map(|r| r.vms.iter().find(|v| v.name == vm)?.vcpus[0].wait_pct)
        .collect();
    waits.iter().sum::<f64>() / waits.len().max(1) as f64
}

/// T2 (eight 95% VMs crowded on pCPU 0 of 4) with `vm1` of the dedicated class, under each
/// CPU policy: vm1 gets pCPU 3 alone at the first tick and keeps it while the others crowd
/// pCPUs 0-2; it barely waits while they wait most of the time.
#[test]
fn a_dedicated_vm_has_its_pcpu_alone_under_both_cpu_policies() {
    for policy in ["stable-balance", "group-balance"] {
        let records = run_scenario(
            &scenario("cpu-t2-all-on-one"),
            &format!(
                "[host.cpu_policy]\nname = \"{policy}\"\n[[host.vm]]\nmatch = \"vm1\"\nplacement = \"dedicated\"\n"
            ),
        );
        for r in &records[2..] {
            assert_eq!(pinned_cpu(r, "vm1"), Some(3), "{policy}: tick {}", r.tick);
            for vm in r.vms.iter().filter(|v| v.name != "vm1") {
                assert!(
                    !vm.vcpus[0].affinity.contains(3),
                    "{policy}: tick {}: {} may run on pCPU 3",
                    r.tick,
                    vm.name
                );
            }
        }
        let (mine, theirs) = (ready_of(&records, "vm1", 5), ready_of(&records, "vm2", 5));
        eprintln!("{policy}: ready vm1 {mine:.1}%, vm2 {theirs:.1}%");
        assert!(mine < 1.0 && theirs > 20.0, "{policy}: {mine} / {theirs}");
    }
}

/// Every VM of T2 dedicated: one core must stay shared, so three get pCPUs 3, 2, 1 (in name
/// order) and five are left shared, each said once in the log with why, never pinned off the
/// shared pCPU 0.
#[test]
fn dedicated_vms_the_host_cannot_give_pcpus_are_left_shared_and_said_so_once() {
    let run = common::run_sim(
        &scenario("cpu-t2-all-on-one"),
        "[[host.vm]]\nmatch = \"vm*\"\nplacement = \"dedicated\"\n",
        &[],
    );
    assert!(run.ok, "{}", run.stderr);
    let last = run.records.last().unwrap();
    for (vm, cpu) in [("vm1", 3), ("vm2", 2), ("vm3", 1)] {
        assert_eq!(pinned_cpu(last, vm), Some(cpu), "{vm}");
    }
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("a dedicated VM is left shared"))
        .collect();
    assert_eq!(said.len(), 5, "{said:#?}");
    for vm in ["vm4", "vm5", "vm6", "vm7", "vm8"] {
        assert!(
            said.iter()
                .any(|l| l.contains(vm) && l.contains("0 can be given")),
            "{vm}: {said:#?}"
        );
        assert!(
            run.records.iter().all(|r| pinned_cpu(r, vm) == Some(0)),
            "{vm} left pCPU 0"
        );
    }
}

/// What stable-balance learned beside host bursts (the prediction error of its first move)
/// goes over a restart, as the state file carries it over a real one: after it, the law holds
/// as before instead of trying the move again.
#[test]
fn beside_host_bursts_a_restart_keeps_the_learned_error_and_the_hold() {
    use vcoord_core::runtime::{control::Control, Coordinator, RunOptions};
    vcoord_policies::link();
    let path = scenario("cpu-h3-host-bursts");
    let host =
        vcoord_core::config::HostConfig::new("h", &format!("sim:{}", path.display()), &root());
    let mut c = Coordinator::open(&host, &RunOptions::default()).expect("opens");
    let control = Control::new();
    // Past its last move (by tick 30: the test above).
    for _ in 0..40 {
        assert!(c.tick().is_some());
        c.wait(&control);
    }
    let learned = c.cpu_learned();
    assert!(learned.is_some(), "nothing learned in 40 ticks");
    c.restart().expect("restarts");
    assert_eq!(c.cpu_learned(), learned);
    let mut pins = Vec::new();
    while !c.finished() {
        if let Some(r) = c.tick() {
            if !r.pins.is_empty() {
                pins.push((r.tick, r.cpu_reason));
            }
        }
        c.wait(&control);
    }
    // A policy started as new tries the move again at once: this one does not.
    assert!(pins.is_empty(), "{pins:#?}");
}
