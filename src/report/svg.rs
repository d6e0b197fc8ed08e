//! Line and bar charts as inline SVG, so `report.html` is one self-contained file. Plotting crates
//! need font files to lay out text; a chart of a few polylines or bars with min / max labels does
//! not.

use super::Curve;

/// Text safe inside HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const WIDTH: f64 = 500.0;
const HEIGHT: f64 = 260.0;
const MARGIN: f64 = 44.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// Number labels: short, whatever the magnitude; whole numbers (steps) as integers.
fn label(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e9 {
        format!("{x:.0}")
    } else if x.abs() >= 1e4 || x.abs() < 1e-2 {
        format!("{x:.1e}")
    } else {
        format!("{x:.3}")
    }
}

/// One group of a bar chart: a label and per series (mean, error) or nothing.
pub type BarGroup = (String, Vec<Option<(f64, f64)>>);

/// A grouped bar chart from 0: one group per metric, one bar per series (model), each with an
/// error bar of its standard deviation, and a legend.
pub fn bar_chart(title: &str, series: &[String], groups: &[BarGroup]) -> String {
    let (w, h) = (WIDTH + 200.0, HEIGHT + 20.0);
    let (left, right, top, bottom) = (MARGIN + 16.0, w - 12.0, 28.0, h - MARGIN - 16.0);
    let top_value = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().flatten().map(|(m, e)| m + e.abs()))
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let py = |y: f64| bottom - y / top_value * (bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n\
         <rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>\n\
         <text x=\"{:.1}\" y=\"{bottom:.1}\" text-anchor=\"end\" font-size=\"11\">0</text>\n",
        w / 2.0,
        escape(title),
        right - left,
        bottom - top,
        left - 4.0,
        top + 10.0,
        label(top_value),
        left - 4.0,
    );
    let slot = (right - left) / groups.len().max(1) as f64;
    let bar = slot * 0.8 / series.len().max(1) as f64;
    for (g, (name, bars)) in groups.iter().enumerate() {
        let x0 = left + g as f64 * slot + slot * 0.1;
        for (i, b) in bars.iter().enumerate() {
            let Some((m, e)) = *b else { continue };
            let (x, colour) = (x0 + i as f64 * bar, COLOURS[i % COLOURS.len()]);
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\n",
                py(m),
                bar * 0.9,
                bottom - py(m)
            ));
            if e > 0.0 {
                let cx = x + bar * 0.45;
                svg.push_str(&format!(
                    "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>\n",
                    py((m - e).max(0.0)),
                    py(m + e)
                ));
            }
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n",
            x0 + slot * 0.4,
            bottom + 14.0,
            escape(name)
        ));
    }
    for (i, name) in series.iter().enumerate() {
        let (lx, ly) = (left + i as f64 * 130.0, h - 10.0);
        svg.push_str(&format!(
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{ly}\" font-size=\"11\">{}</text>\n",
            ly - 9.0,
            COLOURS[i % COLOURS.len()],
            lx + 16.0,
            escape(name)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A chart of the curve's series (step on x) with a legend; an empty curve says so.
pub fn line_chart(curve: &Curve) -> String {
    let points: Vec<(f64, f64)> = curve
        .series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">\n\
         <text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n",
        WIDTH / 2.0,
        escape(&curve.title)
    );
    if points.is_empty() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">no data</text>\n</svg>\n",
            WIDTH / 2.0,
            HEIGHT / 2.0
        ));
        return svg;
    }
    let min = |f: fn(&(f64, f64)) -> f64| points.iter().map(f).fold(f64::INFINITY, f64::min);
    let max = |f: fn(&(f64, f64)) -> f64| points.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let (x0, x1, y0, y1) = (min(|p| p.0), max(|p| p.0), min(|p| p.1), max(|p| p.1));
    // A flat range still needs a non-zero span to divide by.
    let (xs, ys) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let (left, right, top, bottom) = (MARGIN + 16.0, WIDTH - 12.0, 28.0, HEIGHT - MARGIN);
    let px = |x: f64| left + (x - x0) / xs * (right - left);
    let py = |y: f64| bottom - (y - y0) / ys * (bottom - top);
    svg.push_str(&format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n",
        right - left,
        bottom - top
    ));
    for (text, x, y, anchor) in [
        (label(y1), left - 4.0, top + 10.0, "end"),
        (label(y0), left - 4.0, bottom, "end"),
        (label(x0), left, bottom + 14.0, "start"),
        (label(x1), right, bottom + 14.0, "end"),
    ] {
        svg.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\" font-size=\"11\">{text}</text>\n"
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">step</text>\n",
        (left + right) / 2.0,
        bottom + 14.0
    ));
    for (i, (name, s)) in curve.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            pts.join(" ")
        ));
        let ly = HEIGHT - 10.0;
        let lx = left + i as f64 * 120.0;
        svg.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{ly}\" font-size=\"11\">{}</text>\n",
            ly - 4.0,
            lx + 16.0,
            ly - 4.0,
            lx + 20.0,
            escape(name)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_maps_the_data_range_onto_the_plot_box() {
        let c = Curve { title: "a<b".into(), series: vec![("loss".into(), vec![(0.0, 1.0), (10.0, 3.0)])] };
        let svg = line_chart(&c);
        // x 0 -> left edge (60), y 1 (min) -> bottom (216); x 10 -> right (488), y 3 -> top (28).
        assert!(svg.contains("points=\"60.0,216.0 488.0,28.0\""), "{svg}");
        assert!(svg.contains("a&lt;b"));
        let empty = line_chart(&Curve { title: "t".into(), series: vec![] });
        assert!(empty.contains("no data"));
        // Step labels are plain integers.
        assert!(svg.contains(">10</text>") && !svg.contains("10.000"), "{svg}");
    }

    #[test]
    fn bars_start_at_zero_and_carry_their_spread() {
        let series = vec!["SFT".to_string(), "RL<1>".to_string()];
        let groups = vec![("CHAIR_i".to_string(), vec![Some((0.1, 0.0)), Some((0.05, 0.05))])];
        let svg = bar_chart("hallucination", &series, &groups);
        // The tallest extent is 0.1 (0.05 + 0.05): SFT's bar reaches the top (y 28) from the bottom
        // (y 220); RL's is half as tall, with an error bar from 0 to the top.
        assert!(svg.contains("y=\"28.0\" width=") && svg.contains("height=\"192.0\""), "{svg}");
        assert!(svg.contains("height=\"96.0\""), "{svg}");
        assert!(svg.contains("y1=\"220.0\"") && svg.contains("y2=\"28.0\""), "{svg}");
        assert!(svg.contains("RL&lt;1&gt;"));
    }
}
