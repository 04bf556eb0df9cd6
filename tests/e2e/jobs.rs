//! A guest in the middle of a libvirt job (here a live dump) is left alone, and coordinated
//! once the job ends.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use vcoord_core::runtime::guard::Refusal;

/// A FIFO a live dump writes into, drained at 10 MiB/s until released and then at once, so the
/// job lasts as long as the test needs (a 512 MiB guest: about 50 s) and ends when told.
struct SlowSink {
    release: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<u64>>,
}

impl SlowSink {
    fn new(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let made = Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", path.display());
        let release = Arc::new(AtomicBool::new(false));
        let (path, go) = (path.to_path_buf(), release.clone());
        let reader = std::thread::spawn(move || {
            // Blocks until the dump opens its end.
            let mut fifo = std::fs::File::open(&path).expect("the dump's FIFO opens");
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n as u64,
                }
                if !go.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Self {
            release,
            reader: Some(reader),
        }
    }

    fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

impl Drop for SlowSink {
    fn drop(&mut self) {
        self.release();
        // The guests are destroyed by then if the test failed: the dump's end closes, the
        // reader sees it and returns.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Whether libvirt reports a job running on `vm`.
fn job_running(vm: &str) -> bool {
    virsh(&["domjobinfo", vm]).is_ok_and(|out| {
        out.lines()
            .any(|l| l.starts_with("Job type:") && !l.contains("None"))
    })
}

/// Two busy guests on pCPU 0 of 2, each in a live dump that lasts until the test ends it:
/// vcoord (default policies, started during the dumps) pins neither and balloons neither, and
/// its record says why: it would have moved one (a `busy` refusal, the policy's own decision).
/// Once the dumps end, it spreads them. Without the check, a pin goes through during a dump
/// (libvirt allows it), and a balloon change waits 30 s for the job's lock and fails.
#[test]
#[ignore = "real libvirt and QEMU guests: scripts/setup-host.sh and scripts/setup-test.sh, then --include-ignored"]
fn a_guest_in_a_job_is_left_alone_until_the_job_ends() {
    require_e2e();
    let mut guests = Guests::new("jobs");
    let names: Vec<String> = ["a", "b"]
        .into_iter()
        .map(|n| guests.start(GuestSpec::new(n, BUSY).pinned(&[0])))
        .collect();
    guests.wait_booted(Duration::from_secs(120));

    let mut sinks = Vec::new();
    let mut dumps = Vec::new();
    for name in &names {
        let fifo = guests.dir.join(format!("{name}.dump"));
        sinks.push(SlowSink::new(&fifo));
        dumps.push(
            Command::new("virsh")
                .args(["-c", URI, "dump", "--live", name])
                .arg(&fifo)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("virsh dump starts"),
        );
    }
    let start = Instant::now();
    while !names.iter().all(|n| job_running(n)) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the dumps did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut daemon = run_vcoord(&guests.dir, "", 60);
    daemon.wait_until("8 ticks during the dumps", Duration::from_secs(40), &|d| {
        d.records().len() >= 8
    });
    let during = daemon.records();
    // Read after the records: every tick read so far ran while both jobs did.
    assert!(
        names.iter().all(|n| job_running(n)),
        "a dump ended early: the window is not inside the jobs"
    );
    for r in &during {
        assert!(
            r.pins.is_empty() && r.balloons.is_empty(),
            "tick {} acted during the dumps: {:?} {:?}",
            r.tick,
            r.pins,
            r.balloons
        );
    }
    let left_alone: Vec<&str> = during
        .iter()
        .flat_map(|r| &r.rejected)
        .filter(|x| x.reason == Refusal::Busy)
        .map(|x| x.vm.as_str())
        .collect();
    assert!(
        !left_alone.is_empty(),
        "no busy refusal: the policy never wanted to act, so the test shows nothing\n{}",
        log_of(&guests)
    );
    for name in &names {
        assert_eq!(affinity(name), [0], "{name} moved during its dump");
    }
    // `vcoord status` says so of each, from libvirt, while the jobs run.
    let table = status_table(0.5);
    assert!(
        names.iter().all(|n| job_running(n)),
        "a dump ended during the status: the table shows nothing"
    );
    for name in &names {
        assert!(
            table.contains(&format!("{name} (in a job)"))
                && table.contains(&format!("left alone: {name}: a job is running")),
            "{table}"
        );
    }

    for sink in &sinks {
        sink.release();
    }
    for mut dump in dumps {
        let start = Instant::now();
        while dump.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "a dump did not end once drained"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let ended_at = daemon.records().len();
    daemon.wait_until("a pin after the dumps", Duration::from_secs(40), &|d| {
        d.records()[ended_at..].iter().any(|r| !r.pins.is_empty())
    });
    daemon.stop();
    assert!(daemon.wait(Duration::from_secs(30)).success());
    let spread: Vec<Vec<u32>> = names.iter().map(|n| affinity(n)).collect();
    assert_ne!(
        spread[0], spread[1],
        "not spread after the dumps: {spread:?}"
    );
    eprintln!(
        "left alone during the dumps: {} actions over {} ticks",
        left_alone.len(),
        during.len()
    );
}
