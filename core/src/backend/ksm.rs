//! The kernel's same-page merging (KSM) on the local host, as it stands: its settings and
//! counters under `/sys/kernel/mm/ksm` and the CPU time of `ksmd`, the kernel thread that
//! scans and merges. A kernel without KSM (no such directory) gives none.

use std::path::Path;

use crate::model::KsmSample;

/// Where the kernel shows KSM.
pub const SYS_DIR: &str = "/sys/kernel/mm/ksm";

/// Reads KSM under `sys_dir` and ksmd's run time under `proc_dir`; `None` where the kernel
/// has no KSM.
pub fn read(sys_dir: &Path, proc_dir: &Path) -> Option<KsmSample> {
    let number = |name: &str| -> Option<u64> {
        std::fs::read_to_string(sys_dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(KsmSample {
        run: number("run")?,
        pages_shared: number("pages_shared")?,
        pages_sharing: number("pages_sharing")?,
        pages_unshared: number("pages_unshared").unwrap_or(0),
        pages_volatile: number("pages_volatile").unwrap_or(0),
        full_scans: number("full_scans").unwrap_or(0),
        pages_to_scan: number("pages_to_scan").unwrap_or(0),
        sleep_millisecs: number("sleep_millisecs").unwrap_or(0),
        advisor_mode: std::fs::read_to_string(sys_dir.join("advisor_mode"))
            .ok()
            .and_then(|text| selected(&text)),
        page_kib: page_kib(proc_dir),
        ksmd_run_ns: ksmd_run_ns(proc_dir),
    })
}

/// Writes `plan` under `sys_dir`: the scan settings first, then `run`, so that ksmd starts at
/// the rate asked for.
pub fn write(sys_dir: &Path, plan: &vcoord_api::KsmPlan) -> std::io::Result<()> {
    let set = |name: &str, value: u64| {
        std::fs::write(sys_dir.join(name), value.to_string()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", sys_dir.join(name).display()))
        })
    };
    set("pages_to_scan", plan.pages_to_scan)?;
    set("sleep_millisecs", plan.sleep_ms)?;
    set("run", u64::from(plan.run))
}

/// The bracketed choice of a sysfs choice file (`[none] scan-time` gives `none`).
pub fn selected(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// The kernel's base page size, KiB: what KSM counts in. From the first mapping's
/// `KernelPageSize` in `/proc/self/smaps`; 4 where that cannot be read.
fn page_kib(proc_dir: &Path) -> u64 {
    std::fs::read_to_string(proc_dir.join("self/smaps"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(4)
}

/// ksmd's run time so far, ns: the kernel thread named `ksmd` (a child of kthreadd, pid 2),
/// found among the first processes.
fn ksmd_run_ns(proc_dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(proc_dir).ok()?;
    let pid = entries.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "ksmd").then_some(pid)
    })?;
    let text = std::fs::read_to_string(proc_dir.join(pid.to_string()).join("schedstat")).ok()?;
    super::libvirt::procfs::schedstat(&text).map(|(run, _)| run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_file_gives_its_bracketed_choice() {
        assert_eq!(selected("[none] scan-time\n").as_deref(), Some("none"));
        assert_eq!(selected("none [scan-time]\n").as_deref(), Some("scan-time"));
        assert_eq!(selected("none scan-time\n"), None);
    }

    #[test]
    fn this_hosts_ksm_is_read_with_ksmd() {
        let Some(k) = read(Path::new(SYS_DIR), Path::new("/proc")) else {
            // Without KSM in the kernel there is nothing to read; the fake one below still is.
            assert!(!Path::new(SYS_DIR).exists());
            return;
        };
        assert!(k.run <= 2, "run = {}", k.run);
        assert!(k.page_kib >= 4);
        assert!(k.ksmd_run_ns.is_some(), "ksmd not found");
    }

    #[test]
    fn a_kernel_without_ksm_gives_none_and_a_fake_one_its_figures() {
        let dir = std::env::temp_dir().join(format!("vcoord-ksm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (sys, proc) = (dir.join("ksm"), dir.join("proc"));
        assert_eq!(read(&sys, &proc), None);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(proc.join("39")).unwrap();
        for (name, value) in [
            ("run", "1"),
            ("pages_shared", "10"),
            ("pages_sharing", "250"),
            ("pages_unshared", "7"),
            ("pages_volatile", "3"),
            ("full_scans", "4"),
            ("pages_to_scan", "100"),
            ("sleep_millisecs", "20"),
            ("advisor_mode", "none [scan-time]"),
        ] {
            std::fs::write(sys.join(name), format!("{value}\n")).unwrap();
        }
        std::fs::write(proc.join("39/comm"), "ksmd\n").unwrap();
        std::fs::write(proc.join("39/schedstat"), "123456 7 8\n").unwrap();
        let k = read(&sys, &proc).unwrap();
        assert_eq!(
            k,
            KsmSample {
                run: 1,
                pages_shared: 10,
                pages_sharing: 250,
                pages_unshared: 7,
                pages_volatile: 3,
                full_scans: 4,
                pages_to_scan: 100,
                sleep_millisecs: 20,
                advisor_mode: Some("scan-time".into()),
                page_kib: 4,
                ksmd_run_ns: Some(123_456),
            }
        );
        // Written back as the kernel takes them, and read again.
        let plan = vcoord_api::KsmPlan {
            run: false,
            pages_to_scan: 400,
            sleep_ms: 10,
        };
        write(&sys, &plan).unwrap();
        let k = read(&sys, &proc).unwrap();
        assert_eq!((k.run, k.pages_to_scan, k.sleep_millisecs), (0, 400, 10));
        assert_eq!(std::fs::read_to_string(sys.join("run")).unwrap(), "0");
        // A file that cannot be written is named.
        std::fs::remove_file(sys.join("sleep_millisecs")).unwrap();
        std::fs::create_dir(sys.join("sleep_millisecs")).unwrap();
        let err = write(&sys, &plan).unwrap_err().to_string();
        assert!(err.contains("sleep_millisecs"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
