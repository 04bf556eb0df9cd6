//! One harness for every test that runs `vcoord run` as its own process: the service tests on
//! the simulator and the end-to-end tests on real guests. The daemon writes its log to
//! `DIR/vcoord.log` and, when asked, its record to `DIR/record.jsonl`; it can be given a
//! systemd notify socket and watchdog, a wrapper program (`prlimit ...`), and is killed if the
//! test ends early.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vcoord_core::runtime::record::TickRecord;

use super::vcoord_bin;

/// How to start one daemon; [`Launch::spawn`] starts it.
pub struct Launch {
    dir: PathBuf,
    config: PathBuf,
    args: Vec<String>,
    wrapper: Vec<String>,
    watchdog: Option<Duration>,
    record: bool,
    remove_dir: bool,
    state_dir: Option<PathBuf>,
}

impl Launch {
    /// Keep what policies learn in `dir` (`VCOORD_STATE_DIR`), shared with the daemons that
    /// follow it there; by default each daemon has its own, `DIR/state`.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// Extra arguments after `run --config CONFIG`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Stop after this many ticks (`--ticks N`).
    pub fn ticks(self, ticks: u32) -> Self {
        self.args(&["--ticks", &ticks.to_string()])
    }

    /// Record every tick to `DIR/record.jsonl` (read with [`Daemon::records`]).
    pub fn record(mut self) -> Self {
        self.record = true;
        self
    }

    /// Under systemd's notify protocol: a datagram socket `DIR/notify.sock` and a watchdog of
    /// `watchdog` (read with [`Daemon::until`]).
    pub fn notify(mut self, watchdog: Duration) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// Run by `wrapper` (e.g. `prlimit --nofile=N`), which execs the binary.
    pub fn under(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Remove the directory when the daemon is dropped (scratch runs; real-guest runs keep
    /// theirs for the record and log).
    pub fn remove_dir_after(mut self) -> Self {
        self.remove_dir = true;
        self
    }

    /// Starts it.
    pub fn spawn(self) -> Daemon {
        let log = self.dir.join("vcoord.log");
        let record = self.dir.join("record.jsonl");
        let mut command = match self.wrapper.as_slice() {
            [] => Command::new(vcoord_bin()),
            [program, rest @ ..] => {
                let mut c = Command::new(program);
                c.args(rest).arg(vcoord_bin());
                c
            }
        };
        command
            .args(["run", "--config", self.config.to_str().unwrap()])
            .args(&self.args)
            // Locks of its own, apart from an installed service's.
            .env("VCOORD_RUN_DIR", self.dir.join("run"))
            // ... and learned state of its own, unless shared on purpose.
            .env(
                "VCOORD_STATE_DIR",
                self.state_dir.clone().unwrap_or(self.dir.join("state")),
            )
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if self.record {
            command.args(["--record", record.to_str().unwrap()]);
        }
        let notify = self.watchdog.map(|watchdog| {
            let socket = self.dir.join("notify.sock");
            let _ = std::fs::remove_file(&socket);
            let notify = UnixDatagram::bind(&socket).unwrap();
            notify
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            command
                .env("NOTIFY_SOCKET", &socket)
                .env("WATCHDOG_USEC", watchdog.as_micros().to_string());
            notify
        });
        let child = command.spawn().expect("vcoord starts");
        Daemon {
            child: Some(child),
            notify,
            dir: self.dir,
            log,
            record,
            remove_dir: self.remove_dir,
        }
    }
}

/// A running `vcoord run`, killed if the test ends early.
pub struct Daemon {
    child: Option<Child>,
    notify: Option<UnixDatagram>,
    dir: PathBuf,
    log: PathBuf,
    /// Where it records (when started with [`Launch::record`]).
    pub record: PathBuf,
    remove_dir: bool,
}

impl Daemon {
    /// `vcoord run --config CONFIG`, run in `dir`.
    pub fn launch(dir: &Path, config: &Path) -> Launch {
        Launch {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            args: Vec::new(),
            wrapper: Vec::new(),
            watchdog: None,
            record: false,
            remove_dir: false,
            state_dir: None,
        }
    }

    /// Its run directory (`VCOORD_RUN_DIR`: where the one-instance-per-host locks live), so
    /// that another vcoord can be started against the same locks.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Its process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends it a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Asks it to stop (SIGTERM), as systemd does; nothing if it has already exited.
    pub fn stop(&mut self) {
        if self.running() {
            self.signal("TERM");
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for the exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "vcoord still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Notify messages until one contains `what` (all of them, in order); fails if it exits
    /// first or `timeout` passes.
    pub fn until(&mut self, what: &str, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while started.elapsed() < timeout {
            let notify = self.notify.as_ref().expect("started with notify()");
            if let Ok(len) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..len]).into_owned();
                let done = msg.contains(what);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
            if !self.running() {
                panic!("vcoord exited before `{what}`: {seen:?}\n{}", self.log());
            }
        }
        panic!("no `{what}` within {timeout:?}: {seen:?}");
    }

    /// The ticks recorded so far (a line still being written is left out).
    pub fn records(&self) -> Vec<TickRecord> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Ticks recorded so far in which `vm` was seen.
    pub fn ticks_with(&self, vm: &str) -> usize {
        self.records()
            .iter()
            .filter(|r| r.vms.iter().any(|v| v.name == vm))
            .count()
    }

    /// Waits until `cond` holds; fails if it exits first or `timeout` passes. (Libvirt calls
    /// are slow on a loaded host: act on the record, not on sleeps.)
    pub fn wait_until(&mut self, what: &str, timeout: Duration, cond: &dyn Fn(&Daemon) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if !self.running() {
                panic!("vcoord exited while waiting for {what}: {}", self.log());
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
