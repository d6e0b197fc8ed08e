//! Line charts as inline SVG, so `report.html` is one self-contained file. Plotting crates need
//! font files to lay out text; a chart of a few polylines with min / max labels does not.

use super::Curve;

/// Text safe inside HTML and SVG.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const WIDTH: f64 = 500.0;
const HEIGHT: f64 = 260.0;
const MARGIN: f64 = 44.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// Number labels: short, whatever the magnitude.
fn label(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-2) { format!("{x:.1e}") } else { format!("{x:.3}") }
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
    }
}
