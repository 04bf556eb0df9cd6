//! `vcoord status`: a one-shot table of a host's VMs (like virt-top). From a host URI it takes
//! two samples a short window apart; from a running daemon's endpoint (`http://ADDR`) it shows
//! what the daemon saw at its last tick, so both views come from one source of truth.
//! `--json` prints the same document the daemon serves at `/status.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use crate::backend::{self, Backend, BackendError, BackendOptions};
use crate::policy::MemoryPlan;
use crate::runtime::fleet::Fleet;
use crate::runtime::guard::GuardedPlan;
use crate::runtime::snapshot::{Snapshot, SnapshotBuilder, SnapshotSettings};
use crate::service::status::{HostStatus, StatusDocument};
use crate::show;
use crate::units::KIB_PER_MIB;
use vcoord_api::Kind;

/// The VM column is at least this wide ("VM" and short names line up as before)...
const MIN_NAME_WIDTH: usize = 24;
/// ...and at most this wide: longer names are cut in the middle.
const MAX_NAME_WIDTH: usize = 40;

/// Why a status could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The host could not be sampled.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The daemon's endpoint could not be read.
    #[error("{url}: {message}")]
    Endpoint {
        /// What was asked.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Samples the host behind `backend` twice, `window_s` apart.
pub fn sample_twice(backend: &mut dyn Backend, window_s: f64) -> Result<Snapshot, BackendError> {
    let mut builder = SnapshotBuilder::new(SnapshotSettings {
        guest_budget_kib: None,
        stats_max_age_s: 2.0 * window_s.max(1.0) + 1.0,
        measure_other_load: true,
        ..SnapshotSettings::default()
    });
    builder.build(backend.sample()?)?;
    backend.wait(
        Duration::from_secs_f64(window_s),
        &crate::backend::plain_sleep,
    );
    Ok(builder.build(backend.sample()?)?)
}

/// The status document of `target`: a host URI (sampled over `window_s`) or a daemon's
/// endpoint (`http://ADDR`).
pub fn status(target: &str, window_s: f64) -> Result<StatusDocument, StatusError> {
    if let Some(addr) = target.strip_prefix("http://") {
        let addr = addr.trim_end_matches('/');
        let url = format!("http://{addr}/status.json");
        let body = http_get(addr, "/status.json").map_err(|message| StatusError::Endpoint {
            url: url.clone(),
            message,
        })?;
        return serde_json::from_str(&body).map_err(|e| StatusError::Endpoint {
            url,
            message: format!("not a vcoord status document: {e}"),
        });
    }
    let mut backend = backend::open(target, Path::new("."), &BackendOptions::default())?;
    let snapshot = sample_twice(backend.as_mut(), window_s)?;
    // One look: contention and deficits as they are now (no plan, no history).
    let no_plan = MemoryPlan::default();
    let fleet = Fleet::default().signals(&snapshot, &no_plan, &GuardedPlan::default());
    let left_alone = snapshot
        .vms()
        .iter()
        .filter_map(|vm| Some((vm.name.clone(), backend.busy(&vm.name)?)))
        .collect();
    Ok(StatusDocument {
        hosts: vec![HostStatus {
            host: target.to_owned(),
            window_s,
            snapshot,
            fleet,
            left_alone,
        }],
        failed: Vec::new(),
    })
}

/// A plain HTTP/1.0 GET of `path` on `addr` (a daemon on this machine or the operator's
/// network): the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered `{status}`"));
    }
    Ok(body.to_owned())
}

/// The table of every host of a status document.
pub fn render(doc: &StatusDocument) -> String {
    let mut out = String::new();
    for h in &doc.hosts {
        out.push_str(&render_host(h));
    }
    for f in &doc.failed {
        let _ = writeln!(
            out,
            "host {}: FAILED: {}",
            show::shown(&f.host),
            show::one_line(&f.error, false)
        );
    }
    out
}

fn render_host(h: &HostStatus) -> String {
    let snap = &h.snapshot;
    let mut out = String::new();
    let mib = |kib: u64| kib / KIB_PER_MIB;
    let _ = writeln!(
        out,
        "host {}: {} pCPUs, {} MiB total, {} MiB free; {} VMs",
        show::shown(&h.host),
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
    let _ = writeln!(
        out,
        "pCPU load over {:.1} s: {}",
        h.window_s,
        loads.join("  ")
    );
    let others: Vec<String> = snap
        .host()
        .pcpus
        .iter()
        .filter_map(|p| Some(format!("{}:{:.0}%", p.pcpu.id, p.other_pct?)))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "pCPU busy outside the VMs: {}", others.join("  "));
    }
    let stalls: Vec<String> = snap
        .host()
        .pressure
        .by_resource()
        .into_iter()
        .filter_map(|(name, stall)| Some(format!("{name} {:.1}%", stall?.some_now_pct())))
        .collect();
    if !stalls.is_empty() {
        let _ = writeln!(out, "pressure stall (some): {}", stalls.join("  "));
    }
    for kind in Kind::ALL {
        let d = h.fleet.deficit(kind);
        if d.amount <= 0.0 {
            continue;
        }
        let amount = match kind {
            Kind::Cpu => format!("{:.0}% of a pCPU", d.amount),
            Kind::Memory => format!("{:.0} MiB", d.amount / KIB_PER_MIB as f64),
        };
        let best = h
            .fleet
            .vms
            .iter()
            .filter_map(|v| Some((v.relief(kind)?, v)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let _ = writeln!(
            out,
            "{} deficit: {amount} for {:.0} s{}{}",
            kind.key(),
            d.lasted_s,
            if d.cannot_satisfy {
                "; cannot satisfy its guests"
            } else {
                ""
            },
            best.map(|(r, v)| format!(
                "; moving {} relieves {:.0}%",
                show::shown(&v.vm),
                100.0 * r
            ))
            .unwrap_or_default()
        );
    }
    // The name column fits the longest name, within bounds; longer names are cut.
    let width = snap
        .vms()
        .iter()
        .map(|vm| show::fit(&vm.name, MAX_NAME_WIDTH).chars().count())
        .max()
        .unwrap_or(0)
        .max(MIN_NAME_WIDTH);
    let _ = writeln!(
        out,
        "{:<width$} {:>5} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "VM", "vCPU", "load%", "wait%", "pCPU", "affinity", "max MiB", "actual", "unused", "ready%"
    );
    // CPU ready of each VM (its vCPUs' wait averaged), on its first row.
    let ready_of: BTreeMap<&str, Option<f64>> = h
        .fleet
        .vms
        .iter()
        .map(|v| (v.vm.as_str(), v.cpu_ready_pct))
        .collect();
    let fmt_pct = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    for vm in snap.vms() {
        for (i, v) in vm.vcpus.iter().enumerate() {
            let (name, max, actual, unused, ready) = if i == 0 {
                (
                    show::fit(&vm.name, MAX_NAME_WIDTH),
                    mib(vm.memory.max_kib).to_string(),
                    mib(vm.memory.actual_kib).to_string(),
                    vm.memory
                        .unused_kib
                        .map(|u| mib(u).to_string())
                        .unwrap_or_else(|| "-".into()),
                    fmt_pct(ready_of.get(vm.name.as_str()).copied().flatten()),
                )
            } else {
                Default::default()
            };
            let name = match h.left_alone.get(&vm.name).filter(|_| i == 0) {
                // The state in the name column, so the row keeps its width: `web-1 (paused)`.
                Some(why) => show::fit(
                    &format!("{} ({})", vm.name, state_word(why)),
                    MAX_NAME_WIDTH,
                ),
                None => name,
            };
            let _ = writeln!(
                out,
                "{:<width$} {:>5} {:>7} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>7}",
                name,
                v.id,
                fmt_pct(v.load_pct),
                fmt_pct(v.wait_pct),
                v.pcpu.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                v.affinity.to_string(),
                max,
                actual,
                unused,
                ready
            );
        }
    }
    for v in &h.fleet.vms {
        match &v.dedicated {
            Some(Ok(pcpus)) => {
                let ids: Vec<String> = pcpus.iter().map(u32::to_string).collect();
                let _ = writeln!(
                    out,
                    "dedicated: {}: pCPU {}",
                    show::shown(&v.vm),
                    ids.join(", ")
                );
            }
            Some(Err(why)) => {
                let _ = writeln!(
                    out,
                    "left shared: {}: {}",
                    show::shown(&v.vm),
                    show::one_line(why, false)
                );
            }
            None => {}
        }
    }
    for (vm, why) in &h.left_alone {
        let _ = writeln!(
            out,
            "left alone: {}: {}",
            show::shown(vm),
            show::one_line(why, false)
        );
    }
    out
}

/// One word for why a VM is left alone, for the table.
fn state_word(why: &str) -> &'static str {
    if why.contains("job") {
        "in a job"
    } else if why.contains("paused") || why.contains("Paused") {
        "paused"
    } else {
        "not running"
    }
}

/// Prints the status of `target` as a table, or as JSON.
pub fn print_status(target: &str, window_s: f64, json: bool) -> Result<(), StatusError> {
    let doc = status(target, window_s)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render(&doc));
    }
    Ok(())
}
