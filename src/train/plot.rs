//! The trainer's SVG charts, drawn with `plotters` (its SVG backend only: text is
//! written as SVG `<text>` in the viewer's sans-serif and laid out by plotters'
//! built-in size estimate, so no font files, font-kit or fontconfig are needed).
//!
//! - [`line_chart`]: named series over shared x values (loss, accuracy, ROC).
//! - [`bar_chart`]: grouped bars on a 0–1 scale with 95% interval whiskers (`compare`).
//! - [`confusion_chart`]: a confusion matrix as shaded cells with their counts.
//!
//! Each returns the SVG document; an `Err` (plotters found the drawing area too small
//! for the layout) carries plotters' message.

use std::ops::Range;

use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::metrics::Estimate;

const SIZE: (u32, u32) = (560, 340);
/// matplotlib's first colours, the same order in every chart.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];
const FONT: &str = "sans-serif";

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

fn msg<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the chart failed: {e:?}")
}

/// Draws on a white `SIZE` SVG canvas and returns the document.
fn svg(
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(msg)?;
        draw(&root)?;
        root.present().map_err(msg)?;
    }
    Ok(out)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart titled `title` over `x` × `y`, with label areas `x_area` high below
/// and `y_area` wide on the left.
fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    (x_area, y_area): (u32, u32),
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x, y)
        .map_err(msg)
}

/// The legend of the labelled series, top right.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(msg)
}

/// The smallest and largest finite value of `v`, or `None`.
fn finite_range(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    v.filter(|x| x.is_finite()).fold(None, |r, x| match r {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// A line chart of named series; non-finite points are left out. The y axis
/// starts at 0 unless a value is below it.
pub fn line_chart(
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let all = || series.iter().flat_map(|(_, p)| p.iter()).filter(finite);
    let (x0, mut x1) = finite_range(all().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (y0, y1) = finite_range(all().map(|p| p.1)).unwrap_or((0.0, 1.0));
    let (y0, mut y1) = (y0.min(0.0), y1);
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    // A little room above the highest point.
    let y1 = y1 + 0.05 * (y1 - y0);
    svg(|root| {
        let mut chart = chart(root, title, (40, 56), x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(msg)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().filter(finite).copied(),
                    c.stroke_width(2),
                ))
                .map_err(msg)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        legend(&mut chart)
    })
}

/// Grouped bars on a 0–1 scale: one group per model, one bar per metric
/// (coloured, with a legend), each with its interval as a whisker. A bar whose
/// value is not finite is left out.
pub fn bar_chart(
    title: &str,
    metrics: &[&str],
    groups: &[(String, Vec<Estimate>)],
) -> Result<String, String> {
    let n = groups.len().max(1) as f64;
    let bar = 0.8 / metrics.len().max(1) as f64;
    svg(|root| {
        let mut chart = chart(root, title, (28, 48), 0.0..n, 0.0..1.0f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(msg)?;
        for (m, metric) in metrics.iter().enumerate() {
            let c = colour(m);
            let at = move |g: usize| g as f64 + 0.1 + m as f64 * bar;
            let bars = groups.iter().enumerate().filter_map(|(g, (_, v))| {
                let e = v.get(m).filter(|e| e.value.is_finite())?;
                let x = at(g);
                Some(Rectangle::new(
                    [(x + 0.01, 0.0), (x + bar - 0.01, e.value.clamp(0.0, 1.0))],
                    c.filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(msg)?
                .label(*metric)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
            let whiskers = groups.iter().enumerate().filter_map(|(g, (_, v))| {
                let e = v
                    .get(m)
                    .filter(|e| e.value.is_finite() && e.lo.is_finite() && e.hi.is_finite())?;
                let cx = at(g) + bar / 2.0;
                let (lo, hi) = (e.lo.clamp(0.0, 1.0), e.hi.clamp(0.0, 1.0));
                let w = bar / 5.0;
                Some(PathElement::new(
                    vec![
                        (cx - w, lo),
                        (cx + w, lo),
                        (cx, lo),
                        (cx, hi),
                        (cx - w, hi),
                        (cx + w, hi),
                    ],
                    BLACK.stroke_width(1),
                ))
            });
            chart.draw_series(whiskers).map_err(msg)?;
        }
        let below = (FONT, 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        chart
            .draw_series(groups.iter().enumerate().map(|(g, (name, _))| {
                EmptyElement::at((g as f64 + 0.5, 0.0))
                    + Text::new(name.clone(), (0, 8), below.clone())
            }))
            .map_err(msg)?;
        legend(&mut chart)
    })
}

/// A confusion matrix (rows true, columns predicted) as cells shaded by their
/// count, each with its count; rows and columns named by `classes`.
pub fn confusion_chart(
    title: &str,
    matrix: &[Vec<u64>],
    classes: &[String],
) -> Result<String, String> {
    let k = matrix.len().max(1);
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let name = |i: usize| classes.get(i).cloned().unwrap_or_else(|| i.to_string());
    // Cells left to right, top to bottom: row t is drawn at y = k - 1 - t.
    let kf = k as f64;
    svg(|root| {
        let mut chart = chart(root, title, (44, 120), 0.0..kf, 0.0..kf)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("predicted")
            .y_desc("true")
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(msg)?;
        let cells = matrix.iter().enumerate().flat_map(|(t, row)| {
            row.iter().enumerate().map(move |(p, &n)| {
                let s = (255.0 - 200.0 * n as f64 / max) as u8;
                let y = (k - 1 - t) as f64;
                (p as f64, y, n, RGBColor(s, s, 255))
            })
        });
        let centre = (FONT, 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        for (x, y, n, fill) in cells {
            chart
                .draw_series([
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill.filled()),
                    Rectangle::new([(x, y), (x + 1.0, y + 1.0)], BLACK.stroke_width(1)),
                ])
                .map_err(msg)?;
            chart
                .draw_series([Text::new(n.to_string(), (x + 0.5, y + 0.5), centre.clone())])
                .map_err(msg)?;
        }
        let label = (FONT, 12).into_font().color(&BLACK);
        let left = label.pos(Pos::new(HPos::Right, VPos::Center));
        let below = label.pos(Pos::new(HPos::Center, VPos::Top));
        chart
            .draw_series((0..k).map(|i| {
                EmptyElement::at((0.0, (k - 1 - i) as f64 + 0.5))
                    + Text::new(name(i), (-6, 0), left.clone())
            }))
            .map_err(msg)?;
        chart
            .draw_series((0..k).map(|i| {
                EmptyElement::at((i as f64 + 0.5, 0.0)) + Text::new(name(i), (0, 6), below.clone())
            }))
            .map_err(msg)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').map(|(_, rest)| rest))
            .filter_map(|t| t.split_once("</text>").map(|(inner, _)| inner.trim()))
            .collect()
    }

    #[test]
    fn line_chart_has_title_legend_and_one_path_per_series() {
        let svg = line_chart(
            "t<1>",
            "epoch",
            &[
                ("train", vec![(1.0, 0.9), (2.0, 0.5), (3.0, f64::NAN)]),
                ("val", vec![(1.0, 1.1), (2.0, 0.7), (3.0, 0.6)]),
            ],
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        let t = texts(&svg);
        // The title escaped, the axis name, both legend entries.
        for want in ["t&lt;1&gt;", "epoch", "train", "val"] {
            assert!(t.contains(&want), "{want} not in {t:?}");
        }
        // Each series is one polyline in its colour, NaN left out (2 and 3 points).
        let lines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        let train: Vec<&&str> = lines.iter().filter(|l| l.contains("#1F77B4")).collect();
        let val: Vec<&&str> = lines.iter().filter(|l| l.contains("#D62728")).collect();
        // The series plus its legend swatch.
        assert_eq!((train.len(), val.len()), (2, 2), "{svg}");
        let points = |l: &str| {
            let list = l.split("points=\"").nth(1).unwrap();
            list.split('"').next().unwrap().split_whitespace().count()
        };
        assert_eq!(points(train[0]), 2);
        assert_eq!(points(val[0]), 3);
    }

    #[test]
    fn line_chart_of_nothing_still_draws() {
        let svg = line_chart("empty", "x", &[("a", vec![(f64::NAN, 1.0)])]).unwrap();
        assert!(texts(&svg).contains(&"empty"));
    }

    #[test]
    fn bar_chart_draws_a_bar_and_whisker_per_finite_value() {
        let e = |v: f64| Estimate {
            value: v,
            lo: v - 0.1,
            hi: v + 0.05,
            n: 10,
        };
        let svg = bar_chart(
            "t",
            &["accuracy", "AUC"],
            &[
                ("mlp".into(), vec![e(0.6), e(0.7)]),
                ("cnn".into(), vec![e(0.8), e(f64::NAN)]),
            ],
        )
        .unwrap();
        let t = texts(&svg);
        for want in ["mlp", "cnn", "accuracy", "AUC"] {
            assert!(t.contains(&want), "{want} not in {t:?}");
        }
        // Filled rectangles in each metric's colour: its bars plus its legend swatch.
        let filled = |c: &str| {
            svg.matches(&format!("fill=\"{c}\" stroke=\"none\""))
                .count()
        };
        assert_eq!(filled("#1F77B4"), 2 + 1, "{svg}");
        assert_eq!(filled("#D62728"), 1 + 1, "{svg}");
        // One black whisker (a six-point path) per finite bar; the axes and
        // ticks are two-point paths.
        let whiskers = svg
            .split("<polyline")
            .skip(1)
            .filter(|l| l.contains("stroke=\"#000000\""))
            .filter(|l| {
                let list = l.split("points=\"").nth(1).unwrap();
                list.split('"').next().unwrap().split_whitespace().count() == 6
            })
            .count();
        assert_eq!(whiskers, 3, "{svg}");
    }

    #[test]
    fn confusion_chart_writes_every_count_and_class() {
        let svg = confusion_chart(
            "c",
            &[vec![3, 1], vec![0, 4]],
            &["benign".into(), "malignant".into()],
        )
        .unwrap();
        let t = texts(&svg);
        for want in ["3", "1", "0", "4", "predicted", "true"] {
            assert!(t.contains(&want), "{want} not in {t:?}");
        }
        assert_eq!(t.iter().filter(|s| **s == "benign").count(), 2);
        assert_eq!(t.iter().filter(|s| **s == "malignant").count(), 2);
        // The largest count is the darkest cell, an empty one white.
        assert!(svg.contains("fill=\"#3737FF\""), "{svg}");
        assert!(svg.contains("fill=\"#FFFFFF\""), "{svg}");
    }
}
