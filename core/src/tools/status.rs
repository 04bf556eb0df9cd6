//! `vcoord status`: a one-shot table of a host's VMs (like virt-top), from two samples a short
//! window apart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::backend::{self, Backend, BackendError, BackendOptions};
use crate::runtime::snapshot::{SnapshotBuilder, SnapshotSettings};
use crate::units::KIB_PER_MIB;

/// Samples the host behind `uri` twice, `window_s` apart, and renders the table.
pub fn status_table(backend: &mut dyn Backend, window_s: f64) -> Result<String, BackendError> {
    let mut builder = SnapshotBuilder::new(SnapshotSettings {
        guest_budget_kib: None,
        stats_max_age_s: 2.0 * window_s.max(1.0) + 1.0,
        ..SnapshotSettings::default()
    });
    builder.build(backend.sample()?)?;
    backend.wait(
        Duration::from_secs_f64(window_s),
        &crate::backend::plain_sleep,
    );
    let snap = builder.build(backend.sample()?)?;
    let mut out = String::new();
    let mib = |kib: u64| kib / KIB_PER_MIB;
    let _ = writeln!(
        out,
        "host: {} pCPUs, {} MiB total, {} MiB free; {} VMs",
        snap.host().pcpus.len(),
        mib(snap.host().mem_total_kib),
        mib(snap.host().mem_free_kib),
        snap.vms().len()
    );
    let loads: Vec<String> = snap
        .host()
        .pcpus
        .iter()
        .map(|p| format!("{}:{:.0}%", p.pcpu.id, p.load_pct))
        .collect();
    let _ = writeln!(out, "pCPU load over {window_s:.1} s: {}", loads.join("  "));
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "VM", "vCPU", "load%", "wait%", "pCPU", "affinity", "max MiB", "actual", "unused"
    );
    let fmt_pct = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    for vm in snap.vms() {
        for (i, v) in vm.vcpus.iter().enumerate() {
            let (name, max, actual, unused) = if i == 0 {
                (
                    vm.name.as_str(),
                    mib(vm.memory.max_kib).to_string(),
                    mib(vm.memory.actual_kib).to_string(),
                    vm.memory
                        .unused_kib
                        .map(|u| mib(u).to_string())
                        .unwrap_or_else(|| "-".into()),
                )
            } else {
                ("", String::new(), String::new(), String::new())
            };
            let _ = writeln!(
                out,
                "{:<24} {:>5} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9}",
                name,
                v.id,
                fmt_pct(v.load_pct),
                fmt_pct(v.wait_pct),
                v.pcpu.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                v.affinity.to_string(),
                max,
                actual,
                unused
            );
        }
    }
    Ok(out)
}

/// Opens `uri` and prints its status table to stdout.
pub fn print_status(uri: &str, window_s: f64) -> Result<(), BackendError> {
    let mut backend = backend::open(uri, Path::new("."), &BackendOptions::default())?;
    print!("{}", status_table(backend.as_mut(), window_s)?);
    Ok(())
}
