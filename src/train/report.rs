//! Plots and `report.md`, as hand-written SVG: a few lines and rectangles do
//! not justify a plotting crate with font and bitmap dependencies, and SVG
//! renders in any browser and in Markdown viewers.

use std::{fmt::Write as _, path::Path};

use super::run::EpochMetrics;
use crate::error::Result;

const W: f64 = 520.0;
const H: f64 = 320.0;
const PAD: f64 = 48.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart of named series over shared x values.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let points = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| PAD + (x - x0) / (x1 - x0) * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD - (y - y0) / (y1 - y0) * (H - 2.0 * PAD);
    let mut svg = header(title);
    axes(&mut svg, x_label, (x0, x1), (y0, y1));
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" fill="{c}" font-size="12">{}</text>"#,
            W - PAD - 110.0,
            PAD + 14.0 * i as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        W / 2.0,
        esc(title)
    )
}

fn axes(svg: &mut String, x_label: &str, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) {
    let _ = writeln!(
        svg,
        r#"<path d="M{PAD},{PAD} V{} H{}" fill="none" stroke="black"/>"#,
        H - PAD,
        W - PAD
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (x, y) = (PAD + f * (W - 2.0 * PAD), H - PAD - f * (H - 2.0 * PAD));
        let _ = writeln!(
            svg,
            r#"<text x="{x:.0}" y="{}" text-anchor="middle" font-size="11">{:.3}</text>"#,
            H - PAD + 14.0,
            x0 + f * (x1 - x0)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.0}" text-anchor="end" font-size="11">{:.3}</text>"#,
            PAD - 4.0,
            y + 4.0,
            y0 + f * (y1 - y0)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"#,
        W / 2.0,
        H - 10.0,
        esc(x_label)
    );
}

/// Grouped bars on a 0–1 scale: one group per model, one bar per metric
/// (coloured, with a legend), each with its interval as a whisker.
pub fn bar_chart(
    title: &str,
    metrics: &[&str],
    groups: &[(String, Vec<super::metrics::Estimate>)],
) -> String {
    let mut svg = header(title);
    let _ = writeln!(
        svg,
        r#"<path d="M{PAD},{PAD} V{} H{}" fill="none" stroke="black"/>"#,
        H - PAD,
        W - PAD
    );
    let sy = |v: f64| H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.0}" text-anchor="end" font-size="11">{v:.2}</text><path d="M{PAD},{:.0} H{}" stroke="#ddd"/>"##,
            PAD - 4.0,
            sy(v) + 4.0,
            sy(v),
            W - PAD
        );
    }
    let slot = (W - 2.0 * PAD) / groups.len().max(1) as f64;
    let bar = (slot * 0.8 / metrics.len().max(1) as f64).min(40.0);
    for (g, (name, values)) in groups.iter().enumerate() {
        let left = PAD + g as f64 * slot + (slot - bar * metrics.len() as f64) / 2.0;
        for (m, e) in values.iter().enumerate() {
            if !e.value.is_finite() {
                continue;
            }
            let c = COLOURS[m % COLOURS.len()];
            let x = left + m as f64 * bar;
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/>"#,
                sy(e.value),
                bar - 2.0,
                sy(0.0) - sy(e.value)
            );
            if e.lo.is_finite() && e.hi.is_finite() {
                let cx = x + (bar - 2.0) / 2.0;
                let _ = writeln!(
                    svg,
                    r#"<path d="M{cx:.1},{:.1} V{:.1} M{:.1},{:.1} H{:.1} M{:.1},{:.1} H{:.1}" stroke="black"/>"#,
                    sy(e.lo),
                    sy(e.hi),
                    cx - 4.0,
                    sy(e.lo),
                    cx + 4.0,
                    cx - 4.0,
                    sy(e.hi),
                    cx + 4.0
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{}" text-anchor="middle" font-size="12">{}</text>"#,
            PAD + (g as f64 + 0.5) * slot,
            H - PAD + 16.0,
            esc(name)
        );
    }
    for (m, name) in metrics.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            W - PAD - 90.0,
            PAD - 30.0 + 14.0 * m as f64,
            COLOURS[m % COLOURS.len()],
            W - PAD - 75.0,
            PAD - 21.0 + 14.0 * m as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A confusion matrix as shaded cells with counts.
pub fn confusion_chart(title: &str, matrix: &[Vec<u64>], classes: &[String]) -> String {
    let k = matrix.len().max(1);
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let cell = ((H - 2.0 * PAD) / k as f64).min(120.0);
    let mut svg = header(title);
    for (t, row) in matrix.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            let shade = 255.0 - 200.0 * n as f64 / max;
            let (x, y) = (PAD * 2.0 + p as f64 * cell, PAD + t as f64 * cell);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.0}" y="{y:.0}" width="{cell:.0}" height="{cell:.0}" fill="rgb({s},{s},255)" stroke="black"/>"#,
                s = shade as u8
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="middle" font-size="16">{n}</text>"#,
                x + cell / 2.0,
                y + cell / 2.0 + 6.0
            );
        }
        let name = classes.get(t).cloned().unwrap_or_else(|| t.to_string());
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end" font-size="12">true {}</text>"#,
            PAD * 2.0 - 6.0,
            PAD + (t as f64 + 0.5) * cell + 4.0,
            esc(&name)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="middle" font-size="12">pred {}</text>"#,
            PAD * 2.0 + (t as f64 + 0.5) * cell,
            PAD + k as f64 * cell + 16.0,
            esc(&name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `curves.svg` (losses) and `accuracy.svg` of a run's history.
pub fn write_training_plots(run: &Path, history: &[EpochMetrics]) -> Result<()> {
    let s = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.epoch as f64, f(m))).collect()
    };
    let loss = line_chart(
        "loss",
        "epoch",
        &[("train", s(|m| m.train_loss)), ("val", s(|m| m.val_loss))],
    );
    crate::atomic::write(&run.join("loss.svg"), loss.as_bytes())?;
    let acc = line_chart(
        "accuracy",
        "epoch",
        &[
            ("train", s(|m| m.train_accuracy)),
            ("val", s(|m| m.val_accuracy)),
            ("val AUC", s(|m| m.val_auc)),
        ],
    );
    crate::atomic::write(&run.join("accuracy.svg"), acc.as_bytes())?;
    Ok(())
}

/// ROC curve points (false positive rate, true positive rate), threshold
/// descending, ties taken together.
pub fn roc_points(scores: &[f64], positives: &[bool]) -> Vec<(f64, f64)> {
    let np = positives.iter().filter(|&&p| p).count().max(1) as f64;
    let nn = positives.iter().filter(|&&p| !p).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if positives[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / nn, tp / np));
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_by_hand() {
        let pts = roc_points(&[0.9, 0.8, 0.4, 0.1], &[true, false, true, false]);
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let svg = line_chart("t<1>", "x", &[("a", vec![(1.0, 0.5), (2.0, f64::NAN)])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t&lt;1&gt;"));
        let c = confusion_chart(
            "c",
            &[vec![3, 1], vec![0, 4]],
            &["benign".into(), "malignant".into()],
        );
        assert_eq!(c.matches("<rect").count(), 5);
    }

    #[test]
    fn bar_chart_draws_a_bar_and_whisker_per_value() {
        use crate::train::metrics::Estimate;
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
        );
        // Background + 3 finite bars + 2 legend swatches.
        assert_eq!(svg.matches("<rect").count(), 1 + 3 + 2);
        assert_eq!(svg.matches("stroke=\"black\"/>").count(), 1 + 3);
        assert!(svg.contains(">mlp<") && svg.contains(">cnn<"));
    }
}
