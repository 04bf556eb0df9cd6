//! Helpers for whole-program tests: run the `vcoord` binary on a scenario and read its record.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use vcoord_core::runtime::record::TickRecord;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The user documentation: README.md, then every `docs/*.md` in name order, joined.
pub fn documentation() -> String {
    let root = root();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    let mut text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    for page in pages {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(&page).expect("a docs page"));
    }
    text
}

/// A fresh scratch directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vcoord-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `vcoord` with `args`.
pub fn vcoord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vcoord"))
        .args(args)
        .env("VCOORD_LOG", "warn")
        .output()
        .expect("vcoord runs")
}

/// What `vcoord args` printed, after checking it succeeded.
pub fn stdout_of(args: &[&str]) -> String {
    let out = vcoord(args);
    assert!(
        out.status.success(),
        "vcoord {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `vcoord run` on a one-host simulator configuration gave.
pub struct Run {
    /// Exit status was success.
    pub ok: bool,
    /// Its log.
    pub stderr: String,
    /// Its tick records.
    pub records: Vec<TickRecord>,
}

/// Writes a one-host config for `scenario` with extra TOML lines (policies, ...) and runs it,
/// recording, with `args` added to `vcoord run`.
pub fn run_sim(scenario: &Path, extra: &str, args: &[&str]) -> Run {
    let dir = scratch("run");
    let config = dir.join("vcoord.toml");
    std::fs::write(
        &config,
        format!(
            "[[host]]\nname = \"sim\"\nuri = \"sim:{}\"\n{extra}\n",
            scenario.display()
        ),
    )
    .unwrap();
    let record = dir.join("record.jsonl");
    let mut all = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--record",
        record.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = vcoord(&all);
    let records = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("record line is a TickRecord"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        records,
    }
}

/// Runs `scenario` to its end with extra host lines and returns the tick records; the run
/// must succeed.
pub fn run_scenario(scenario: &Path, extra: &str) -> Vec<TickRecord> {
    let run = run_sim(scenario, extra, &[]);
    assert!(
        run.ok,
        "vcoord failed on {}: {}",
        scenario.display(),
        run.stderr
    );
    run.records
}

/// The pCPU each VM's vCPU 0 is pinned to in a record (None when not pinned to one pCPU).
pub fn pinned_cpu(record: &TickRecord, vm: &str) -> Option<u32> {
    record
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.vcpus[0].affinity.only())
}
/// One free of a grower's memory, found in its (time s, actual MiB, unused MiB) series.
#[derive(Debug, Clone, Copy)]
pub struct Free {
    /// Index of the first sample that shows the free.
    pub at: usize,
    /// Its time (s).
    pub t: f64,
    /// The grower's lowest unused memory before the free (MiB).
    pub lowest_before: f64,
    /// Seconds from the free until unused memory was back in the band (216 MiB: 2 thresholds
    /// and a step's slack), if it got there.
    pub back_s: Option<f64>,
}

/// Each free in a grower's (time s, actual MiB, unused MiB) series: within 10 s, unused memory
/// rises by over 300 MiB while the memory the guest uses (actual - unused) falls by as much.
/// A guest reports its memory every few seconds and may report a free half done, so the rise
/// is looked for over a window, not between two samples; a grant raises unused memory without
/// lowering use, a reclaim lowers unused memory, so neither reads as a free.
pub fn frees(series: &[(f64, f64, f64)]) -> Vec<Free> {
    const RISE_MIB: f64 = 300.0;
    const WINDOW_S: f64 = 10.0;
    const BAND_MIB: f64 = 216.0;
    const NOISE_MIB: f64 = 16.0;
    let used = |s: &(f64, f64, f64)| s.1 - s.2;
    let mut out = Vec::new();
    let mut i = 0;
    while i < series.len() {
        let from = series[i];
        let done = series[i + 1..]
            .iter()
            .take_while(|s| s.0 - from.0 <= WINDOW_S)
            .position(|s| s.2 > from.2 + RISE_MIB && used(&from) - used(s) > RISE_MIB)
            .map(|k| i + 1 + k);
        let Some(done) = done else {
            i += 1;
            continue;
        };
        // The free shows from the first sample after `from` whose use fell by more than a
        // guest's report-to-report noise (a rise of a MiB or two is not the free beginning).
        let at = (i + 1..=done)
            .find(|&k| used(&from) - used(&series[k]) > NOISE_MIB)
            .unwrap_or(done);
        let t = series[at].0;
        let lowest_before = series[..=i]
            .iter()
            .map(|s| s.2)
            .fold(f64::INFINITY, f64::min);
        let back = series[done..].iter().position(|s| s.2 <= BAND_MIB);
        out.push(Free {
            at,
            t,
            lowest_before,
            back_s: back.map(|k| series[done + k].0 - t),
        });
        // The next free starts once this one is reclaimed (or never).
        i = back.map_or(series.len(), |k| done + k);
    }
    out
}

/// The one free a grower's series must show.
pub fn the_free(series: &[(f64, f64, f64)]) -> Free {
    let found = frees(series);
    assert!(
        found.len() == 1,
        "{} frees of the grower, not 1: {series:?}",
        found.len()
    );
    found[0]
}

/// A recording and its simulation from the scenario derived from it make the same decisions
/// within the stated tolerances: vCPU moves within 1, the last move within 3 ticks, the
/// grower's lowest unused memory before its free within 80 MiB, and the time from its free back
/// into the band within 15 s (figures land up to a guest report apart).
pub fn assert_plays_alike(real: &[TickRecord], sim: &[TickRecord], grower: &str) {
    let moves = |r: &[TickRecord]| r.iter().map(|t| t.pins.len()).sum::<usize>();
    let last_move = |r: &[TickRecord]| r.iter().rfind(|t| !t.pins.is_empty()).map_or(0, |t| t.tick);
    let series = |r: &[TickRecord]| -> Vec<(f64, f64, f64)> {
        r.iter()
            .filter_map(|t| {
                let v = t.vms.iter().find(|v| v.name == grower)?;
                Some((t.time_s, v.actual_mib(), v.unused_mib()?))
            })
            .collect()
    };
    let (real_free, sim_free) = (the_free(&series(real)), the_free(&series(sim)));
    let (real_low, real_back) = (real_free.lowest_before, real_free.back_s);
    let (sim_low, sim_back) = (sim_free.lowest_before, sim_free.back_s);
    let said = format!(
        "moves real {} sim {}; last move at tick real {} sim {}; lowest unused real {real_low:.0} sim {sim_low:.0} MiB; back in the band real {real_back:?} sim {sim_back:?} s",
        moves(real),
        moves(sim),
        last_move(real),
        last_move(sim)
    );
    eprintln!("derived scenario vs recording: {said}");
    assert!(moves(real).abs_diff(moves(sim)) <= 1, "{said}");
    assert!(last_move(real).abs_diff(last_move(sim)) <= 3, "{said}");
    assert!((real_low - sim_low).abs() <= 80.0, "{said}");
    let (Some(real_back), Some(sim_back)) = (real_back, sim_back) else {
        panic!("a reclaim is missing: {said}");
    };
    assert!((real_back - sim_back).abs() <= 15.0, "{said}");
}

pub mod daemon;
pub mod libvirt;

/// A free address on the loopback, for a server a test starts.
pub fn loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `method path` on `addr` over HTTP/1.0: the status code and the body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The value of the one series of `metric` in a Prometheus scrape whose labels include all of
/// `labels`.
pub fn metric(scrape: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The vcoord a test runs as a daemon: the installed package's when `VCOORD_BIN` names it (the
/// test command installs the .deb first), else the workspace's.
pub fn vcoord_bin() -> PathBuf {
    std::env::var_os("VCOORD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vcoord")))
}

/// The day's invariants that hold at every tick, the same for the simulated and the real day:
/// no guest is OOM-killed; none stays under `threshold_mib` unused for 4 ticks running while
/// the host has 256 MiB to give above `reserve_mib` and the guest is below its maximum; and at a
/// steady moment (`steady(t)`) no VM that was there a tick before is re-pinned. `ticks` are
/// (time, record), the time as the day's timeline counts it.
pub fn tick_violations(
    ticks: &[(f64, &TickRecord)],
    threshold_mib: f64,
    reserve_mib: f64,
    steady: impl Fn(f64) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut below: std::collections::BTreeMap<&str, u32> = Default::default();
    for (i, &(t, r)) in ticks.iter().enumerate() {
        let grantable = r.guest_free_mib() - reserve_mib;
        for vm in &r.vms {
            if vm.oom_events.unwrap_or(0) > 0 {
                out.push(format!("{t:.0} s: {} OOM-killed", vm.name));
            }
            let run = below.entry(vm.name.as_str()).or_default();
            match vm.unused_mib() {
                Some(u)
                    if u < threshold_mib
                        && grantable > 256.0
                        && vm.actual_mib() < vm.max_mib() - 1.0 =>
                {
                    *run += 1;
                    if *run == 4 {
                        out.push(format!(
                            "{t:.0} s: {} under the threshold ({u:.0} MiB) for 4 ticks with {grantable:.0} MiB to give",
                            vm.name
                        ));
                    }
                }
                _ => *run = 0,
            }
        }
        if steady(t) && i > 0 {
            for pin in &r.pins {
                if ticks[i - 1].1.vms.iter().any(|v| v.name == pin.vm) {
                    out.push(format!(
                        "{t:.0} s: {} re-pinned in a steady phase: {} (loads {:?})",
                        pin.vm, r.cpu_reason, r.pcpu_load_pct
                    ));
                }
            }
        }
    }
    out
}

/// How long `vm`'s virtio-mem device took to follow each request vcoord sent it (seconds from
/// the tick that sent it to the first tick that read it plugged), plugs and unplugs apart. A
/// request replaced before it was followed is left out.
pub fn follow_times(records: &[TickRecord], vm: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut plugs, mut unplugs) = (Vec::new(), Vec::new());
    for (i, r) in records.iter().enumerate() {
        for p in r.plugs.iter().filter(|p| p.vm == vm) {
            let followed = records[i + 1..].iter().find_map(|later| {
                let d = later
                    .vms
                    .iter()
                    .find(|v| v.name == vm)?
                    .memory
                    .virtio_mem
                    .first()?;
                if d.requested_kib != p.to_kib {
                    Some(None)
                } else if d.current_kib == p.to_kib {
                    Some(Some(later.time_s - r.time_s))
                } else {
                    None
                }
            });
            if let Some(Some(s)) = followed {
                if p.to_kib > p.from_kib {
                    plugs.push(s);
                } else {
                    unplugs.push(s);
                }
            }
        }
    }
    (plugs, unplugs)
}

/// The median of some figures (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The longest run of consecutive recorded ticks in which `vm` reported less than `mib` unused
/// (ticks without fresh figures neither break nor extend a run).
pub fn longest_under(records: &[TickRecord], vm: &str, mib: f64) -> usize {
    let (mut run, mut longest) = (0, 0);
    for r in records {
        match r
            .vms
            .iter()
            .find(|v| v.name == vm)
            .and_then(|v| v.unused_mib())
        {
            Some(u) if u < mib => run += 1,
            Some(_) => run = 0,
            None => {}
        }
        longest = longest.max(run);
    }
    longest
}
