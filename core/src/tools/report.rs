//! Charts and the HTML report of `vcoord compare`: per scenario a CPU chart (pCPU load of each
//! CPU row with its pin changes marked, and the demand stdev of all rows overlaid) and a memory
//! chart (each VM's size and unused memory per memory row, the threshold, OOM kills, the
//! host's free memory); the report is one self-contained HTML file (inline CSS and SVG, no
//! network) with the summary, every scenario's tables and charts, and what was run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::runtime::record::{TickRecord, VmRecord};
use crate::tools::compare::Outcome;
use crate::tools::metrics::demand_stdev;
use crate::tools::plot::{merge_coinciding, render, Mark, Panel, Series};
use crate::tools::stats::Estimate;
use crate::tools::study::{
    describe, header, scenario_rows, show, summary_rows, Group, Kind, KindExt, Study,
};

/// Whether any vCPU of a tick has a measured load (the first tick has none).
fn measured(r: &TickRecord) -> bool {
    r.vms
        .iter()
        .any(|vm| vm.vcpus.iter().any(|v| v.load_pct.is_some()))
}

/// The run a chart shows for a row: its first contender's first seed.
fn shown<'a>(study: &'a Study, scenario: &str, g: &Group) -> Option<&'a Outcome> {
    study
        .runs(scenario, g.members[0])
        .into_iter()
        .next()
        .filter(|o| o.error.is_none())
}

/// One tick's value, or NaN (unknown) where the tick measured nothing.
fn known(r: &TickRecord, v: f64) -> f64 {
    if measured(r) {
        v
    } else {
        f64::NAN
    }
}

fn pin_marks(o: &Outcome) -> Vec<Mark> {
    o.records
        .iter()
        .filter(|r| !r.pins.is_empty())
        .map(|r| Mark {
            x: r.time_s,
            kind: "ticks with pin changes".into(),
            color: 1,
        })
        .collect()
}

/// The CPU chart of a scenario (SVG).
pub fn cpu_chart(study: &Study, scenario: &str) -> String {
    let mut panels = Vec::new();
    let mut overlay = Vec::new();
    for (gi, g) in study.cpu.iter().enumerate() {
        let Some(o) = shown(study, scenario, g) else {
            continue;
        };
        let ids = o.records.first().map_or(Vec::new(), |r| r.pcpus.clone());
        let pcpus = o.records.first().map_or(0, |r| r.pcpu_load_pct.len());
        let series = (0..pcpus)
            .map(|i| Series {
                label: format!("pCPU {}", ids.get(i).copied().unwrap_or(i as u32)),
                points: o
                    .records
                    .iter()
                    .filter_map(|r| r.pcpu_load_pct.get(i).map(|l| (r.time_s, known(r, *l))))
                    .collect(),
                color: i + 2,
                dashed: false,
            })
            .collect();
        let moves = o.cpu.as_ref().map_or(0, |c| c.vcpu_moves);
        let mut panel = Panel::new(
            &format!("{} ({moves} moves)", g.label),
            "pCPU load (%)",
            merge_coinciding(series),
        );
        panel.marks = pin_marks(o);
        panels.push(panel);
        overlay.push(Series {
            label: g.label.clone(),
            points: o
                .records
                .iter()
                .map(|r| (r.time_s, known(r, demand_stdev(r))))
                .collect(),
            color: gi,
            dashed: false,
        });
    }
    let mut sd = Panel::new(
        "demand stdev over time, every CPU row",
        "stdev (points)",
        merge_coinciding(overlay),
    );
    let bound = super::compare::BALANCE_BOUND_PCT;
    sd.rules.push((bound, format!("balanced: {bound} points")));
    panels.push(sd);
    let seed = seed_note(study, scenario);
    render(
        &format!("{scenario}: pCPU load per CPU policy{seed}"),
        "time (s)",
        &panels,
    )
}

fn seed_note(study: &Study, scenario: &str) -> String {
    match study.seeds(scenario).first() {
        Some(s) if study.meta.seeds > 1 => format!(" (seed {s})"),
        _ => String::new(),
    }
}

/// Every VM seen in a run, in order of appearance.
fn vm_names(o: &Outcome) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in &o.records {
        for vm in &r.vms {
            if !names.contains(&vm.name.as_str()) {
                names.push(&vm.name);
            }
        }
    }
    names
}

/// The memory chart of a scenario (SVG).
pub fn memory_chart(study: &Study, scenario: &str) -> String {
    let mut panels = Vec::new();
    let mut host = Vec::new();
    for (gi, g) in study.memory.iter().enumerate() {
        let Some(o) = shown(study, scenario, g) else {
            continue;
        };
        let names = vm_names(o);
        let series_of = |f: &dyn Fn(&VmRecord) -> Option<f64>, dashed: bool, what: &str| {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| Series {
                    label: format!("{name} {what}"),
                    points: o
                        .records
                        .iter()
                        .filter_map(|r| {
                            let vm = r.vms.iter().find(|v| v.name == *name)?;
                            Some((r.time_s, f(vm).unwrap_or(f64::NAN)))
                        })
                        .collect(),
                    color: i,
                    dashed,
                })
                .collect::<Vec<_>>()
        };
        let mut series = merge_coinciding(series_of(&|vm| Some(vm.actual_mib()), false, "size"));
        series.extend(merge_coinciding(series_of(
            &|vm| vm.unused_mib(),
            true,
            "unused",
        )));
        let oom = o.memory.as_ref().map_or(0, |m| m.oom_events);
        let mut panel = Panel::new(&format!("{} ({oom} OOM)", g.label), "memory (MiB)", series);
        panel.rules.push((
            study.meta.threshold_mib,
            format!("threshold {:.0} MiB", study.meta.threshold_mib),
        ));
        panel.marks = o
            .records
            .iter()
            .flat_map(|r| {
                r.vms
                    .iter()
                    .filter(|vm| vm.oom_events.unwrap_or(0) > 0)
                    .map(|_| Mark {
                        x: r.time_s,
                        kind: "OOM kills".into(),
                        color: 1,
                    })
            })
            .collect();
        panels.push(panel);
        host.push(Series {
            label: g.label.clone(),
            points: o
                .records
                .iter()
                .map(|r| (r.time_s, r.host_free_mib()))
                .collect(),
            color: gi,
            dashed: false,
        });
    }
    panels.push(Panel::new(
        "host free memory, every memory row",
        "free (MiB)",
        merge_coinciding(host),
    ));
    let seed = seed_note(study, scenario);
    render(
        &format!("{scenario}: guest memory per memory policy (solid: size, dashed: unused){seed}"),
        "time (s)",
        &panels,
    )
}

/// Writes `<scenario>-cpu.svg` and `<scenario>-memory.svg` into `dir`; returns the files.
pub fn plots(study: &Study, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for s in &study.scenarios {
        for (kind, svg) in [
            ("cpu", cpu_chart(study, s)),
            ("memory", memory_chart(study, s)),
        ] {
            let path = dir.join(format!("{s}-{kind}.svg"));
            std::fs::write(&path, svg)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML table: a header row and body rows (the first cell of each a row header); cells are
/// text, escaped here.
fn html_table(id: &str, caption: &str, head: &[String], rows: &[Vec<String>]) -> String {
    let escaped: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| esc(c)).collect())
        .collect();
    html_table_raw(id, caption, head, &escaped)
}

/// [`html_table`] with cells that are HTML already.
fn html_table_raw(id: &str, caption: &str, head: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!(
        "<table id=\"{}\"><caption>{}</caption><thead><tr>",
        esc(id),
        esc(caption)
    );
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{c}</th>");
            } else {
                let _ = write!(out, "<td>{c}</td>");
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1300px;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.8em 0}caption{text-align:left;font-weight:bold;padding:.3em 0}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}\
thead th{background:#f0f0f0}thead th:first-child{text-align:left}tbody th{text-align:left;font-weight:normal}\
.where{font-size:.8em;color:#666}\
code,pre{background:#f6f6f6;padding:.1em .3em}pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}\
.diff{margin:.2em 0 .2em 1em;font-size:.95em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}\
dt{font-weight:bold}figure{margin:1em 0;overflow-x:auto}";

/// The whole report: one self-contained HTML page.
pub fn html(study: &Study) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>vcoord compare: {} scenario(s), {} contender(s), {} seed(s)</h1>\n<dl>\
         <dt>command</dt><dd><code id=\"command\">{}</code></dd>\
         <dt>vcoord</dt><dd id=\"version\">{}</dd>\
         <dt>method</dt><dd>{}</dd>\
         <dt>threshold</dt><dd>{:.0} MiB unused per VM, for the memory figures</dd>",
        study.scenarios.len(),
        study.contenders.len(),
        study.meta.seeds,
        esc(&study.meta.command),
        esc(&study.meta.version),
        esc(&study.method()),
        study.meta.threshold_mib
    );
    for c in study.contenders {
        let _ = write!(
            body,
            "<dt>{}</dt><dd>CPU: <code>{}</code>; memory: <code>{}</code></dd>",
            esc(&c.label),
            esc(&describe(&c.host.cpu_policy)),
            esc(&describe(&c.host.memory_policy))
        );
    }
    body.push_str("</dl>\n<h2 id=\"summary-title\">Summary</h2>\n<div id=\"summary\">");
    for kind in Kind::ALL {
        let tallies = study.tallies(kind);
        let rows = summary_rows(study, kind, &tallies);
        body.push_str(&html_table(
            &format!("summary-{}", kind.key()),
            &format!(
                "{} figures: scenarios won / lost / tied over {} scenario(s)",
                kind,
                study.scenarios.len()
            ),
            &header(kind),
            &rows,
        ));
        let worst: Vec<Vec<String>> = study
            .groups(kind)
            .iter()
            .zip(&tallies)
            .map(|(g, t)| {
                std::iter::once(esc(&g.label))
                    .chain(t.iter().map(|t| match (t.worst, &t.worst_scenario) {
                        (Some(w), Some(s)) => format!(
                            "{}<br><span class=\"where\">{}</span>",
                            show(&Estimate {
                                mean: w,
                                ci95: None,
                                n: 1
                            }),
                            esc(s)
                        ),
                        _ => "-".into(),
                    }))
                    .collect()
            })
            .collect();
        body.push_str(&html_table_raw(
            &format!("worst-{}", kind.key()),
            &format!("{} figures: worst scenario mean", kind),
            &header(kind),
            &worst,
        ));
    }
    body.push_str("<p>Figures:</p><ul>");
    for m in crate::tools::study::CPU_METRICS
        .iter()
        .chain(crate::tools::study::MEMORY_METRICS)
    {
        let _ = write!(
            body,
            "<li><b>{}</b>: {} ({} is better)</li>",
            esc(m.title),
            esc(m.doc),
            if m.lower_is_better { "lower" } else { "higher" }
        );
    }
    body.push_str("</ul></div>\n");
    for s in &study.scenarios {
        let _ = write!(
            body,
            "<section class=\"scenario\" id=\"scenario-{}\"><h2>{}</h2>",
            esc(s),
            esc(s)
        );
        let _ = write!(
            body,
            "<p>{} ticks; seeds {}{}</p>",
            study.ticks(s),
            study
                .seeds(s)
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            study.fewest_moves(s).map_or(String::new(), |f| format!(
                "; fewest moves to balance the start: {f}"
            ))
        );
        for kind in Kind::ALL {
            let groups = study.groups(kind);
            let rows = scenario_rows(study, s, kind);
            body.push_str(&html_table(
                &format!("{s}-{}", kind.key()),
                &kind.to_string(),
                &header(kind),
                &rows,
            ));
            for m in kind.metrics() {
                for (w, losers) in study.differences(s, kind, m) {
                    let names: Vec<&str> =
                        losers.iter().map(|&l| groups[l].label.as_str()).collect();
                    let _ = write!(
                        body,
                        "<p class=\"diff\">{}: <b>{}</b> better than {}</p>",
                        esc(m.title),
                        esc(&groups[w].label),
                        esc(&names.join(", "))
                    );
                }
            }
        }
        let _ = writeln!(
            body,
            "<figure>{}</figure><figure>{}</figure></section>",
            strip_xml_decl(&cpu_chart(study, s)),
            strip_xml_decl(&memory_chart(study, s))
        );
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>vcoord compare report</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n"
    )
}

fn strip_xml_decl(svg: &str) -> &str {
    svg.strip_prefix("<?xml version=\"1.0\"?>").unwrap_or(svg)
}
