//! Real guests for end-to-end tests: transient `<domain type='qemu'>` domains booting the test
//! image, always destroyed when the test ends (even when it fails), and readings of pinning and
//! balloons through `virsh` (a connection separate from vcoord's).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const URI: &str = "qemu:///system";

/// Checks that an end-to-end test can run: libvirtd answers at `URI` and the guest image is
/// there; otherwise the test fails saying what is missing. The tests are `#[ignore]`d, so a
/// plain `cargo test` lists them as ignored on a machine without libvirt; `scripts/test.sh`
/// runs them with `--include-ignored` after `scripts/setup-host.sh` and `scripts/setup-test.sh`.
pub fn require_e2e() {
    let missing = match virsh(&["version"]) {
        Err(e) => Some(format!("libvirtd is not available at {URI}: {}", e.trim())),
        Ok(_) if !guest_dir().join("vmlinuz").exists() => {
            Some(format!("no guest image in {}", guest_dir().display()))
        }
        Ok(_) => None,
    };
    if let Some(why) = missing {
        panic!("{why}; run scripts/setup-host.sh and scripts/setup-test.sh as root first");
    }
}

/// Runs virsh against `URI`; stdout on success, stderr on failure.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .map_err(|e| format!("virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Where the guest image lives.
pub fn guest_dir() -> PathBuf {
    PathBuf::from(std::env::var("VCOORD_GUEST_DIR").unwrap_or("/var/lib/vcoord/guest".into()))
}

/// One guest to boot.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub vcpus: u32,
    pub max_mib: u64,
    pub start_mib: u64,
    /// pCPU of each vCPU at start (unpinned when empty).
    pub pins: Vec<u32>,
    /// Workload keys for the guest's kernel command line (`vc.cpu=100 vc.mem=...`).
    pub workload: String,
    /// Whether the guest loads its balloon driver.
    pub balloon_driver: bool,
    /// Stats period in the domain XML (0: none; vcoord sets it).
    pub stats_period_s: u32,
    /// Elements of the domain's `<metadata>`.
    pub metadata: String,
    /// Size of a virtio-mem device beside the boot memory (`max_mib`), 0 for none; the domain
    /// then has one NUMA cell and the guest onlines plugged blocks as movable.
    pub virtio_mem_mib: u64,
    /// Whether the guest loads its virtio-mem driver.
    pub virtio_mem_driver: bool,
    /// Whether its driver gives plugged memory back (`unplug_online`).
    pub virtio_mem_unplug: bool,
}

impl GuestSpec {
    pub fn new(name: &str, workload: &str) -> Self {
        Self {
            name: name.into(),
            vcpus: 1,
            max_mib: 1024,
            start_mib: 512,
            pins: Vec::new(),
            workload: workload.into(),
            balloon_driver: true,
            stats_period_s: 0,
            metadata: String::new(),
            virtio_mem_mib: 0,
            virtio_mem_driver: true,
            virtio_mem_unplug: true,
        }
    }

    /// Booted with `boot_mib` and a virtio-mem device of `device_mib` (2 MiB blocks).
    pub fn virtio_mem(mut self, boot_mib: u64, device_mib: u64) -> Self {
        self.max_mib = boot_mib;
        self.start_mib = boot_mib;
        self.virtio_mem_mib = device_mib;
        self
    }

    /// Adds an element to the domain's `<metadata>`.
    pub fn metadata(mut self, element: &str) -> Self {
        self.metadata.push_str(element);
        self
    }

    pub fn pinned(mut self, pins: &[u32]) -> Self {
        self.pins = pins.to_vec();
        self
    }

    fn xml(&self, console: &str) -> String {
        let dir = guest_dir();
        let cputune: String = self
            .pins
            .iter()
            .enumerate()
            .map(|(v, c)| format!("<vcpupin vcpu='{v}' cpuset='{c}'/>"))
            .collect();
        let stats = if self.stats_period_s > 0 {
            format!("<stats period='{}'/>", self.stats_period_s)
        } else {
            String::new()
        };
        let noballoon = if self.balloon_driver {
            ""
        } else {
            " vc.noballoon"
        };
        let (max_memory, numa, memhp, virtio_mem) = if self.virtio_mem_mib > 0 {
            (
                format!("<maxMemory slots='8' unit='MiB'>{}</maxMemory>", self.max_mib + self.virtio_mem_mib + 1024),
                format!(
                    "<cpu><numa><cell id='0' cpus='0-{}' memory='{}' unit='MiB'/></numa></cpu>",
                    self.vcpus - 1,
                    self.max_mib
                ),
                match (self.virtio_mem_driver, self.virtio_mem_unplug) {
                    (false, _) => " memhp_default_state=online_movable vc.novirtiomem",
                    (true, false) => " memhp_default_state=online_movable vc.nounplug",
                    (true, true) => " memhp_default_state=online_movable",
                },
                format!(
                    "<memory model='virtio-mem'><target><size unit='MiB'>{}</size><node>0</node>\
                     <block unit='MiB'>2</block><requested unit='MiB'>0</requested></target></memory>",
                    self.virtio_mem_mib
                ),
            )
        } else {
            Default::default()
        };
        format!(
            "<domain type='qemu'><name>{name}</name><metadata>{metadata}</metadata>{max_memory}\
             <memory unit='MiB'>{max}</memory><currentMemory unit='MiB'>{start}</currentMemory>\
             <vcpu>{vcpus}</vcpu><cputune>{cputune}</cputune>{numa}\
             <features><acpi/><apic/></features>\
             <os><type arch='x86_64'>hvm</type><kernel>{dir}/vmlinuz</kernel><initrd>{dir}/initrd.gz</initrd>\
             <cmdline>console=ttyS0 quiet no_timer_check {workload}{noballoon}{memhp}</cmdline></os>\
             <on_crash>destroy</on_crash>\
             <devices><serial type='file'><source path='{console}'/></serial>\
             <memballoon model='virtio'>{stats}</memballoon>{virtio_mem}</devices></domain>",
            name = self.name,
            max = self.max_mib,
            start = self.start_mib,
            vcpus = self.vcpus,
            dir = dir.display(),
            workload = self.workload,
            metadata = self.metadata,
        )
    }
}

/// Guests of one test, destroyed on drop.
pub struct Guests {
    pub prefix: String,
    pub dir: PathBuf,
    pub names: Vec<String>,
}

impl Guests {
    /// A fresh set; destroys leftovers of an earlier run with the same prefix.
    pub fn new(prefix: &str) -> Self {
        let prefix = format!("vce2e-{prefix}-");
        destroy_prefixed(&prefix);
        let dir = super::scratch(&prefix);
        Self {
            prefix,
            dir,
            names: Vec::new(),
        }
    }

    /// Full domain name of a guest.
    pub fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Boots a guest (name given without the prefix).
    pub fn start(&mut self, mut spec: GuestSpec) -> String {
        spec.name = self.name(&spec.name);
        let console = self.console(&spec.name);
        let _ = std::fs::remove_file(&console);
        let xml_path = self.dir.join(format!("{}.xml", spec.name));
        std::fs::write(&xml_path, spec.xml(console.to_str().unwrap())).unwrap();
        virsh(&["create", xml_path.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.name));
        self.names.push(spec.name.clone());
        spec.name
    }

    pub fn console(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.console"))
    }

    pub fn console_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.console(name)).unwrap_or_default()
    }

    /// Waits until every guest's workload has started.
    pub fn wait_booted(&self, timeout: Duration) {
        let start = Instant::now();
        for name in &self.names {
            while !self.console_text(name).contains("vcwork: started") {
                assert!(
                    start.elapsed() < timeout,
                    "{name} did not boot in {timeout:?}: {}",
                    self.console_text(name)
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    /// Waits until the balloon of every guest with a driver has reached its start size. Until
    /// its driver inflates the balloon, a freshly booted guest holds its full memory.
    pub fn wait_balloons_settled(&self, start_mib: u64, timeout: Duration) {
        let start = Instant::now();
        // Within 8 MiB of the start size is near enough (a guest may not give up the last
        // pages), but a balloon still moving has not settled: a guest at 514 MiB went on to
        // 512 after a test had taken 514 as its size. Settled is three readings alike, 1 s.
        let mut alike = 0;
        let mut last: Option<Vec<Option<u64>>> = None;
        loop {
            let b = balloons(&self.names);
            let near = self.names.iter().all(|n| {
                let f = b.get(n);
                // a guest without a driver reports no guest statistics: nothing to wait for
                let has_driver = f.is_some_and(|f| f.get("last-update").is_some_and(|&t| t > 0));
                !has_driver
                    || f.and_then(|f| f.get("current"))
                        .is_some_and(|&c| c <= (start_mib + 8) * 1024)
            });
            let now: Vec<Option<u64>> = self
                .names
                .iter()
                .map(|n| b.get(n).and_then(|f| f.get("current")).copied())
                .collect();
            alike = if near && last.as_ref() == Some(&now) {
                alike + 1
            } else {
                0
            };
            if alike >= 2 {
                return;
            }
            last = Some(now);
            assert!(
                start.elapsed() < timeout,
                "balloons did not settle in {timeout:?}: {b:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether a guest's console shows the kernel's OOM killer.
    pub fn oom_seen(&self, name: &str) -> bool {
        let text = self.console_text(name);
        text.contains("Out of memory") || text.contains("oom-kill")
    }

    pub fn destroy(&self, name: &str) {
        let _ = virsh(&["destroy", name]);
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        destroy_prefixed(&self.prefix);
    }
}

fn destroy_prefixed(prefix: &str) {
    if let Ok(list) = virsh(&["list", "--name"]) {
        for name in list
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(prefix))
        {
            let _ = virsh(&["destroy", name]);
        }
    }
}

/// Parses `0-2,5` into pCPU ids.
pub fn parse_cpulist(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The live affinity of vCPU 0 of a domain, read through libvirt.
pub fn affinity(name: &str) -> Vec<u32> {
    let out = virsh(&["vcpupin", name, "--live"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let vcpu = cols.next()?.parse::<u32>().ok()?;
            (vcpu == 0).then(|| cols.next().map(parse_cpulist))?
        })
        .next()
        .unwrap_or_default()
}

/// Balloon fields (KiB) of the given domains.
pub fn balloons(names: &[String]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut args = vec!["domstats", "--balloon"];
    args.extend(names.iter().map(String::as_str));
    let out = virsh(&args).unwrap_or_default();
    let mut all = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Domain: '") {
            current = Some(rest.trim_end_matches('\'').to_string());
        } else if let (Some(dom), Some((k, v))) = (&current, line.split_once('=')) {
            if let Ok(v) = v.parse() {
                all.entry(dom.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(k.trim_start_matches("balloon.").to_string(), v);
            }
        }
    }
    all
}

/// Host free memory in MiB (as libvirt reports it).
pub fn host_free_mib() -> u64 {
    virsh(&["freecell", "--all"])
        .ok()
        .and_then(|o| {
            o.lines().find(|l| l.contains("Total")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}
