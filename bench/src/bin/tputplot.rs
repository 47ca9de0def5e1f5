//! `tputplot`: draws the figures `bench/throughput.sh` measured into one PNG, one panel per
//! curve, each point its median round with a bar from the slowest to the fastest round.
//!
//! Input: a tab-separated file the script writes, lines of two kinds (anything else, and
//! lines starting with `#`, are ignored):
//!
//! ```text
//! panel <id> <bar|line|logline> <title> <y label> <x label>
//! point <id> <label> <x> <median> <min> <max>
//! ```
//!
//! A `bar` panel shows its points in file order, named by `label` (`x` unused); a `line`
//! panel draws them against `x`, a `logline` panel against a logarithmic `x`. Panels are laid
//! out in file order, three to a row (four when there are more than six). Text needs a TrueType font (`--font`; the plotting
//! crate draws no text without one).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use plotters::coord::Shift;
use plotters::element::ErrorBar;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

/// Draw the throughput bench's curves into a PNG.
#[derive(Debug, Parser)]
struct Opt {
    /// The data file (see the module docs).
    input: PathBuf,
    /// The PNG to write.
    output: PathBuf,
    /// Figure title.
    #[arg(long, default_value = "Sluice throughput")]
    title: String,
    /// A TrueType font for the text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

/// How a panel lays out its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bar,
    Line,
    LogLine,
}

#[derive(Debug)]
struct Point {
    label: String,
    x: f64,
    median: f64,
    min: f64,
    max: f64,
}

#[derive(Debug)]
struct Panel {
    id: String,
    kind: Kind,
    title: String,
    y_label: String,
    x_label: String,
    points: Vec<Point>,
}

fn parse(text: &str) -> Result<Vec<Panel>> {
    let mut panels: Vec<Panel> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let at = || format!("line {}", n + 1);
        match f.first().copied() {
            Some("panel") => {
                let [_, id, kind, title, y_label, x_label] = f[..] else {
                    bail!("{}: a panel has 6 fields", at());
                };
                let kind = match kind {
                    "bar" => Kind::Bar,
                    "line" => Kind::Line,
                    "logline" => Kind::LogLine,
                    other => bail!("{}: unknown panel kind {other:?}", at()),
                };
                panels.push(Panel {
                    id: id.into(),
                    kind,
                    title: title.into(),
                    y_label: y_label.into(),
                    x_label: x_label.into(),
                    points: Vec::new(),
                });
            }
            Some("point") => {
                let [_, id, label, x, median, min, max] = f[..] else {
                    bail!("{}: a point has 7 fields", at());
                };
                let num = |s: &str| -> Result<f64> {
                    s.trim().parse().with_context(|| format!("{}: {s:?}", at()))
                };
                let p = Point {
                    label: label.into(),
                    x: num(x)?,
                    median: num(median)?,
                    min: num(min)?,
                    max: num(max)?,
                };
                let panel = panels
                    .iter_mut()
                    .find(|pa| pa.id == id)
                    .with_context(|| format!("{}: no panel {id:?} declared before", at()))?;
                panel.points.push(p);
            }
            _ => {}
        }
    }
    Ok(panels)
}

/// The top of a panel's y axis: 15 % above its highest bar end (room for the value labels).
fn y_top(p: &Panel) -> f64 {
    let m = p
        .points
        .iter()
        .map(|q| q.max.max(q.median))
        .fold(0.0, f64::max);
    if m > 0.0 { m * 1.15 } else { 1.0 }
}

/// A number for a value label: three significant digits or so.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A flow count as `1k`, `100k`, `2.5M`.
fn si(v: f64) -> String {
    let (x, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if (x - x.round()).abs() < 1e-6 {
        format!("{x:.0}{suffix}")
    } else {
        format!("{x:.1}{suffix}")
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_bars(area: &Area<'_>, p: &Panel) -> Result<()> {
    let n = p.points.len();
    let top = y_top(p);
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        // A segmented `0..k` has k + 1 segments (the end is one too); `0..0` is degenerate,
        // so a single bar gets an empty neighbour.
        .build_cartesian_2d((0..n.max(2) - 1).into_segmented(), 0.0..top)?;
    let labels: Vec<&str> = p.points.iter().map(|q| q.label.as_str()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).map_or(String::new(), |s| (*s).into()),
            _ => String::new(),
        })
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.mix(0.55).filled())
            .margin(14)
            .data(p.points.iter().enumerate().map(|(i, q)| (i, q.median))),
    )?;
    chart.draw_series(p.points.iter().enumerate().map(|(i, q)| {
        ErrorBar::new_vertical(
            SegmentValue::CenterOf(i),
            q.min,
            q.median,
            q.max,
            BLACK.stroke_width(2),
            10,
        )
    }))?;
    chart.draw_series(p.points.iter().enumerate().map(|(i, q)| {
        Text::new(
            short(q.median),
            (SegmentValue::CenterOf(i), q.max.max(q.median) + top * 0.02),
            label_style(),
        )
    }))?;
    Ok(())
}

/// Value labels: centred above the point.
fn label_style() -> TextStyle<'static> {
    ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom))
}

fn draw_line(area: &Area<'_>, p: &Panel) -> Result<()> {
    let top = y_top(p);
    let (lo, hi) = p
        .points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), q| (a.min(q.x), b.max(q.x)));
    if p.kind == Kind::LogLine {
        let (lo, hi) = (lo / 2.0, hi * 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| si(*v))
            .x_desc(&p.x_label)
            .y_desc(&p.y_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        series(&mut chart, p, top)?;
    } else {
        let pad = ((hi - lo) * 0.15).max(0.5);
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..top)?;
        chart
            .configure_mesh()
            .x_labels(p.points.len().max(2))
            .x_label_formatter(&|v| si(*v))
            .x_desc(&p.x_label)
            .y_desc(&p.y_label)
            .label_style(("sans-serif", 14))
            .draw()?;
        series(&mut chart, p, top)?;
    }
    Ok(())
}

/// The median line, the min–max bars and the value labels of a line panel.
fn series<'a, X>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    p: &Panel,
    top: f64,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
{
    chart.draw_series(LineSeries::new(
        p.points.iter().map(|q| (q.x, q.median)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(
        p.points.iter().map(|q| {
            ErrorBar::new_vertical(q.x, q.min, q.median, q.max, BLACK.stroke_width(2), 10)
        }),
    )?;
    chart.draw_series(
        p.points
            .iter()
            .map(|q| Circle::new((q.x, q.median), 4, BLUE.filled())),
    )?;
    chart.draw_series(p.points.iter().map(|q| {
        Text::new(
            format!("{} {}", q.label, short(q.median)),
            (q.x, q.max.max(q.median) + top * 0.02),
            label_style(),
        )
    }))?;
    Ok(())
}

fn main() -> Result<()> {
    let opt = Opt::parse();
    let font = std::fs::read(&opt.font)
        .with_context(|| format!("font {} (install fonts-dejavu-core)", opt.font.display()))?;
    // The plotting crate keeps fonts for the life of the process.
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{}: not a usable TrueType font", opt.font.display()))?;
    let text = std::fs::read_to_string(&opt.input)
        .with_context(|| format!("reading {}", opt.input.display()))?;
    let panels: Vec<Panel> = parse(&text)?
        .into_iter()
        .filter(|p| !p.points.is_empty())
        .collect();
    if panels.is_empty() {
        bail!("{}: no panel has points", opt.input.display());
    }
    // Three panels to a row, four from seven panels on (two rows rather than three).
    let cols = if panels.len() > 6 {
        4
    } else {
        panels.len().min(3)
    };
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (520 * u32::try_from(cols)?, 60 + 420 * u32::try_from(rows)?);
    let root = BitMapBackend::new(&opt.output, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&opt.title, ("sans-serif", 26))?;
    let areas = root.split_evenly((rows, cols));
    for (area, p) in areas.iter().zip(&panels) {
        match p.kind {
            Kind::Bar => draw_bars(area, p)?,
            Kind::Line | Kind::LogLine => draw_line(area, p)?,
        }
    }
    root.present()
        .with_context(|| format!("writing {}", opt.output.display()))?;
    println!(
        "tputplot: wrote {} ({} panels)",
        opt.output.display(),
        panels.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_panels_and_points_in_order() {
        let text = "# a comment\n\
            panel\tm\tbar\tModes\tMpps\tforwarder\n\
            point\tm\ttestpmd\t0\t12.5\t11\t13\n\
            panel\tf\tlogline\tFlows\tMpps\tflows\n\
            point\tf\t1k\t1000\t5\t4\t6\n\
            point\tm\tdsr\t0\t5.3\t3.5\t5.5\n";
        let p = parse(text).expect("valid");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].kind, Kind::Bar);
        let labels: Vec<_> = p[0].points.iter().map(|q| q.label.as_str()).collect();
        assert_eq!(labels, ["testpmd", "dsr"]);
        assert_eq!(p[1].kind, Kind::LogLine);
        assert!((p[1].points[0].x - 1000.0).abs() < 1e-9);
        assert!(
            parse("point\tx\ta\t0\t1\t1\t1\n").is_err(),
            "undeclared panel"
        );
        assert!(parse("panel\tx\tpie\tt\ty\tx\n").is_err(), "unknown kind");
        assert!(parse("panel\tx\tbar\tt\n").is_err(), "short panel line");
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(si(1000.0), "1k");
        assert_eq!(si(10_000_000.0), "10M");
        assert_eq!(si(100_000.0), "100k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(short(4.377), "4.38");
    }
}
