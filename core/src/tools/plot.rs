//! Small SVG line charts for `vcoord compare --plot`: stacked panels sharing the time axis,
//! each with its title, axis labels, ticks and a legend. No dependencies; the output is plain
//! SVG any browser shows.

use std::fmt::Write;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in order of x; a NaN y is unknown: the line breaks there.
    pub points: Vec<(f64, f64)>,
    /// Palette index.
    pub color: usize,
    /// Dashed instead of solid.
    pub dashed: bool,
}

/// One chart panel.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// Y axis label, with unit.
    pub y_label: String,
    /// Lower end of the Y axis; the upper end fits the data.
    pub y_min: f64,
    /// Lines.
    pub series: Vec<Series>,
    /// Horizontal reference lines: (y, label), drawn dotted.
    pub rules: Vec<(f64, String)>,
    /// Events along the time axis, drawn as marks at the panel's top edge.
    pub marks: Vec<Mark>,
}

/// An event at a time: a small triangle at the top of a panel, listed in the legend by kind.
#[derive(Clone, Debug)]
pub struct Mark {
    /// When.
    pub x: f64,
    /// Kind, for the legend (`pin change`, `OOM kill`).
    pub kind: String,
    /// Palette index.
    pub color: usize,
}

impl Panel {
    /// A panel without rules or marks.
    pub fn new(title: &str, y_label: &str, series: Vec<Series>) -> Self {
        Self {
            title: title.into(),
            y_label: y_label.into(),
            y_min: 0.0,
            series,
            rules: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Legend entries: one per series, one per kind of mark, one per rule.
    fn legend(&self) -> Vec<Legend> {
        let mut out: Vec<Legend> = self
            .series
            .iter()
            .map(|s| Legend::Line(s.label.clone(), s.color, s.dashed))
            .collect();
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for m in &self.marks {
            if !kinds.iter().any(|(k, _)| *k == m.kind) {
                kinds.push((&m.kind, m.color));
            }
        }
        for (kind, color) in kinds {
            let n = self.marks.iter().filter(|m| m.kind == kind).count();
            out.push(Legend::Mark(format!("{kind} ({n})"), color));
        }
        for (_, label) in &self.rules {
            out.push(Legend::Rule(label.clone()));
        }
        out
    }
}

enum Legend {
    Line(String, usize, bool),
    Mark(String, usize),
    Rule(String),
}

impl Legend {
    fn text(&self) -> &str {
        match self {
            Legend::Line(t, ..) | Legend::Mark(t, _) | Legend::Rule(t) => t,
        }
    }
}

/// Series with the same points merged into one whose label says how many it stands for
/// (`web1, web2, web3 (x3)`), so that lines drawn on top of each other are not mistaken for
/// one VM.
pub fn merge_coinciding(series: Vec<Series>) -> Vec<Series> {
    let mut out: Vec<(Series, Vec<String>)> = Vec::new();
    for s in series {
        let same = |a: &[(f64, f64)], b: &[(f64, f64)]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(p, q)| p.0 == q.0 && (p.1 == q.1 || (p.1.is_nan() && q.1.is_nan())))
        };
        match out
            .iter_mut()
            .find(|(o, _)| o.dashed == s.dashed && same(&o.points, &s.points))
        {
            Some((_, labels)) => labels.push(s.label),
            None => {
                let label = s.label.clone();
                out.push((s, vec![label]));
            }
        }
    }
    out.into_iter()
        .map(|(mut s, labels)| {
            if labels.len() > 1 {
                s.label = format!("{} (x{})", labels.join(", "), labels.len());
            }
            s
        })
        .collect()
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// A palette colour.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const PLOT_W: f64 = 670.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 56.0;
const GAP: f64 = 50.0;
const BOTTOM: f64 = 45.0;
/// Height of a legend line.
const LEGEND_LINE: f64 = 16.0;
/// Width of a legend character (12 px sans-serif, generous).
const CHAR_W: f64 = 7.2;

/// Renders `panels` stacked under `title`, sharing the X axis (`x_label`). The legend of each
/// panel sits to its right, whole: the chart widens for long labels and a panel grows for
/// many entries.
pub fn render(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let legends: Vec<Vec<Legend>> = panels.iter().map(Panel::legend).collect();
    let longest = legends
        .iter()
        .flatten()
        .map(|l| l.text().chars().count())
        .max()
        .unwrap_or(0) as f64;
    let right = 50.0 + longest * CHAR_W;
    let width = (LEFT + PLOT_W + right).ceil();
    let heights: Vec<f64> = legends
        .iter()
        .map(|l| PANEL_H.max(l.len() as f64 * LEGEND_LINE + 8.0))
        .collect();
    let height = TOP + heights.iter().map(|h| h + GAP).sum::<f64>() - GAP + BOTTOM;
    let plot_w = PLOT_W;
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|pt| pt.0)));
    let (x_min, x_max) = bounds(xs, 0.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    let mut top = TOP;
    for (i, panel) in panels.iter().enumerate() {
        if i > 0 {
            top += heights[i - 1] + GAP;
        }
        let panel_h = heights[i];
        let ys = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|pt| pt.1))
            .chain(panel.rules.iter().map(|r| r.0));
        let (_, y_top) = bounds(ys, panel.y_min);
        let y_max = nice_ceiling(y_top.max(panel.y_min + 1.0));
        let y_min = panel.y_min;
        let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min).max(1e-9) * plot_w;
        let py = |y: f64| top + panel_h - (y - y_min) / (y_max - y_min) * panel_h;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            top - 6.0,
            escape(&panel.title)
        );
        // Grid and ticks.
        for k in 0..=4 {
            let y = y_min + (y_max - y_min) * k as f64 / 4.0;
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                py(y) + 4.0,
                tick_text(y),
                py = py(y)
            );
        }
        let step = nice_ceiling((x_max - x_min) / 7.0);
        let mut x = (x_min / step).ceil() * step;
        while x <= x_max + 1e-9 {
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                top + panel_h,
                top + panel_h + 15.0,
                tick_text(x),
                px = px(x)
            );
            x += step;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#444"/>"##
        );
        let mid = top + panel_h / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{mid}" transform="rotate(-90 18 {mid})" text-anchor="middle">{}</text>"#,
            escape(&panel.y_label)
        );
        for (y, _) in &panel.rules {
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#555" stroke-width="1.2" stroke-dasharray="2 3"/>"##,
                LEFT + plot_w,
                py = py(y.clamp(y_min, y_max))
            );
        }
        for s in &panel.series {
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            // Unknown values break the line: never drawn as 0.
            for run in s.points.split(|p| !p.1.is_finite()) {
                if run.is_empty() {
                    continue;
                }
                let path: Vec<String> = run
                    .iter()
                    .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y.clamp(y_min, y_max))))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
                    color(s.color),
                    path.join(" ")
                );
            }
        }
        for m in &panel.marks {
            let x = px(m.x);
            let _ = writeln!(
                svg,
                r#"<path class="mark" d="M{:.1},{top} l-4,-7 h8 z" fill="{}"><title>{} at {:.0} s</title></path>"#,
                x,
                color(m.color),
                escape(&m.kind),
                m.x
            );
        }
        let lx = LEFT + plot_w + 12.0;
        for (j, entry) in legends[i].iter().enumerate() {
            let ly = top + 12.0 + j as f64 * LEGEND_LINE;
            let symbol = match entry {
                Legend::Line(_, c, dashed) => format!(
                    r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"{}/>"#,
                    lx + 22.0,
                    ly - 4.0,
                    ly - 4.0,
                    color(*c),
                    if *dashed {
                        r#" stroke-dasharray="6 4""#
                    } else {
                        ""
                    }
                ),
                Legend::Mark(_, c) => format!(
                    r#"<path d="M{},{} l-4,-7 h8 z" fill="{}"/>"#,
                    lx + 11.0,
                    ly,
                    color(*c)
                ),
                Legend::Rule(_) => format!(
                    r##"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="#555" stroke-width="1.2" stroke-dasharray="2 3"/>"##,
                    lx + 22.0,
                    ly - 4.0,
                    ly - 4.0
                ),
            };
            let _ = writeln!(
                svg,
                r#"{symbol}<text x="{}" y="{ly}">{}</text>"#,
                lx + 28.0,
                escape(entry.text())
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        height - 10.0,
        escape(x_label)
    );
    svg.push_str("</svg>\n");
    svg
}

fn bounds(values: impl Iterator<Item = f64>, floor: f64) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (floor, floor + 1.0);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn tick_text(v: f64) -> String {
    if v.abs() >= 100.0 || (v - v.round()).abs() < 1e-6 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_legend_and_lines() {
        let panel = Panel::new(
            "greedy-lpt",
            "pCPU load (%)",
            vec![Series {
                label: "pCPU 0".into(),
                points: vec![(0.0, 10.0), (1.0, 90.0)],
                color: 0,
                dashed: false,
            }],
        );
        let svg = render("T2 <all on one>", "time (s)", &[panel]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("T2 &lt;all on one&gt;"));
        assert!(svg.contains("pCPU load (%)") && svg.contains("time (s)"));
        assert!(svg.contains(">pCPU 0</text>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn unknown_values_break_lines_and_legends_stay_whole() {
        let long = "stable-balance+threshold-balloon (x4) with a long tail".to_owned();
        let mut panel = Panel::new(
            "p",
            "y",
            vec![Series {
                label: long.clone(),
                points: vec![
                    (0.0, f64::NAN),
                    (1.0, 5.0),
                    (2.0, 6.0),
                    (3.0, f64::NAN),
                    (4.0, 7.0),
                    (5.0, 8.0),
                ],
                color: 0,
                dashed: false,
            }],
        );
        panel.rules.push((100.0, "threshold 100 MiB".into()));
        panel.marks.push(Mark {
            x: 2.0,
            kind: "pin change".into(),
            color: 1,
        });
        panel.marks.push(Mark {
            x: 4.0,
            kind: "pin change".into(),
            color: 1,
        });
        let svg = render("t", "x", &[panel]);
        // two pieces, the unknown first point not drawn at 0
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(&format!(">{long}</text>")), "legend cut");
        assert!(
            svg.contains(">pin change (2)</text>") && svg.contains(">threshold 100 MiB</text>")
        );
        assert_eq!(svg.matches(r#"class="mark""#).count(), 2);
        // the chart is wide enough for the legend
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            width >= LEFT + PLOT_W + 28.0 + long.len() as f64 * 6.0,
            "{width}"
        );
    }

    #[test]
    fn coinciding_series_are_merged_and_counted() {
        let s = |label: &str, y: f64| Series {
            label: label.into(),
            points: vec![(0.0, y), (1.0, y)],
            color: 0,
            dashed: false,
        };
        let merged = merge_coinciding(vec![s("a", 1.0), s("b", 1.0), s("c", 2.0), s("d", 1.0)]);
        let labels: Vec<&str> = merged.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["a, b, d (x3)", "c"]);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(87.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(1900.0), 2000.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
    }
}
