//! The fast local path: vCPU run time, run-queue wait, last pCPU and affinity read straight
//! from the kernel (`/proc/<qemu pid>/task/<vcpu tid>/{schedstat,stat,status}`), with the QEMU
//! pid and vCPU thread ids learned from libvirt's domain status file
//! (`/run/libvirt/qemu/<name>.xml`), once per domain and again when that file changes (the
//! domain restarted, a vCPU was hot-plugged) or a thread disappears. No libvirt call at all.
//!
//! Anything unexpected (no status file, a thread gone, a pid that is no longer this domain's
//! QEMU) is an error for that domain, which the caller then samples through libvirt.
//!
//! The host's own work is read the same way: the run-queue wait of every other thread
//! (`/proc/<pid>/task/<tid>/{schedstat,stat}`), counted on the pCPU each last ran on
//! ([`ProcReader::other_wait_ns`]), so that what host processes wanted on a pCPU is known, not
//! only what they got (the kernel's per-pCPU `/proc/schedstat` is not there on every kernel).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cpuset::CpuSet;

/// Where libvirt's QEMU driver keeps the status of running domains (system instance).
pub const QEMU_RUN_DIR: &str = "/run/libvirt/qemu";

/// One vCPU thread's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct VcpuFigures {
    /// vCPU number.
    pub vcpu: u32,
    /// Time spent running, ns.
    pub run_ns: u64,
    /// Time spent runnable but waiting for a CPU, ns.
    pub wait_ns: u64,
    /// CPU it last ran on.
    pub cpu: u32,
    /// CPUs it may run on.
    pub affinity: CpuSet,
}

#[derive(Clone, Debug)]
struct Threads {
    uuid: String,
    pid: u32,
    /// Start time of the QEMU process (clock ticks since boot), to notice pid reuse.
    start: u64,
    /// (vCPU number, thread id).
    vcpus: Vec<(u32, u32)>,
    /// Modification time of the status file when it was read.
    status_mtime: Option<SystemTime>,
}

/// Reads vCPU figures of local QEMU domains from /proc.
#[derive(Debug)]
pub struct ProcReader {
    run_dir: PathBuf,
    proc_dir: PathBuf,
    domains: HashMap<String, Threads>,
    /// Where the cgroup v2 hierarchy is mounted, if it is.
    cgroup2: Option<PathBuf>,
    /// Each thread's run-queue wait at the last reading (ns), by thread id, outside the vCPUs.
    waits: HashMap<u32, u64>,
    /// Their wait since the first reading, by the pCPU each last ran on (ns).
    other_wait: BTreeMap<u32, u64>,
}

impl ProcReader {
    /// A reader over libvirt's QEMU status directory and /proc.
    pub fn new(run_dir: &Path, proc_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            proc_dir: proc_dir.to_path_buf(),
            domains: HashMap::new(),
            cgroup2: std::fs::read_to_string(proc_dir.join("self/mountinfo"))
                .ok()
                .and_then(|text| cgroup2_mount(&text)),
            waits: HashMap::new(),
            other_wait: BTreeMap::new(),
        }
    }

    /// The run-queue wait of every thread on the host but the vCPU threads of the domains
    /// read (this tick's [`Self::vcpus`]), since the first reading: each thread's wait since
    /// it was last read goes to the pCPU it last ran on. Cumulative per pCPU id, ns. A thread
    /// seen for the first time only sets where its wait is counted from; one that cannot be
    /// read (it ended) is left out.
    pub fn other_wait_ns(&mut self) -> Vec<(u32, u64)> {
        let vcpus: HashSet<u32> = self
            .domains
            .values()
            .flat_map(|t| t.vcpus.iter().map(|&(_, tid)| tid))
            .collect();
        let number = |e: &std::fs::DirEntry| e.file_name().to_str()?.parse::<u32>().ok();
        let mut waits = HashMap::with_capacity(self.waits.len());
        for process in std::fs::read_dir(&self.proc_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if number(&process).is_none() {
                continue;
            }
            let tasks = std::fs::read_dir(process.path().join("task"));
            for task in tasks.into_iter().flatten().flatten() {
                let Some(tid) = number(&task).filter(|t| !vcpus.contains(t)) else {
                    continue;
                };
                let dir = task.path();
                let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
                let Some((_, wait)) = read("schedstat").as_deref().and_then(schedstat) else {
                    continue;
                };
                let delta = self.waits.get(&tid).and_then(|&w| wait.checked_sub(w));
                if let Some(delta) = delta.filter(|&d| d > 0) {
                    if let Some(cpu) = read("stat").and_then(|s| stat_field(&s, 39)) {
                        *self.other_wait.entry(cpu as u32).or_default() += delta;
                    }
                }
                waits.insert(tid, wait);
            }
        }
        self.waits = waits;
        self.other_wait.iter().map(|(&c, &w)| (c, w)).collect()
    }

    /// The memory pressure of domain `name`'s cgroup v2 group (its `vcpus` must have been
    /// read this tick); `None` where it has none of its own (no cgroup v2, or the process sits
    /// in the root group, whose pressure is the host's).
    pub fn memory_pressure(&self, name: &str) -> Option<crate::model::PsiSample> {
        let pid = self.domains.get(name)?.pid;
        group_memory_pressure(&self.proc_dir, self.cgroup2.as_ref()?, pid)
    }

    /// Domain `name`'s cgroup v2 group (see [`domain_group`]), as the host names it.
    pub fn group(&self, name: &str) -> Option<PathBuf> {
        self.cgroup2.as_ref()?;
        let pid = self.domains.get(name)?.pid;
        domain_group(&self.proc_dir, pid).map(|g| Path::new("/").join(g))
    }

    /// The /proc it reads.
    pub fn proc_dir(&self) -> &Path {
        &self.proc_dir
    }

    /// Whether the fast path can work at all here: the status directory is readable.
    pub fn available(&self) -> bool {
        std::fs::read_dir(&self.run_dir).is_ok()
    }

    /// Forgets domains not in `alive` (names).
    pub fn retain(&mut self, alive: &[&str]) {
        self.domains
            .retain(|name, _| alive.contains(&name.as_str()));
    }

    /// The figures of every vCPU of domain `name` (UUID `uuid`), in vCPU order.
    pub fn vcpus(&mut self, name: &str, uuid: &str) -> Result<Vec<VcpuFigures>, String> {
        let status = self.run_dir.join(format!("{name}.xml"));
        let mtime = std::fs::metadata(&status).and_then(|m| m.modified()).ok();
        let stale = match self.domains.get(name) {
            Some(t) => t.uuid != uuid || t.status_mtime != mtime,
            None => true,
        };
        if stale {
            let threads = self.learn(uuid, &status, mtime)?;
            self.domains.insert(name.to_owned(), threads);
        }
        let threads = self.domains.get(name).expect("learned above");
        match self.read_threads(threads) {
            Ok(figures) => Ok(figures),
            Err(e) => {
                // A thread vanished or the pid was reused: learn again once, then give up.
                let threads = self.learn(uuid, &status, mtime)?;
                let figures = self
                    .read_threads(&threads)
                    .map_err(|e2| format!("{e}; {e2}"))?;
                self.domains.insert(name.to_owned(), threads);
                Ok(figures)
            }
        }
    }

    fn learn(
        &self,
        uuid: &str,
        status: &Path,
        status_mtime: Option<SystemTime>,
    ) -> Result<Threads, String> {
        let xml =
            std::fs::read_to_string(status).map_err(|e| format!("{}: {e}", status.display()))?;
        let DomainStatus {
            pid,
            vcpus,
            uuid: found,
        } = parse_status(&xml)
            .ok_or_else(|| format!("{}: no QEMU pid or vCPU threads", status.display()))?;
        if found.as_deref() != Some(uuid) {
            return Err(format!("{}: not domain {uuid}", status.display()));
        }
        let start = self.start_time(pid)?;
        Ok(Threads {
            uuid: uuid.to_owned(),
            pid,
            start,
            vcpus,
            status_mtime,
        })
    }

    fn start_time(&self, pid: u32) -> Result<u64, String> {
        let path = self.proc_dir.join(pid.to_string()).join("stat");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        stat_field(&text, 22).ok_or_else(|| format!("{}: unreadable", path.display()))
    }

    fn read_threads(&self, t: &Threads) -> Result<Vec<VcpuFigures>, String> {
        if self.start_time(t.pid)? != t.start {
            return Err(format!("pid {} is no longer this domain's QEMU", t.pid));
        }
        let task = self.proc_dir.join(t.pid.to_string()).join("task");
        let mut out = Vec::with_capacity(t.vcpus.len());
        for &(vcpu, tid) in &t.vcpus {
            let dir = task.join(tid.to_string());
            let read = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .map_err(|e| format!("{}/{file}: {e}", dir.display()))
            };
            let (run_ns, wait_ns) = schedstat(&read("schedstat")?)
                .ok_or_else(|| format!("{}/schedstat: unreadable", dir.display()))?;
            let cpu = stat_field(&read("stat")?, 39)
                .ok_or_else(|| format!("{}/stat: unreadable", dir.display()))?;
            let affinity = read("status")?
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
                .ok_or_else(|| format!("{}/status: no Cpus_allowed_list", dir.display()))?;
            out.push(VcpuFigures {
                vcpu,
                run_ns,
                wait_ns,
                cpu: cpu as u32,
                affinity,
            });
        }
        Ok(out)
    }
}

/// What vcoord reads of a domain status file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainStatus {
    /// The QEMU process.
    pub pid: u32,
    /// (vCPU, thread id) pairs, by vCPU.
    pub vcpus: Vec<(u32, u32)>,
    /// The domain's UUID.
    pub uuid: Option<String>,
}

/// QEMU pid, (vCPU, thread id) pairs and UUID from a domain status file:
/// `<domstatus ... pid='N'><vcpus><vcpu id='0' pid='T'/>...</vcpus>...<domain><uuid>`.
pub fn parse_status(xml: &str) -> Option<DomainStatus> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element();
    if !root.has_tag_name("domstatus") {
        return None;
    }
    let number = |n: roxmltree::Node<'_, '_>, name: &str| n.attribute(name)?.parse().ok();
    let pid = number(root, "pid")?;
    let mut vcpus: Vec<(u32, u32)> = root
        .children()
        .filter(|n| n.has_tag_name("vcpus"))
        .flat_map(|n| n.children().filter(|c| c.has_tag_name("vcpu")))
        .map(|v| Some((number(v, "id")?, number(v, "pid")?)))
        .collect::<Option<_>>()?;
    vcpus.sort_unstable();
    let uuid = root
        .children()
        .find(|n| n.has_tag_name("domain"))
        .and_then(|d| d.children().find(|n| n.has_tag_name("uuid")))
        .and_then(|u| u.text())
        .map(|t| t.trim().to_owned());
    (!vcpus.is_empty()).then_some(DomainStatus { pid, vcpus, uuid })
}

/// Field `n` (1-based, as in proc(5)) of a /proc stat line; the command name in parentheses
/// may contain spaces, so fields are counted after its closing parenthesis.
pub fn stat_field(text: &str, n: usize) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(n - 3)?.parse().ok()
}

/// A thread's `schedstat` (`run_ns wait_ns timeslices`): its time on a CPU and its time
/// waiting on a run queue, ns.
pub fn schedstat(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// A kernel CPU list (`0-3,6,8-9`).
pub fn parse_cpu_list(list: &str) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                for cpu in a..=b {
                    set.insert(cpu);
                }
            }
            None => set.insert(part.parse().ok()?),
        }
    }
    Some(set)
}

/// Free memory of the host from /proc/meminfo (`MemFree`), KiB.
pub fn mem_free_kib(proc_dir: &Path) -> Option<u64> {
    kib_field(
        &std::fs::read_to_string(proc_dir.join("meminfo")).ok()?,
        "MemFree:",
    )
}

/// The value of a `Key:   1234 kB` line of a /proc file (meminfo, status), KiB.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Each pCPU's busy time since boot from a `/proc/stat` text, ns: user, nice, system, irq,
/// softirq and steal (guest time is inside user and nice; idle and I/O wait are not busy).
/// The kernel counts in USER_HZ ticks, 100 a second on every Linux ABI.
pub fn pcpu_busy_ns(stat: &str) -> Vec<(u32, u64)> {
    const NS_PER_TICK: u64 = 10_000_000;
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu: u32 = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let ticks: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal
            let busy: u64 = [0, 1, 2, 5, 6, 7]
                .iter()
                .filter_map(|&i| ticks.get(i))
                .sum();
            (ticks.len() >= 4).then_some((cpu, busy.saturating_mul(NS_PER_TICK)))
        })
        .collect()
}

/// The mount point of the cgroup v2 hierarchy in a `mountinfo` text, if it is mounted.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        (fs.split_whitespace().next() == Some("cgroup2"))
            .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 group (relative to the hierarchy's root) that holds all of process `pid`'s
/// threads: the domain's group. libvirt puts a QEMU process's main thread in an `emulator`
/// sub-group and each vCPU thread in a `vcpuN` one, so the main thread's own group would miss
/// the vCPU threads' stalls; its parent holds them all (pressure counts a group's whole
/// subtree). `None` in the root group (its pressure is the host's).
pub fn domain_group(proc_dir: &Path, pid: u32) -> Option<PathBuf> {
    let groups = std::fs::read_to_string(proc_dir.join(format!("{pid}/cgroup"))).ok()?;
    let group = Path::new(groups.lines().find_map(|l| l.strip_prefix("0::"))?.trim());
    let group = group.strip_prefix("/").unwrap_or(group);
    let group = match group.file_name() {
        Some(last) if last == "emulator" => group.parent()?,
        _ => group,
    };
    (!group.as_os_str().is_empty()).then(|| group.to_path_buf())
}

/// The memory pressure of process `pid`'s domain group (see [`domain_group`]) under `root`;
/// `None` in the root group or without a pressure file.
pub fn group_memory_pressure(
    proc_dir: &Path,
    root: &Path,
    pid: u32,
) -> Option<crate::model::PsiSample> {
    let group = domain_group(proc_dir, pid)?;
    let text = std::fs::read_to_string(root.join(group).join("memory.pressure")).ok()?;
    crate::backend::psi::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_gives_pid_and_vcpu_threads() {
        let xml = "<domstatus state='running' reason='booted' pid='4242'>\n  <monitor path='x'/>\n  <vcpus>\n    <vcpu id='1' pid='4250'/>\n    <vcpu id='0' pid='4249'/>\n  </vcpus>\n  <domain type='qemu'><uuid>u</uuid></domain></domstatus>";
        let status = parse_status(xml).unwrap();
        assert_eq!(
            (status.pid, status.vcpus),
            (4242, vec![(0, 4249), (1, 4250)])
        );
        assert_eq!(status.uuid.as_deref(), Some("u"));
        assert_eq!(parse_status("<domstatus pid='1'>"), None);
        // A domain's own <vcpus> (inside <domain>) holds no threads.
        let nested =
            "<domstatus pid='7'><domain><vcpus><vcpu id='0' pid='9'/></vcpus></domain></domstatus>";
        assert_eq!(parse_status(nested), None);
    }

    #[test]
    fn schedstat_gives_run_and_wait() {
        assert_eq!(schedstat("5000 700 7\n"), Some((5000, 700)));
        assert_eq!(schedstat("5000"), None);
        assert_eq!(schedstat("x 700 7"), None);
    }

    #[test]
    fn stat_fields_count_after_the_command_name() {
        let line = "123 (CPU 0/TCG) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 3 37 38";
        assert_eq!(stat_field(line, 22), Some(999));
        assert_eq!(stat_field(line, 39), Some(3));
    }

    #[test]
    fn pcpu_busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  300 0 100 1000 50 0 0 0 0 0\n\
                    cpu0 100 10 20 500 40 3 2 1 0 0\n\
                    cpu1 200 0 80 500 10 0 0 0 0 0\n\
                    intr 12345 0 0\n";
        assert_eq!(
            pcpu_busy_ns(stat),
            vec![(0, 136 * 10_000_000), (1, 280 * 10_000_000)]
        );
        // This host's own file reads, one line per online pCPU at least.
        let here = std::fs::read_to_string("/proc/stat").unwrap();
        assert!(!pcpu_busy_ns(&here).is_empty());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5").unwrap().as_slice(), &[0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("1").unwrap().as_slice(), &[1]);
        assert!(parse_cpu_list("x").is_none());
    }

    #[test]
    fn reads_this_process_threads_like_a_domain() {
        // This test process stands in for QEMU: its main thread is "vCPU 0".
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("vcoord-procfs-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("me.xml"),
            format!("<domstatus state='running' pid='{pid}'><vcpus><vcpu id='0' pid='{pid}'/></vcpus><domain><uuid>abc</uuid></domain></domstatus>"),
        )
        .unwrap();
        let mut r = ProcReader::new(&dir, Path::new("/proc"));
        let v = r.vcpus("me", "abc").unwrap();
        assert_eq!(v.len(), 1);
        assert!(v[0].run_ns > 0);
        assert!(!v[0].affinity.is_empty());
        assert!(r.vcpus("me", "other-uuid").is_err());
        assert!(r.vcpus("missing", "abc").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A /proc of `tasks` (pid, tid, wait ns, last CPU) under `dir`.
    fn fake_proc(dir: &Path, tasks: &[(u32, u32, u64, u32)]) {
        let _ = std::fs::remove_dir_all(dir);
        for &(pid, tid, wait, cpu) in tasks {
            let task = dir.join(format!("{pid}/task/{tid}"));
            std::fs::create_dir_all(&task).unwrap();
            std::fs::write(task.join("schedstat"), format!("5000 {wait} 7\n")).unwrap();
            std::fs::write(task.join("status"), "Name:\ta\nCpus_allowed_list:\t0-1\n").unwrap();
            let fields: Vec<String> = (3..=52)
                .map(|n| if n == 39 { cpu.to_string() } else { "0".into() })
                .collect();
            std::fs::write(
                task.join("stat"),
                format!("{tid} (a b) {}\n", fields.join(" ")),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.join("self")).unwrap();
    }

    #[test]
    fn host_threads_wait_is_counted_where_they_last_ran_and_vcpu_threads_are_left_out() {
        let base = std::env::temp_dir().join(format!("vcoord-wait-{}", std::process::id()));
        let (proc_dir, run_dir) = (base.join("proc"), base.join("run"));
        std::fs::create_dir_all(&run_dir).unwrap();
        // QEMU (pid 10) with vCPU thread 11 and an I/O thread 12; a host daemon (20).
        std::fs::write(
            run_dir.join("vm.xml"),
            "<domstatus pid='10'><vcpus><vcpu id='0' pid='11'/></vcpus><domain><uuid>u</uuid></domain></domstatus>",
        )
        .unwrap();
        let at = |tasks: &[(u32, u32, u64, u32)]| {
            fake_proc(&proc_dir, tasks);
            // The QEMU process's own stat (its start time) for the domain's check.
            std::fs::write(
                proc_dir.join("10/stat"),
                "10 (qemu) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 77 0",
            )
            .unwrap();
        };
        let mut r = ProcReader::new(&run_dir, &proc_dir);
        at(&[(10, 11, 1_000, 0), (10, 12, 2_000, 1), (20, 20, 3_000, 1)]);
        r.vcpus("vm", "u").unwrap();
        // The first reading only sets where each thread counts from.
        assert_eq!(r.other_wait_ns(), vec![]);
        // The vCPU waited 9 ms (its own figures have that); the I/O thread 5 ms on pCPU 1; the
        // daemon 4 ms, now on pCPU 0; a new thread's 50 ms before it was first seen are not
        // counted.
        at(&[
            (10, 11, 10_000_000, 0),
            (10, 12, 5_002_000, 1),
            (20, 20, 4_003_000, 0),
            (20, 21, 50_000_000, 1),
        ]);
        r.vcpus("vm", "u").unwrap();
        assert_eq!(r.other_wait_ns(), vec![(0, 4_000_000), (1, 5_000_000)]);
        // A thread id reused by a thread that waited less is counted from its new figure.
        at(&[
            (10, 11, 10_000_000, 0),
            (10, 12, 5_002_000, 1),
            (20, 20, 1_000, 0),
            (20, 21, 50_000_000, 1),
        ]);
        assert_eq!(r.other_wait_ns(), vec![(0, 4_000_000), (1, 5_000_000)]);
        at(&[
            (10, 11, 10_000_000, 0),
            (10, 12, 5_002_000, 1),
            (20, 20, 2_001_000, 0),
            (20, 21, 50_000_000, 1),
        ]);
        assert_eq!(r.other_wait_ns(), vec![(0, 6_000_000), (1, 5_000_000)]);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn two_busy_processes_on_one_pcpu_show_their_wait_there() {
        // Two shell loops bound to pCPU 0 take turns: each waits about half the time, and the
        // host's wait counted on pCPU 0 holds at least theirs, read from their own schedstat.
        let hog = || {
            std::process::Command::new("taskset")
                .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("taskset runs")
        };
        let mut hogs = [hog(), hog()];
        let wait_of = |pid: u32| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut r = ProcReader::new(Path::new("/nonexistent"), Path::new("/proc"));
        let counted = |r: &mut ProcReader| {
            r.other_wait_ns()
                .iter()
                .find(|(c, _)| *c == 0)
                .map_or(0, |&(_, w)| w)
        };
        let before: u64 = hogs.iter().map(|h| wait_of(h.id())).sum();
        let counted_before = counted(&mut r);
        std::thread::sleep(std::time::Duration::from_millis(600));
        let theirs: u64 = hogs.iter().map(|h| wait_of(h.id())).sum::<u64>() - before;
        let counted_after = counted(&mut r);
        for h in &mut hogs {
            let _ = h.kill();
            let _ = h.wait();
        }
        assert!(
            theirs > 200_000_000,
            "the two loops waited only {theirs} ns in 600 ms"
        );
        // Read a moment apart: a few ms of slack.
        assert!(
            counted_after - counted_before + 20_000_000 >= theirs,
            "counted {} ns on pCPU 0, the loops alone waited {theirs}",
            counted_after - counted_before
        );
    }

    #[test]
    fn a_qemu_process_in_its_own_cgroup2_group_has_its_domains_memory_pressure() {
        let dir = std::env::temp_dir().join(format!("vcoord-cg2-{}", std::process::id()));
        let (proc_dir, root) = (dir.join("proc"), dir.join("cgroup"));
        let group = root.join("machine.slice/machine-qemu-1-a.scope");
        std::fs::create_dir_all(proc_dir.join("42")).unwrap();
        std::fs::create_dir_all(proc_dir.join("43")).unwrap();
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(
            proc_dir.join("42/cgroup"),
            "0::/machine.slice/machine-qemu-1-a.scope\n",
        )
        .unwrap();
        std::fs::write(proc_dir.join("43/cgroup"), "5:memory:/\n0::/\n").unwrap();
        std::fs::write(
            group.join("memory.pressure"),
            "some avg10=2.50 avg60=1.00 avg300=0.20 total=7000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=100\n",
        )
        .unwrap();
        let p = group_memory_pressure(&proc_dir, &root, 42).unwrap();
        assert_eq!((p.some_total_us, p.full_total_us), (7000, Some(100)));
        assert_eq!(
            group_memory_pressure(&proc_dir, &root, 43),
            None,
            "the root group"
        );
        assert_eq!(
            group_memory_pressure(&proc_dir, &root, 44),
            None,
            "no such process"
        );
        // libvirt's layout: the main thread in `emulator`, vCPU threads in `vcpuN`; the
        // domain's group holds both, and its pressure is read, not the emulator's.
        let domain = root.join("machine/qemu-2-b.libvirt-qemu");
        std::fs::create_dir_all(domain.join("emulator")).unwrap();
        std::fs::create_dir_all(proc_dir.join("45")).unwrap();
        std::fs::write(
            proc_dir.join("45/cgroup"),
            "4:memory:/machine/qemu-2-b.libvirt-qemu/emulator\n0::/machine/qemu-2-b.libvirt-qemu/emulator\n",
        )
        .unwrap();
        let psi = |total: u64| format!("some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\n");
        std::fs::write(domain.join("memory.pressure"), psi(900)).unwrap();
        std::fs::write(domain.join("emulator/memory.pressure"), psi(5)).unwrap();
        assert_eq!(
            domain_group(&proc_dir, 45),
            Some(PathBuf::from("machine/qemu-2-b.libvirt-qemu"))
        );
        let p = group_memory_pressure(&proc_dir, &root, 45).unwrap();
        assert_eq!(
            p.some_total_us, 900,
            "the domain's group, not its emulator's"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let here = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount(here),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("35 31 0:32 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }
}
