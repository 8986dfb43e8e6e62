//! Line charts and stacked-band charts written as PNG (plotters' bitmap backend,
//! with a bundled font so that no system font library is needed).

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    pub log_x: bool,
    pub log_y: bool,
    /// Top of the y axis; a line that leaves the chart there ends at the edge.
    pub y_max: Option<f64>,
}

/// Text centred above the point `(x, y)`, e.g. a total above a stack.
pub type Note = ((f64, f64), String);

/// One chart of a figure: its series, and notes written above points.
pub struct Panel<'a> {
    pub chart: &'a Chart<'a>,
    pub series: &'a [Series],
    pub notes: &'a [Note],
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
        log_x: false,
        log_y: true,
        y_max: initial.is_finite().then_some(2.0 * initial),
    };
    line_chart(path, &chart, &loss_curves(outcomes))
}

/// How the series of a chart are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One line per series.
    Lines,
    /// Each series a band on top of the ones before it (all series on the
    /// same x values), so that the top edge is their sum.
    Stacked,
}

/// Draws `series` into the PNG at `path`, with the legend on the right.
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<()> {
    let panel = Panel {
        chart,
        series,
        notes: &[],
    };
    figure(path, &[panel], Layout::Lines)
}

/// Draws each panel's series as stacked bands, the panels side by side, into
/// the PNG at `path`. The panels share their series' names (and colours): the
/// legend on the right lists the first panel's, top band first.
pub fn stacked_panels(path: &Path, panels: &[Panel<'_>]) -> Result<()> {
    figure(path, panels, Layout::Stacked)
}

fn figure(path: &Path, panels: &[Panel<'_>], layout: Layout) -> Result<()> {
    register_font()?;
    let legend_series = panels.first().map_or(&[][..], |p| p.series);
    // about 9 pixels a character at the legend's font size
    let longest = legend_series.iter().map(|s| s.name.chars().count()).max();
    let legend_width = (longest.unwrap_or(0) as u32 * 9 + 70).clamp(150, 450);
    let width = SIZE.0 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width + legend_width, SIZE.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot_area, legend_area) = root.split_horizontally(width);
    for (p, area) in panels
        .iter()
        .zip(plot_area.split_evenly((1, panels.len().max(1))))
    {
        panel(&area, p, layout)?;
    }
    legend(&legend_area, legend_series, layout)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One chart into `area`: its axis ranges, then [`draw`] on the chart's scales.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    p: &Panel<'_>,
    layout: Layout,
) -> Result<()> {
    let chart = p.chart;
    let series: Vec<Series> = match layout {
        Layout::Lines => p.series.iter().map(|s| shown(s, chart)).collect(),
        Layout::Stacked => stacked(p.series),
    };
    let (xs, ys): (Vec<f64>, Vec<f64>) =
        series.iter().flat_map(|s| s.points.iter().copied()).unzip();
    let (x_lo, x_hi) = bounds(&xs);
    let (y_lo, y_hi) = bounds(&ys);
    let x = if chart.log_x {
        // 4 % of the axis free on either side, for notes at the ends
        let pad = (x_hi / x_lo).powf(0.04);
        (x_lo / pad)..(x_hi * pad)
    } else {
        x_lo..x_hi.max(x_lo + 1.0)
    };
    let y = if chart.log_y {
        (y_lo * 0.8)..chart.y_max.unwrap_or(y_hi * 1.25)
    } else if layout == Layout::Stacked {
        0.0..chart.y_max.unwrap_or(y_hi * 1.05)
    } else {
        let pad = 0.05 * (y_hi - y_lo).max(1e-12);
        (y_lo - pad)..chart.y_max.unwrap_or(y_hi + pad)
    };
    let floor = (layout == Layout::Stacked).then_some(y.start);
    let (series, notes) = (&series[..], p.notes);
    // a log x axis is labelled at the data's x values
    let mut ticks = xs;
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let log_x = || x.clone().log_scale().with_key_points(ticks.clone());
    match (chart.log_x, chart.log_y) {
        (false, false) => draw(area, chart, series, notes, x, y, floor),
        (false, true) => draw(area, chart, series, notes, x, y.log_scale(), floor),
        (true, false) => draw(area, chart, series, notes, log_x(), y, floor),
        (true, true) => draw(area, chart, series, notes, log_x(), y.log_scale(), floor),
    }
}

/// The top edges of the stacked bands: each series plus all before it.
fn stacked(series: &[Series]) -> Vec<Series> {
    let mut below: Vec<f64> = Vec::new();
    series
        .iter()
        .map(|s| {
            below.resize(s.points.len(), 0.0);
            let points = s
                .points
                .iter()
                .zip(&mut below)
                .map(|(&(x, y), sum)| {
                    *sum += y;
                    (x, *sum)
                })
                .collect();
            Series {
                name: s.name.clone(),
                points,
                reference: s.reference,
            }
        })
        .collect()
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

/// The fill of the `i`-th band of a stacked chart: its line colour, lighter.
fn band_fill(i: usize) -> ShapeStyle {
    COLORS[i % COLORS.len()].mix(0.45).filled()
}

/// Draws `series` and `notes` on the given axes; with a `floor` (the bottom
/// of the y axis), as stacked bands from there.
fn draw<X, Y>(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    chart: &Chart<'_>,
    series: &[Series],
    notes: &[Note],
    x_range: X,
    y_range: Y,
    floor: Option<f64>,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(area)
        .caption(chart.title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
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
        if let Some(floor) = floor {
            let below: Vec<(f64, f64)> = match i {
                0 => s.points.iter().map(|&(x, _)| (x, floor)).collect(),
                _ => series[i - 1].points.clone(),
            };
            let band: Vec<(f64, f64)> = points.clone().chain(below.into_iter().rev()).collect();
            let fill = band_fill(i);
            ctx.draw_series(std::iter::once(Polygon::new(band, fill)))?;
        }
        if s.reference {
            ctx.draw_series(DashedLineSeries::new(points, 10, 6, style(s, i)))?;
        } else {
            ctx.draw_series(LineSeries::new(points, style(s, i)))?;
        }
    }
    let note_style = ("sans-serif", 15)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    ctx.draw_series(
        notes
            .iter()
            .map(|(at, text)| Text::new(text.clone(), *at, note_style.clone())),
    )?;
    Ok(())
}

/// One row per series: a line in its colour (on a band of its fill when
/// stacked, the top band first) and its name.
fn legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &[Series],
    layout: Layout,
) -> Result<()> {
    let (top, row) = (60, 26);
    for (i, s) in series.iter().enumerate() {
        let place = match layout {
            Layout::Lines => i,
            Layout::Stacked => series.len() - 1 - i,
        };
        let y = top + row * place as i32;
        if layout == Layout::Stacked {
            area.draw(&Rectangle::new([(10, y - 8), (40, y + 8)], band_fill(i)))?;
        }
        area.draw(&PathElement::new([(10, y), (40, y)], style(s, i)))?;
        area.draw(&Text::new(
            s.name.as_str(),
            (50, y - 9),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}
