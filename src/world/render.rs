//! Anti-aliased rendering of a scene into an RGB image.
//!
//! Each pixel is the background blended with every shape by the shape's coverage of that pixel,
//! estimated from 4x4 sub-samples, so edges are smooth and a shape's pixels can be checked exactly.

use super::scene::{Object, Scene, Shape};
use image::RgbImage;

/// Sub-samples per pixel side.
const SS: u32 = 4;

/// Whether the point (u, v), in units of the shape's radius around its centre (v pointing down),
/// lies inside the shape.
pub fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Circle => u * u + v * v <= 1.0,
        Shape::Square => u.abs() <= 0.8 && v.abs() <= 0.8,
        Shape::Diamond => u.abs() + v.abs() <= 1.0,
        // Apex at the top, base at v = 0.8.
        Shape::Triangle => (-1.0..=0.8).contains(&v) && u.abs() <= (v + 1.0) / 1.8 * 0.95,
        Shape::Cross => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        Shape::Ring => {
            let r2 = u * u + v * v;
            (0.5 * 0.5..=1.0).contains(&r2)
        }
        Shape::Star => in_star(u, v),
    }
}

/// A five-pointed star with outer radius 1 and inner radius 0.45, one point up.
fn in_star(u: f32, v: f32) -> bool {
    let r = (u * u + v * v).sqrt();
    if r > 1.0 {
        return false;
    }
    if r < 0.45 * 0.81 {
        return true;
    }
    // Angle from the upward point, folded into one of the ten half-spikes.
    let theta = u.atan2(-v).rem_euclid(std::f32::consts::TAU);
    let sector = std::f32::consts::TAU / 5.0;
    let a = (theta % sector - sector / 2.0).abs(); // 0 at a valley, sector/2 at a point
    // The edge of a half-spike runs straight from the valley (0.45, angle 0) to the tip (1, sector/2).
    let (vx, vy) = (0.45_f32, 0.0_f32);
    let (tx, ty) = ((sector / 2.0).cos(), (sector / 2.0).sin());
    let (px, py) = (r * a.cos(), r * a.sin());
    // Inside when the point is on the centre's side of the valley-tip line.
    let cross = (tx - vx) * (py - vy) - (ty - vy) * (px - vx);
    cross >= 0.0
}

/// Fraction of the pixel (x, y) that an object covers.
pub fn coverage(obj: &Object, x: u32, y: u32) -> f32 {
    let mut hits = 0;
    for sy in 0..SS {
        for sx in 0..SS {
            let px = x as f32 + (sx as f32 + 0.5) / SS as f32;
            let py = y as f32 + (sy as f32 + 0.5) / SS as f32;
            let u = (px - obj.center[0]) / obj.radius;
            let v = (py - obj.center[1]) / obj.radius;
            hits += inside(obj.shape, u, v) as u32;
        }
    }
    hits as f32 / (SS * SS) as f32
}

/// Renders a scene at `size` x `size` pixels. `fills` gives each object's actual RGB (the nominal
/// colour with a little jitter).
pub fn render(scene: &Scene, fills: &[[u8; 3]], size: u32) -> RgbImage {
    let [a, b] = scene.background;
    let mut img = RgbImage::from_fn(size, size, |x, y| {
        // A gentle diagonal gradient between the two corner colours.
        let t = (x + y) as f32 / (2 * size.max(1) - 1).max(1) as f32;
        image::Rgb(std::array::from_fn(|c| lerp(a[c] as f32, b[c] as f32, t).round() as u8))
    });
    for (obj, fill) in scene.objects.iter().zip(fills) {
        let [x0, y0, x1, y1] = obj.bbox;
        for y in y0..y1 {
            for x in x0..x1 {
                let cov = coverage(obj, x, y);
                if cov > 0.0 {
                    let px = img.get_pixel_mut(x, y);
                    for (p, f) in px.0.iter_mut().zip(fill) {
                        *p = lerp(*p as f32, *f as f32, cov).round() as u8;
                    }
                }
            }
        }
    }
    img
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Area of a shape in units of radius^2, by dense sampling.
    fn area(shape: Shape) -> f32 {
        let n = 400;
        let mut hits = 0;
        for i in 0..n {
            for j in 0..n {
                let u = -1.0 + 2.0 * (i as f32 + 0.5) / n as f32;
                let v = -1.0 + 2.0 * (j as f32 + 0.5) / n as f32;
                hits += inside(shape, u, v) as u32;
            }
        }
        4.0 * hits as f32 / (n * n) as f32
    }

    #[test]
    fn shape_areas_match_their_geometry() {
        // circle: pi; square: 1.6^2; diamond: 2; ring: pi (1 - 0.25)
        assert!((area(Shape::Circle) - std::f32::consts::PI).abs() < 0.01);
        assert!((area(Shape::Square) - 2.56).abs() < 0.01);
        assert!((area(Shape::Diamond) - 2.0).abs() < 0.01);
        assert!((area(Shape::Ring) - 0.75 * std::f32::consts::PI).abs() < 0.01);
        // triangle: base 2 * 0.95 at v = 0.8, height 1.8 -> 0.5 * 1.9 * 1.8 = 1.71
        assert!((area(Shape::Triangle) - 1.71).abs() < 0.01);
        // cross: two 0.6 x 1.9 bars minus their 0.6 x 0.6 overlap = 1.92
        assert!((area(Shape::Cross) - 1.92).abs() < 0.01);
        // star (outer 1, inner 0.45): 10 triangles of sides 1 and 0.45 at 36 degrees
        let star = 10.0 * 0.5 * 1.0 * 0.45 * (36f32.to_radians()).sin();
        assert!((area(Shape::Star) - star).abs() < 0.02, "{} vs {star}", area(Shape::Star));
    }

    #[test]
    fn star_points_up_and_has_valleys() {
        assert!(inside(Shape::Star, 0.0, -0.95)); // top point
        assert!(!inside(Shape::Star, 0.0, 0.95)); // a valley faces down
        assert!(inside(Shape::Star, 0.0, 0.0));
    }
}
