//! `vcoord scenario from-record`: a live recording (`vcoord run --record`) turned into a
//! simulator scenario, so that policies can be compared on a host's own workload.
//!
//! What is kept, per VM: the demand of each vCPU over time (utilization plus run-queue wait,
//! which is what it asked for wherever it ran), the memory its guest used (from one report
//! where the recording holds snapshots, else size minus unused), its size, maximum, vCPU count,
//! initial pins, when it came and went, and whether it reported memory statistics (a balloon
//! driver). Per host: the pCPUs, their topology and the memory (from the snapshots, when
//! recorded). Series are compressed into phases: a CPU phase lasts while the demand stays
//! within [`CPU_TOLERANCE_PCT`] of the phase's mean, memory moves under [`MEM_TOLERANCE_MIB`]
//! are held, rises become growth at the measured rate and drops happen at once.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vcoord_api::vcpu_demand_pct;

use crate::backend::sim::GUEST_RESERVED_MIB;
use crate::runtime::record::{TickRecord, VmRecord};
use crate::units::KIB_PER_MIB_F64;

/// Demand within this many points of a phase's mean stays in that phase.
pub const CPU_TOLERANCE_PCT: f64 = 5.0;
/// Memory moves smaller than this are held, not followed.
pub const MEM_TOLERANCE_MIB: f64 = 8.0;
/// A hold this short between two rises is the gap between two guest reports, not a pause.
pub const REPORT_GAP_S: f64 = 3.0;
/// A VM's first ticks, whose memory figures are not used.
const SETTLE_TICKS: usize = 2;

/// A VM as seen over the recording.
struct Seen<'a> {
    first: usize,
    last: usize,
    /// (record index, the VM there).
    ticks: Vec<(usize, &'a VmRecord)>,
}

/// The scenario (TOML text) that plays the recording's workload; `name` names it, `source`
/// says where it came from (in its description).
pub fn scenario_from_records(
    records: &[TickRecord],
    name: &str,
    source: &str,
) -> Result<String, String> {
    let (first, last) = match (records.first(), records.last()) {
        (Some(f), Some(l)) if records.len() >= 2 => (f, l),
        _ => return Err("the recording needs two ticks or more".into()),
    };
    let interval = (last.time_s - first.time_s) / (records.len() - 1) as f64;
    let t0 = first.time_s;
    let pcpu_ids: Vec<u32> = if first.pcpus.is_empty() {
        (0..first.pcpu_load_pct.len() as u32).collect()
    } else {
        first.pcpus.clone()
    };
    if pcpu_ids.is_empty() {
        return Err("the recording has no pCPUs".into());
    }
    let index_of = |id: u32| pcpu_ids.iter().position(|&p| p == id);

    // Every VM, in order of first appearance.
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        for vm in &r.vms {
            let s = seen.entry(&vm.name).or_insert_with(|| {
                order.push(&vm.name);
                Seen {
                    first: i,
                    last: i,
                    ticks: Vec::new(),
                }
            });
            s.last = i;
            s.ticks.push((i, vm));
        }
    }

    let snapshot = records.iter().find_map(|r| r.snapshot.as_ref());
    let (memory_mib, host_used_mib, threads, nodes) = match snapshot {
        Some(s) => {
            let host = s.host();
            let total = host.mem_total_kib as f64 / KIB_PER_MIB_F64;
            let guests: f64 = s
                .vms()
                .iter()
                .map(|vm| vm.memory.actual_kib as f64 / KIB_PER_MIB_F64)
                .sum();
            let free = host.mem_free_kib as f64 / KIB_PER_MIB_F64;
            // A host's reported total can be short of what it holds (libvirt's node info
            // counts the NUMA nodes it sees): never less than free plus the guests.
            let total = total.max(free + guests);
            let topo = host.topology();
            let threads = topo
                .first()
                .and_then(|n| n.cores.first())
                .map_or(1, |c| c.pcpus.len() as u32);
            (
                total,
                (total - free - guests).max(0.0),
                threads,
                topo.len().max(1) as u32,
            )
        }
        None => {
            let guests: f64 = first.vms.iter().map(|vm| vm.actual_mib()).sum();
            (first.host_free_mib() + guests, 0.0, 1, 1)
        }
    };
    let n = pcpu_ids.len() as u32;
    let threads = if threads > 0 && n.is_multiple_of(threads) {
        threads
    } else {
        1
    };
    let nodes = if n.is_multiple_of(nodes) { nodes } else { 1 };

    // As many ticks as were recorded, at one per interval.
    let duration = ((records.len() as f64 - 0.5) * interval).max(1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Derived by `vcoord scenario from-record` from {source}."
    );
    let _ = writeln!(
        out,
        "name = {}\ndescription = {}\nduration_s = {}\nseed = 1\npinning = \"unpinned\"\n",
        quote(name),
        quote(&format!(
            "the workload recorded in {source} (host {}, {} ticks of {:.1} s)",
            first.host,
            records.len(),
            interval
        )),
        num(duration)
    );
    let _ = writeln!(
        out,
        "[host]\npcpus = {n}\nthreads_per_core = {threads}\nnuma_nodes = {nodes}\nmemory_mib = {}\nhost_used_mib = {}",
        memory_mib.ceil() as u64,
        host_used_mib.round() as u64
    );
    for vm_name in order {
        let s = &seen[vm_name];
        let (_, at_first) = s.ticks[0];
        let start = records[s.first].time_s - t0;
        let vcpus = at_first.vcpus.len().max(1);
        let _ = writeln!(out, "\n[[vm]]\nname = {}\nvcpus = {vcpus}", quote(vm_name));
        let max = at_first.max_mib().ceil().max(1.0);
        let size = at_first.actual_mib().round().clamp(1.0, max);
        let _ = writeln!(out, "max_memory_mib = {max}\nmemory_mib = {size}");
        if start > 0.0 {
            let _ = writeln!(out, "start_s = {}", num(start));
        }
        if s.last + 1 < records.len() {
            let stop = records[s.last + 1].time_s - t0;
            let _ = writeln!(out, "stop_s = {}", num(stop.max(start + interval)));
        }
        let pins: Option<Vec<usize>> = at_first
            .vcpus
            .iter()
            .map(|v| v.affinity.only().and_then(index_of))
            .collect();
        if let Some(pins) = pins.filter(|p| p.len() == vcpus) {
            let list: Vec<String> = pins.iter().map(usize::to_string).collect();
            let _ = writeln!(out, "pins = [{}]", list.join(", "));
        }
        // CPU: per vCPU, the demand of each tick covers the interval before it.
        let per_vcpu: Vec<String> = (0..vcpus)
            .map(|k| {
                let series: Vec<(f64, Option<f64>)> = s
                    .ticks
                    .iter()
                    .map(|(i, vm)| {
                        let d = vm
                            .vcpus
                            .get(k)
                            .and_then(|v| vcpu_demand_pct(v.load_pct, v.wait_pct));
                        (records[*i].time_s - t0, d)
                    })
                    .collect();
                cpu_phases(&series, start, interval)
            })
            .collect();
        if per_vcpu.windows(2).all(|w| w[0] == w[1]) {
            let _ = writeln!(out, "cpu = {}", per_vcpu[0]);
        } else {
            let _ = writeln!(out, "vcpu_cpu = [\n  {},\n]", per_vcpu.join(",\n  "));
        }
        // Memory: what the guest used, when it said (not in its first ticks: until the balloon
        // and the guest's figures have been seen standing still, use reads low).
        let used: Vec<(f64, Option<f64>)> = s
            .ticks
            .iter()
            .enumerate()
            .map(|(k, (i, vm))| {
                let u = (k >= SETTLE_TICKS)
                    .then(|| used_mib(&records[*i], vm))
                    .flatten();
                (records[*i].time_s - t0, u)
            })
            .collect();
        let known: Vec<f64> = used.iter().filter_map(|u| u.1).collect();
        if known.is_empty() {
            let _ = writeln!(out, "balloon = false");
            continue;
        }
        // A simulated guest shows its kernel's reserve as used beyond `base_used_mib`.
        let lowest = known.iter().copied().fold(f64::INFINITY, f64::min);
        let base = (lowest - GUEST_RESERVED_MIB).max(0.0);
        let _ = writeln!(out, "base_used_mib = {}", num(base));
        let mut phases = memory_phases(&used, base + GUEST_RESERVED_MIB, max);
        // The last phase lasts anyway: a hold at the end says nothing.
        if phases.last().is_some_and(|p| p.starts_with("{ hold_s")) {
            phases.pop();
        }
        if !phases.is_empty() {
            let _ = writeln!(out, "memory = [\n  {},\n]", phases.join(",\n  "));
        }
    }
    Ok(out)
}

/// What a guest used at a tick, MiB: from the guest's own report when the snapshot is there,
/// else size minus unused.
fn used_mib(r: &TickRecord, vm: &VmRecord) -> Option<f64> {
    if let Some(s) = &r.snapshot {
        if let Some(v) = s.vm(&vm.name) {
            return v.memory.used_kib().map(|k| k as f64 / KIB_PER_MIB_F64);
        }
    }
    Some(vm.actual_mib() - vm.unused_mib()?)
}

/// `[{ pct = .., for_s = .. }, ...]` from (time since start, demand) samples.
fn cpu_phases(series: &[(f64, Option<f64>)], start: f64, interval: f64) -> String {
    // (from, value) of each measured interval: a sample at t covers (t - interval, t].
    let mut phases: Vec<(f64, f64, usize)> = Vec::new(); // (from, mean, samples)
    for &(t, d) in series {
        let Some(d) = d else { continue };
        let from = (t - interval).max(start);
        match phases.last_mut() {
            Some((_, mean, n)) if (d - *mean).abs() <= CPU_TOLERANCE_PCT => {
                *mean = (*mean * *n as f64 + d) / (*n as f64 + 1.0);
                *n += 1;
            }
            _ => phases.push((from, d, 1)),
        }
    }
    if phases.is_empty() {
        return "[{ pct = 0 }]".into();
    }
    // The first phase starts with the VM.
    phases[0].0 = start;
    let parts: Vec<String> = phases
        .iter()
        .enumerate()
        .map(|(i, &(from, mean, _))| match phases.get(i + 1) {
            Some(&(next, ..)) if next > from => {
                format!("{{ pct = {}, for_s = {} }}", num(mean), num(next - from))
            }
            _ => format!("{{ pct = {} }}", num(mean)),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Memory phases (beyond `base`) from (time, used) samples: holds, growth at the measured
/// rate, drops at once. Levels are capped at `max`.
fn memory_phases(series: &[(f64, Option<f64>)], base: f64, max: f64) -> Vec<String> {
    enum Phase {
        Hold(f64),
        Grow { from: f64, to: f64, secs: f64 },
        Use(f64),
    }
    let mut phases: Vec<Phase> = Vec::new();
    let mut level: Option<f64> = None;
    let mut last_t: Option<f64> = None;
    for &(t, used) in series {
        let dt = last_t.map_or(0.0, |l| (t - l).max(0.0));
        last_t = Some(t);
        let Some(used) = used else {
            if let Some(Phase::Hold(h)) = phases.last_mut() {
                *h += dt;
            } else if level.is_some() {
                phases.push(Phase::Hold(dt));
            }
            continue;
        };
        let want = (used - base).clamp(0.0, max);
        let Some(now) = level else {
            if want >= MEM_TOLERANCE_MIB {
                phases.push(Phase::Use(want));
            }
            level = Some(if want >= MEM_TOLERANCE_MIB { want } else { 0.0 });
            continue;
        };
        let delta = want - now;
        if delta.abs() < MEM_TOLERANCE_MIB {
            match phases.last_mut() {
                Some(Phase::Hold(h)) => *h += dt,
                _ => phases.push(Phase::Hold(dt)),
            }
        } else if delta > 0.0 {
            // A short hold between two rises is a report gap: the growth went on through it.
            if let [.., Phase::Grow { .. }, Phase::Hold(h)] = phases.as_slice() {
                let h = *h;
                if h <= REPORT_GAP_S {
                    phases.pop();
                    if let Some(Phase::Grow { secs, .. }) = phases.last_mut() {
                        *secs += h;
                    }
                }
            }
            match phases.last_mut() {
                Some(Phase::Grow { to, secs, .. }) => {
                    *to = want;
                    *secs += dt;
                }
                _ => phases.push(Phase::Grow {
                    from: now,
                    to: want,
                    secs: dt,
                }),
            }
            level = Some(want);
        } else {
            phases.push(Phase::Use(want));
            level = Some(want);
        }
    }
    phases
        .iter()
        .filter_map(|p| match *p {
            Phase::Hold(h) if h >= 0.001 => Some(format!("{{ hold_s = {} }}", num(h))),
            Phase::Hold(_) => None,
            Phase::Grow { from, to, secs } => Some(format!(
                "{{ grow_mib_s = {}, to_mib = {} }}",
                num(((to - from) / secs.max(0.001)).max(0.001)),
                num(to)
            )),
            Phase::Use(u) => Some(format!("{{ use_mib = {} }}", num(u))),
        })
        .collect()
}

/// A number as TOML, at most 3 decimals.
fn num(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r == r.trunc() {
        format!("{r:.0}")
    } else {
        format!("{r}")
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_series_become_phases_within_the_tolerance() {
        let s: Vec<(f64, Option<f64>)> = vec![
            (0.0, None),
            (1.0, Some(70.0)),
            (2.0, Some(72.0)),
            (3.0, Some(68.0)),
            (4.0, Some(20.0)),
            (5.0, Some(21.0)),
        ];
        assert_eq!(
            cpu_phases(&s, 0.0, 1.0),
            "[{ pct = 70, for_s = 3 }, { pct = 20.5 }]"
        );
        assert_eq!(cpu_phases(&[(0.0, None)], 0.0, 1.0), "[{ pct = 0 }]");
    }

    #[test]
    fn growth_seen_in_report_steps_is_one_phase() {
        // Reports every 2 s of a guest growing 20 MiB/s.
        let s: Vec<(f64, Option<f64>)> = (0..6)
            .map(|k| (k as f64, Some(100.0 + 40.0 * (k / 2) as f64)))
            .collect();
        assert_eq!(
            memory_phases(&s, 100.0, 1024.0),
            [
                "{ hold_s = 1 }",
                "{ grow_mib_s = 26.667, to_mib = 80 }",
                "{ hold_s = 1 }"
            ]
        );
    }

    #[test]
    fn memory_series_become_holds_growth_and_drops() {
        let s: Vec<(f64, Option<f64>)> = vec![
            (0.0, Some(60.0)),
            (1.0, Some(61.0)),
            (2.0, Some(81.0)),
            (3.0, Some(101.0)),
            (4.0, None),
            (5.0, Some(100.0)),
            (6.0, Some(60.0)),
        ];
        assert_eq!(
            memory_phases(&s, 60.0, 1024.0),
            [
                "{ hold_s = 1 }",
                "{ grow_mib_s = 20.5, to_mib = 41 }",
                "{ hold_s = 2 }",
                "{ use_mib = 0 }"
            ]
        );
    }
}
