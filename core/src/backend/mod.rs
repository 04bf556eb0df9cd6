//! Where samples come from and where actions go. The backend is chosen by the host's URI:
//! `sim:<scenario.toml>` for the embedded simulator, anything else is a libvirt URI.

pub mod ksm;
pub mod libvirt;
pub mod psi;
pub mod sim;

use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::backend::sim::{ScenarioError, SimBackend};
use crate::cpuset::CpuSet;
use crate::model::Sample;

/// A failure of one backend operation, naming what it was about.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The domain is gone (destroyed or shut down mid-tick).
    #[error("domain {vm}: no longer exists")]
    VmGone {
        /// Domain name.
        vm: String,
    },
    /// The hypervisor refused an operation on a domain.
    #[error("domain {vm}: {op} refused: {message}")]
    Refused {
        /// Domain name.
        vm: String,
        /// What was attempted.
        op: &'static str,
        /// What the hypervisor said.
        message: String,
    },
    /// The host refused a change of its own (KSM's settings).
    #[error("host: {op} refused: {message}")]
    HostRefused {
        /// What was attempted.
        op: &'static str,
        /// What the host said.
        message: String,
    },
    /// The connection to the hypervisor failed or was lost.
    #[error("connection to {uri}: {message}")]
    Connection {
        /// URI of the connection.
        uri: String,
        /// What went wrong.
        message: String,
    },
    /// The simulator scenario could not be loaded.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// What the backend reported cannot be true (a VM listed twice, say).
    #[error(transparent)]
    Inconsistent(#[from] vcoord_api::snapshot::InvalidSnapshot),
}

/// Counters of what the backend did during the last tick (for cost accounting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCalls {
    /// Calls made to the hypervisor API while sampling.
    pub sample_calls: u32,
    /// Calls made to the hypervisor API while actuating.
    pub actuate_calls: u32,
    /// Hypervisor events that brought news in place of a call (virtio-mem size changes).
    pub events: u32,
}

/// Sleeps for `duration`, uninterrupted (for callers with no stop to watch).
pub fn plain_sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// A source of samples and a sink of actions for one host.
pub trait Backend: Send {
    /// A short description (URI and what it drives) for logs.
    fn describe(&self) -> String;

    /// Samples the host and all running VMs now.
    fn sample(&mut self) -> Result<Sample, BackendError>;

    /// Lets the given vCPU run only on `cpus` (live).
    fn pin_vcpu(&mut self, vm: &str, vcpu: u32, cpus: &CpuSet) -> Result<(), BackendError>;

    /// Sets the VM's balloon target (live): libvirt counts it over the boot memory only.
    fn set_balloon_target(&mut self, vm: &str, target_kib: u64) -> Result<(), BackendError>;

    /// Asks the VM's virtio-mem device `alias` to plug `requested_kib` (live; a multiple of
    /// its block, at most its size: see [`vcoord_api::MemoryView::split`]). The guest follows
    /// in its own time.
    fn set_virtio_mem(
        &mut self,
        vm: &str,
        alias: &str,
        _requested_kib: u64,
    ) -> Result<(), BackendError> {
        Err(BackendError::Refused {
            vm: vm.to_string(),
            op: "set virtio-mem request",
            message: format!("this backend drives no virtio-mem device ({alias})"),
        })
    }

    /// Sets what `tune` names of the VM's CPU weight, vCPU quota and period, and emulator
    /// affinity (live).
    fn set_cputune(&mut self, vm: &str, _tune: &vcoord_api::CpuTune) -> Result<(), BackendError> {
        Err(BackendError::Refused {
            vm: vm.to_string(),
            op: "tune CPU",
            message: "this backend sets no CPU weights, quotas or emulator affinity".into(),
        })
    }

    /// Sets the host's same-page merging (KSM): ksmd's run state and scan rate.
    fn set_ksm(&mut self, _ksm: &vcoord_api::KsmPlan) -> Result<(), BackendError> {
        Err(BackendError::HostRefused {
            op: "set KSM",
            message: "this backend drives no KSM".into(),
        })
    }

    /// Asks the guest to report memory statistics every `period_s` seconds.
    fn set_memory_stats_period(&mut self, vm: &str, period_s: u32) -> Result<(), BackendError>;

    /// What `vm` is in the middle of, if it must be left alone: a job (an outgoing or incoming
    /// migration, a dump, a snapshot, a save), or a state other than running. Asked just before
    /// acting on a VM: libvirt holds a running job's lock, so a balloon change would wait for it
    /// (up to 30 s) and then fail, and a pin would fight whoever runs the job.
    fn busy(&mut self, _vm: &str) -> Option<String> {
        None
    }

    /// Lets `interval` pass before the next tick: a real backend sleeps (through `sleep`, which
    /// the daemon cuts short on a stop request); the simulator advances its virtual clock.
    fn wait(&mut self, interval: Duration, sleep: &dyn Fn(Duration));

    /// True when the backend has nothing more to show (the end of a simulated scenario).
    fn finished(&self) -> bool {
        false
    }

    /// Hypervisor calls made since the last call of this method.
    fn take_calls(&mut self) -> BackendCalls {
        BackendCalls::default()
    }
}

/// Options of a backend that come from the host configuration.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Run the simulator in real time instead of as fast as possible.
    pub realtime: bool,
    /// The simulator's noise seed instead of the scenario's.
    pub sim_seed: Option<u64>,
    /// How a libvirt host is sampled.
    pub libvirt: libvirt::LibvirtOptions,
}

/// Opens the backend a URI names. `base_dir` resolves a relative scenario path (the directory
/// of the configuration file).
pub fn open(
    uri: &str,
    base_dir: &Path,
    options: &BackendOptions,
) -> Result<Box<dyn Backend>, BackendError> {
    match uri.strip_prefix("sim:") {
        Some(path) => {
            let mut scenario = sim::Scenario::from_file(&base_dir.join(path))?;
            if let Some(seed) = options.sim_seed {
                scenario.seed = seed;
            }
            Ok(Box::new(SimBackend::new(scenario, options.realtime)))
        }
        None => Ok(Box::new(libvirt::LibvirtBackend::connect_with(
            uri,
            &options.libvirt,
        )?)),
    }
}

/// A file name for the host `uri` reaches (its [`host_identity`], else the URI): letters,
/// digits, `-` and `.` kept, the rest `_`. Files kept per host (its lock, its learned state)
/// are named by it, so that two spellings of one host share them.
pub fn host_file_name(uri: &str) -> String {
    host_identity(uri)
        .unwrap_or_else(|| uri.to_owned())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a libvirt URI really reaches, as a key: two URIs with the same key drive the same
/// hypervisor on the same machine (`qemu:///system`, `qemu+unix:///system`,
/// `qemu+ssh://localhost/system` and `qemu:///system?socket=/var/run/libvirt/libvirt-sock` are
/// one host). The transport, the user, the port and the query are dropped, except a `socket=`
/// path; a host name that is this machine (`localhost`, a loopback address, its own name)
/// counts as local. On this machine the key of a system URI is the daemon's socket, its path
/// resolved (symlinks followed, `..` and doubled slashes taken out), the default socket where
/// the URI names none. `None` for a simulated host.
pub fn host_identity(uri: &str) -> Option<String> {
    if uri.starts_with("sim:") {
        return None;
    }
    let uri = uri.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Some(uri.to_ascii_lowercase());
    };
    let driver = scheme
        .split('+')
        .next()
        .unwrap_or(scheme)
        .to_ascii_lowercase();
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    }
    .to_ascii_lowercase();
    let local = is_this_machine(&host);
    let path = path.trim_matches('/');
    let socket = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("socket="))
        .map(percent_decoded);
    if local && path == "system" {
        let socket = socket.unwrap_or_else(|| default_system_socket().to_owned());
        return Some(format!("{driver}+unix:{}", resolved_path(&socket)));
    }
    let place = if local { "local".to_owned() } else { host };
    let socket = socket
        .map(|s| format!("?socket={}", lexically_normal(&s)))
        .unwrap_or_default();
    Some(format!("{driver}://{place}/{path}{socket}"))
}

/// The socket a local system URI without `socket=` reaches: the modular QEMU daemon's where
/// it runs, else libvirtd's (the order libvirt's client tries them in).
fn default_system_socket() -> &'static str {
    const MODULAR: &str = "/run/libvirt/virtqemud-sock";
    const MONOLITHIC: &str = "/run/libvirt/libvirt-sock";
    if Path::new(MODULAR).exists() && !Path::new(MONOLITHIC).exists() {
        MODULAR
    } else {
        MONOLITHIC
    }
}

/// `path` with its symlinks followed where it exists (its directory where it does not), and
/// written plainly.
fn resolved_path(path: &str) -> String {
    let plain = lexically_normal(path);
    let p = Path::new(&plain);
    if let Ok(real) = p.canonicalize() {
        return real.display().to_string();
    }
    match (
        p.parent().and_then(|d| d.canonicalize().ok()),
        p.file_name(),
    ) {
        (Some(dir), Some(name)) => dir.join(name).display().to_string(),
        _ => plain,
    }
}

/// `path` without `.`, `..` and doubled slashes, by its text alone.
fn lexically_normal(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A URI query value with its `%XX` escapes decoded (kept as written where one is malformed).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_this_machine(host: &str) -> bool {
    if host.is_empty() || host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let own = own.trim().to_ascii_lowercase();
    !own.is_empty() && (host == own || host.split('.').next() == Some(own.as_str()))
}

#[cfg(test)]
mod identity_tests {
    use super::host_identity;

    #[test]
    fn uris_that_reach_one_host_have_one_identity() {
        let local = host_identity("qemu:///system").unwrap();
        for same in [
            "qemu+unix:///system",
            "qemu:///system/",
            "QEMU+ssh://root@localhost/system",
            "qemu+tcp://127.0.0.1:16509/system",
            "qemu+tls://[::1]/system?no_verify=1",
            "qemu:///system?socket=/run/libvirt/libvirt-sock",
            "qemu:///system?socket=/var/run/libvirt/libvirt-sock",
            "qemu:///system?socket=//run/libvirt/libvirt-sock",
            "qemu:///system?socket=/run/libvirt/../libvirt/./libvirt-sock",
            "qemu:///system?socket=%2Frun%2Flibvirt%2Flibvirt-sock",
            "qemu+unix:///system?socket=/run/libvirt/libvirt-sock&mode=legacy",
        ] {
            assert_eq!(host_identity(same).unwrap(), local, "{same}");
        }
        for other in [
            "qemu:///session",
            "qemu+ssh://b/system",
            "lxc:///system",
            "qemu:///system?socket=/run/other.sock",
        ] {
            assert_ne!(host_identity(other).unwrap(), local, "{other}");
        }
        assert_eq!(
            host_identity("qemu+ssh://admin@B.example:22/system"),
            host_identity("qemu+tls://b.example/system")
        );
        assert_eq!(host_identity("sim:x.toml"), None);
    }

    /// A socket reached through a symlink is the socket it leads to.
    #[test]
    fn a_socket_is_known_by_its_resolved_path() {
        let dir = std::env::temp_dir().join(format!("vcoord-identity-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let via =
            |d: &str| host_identity(&format!("qemu:///system?socket={}/{d}/sock", dir.display()));
        assert_eq!(via("link"), via("real"));
        assert_eq!(via("real/../link"), via("real"));
        assert_ne!(via("real"), host_identity("qemu:///system"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
