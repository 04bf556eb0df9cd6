//! Small SVG line charts for `vcoord compare --plot`: stacked panels sharing the time axis,
//! each with its title, axis labels, ticks and a legend. No dependencies; the output is plain
//! SVG any browser shows.

use std::fmt::Write;

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in order of x.
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
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// A palette colour.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 220.0;
const TOP: f64 = 56.0;
const GAP: f64 = 50.0;
const BOTTOM: f64 = 45.0;

/// Renders `panels` stacked under `title`, sharing the X axis (`x_label`).
pub fn render(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) - GAP + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|pt| pt.0)));
    let (x_min, x_max) = bounds(xs, 0.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + GAP);
        let ys = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|pt| pt.1));
        let (_, y_top) = bounds(ys, panel.y_min);
        let y_max = nice_ceiling(y_top.max(panel.y_min + 1.0));
        let y_min = panel.y_min;
        let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min).max(1e-9) * plot_w;
        let py = |y: f64| top + PANEL_H - (y - y_min) / (y_max - y_min) * PANEL_H;
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
                top + PANEL_H,
                top + PANEL_H + 15.0,
                tick_text(x),
                px = px(x)
            );
            x += step;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        let mid = top + PANEL_H / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{mid}" transform="rotate(-90 18 {mid})" text-anchor="middle">{}</text>"#,
            escape(&panel.y_label)
        );
        for (j, s) in panel.series.iter().enumerate() {
            if s.points.is_empty() {
                continue;
            }
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y.clamp(y_min, y_max))))
                .collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
                color(s.color),
                path.join(" ")
            );
            let ly = top + 12.0 + j as f64 * 16.0;
            if ly < top + PANEL_H {
                let lx = LEFT + plot_w + 12.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{ly}">{}</text>"#,
                    lx + 22.0,
                    ly - 4.0,
                    ly - 4.0,
                    color(s.color),
                    lx + 28.0,
                    escape(&shorten(&s.label, 28))
                );
            }
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

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let head: String = text.chars().take(max - 1).collect();
        format!("{head}…")
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
        let panel = Panel {
            title: "greedy-lpt".into(),
            y_label: "pCPU load (%)".into(),
            y_min: 0.0,
            series: vec![Series {
                label: "pCPU 0".into(),
                points: vec![(0.0, 10.0), (1.0, 90.0)],
                color: 0,
                dashed: false,
            }],
        };
        let svg = render("T2 <all on one>", "time (s)", &[panel]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("T2 &lt;all on one&gt;"));
        assert!(svg.contains("pCPU load (%)") && svg.contains("time (s)"));
        assert!(svg.contains(">pCPU 0</text>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(87.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(1900.0), 2000.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
    }
}
