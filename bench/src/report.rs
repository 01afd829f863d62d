//! Benchmark output: aligned text tables and simple SVG charts (grouped bars), written next
//! to each other under `target/bench-results/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A results table: a header row and rows of cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column titles.
    pub header: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as aligned text (Markdown-compatible).
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&self.header[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let _ = write!(out, " {cell:<w$} |");
            }
            out
        };
        let mut out = line(&self.header);
        out.push('\n');
        out.push('|');
        for w in &widths {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// A grouped bar chart: one group per category, one bar per series.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Chart title.
    pub title: String,
    /// Y axis label.
    pub unit: String,
    /// Category names (x axis).
    pub categories: Vec<String>,
    /// (series name, one value per category).
    pub series: Vec<(String, Vec<f64>)>,
}

const COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// A chart that renders itself as SVG.
pub trait Chart {
    /// The chart as SVG.
    fn svg(&self) -> String;
}

/// A line chart: one line per series through its (x, y) points; the y axis logarithmic
/// (latencies from a millisecond to seconds fit one chart).
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Chart title.
    pub title: String,
    /// X axis label.
    pub x_unit: String,
    /// Y axis label.
    pub y_unit: String,
    /// (series name, points).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Chart for LineChart {
    fn svg(&self) -> String {
        let (width, height, left, bottom, top, right) = (760.0, 420.0, 70.0, 80.0, 50.0, 20.0);
        let (plot_w, plot_h) = (width - left - right, height - bottom - top);
        let points = || self.series.iter().flat_map(|(_, p)| p.iter().copied());
        let x_max = points().map(|(x, _)| x).fold(0.0f64, f64::max).max(1.0);
        let y_max = points().map(|(_, y)| y).fold(0.0f64, f64::max).max(1.0);
        let y_min = points()
            .map(|(_, y)| y)
            .filter(|y| *y > 0.0)
            .fold(y_max, f64::min);
        // Whole decades around the values.
        let (low, high) = (
            y_min.log10().floor(),
            y_max.log10().ceil().max(y_min.log10().floor() + 1.0),
        );
        let x_at = |x: f64| left + plot_w * x / x_max;
        let y_at = |y: f64| {
            let decades = (y.max(10f64.powf(low)).log10() - low) / (high - low);
            top + plot_h - plot_h * decades
        };
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{} (log)</text>\n\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            width / 2.0,
            xml(&self.title),
            top + plot_h / 2.0,
            top + plot_h / 2.0,
            xml(&self.y_unit),
            left + plot_w / 2.0,
            top + plot_h + 34.0,
            xml(&self.x_unit)
        );
        for decade in (low as i32)..=(high as i32) {
            let value = 10f64.powi(decade);
            let y = y_at(value);
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                width - right,
                left - 6.0,
                y + 4.0,
                short(value)
            );
        }
        for tick in 0..=4 {
            let x = x_max * f64::from(tick) / 4.0;
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x_at(x),
                top + plot_h + 16.0,
                short(x)
            );
        }
        for (s, (name, points)) in self.series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let path: Vec<String> = points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", x_at(x), y_at(y)))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>",
                path.join(" "),
                xml(name)
            );
            for &(x, y) in points {
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {}</title></circle>",
                    x_at(x),
                    y_at(y),
                    short(x),
                    short(y)
                );
            }
        }
        finish(svg, self.series.iter().map(|(name, _)| name), left, height)
    }
}

/// The chart `svg` with its legend (series `names`) along the bottom, closed: entries side
/// by side, each as wide as its label (about 7 px a character at 12 px sans-serif).
fn finish<'a>(
    mut svg: String,
    names: impl Iterator<Item = &'a String>,
    left: f64,
    height: f64,
) -> String {
    let mut x = left;
    for (s, name) in names.enumerate() {
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            height - 24.0,
            COLOURS[s % COLOURS.len()],
            x + 16.0,
            height - 14.0,
            xml(name)
        );
        x += 36.0 + 7.0 * name.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

impl Chart for BarChart {
    fn svg(&self) -> String {
        BarChart::svg(self)
    }
}

impl BarChart {
    /// The chart as SVG.
    pub fn svg(&self) -> String {
        let (width, height, left, bottom, top) = (760.0, 420.0, 70.0, 60.0, 50.0);
        let plot_h = height - bottom - top;
        let max = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let groups = self.categories.len().max(1) as f64;
        let group_w = (width - left - 20.0) / groups;
        let bar_w = group_w * 0.8 / self.series.len().max(1) as f64;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\n",
            width / 2.0,
            xml(&self.title),
            top + plot_h / 2.0,
            top + plot_h / 2.0,
            xml(&self.unit)
        );
        for tick in 0..=4 {
            let value = max * f64::from(tick) / 4.0;
            let y = top + plot_h - plot_h * f64::from(tick) / 4.0;
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                width - 20.0,
                left - 6.0,
                y + 4.0,
                short(value)
            );
        }
        for (g, category) in self.categories.iter().enumerate() {
            let x0 = left + group_w * g as f64 + group_w * 0.1;
            for (s, (_, values)) in self.series.iter().enumerate() {
                let value = values.get(g).copied().unwrap_or(0.0);
                let h = plot_h * value / max;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}</title></rect>",
                    x0 + bar_w * s as f64,
                    top + plot_h - h,
                    bar_w * 0.95,
                    COLOURS[s % COLOURS.len()],
                    short(value)
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x0 + group_w * 0.4,
                top + plot_h + 18.0,
                xml(category)
            );
        }
        finish(svg, self.series.iter().map(|(name, _)| name), left, height)
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// 1234567 -> "1.23M".
pub fn short(value: f64) -> String {
    match value.abs() {
        v if v >= 1e9 => format!("{:.2}G", value / 1e9),
        v if v >= 1e6 => format!("{:.2}M", value / 1e6),
        v if v >= 1e3 => format!("{:.1}k", value / 1e3),
        v if v >= 10.0 || v == 0.0 => format!("{value:.0}"),
        _ => format!("{value:.2}"),
    }
}

/// Where results go: `target/bench-results/` of the workspace.
pub fn results_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes `name.md` (the table) and `name.svg` (the chart); returns their paths.
pub fn write(name: &str, table: &Table, chart: &impl Chart) -> std::io::Result<(PathBuf, PathBuf)> {
    let dir = results_dir();
    let (md, svg) = (
        dir.join(format!("{name}.md")),
        dir.join(format!("{name}.svg")),
    );
    std::fs::write(&md, table.render())?;
    std::fs::write(&svg, chart.svg())?;
    Ok((md, svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_charts_are_svg() {
        let mut table = Table::new(&["parser", "msgs/s"]);
        table.row(vec!["pre-parser".into(), "1.2M".into()]);
        let text = table.render();
        assert!(text.contains("| pre-parser | 1.2M   |"), "{text}");
        let chart = BarChart {
            title: "a < b".into(),
            unit: "msgs/s".into(),
            categories: vec!["INVITE".into()],
            series: vec![("pre".into(), vec![2.0e6]), ("full".into(), vec![1.0e5])],
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.contains("a &lt; b") && svg.contains("2.00M"));
        let lines = LineChart {
            title: "p99".into(),
            x_unit: "calls/s".into(),
            y_unit: "ms".into(),
            series: vec![("ours".into(), vec![(500.0, 1.5), (1000.0, 16.0)])],
        }
        .svg();
        assert!(
            lines.contains("<polyline") && lines.contains("1.0k: 16"),
            "{lines}"
        );
        assert!(
            lines.contains(">1.00<") && lines.contains(">100<"),
            "decades 1..100: {lines}"
        );
        assert_eq!(short(150_000.0), "150.0k");
    }
}
