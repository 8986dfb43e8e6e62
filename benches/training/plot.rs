//! A task's training curves as a PNG: the loss against steps and against
//! seconds (log y), one line per optimizer at its tuned learning rate (the
//! mean over seeds), the target dashed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::summary::Summary;

/// DejaVu Sans, cut down to Latin and Greek letters (see `data/README.md`).
const FONT: &[u8] = include_bytes!("../../data/DejaVuSans-subset.ttf");
/// Size of one panel; the legend adds [`LEGEND_WIDTH`] on the right.
const PANEL: (u32, u32) = (760, 560);
const LEGEND_WIDTH: u32 = 300;
/// Tableau's ten colours.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A point of a curve: step, seconds, loss.
type Point = (f64, f64, f64);

/// One optimizer's mean curve, a point per step.
struct Line {
    name: String,
    points: Vec<Point>,
}

/// Draws the curves of `summary` into the PNG at `path`.
pub fn task_chart(path: &Path, summary: &Summary) -> Result<()> {
    register_font()?;
    let mut lines: Vec<Line> = summary.rows.iter().map(|r| mean_line(summary, r)).collect();
    let initial = lines
        .iter()
        .filter_map(|l| l.points.first().map(|p| p.2))
        .fold(f64::NAN, f64::max);
    let y_max = 1.25 * initial.max(summary.target);
    let y_min = 0.8
        * lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.2))
            .chain([summary.target])
            .filter(|&y| y.is_finite() && y > 0.0)
            .fold(f64::INFINITY, f64::min);
    anyhow::ensure!(
        y_min.is_finite() && y_max.is_finite() && y_min < y_max,
        "{}: no finite positive losses to plot",
        summary.name
    );
    // a line that leaves the chart at the top runs along its edge
    for point in lines.iter_mut().flat_map(|l| l.points.iter_mut()) {
        point.2 = point.2.min(y_max);
    }
    let root = BitMapBackend::new(path, (2 * PANEL.0 + LEGEND_WIDTH, PANEL.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let (panels, legend_area) = root.split_horizontally(2 * PANEL.0);
    let (by_steps, by_seconds) = panels.split_horizontally(PANEL.0);
    let steps = Axis {
        title: format!("{}: loss per step", summary.name),
        label: "step",
        value: |p| p.0,
        log: false,
    };
    let seconds = Axis {
        title: format!("{}: loss per second", summary.name),
        label: "seconds of step time, mean over seeds (log scale)",
        value: |p| p.1,
        log: true,
    };
    for (area, axis) in [(&by_steps, &steps), (&by_seconds, &seconds)] {
        panel(area, axis, &lines, (y_min, y_max), summary.target)?;
    }
    legend(&legend_area, &lines)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The mean over seeds of the curves of `row`'s optimizer, up to the
/// shortest run; points whose mean loss is not finite are left out.
fn mean_line(summary: &Summary, row: &crate::summary::Row) -> Line {
    let curves: Vec<_> = summary.curves(&row.method).collect();
    let len = curves.iter().map(|c| c.loss.len()).min().unwrap_or(0);
    let n = curves.len() as f64;
    let points = (0..len)
        .map(|i| {
            let seconds = curves.iter().map(|c| c.seconds[i]).sum::<f64>() / n;
            let loss = curves.iter().map(|c| c.loss[i]).sum::<f64>() / n;
            (i as f64, seconds, loss)
        })
        .filter(|p| p.2.is_finite())
        .collect();
    Line {
        name: row.method.label(),
        points,
    }
}

/// The x axis of a panel.
struct Axis {
    title: String,
    label: &'static str,
    /// The point's coordinate on this axis.
    value: fn(&Point) -> f64,
    log: bool,
}

/// One panel: every line against `axis` (on a log axis, from the first
/// positive value), log y over `y_range`, and the target.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    axis: &Axis,
    lines: &[Line],
    (y_min, y_max): (f64, f64),
    target: f64,
) -> Result<()> {
    let xs = || lines.iter().flat_map(|l| l.points.iter().map(axis.value));
    let x_max = xs().fold(0.0, f64::max).max(1e-9);
    let y_range = (y_min..y_max)
        .log_scale()
        .with_key_points(log_ticks(y_min, y_max));
    if axis.log {
        let x_min = xs().filter(|&x| x > 0.0).fold(x_max, f64::min);
        let x_range = (x_min..x_max)
            .log_scale()
            .with_key_points(log_ticks(x_min, x_max));
        draw(area, axis, lines, x_range, y_range, (x_min, x_max), target)
    } else {
        draw(area, axis, lines, 0.0..x_max, y_range, (0.0, x_max), target)
    }
}

/// Draws the panel on the given coordinates; `x_span` is the x range.
fn draw<X, Y>(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    axis: &Axis,
    lines: &[Line],
    x_range: X,
    y_range: Y,
    (x_min, x_max): (f64, f64),
    target: f64,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&axis.title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x_range, y_range)?;
    let decimals = match x_max {
        _ if axis.log => 0, // labelled by two_digits
        m if m >= 10.0 => 0,
        m if m >= 1.0 => 1,
        _ => 2,
    };
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc(axis.label)
        .y_desc("training loss, mean over seeds (log scale)")
        .x_label_formatter(&|&x| {
            if axis.log {
                two_digits(x)
            } else {
                format!("{x:.decimals$}")
            }
        })
        .y_label_formatter(&|&y| two_digits(y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, line) in lines.iter().enumerate() {
        let points = line
            .points
            .iter()
            .map(|p| ((axis.value)(p), p.2))
            .filter(|&(x, _)| !axis.log || x > 0.0);
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        chart.draw_series(LineSeries::new(points, style))?;
    }
    let grey = RGBColor(90, 90, 90).stroke_width(1);
    let target_line = [(x_min, target), (x_max, target)];
    chart.draw_series(DashedLineSeries::new(target_line, 8, 5, grey))?;
    Ok(())
}

/// Tick values `m·10^k` in `[lo, hi]`: with `m` in 1, 2, 3, 5 if that makes
/// at most ten ticks, else 1 and 3, else 1.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|t| (lo..=hi).contains(t))
            .collect()
    };
    [&[1.0, 2.0, 3.0, 5.0][..], &[1.0, 3.0], &[1.0]]
        .into_iter()
        .map(ticks)
        .find(|t| t.len() <= 10)
        .unwrap_or_default()
}

/// One row per line, then the target.
fn legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, lines: &[Line]) -> Result<()> {
    let (top, row) = (60, 26);
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    let mut y = top;
    for (i, line) in lines.iter().enumerate() {
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        area.draw(&PathElement::new([(10, y), (40, y)], style))?;
        area.draw(&Text::new(line.name.as_str(), (50, y - 9), font.clone()))?;
        y += row;
    }
    let grey = RGBColor(90, 90, 90).stroke_width(1);
    area.draw(&PathElement::new([(10, y), (18, y)], grey))?;
    area.draw(&PathElement::new([(26, y), (34, y)], grey))?;
    area.draw(&Text::new("target (tuned AdamW)", (50, y - 9), font))?;
    Ok(())
}

/// `y` to two significant digits, without trailing zeros (`0.005`, `0.12`, `2`).
fn two_digits(y: f64) -> String {
    let decimals = (1 - y.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{y:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn register_font() -> Result<()> {
    static REGISTERED: Once = Once::new();
    let mut result = Ok(());
    REGISTERED.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled font is not a valid TrueType font"));
    });
    result
}
