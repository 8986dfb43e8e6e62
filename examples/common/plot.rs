//! Line charts written as PNG (plotters' bitmap backend, with a bundled font so
//! that no system font library is needed).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::train::Outcome;

/// DejaVu Sans, cut down to Latin and Greek letters (see `data/README.md`).
const FONT: &[u8] = include_bytes!("../../data/DejaVuSans-subset.ttf");
/// Width and height of the chart; the legend adds its width on the right.
const SIZE: (u32, u32) = (900, 650);
/// Tableau's ten colours and four dark ones, then again.
const COLORS: [RGBColor; 14] = [
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
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 128, 0),
    RGBColor(0, 100, 0),
];

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed in grey: a threshold or other reference, not data.
    pub reference: bool,
}

/// Titles and scale of a chart.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    /// Top of the y axis; a line that leaves the chart there ends at the edge.
    pub y_max: Option<f64>,
}

/// `target/plots/{name}.png` in this crate, its folder created.
pub fn output_path(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.join(format!("{name}.png")))
}

/// The training-loss curve of each run (named as the run, and where it
/// stopped early if it did).
pub fn loss_curves(outcomes: &[Outcome]) -> Vec<Series> {
    outcomes
        .iter()
        .map(|o| Series {
            name: match &o.stopped {
                Some((step, _)) => format!("{} (stopped: {step})", o.name),
                None => o.name.clone(),
            },
            reference: false,
            points: o
                .train_loss
                .iter()
                .enumerate()
                .map(|(step, &loss)| (step as f64, loss))
                .collect(),
        })
        .collect()
}

/// A chart of the training-loss curves of `outcomes` (log scale, cut off at
/// twice the highest initial loss so that a diverging run does not squash
/// the others).
pub fn loss_chart(path: &Path, title: &str, outcomes: &[Outcome]) -> Result<()> {
    let initial = outcomes
        .iter()
        .filter_map(|o| o.train_loss.first().copied())
        .fold(f64::NAN, f64::max);
    let chart = Chart {
        title,
        x_label: "step",
        y_label: "cross-entropy on the training split (log scale)",
        log_y: true,
        y_max: initial.is_finite().then_some(2.0 * initial),
    };
    line_chart(path, &chart, &loss_curves(outcomes))
}

/// Draws `series` into the PNG at `path`, with the legend on the right.
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    register_font()?;
    let series: Vec<Series> = series.iter().map(|s| shown(s, chart)).collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) =
        series.iter().flat_map(|s| s.points.iter().copied()).unzip();
    let (x_lo, x_hi) = bounds(&xs);
    let (y_lo, y_hi) = bounds(&ys);
    let x_range = x_lo..x_hi.max(x_lo + 1.0);
    // about 9 pixels a character at the legend's font size
    let longest = series.iter().map(|s| s.name.chars().count()).max();
    let legend_width = (longest.unwrap_or(0) as u32 * 9 + 70).clamp(150, 450);
    let root = BitMapBackend::new(path, (SIZE.0 + legend_width, SIZE.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0);
    if chart.log_y {
        let y_range = (y_lo * 0.8)..chart.y_max.unwrap_or(y_hi * 1.25);
        draw(&plot_area, chart, &series, x_range, y_range.log_scale())?;
    } else {
        let pad = 0.05 * (y_hi - y_lo).max(1e-12);
        let y_range = (y_lo - pad)..chart.y_max.unwrap_or(y_hi + pad);
        draw(&plot_area, chart, &series, x_range, y_range)?;
    }
    legend(&legend_area, &series)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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

/// The points of `series` that the chart can show, up to where the line
/// leaves the chart at `y_max` (that point moved onto the edge).
fn shown(series: &Series, chart: &Chart<'_>) -> Series {
    let mut points = Vec::new();
    for &(x, y) in &series.points {
        if !x.is_finite() || y.is_nan() || (chart.log_y && y <= 0.0) {
            continue;
        }
        match chart.y_max {
            Some(top) if y > top => {
                points.push((x, top));
                break;
            }
            _ => points.push((x, y)),
        }
    }
    Series {
        name: series.name.clone(),
        points,
        reference: series.reference,
    }
}

/// `(min, max)` of `values`, `(0, 1)` if there are none.
fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo <= hi {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// The line style of series `s`, the `i`-th of its chart.
fn style(s: &Series, i: usize) -> ShapeStyle {
    if s.reference {
        RGBColor(90, 90, 90).stroke_width(2)
    } else {
        COLORS[i % COLORS.len()].stroke_width(2)
    }
}

fn draw<Y>(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    chart: &Chart<'_>,
    series: &[Series],
    x_range: Range<f64>,
    y_range: Y,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(area)
        .caption(chart.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(RangedCoordf64::from(x_range), y_range)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let points = s.points.iter().copied();
        if s.reference {
            ctx.draw_series(DashedLineSeries::new(points, 10, 6, style(s, i)))?;
        } else {
            ctx.draw_series(LineSeries::new(points, style(s, i)))?;
        }
    }
    Ok(())
}

/// One row per series: a line in its colour and its name.
fn legend(area: &DrawingArea<BitMapBackend<'_>, Shift>, series: &[Series]) -> Result<()> {
    let (top, row) = (60, 26);
    for (i, s) in series.iter().enumerate() {
        let y = top + row * i as i32;
        area.draw(&PathElement::new([(10, y), (40, y)], style(s, i)))?;
        area.draw(&Text::new(
            s.name.as_str(),
            (50, y - 9),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}
