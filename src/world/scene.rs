//! Scenes: what is in an image, sampled with the biases that make small models hallucinate.
//!
//! An object is a coloured shape of one of two sizes in one cell of a 3x3 grid. Its class (the unit
//! POPE and CHAIR count) is colour + shape, e.g. "red circle". Classes are drawn with unequal
//! frequencies, some pairs of classes usually appear together, and a share of objects repeat the colour
//! or shape of an earlier one, so that counting and relations have something to work on.

use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The shapes of the world, in the order used for class ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// An axis-aligned filled square.
    Square,
    /// An upward-pointing filled triangle.
    Triangle,
    /// A square turned by 45 degrees.
    Diamond,
    /// A plus sign.
    Cross,
    /// A five-pointed star.
    Star,
    /// A disc with a hole.
    Ring,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 7] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Diamond,
        Shape::Cross,
        Shape::Star,
        Shape::Ring,
    ];

    /// The singular word.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Cross => "cross",
            Shape::Star => "star",
            Shape::Ring => "ring",
        }
    }

    /// The plural word.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Cross => "crosses",
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Star => "stars",
            Shape::Ring => "rings",
        }
    }

    /// Other words people use for the shape (singular, plural), for CHAIR's synonym matching.
    pub fn synonyms(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Shape::Circle => &[("disc", "discs"), ("disk", "disks"), ("dot", "dots")],
            Shape::Square => &[("box", "boxes"), ("block", "blocks")],
            Shape::Triangle => &[("pyramid", "pyramids")],
            Shape::Diamond => &[("rhombus", "rhombuses")],
            Shape::Cross => &[("plus", "pluses")],
            Shape::Star => &[],
            Shape::Ring => &[("donut", "donuts"), ("hoop", "hoops")],
        }
    }
}

/// The colours of the world, in the order used for class ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
}

impl Colour {
    /// Every colour.
    pub const ALL: [Colour; 6] =
        [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange];

    /// The word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The nominal sRGB value; rendering jitters it slightly.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 39, 40],
            Colour::Green => [44, 160, 44],
            Colour::Blue => [31, 90, 220],
            Colour::Yellow => [235, 190, 0],
            Colour::Purple => [148, 60, 189],
            Colour::Orange => [255, 127, 14],
        }
    }
}

/// Object size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// About a third of a cell's width in radius: at a quarter, small shapes covered about one of
    /// the tiny model's 8 px patches and a linear probe of the trained tower told their shape 55%
    /// of the time (100% for large ones); at 0.32, 77% (`scripts/patch_probe.py`).
    Small,
    /// About 0.4 of a cell's width in radius.
    Large,
}

impl Size {
    /// The word.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Large or small with equal odds (one draw from `rng`).
    pub fn random(rng: &mut impl Rng) -> Size {
        if rng.random_bool(0.5) { Size::Large } else { Size::Small }
    }

    /// Radius as a fraction of the cell's side.
    fn radius_fraction(self) -> f32 {
        match self {
            Size::Small => 0.32,
            Size::Large => 0.42,
        }
    }
}

/// An object class: what POPE asks about and CHAIR counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Class {
    /// Colour.
    pub colour: Colour,
    /// Shape.
    pub shape: Shape,
}

impl Class {
    /// Number of classes.
    pub const COUNT: usize = Colour::ALL.len() * Shape::ALL.len();

    /// Every class, colour-major.
    pub fn all() -> impl Iterator<Item = Class> {
        Colour::ALL
            .into_iter()
            .flat_map(|colour| Shape::ALL.into_iter().map(move |shape| Class { colour, shape }))
    }

    /// Dense index in `0..COUNT`, colour-major.
    pub fn index(self) -> usize {
        self.colour as usize * Shape::ALL.len() + self.shape as usize
    }

    /// "red circle".
    pub fn name(self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }

    /// Parses "red circle".
    pub fn parse(name: &str) -> Option<Class> {
        Class::all().find(|c| c.name() == name)
    }
}

/// The usual partners: pairs of classes that co-occur far more often than chance, as "dining table"
/// and "chair" do in COCO. Partners share neither colour nor shape, so a partner hallucination is told
/// apart from a colour or shape confusion.
pub const PARTNERS: [(Class, Class); 10] = {
    use Colour::*;
    use Shape::*;
    const fn c(colour: Colour, shape: Shape) -> Class {
        Class { colour, shape }
    }
    [
        (c(Red, Circle), c(Blue, Square)),
        (c(Green, Triangle), c(Yellow, Star)),
        (c(Purple, Diamond), c(Orange, Cross)),
        (c(Blue, Ring), c(Red, Triangle)),
        (c(Yellow, Circle), c(Purple, Square)),
        (c(Orange, Star), c(Green, Ring)),
        (c(Red, Diamond), c(Yellow, Cross)),
        (c(Green, Circle), c(Orange, Square)),
        (c(Blue, Star), c(Purple, Triangle)),
        (c(Purple, Ring), c(Red, Cross)),
    ]
};

/// The usual partner of a class, if it has one.
pub fn partner(class: Class) -> Option<Class> {
    PARTNERS.iter().find_map(|&(a, b)| match class {
        c if c == a => Some(b),
        c if c == b => Some(a),
        _ => None,
    })
}

/// Relative class frequencies: partnered classes first (they are the "popular" ones), then the rest,
/// each a little rarer than the one before, so POPE's popular split has a clear order.
pub fn class_weights() -> Vec<f64> {
    let mut ranked: Vec<Class> = PARTNERS.iter().flat_map(|&(a, b)| [a, b]).collect();
    ranked.extend(Class::all().filter(|c| partner(*c).is_none()));
    let mut weights = vec![0.0; Class::COUNT];
    for (rank, class) in ranked.iter().enumerate() {
        weights[class.index()] = 1.0 / (1.0 + 0.06 * rank as f64);
    }
    weights
}

/// A cell of the 3x3 grid, row-major from the top left; stored by its name ("top left").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cell {
    /// 0 = top, 2 = bottom.
    pub row: u8,
    /// 0 = left, 2 = right.
    pub col: u8,
}

impl Cell {
    /// All nine cells in reading order.
    pub fn all() -> impl Iterator<Item = Cell> {
        (0..9).map(|i| Cell { row: i / 3, col: i % 3 })
    }

    /// "top left", ..., "center", ..., "bottom right".
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 9] = [
            "top left",
            "top middle",
            "top right",
            "middle left",
            "center",
            "middle right",
            "bottom left",
            "bottom middle",
            "bottom right",
        ];
        NAMES[(self.row * 3 + self.col) as usize]
    }
}

impl From<Cell> for String {
    fn from(c: Cell) -> String {
        c.name().to_string()
    }
}

impl TryFrom<String> for Cell {
    type Error = String;
    fn try_from(name: String) -> Result<Cell, String> {
        Cell::all().find(|c| c.name() == name).ok_or_else(|| format!("unknown cell {name:?}"))
    }
}

/// One object of a scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Colour.
    pub colour: Colour,
    /// Shape.
    pub shape: Shape,
    /// Size.
    pub size: Size,
    /// Grid cell.
    pub cell: Cell,
    /// Centre in pixels.
    pub center: [f32; 2],
    /// Radius in pixels (the shape fits in a circle of this radius).
    pub radius: f32,
    /// Pixel box `[x0, y0, x1, y1]`, exclusive of x1 and y1, covering every pixel the shape touches.
    pub bbox: [u32; 4],
}

impl Object {
    /// Colour + shape.
    pub fn class(&self) -> Class {
        Class { colour: self.colour, shape: self.shape }
    }
}

/// A sampled scene: objects in reading order (by cell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Objects, sorted by cell.
    pub objects: Vec<Object>,
    /// Background colour at the top left and bottom right corners (a light linear gradient).
    pub background: [[u8; 3]; 2],
}

impl Scene {
    /// Whether an object of this class is present.
    pub fn has(&self, class: Class) -> bool {
        self.objects.iter().any(|o| o.class() == class)
    }

    /// Distinct classes present, in object order.
    pub fn classes(&self) -> Vec<Class> {
        let mut out: Vec<Class> = Vec::new();
        for o in &self.objects {
            if !out.contains(&o.class()) {
                out.push(o.class());
            }
        }
        out
    }

    /// The kind of an absent class, first match in [`AbsentKind::ALL`]'s order; `None` if present.
    pub fn absent_kind(&self, class: Class) -> Option<AbsentKind> {
        if self.has(class) {
            return None;
        }
        let present = self.classes();
        Some(if present.iter().any(|c| partner(*c) == Some(class)) {
            AbsentKind::Partner
        } else if present.iter().any(|c| c.colour == class.colour) {
            AbsentKind::SameColour
        } else if present.iter().any(|c| c.shape == class.shape) {
            AbsentKind::SameShape
        } else {
            AbsentKind::Unrelated
        })
    }

    /// The object in a cell.
    pub fn at(&self, cell: Cell) -> Option<&Object> {
        self.objects.iter().find(|o| o.cell == cell)
    }
}

/// How an absent class relates to a scene: what kind of hallucination a "yes" to it would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbsentKind {
    /// The usual partner of a present class (a language-prior hallucination).
    Partner,
    /// Shares its colour with a present object (weak shape vision).
    SameColour,
    /// Shares its shape with a present object (weak colour vision).
    SameShape,
    /// None of the above.
    Unrelated,
}

impl AbsentKind {
    /// Every kind, in priority order.
    pub const ALL: [AbsentKind; 4] =
        [AbsentKind::Partner, AbsentKind::SameColour, AbsentKind::SameShape, AbsentKind::Unrelated];
}

/// Knobs of scene sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneConfig {
    /// Image side in pixels.
    pub size: u32,
    /// Fewest objects per scene (at least 1).
    pub min_objects: usize,
    /// Most objects per scene (at most 9, one per cell).
    pub max_objects: usize,
    /// Probability that an object's usual partner is added to the scene with it.
    pub cooccurrence: f64,
    /// Probability that a new object copies the colour or the shape of an earlier one.
    pub repeat: f64,
}

/// Samples one scene.
pub fn sample_scene(cfg: &SceneConfig, weights: &WeightedIndex<f64>, rng: &mut impl Rng) -> Scene {
    let n = rng.random_range(cfg.min_objects..=cfg.max_objects);
    let classes = sample_classes(n, cfg, weights, rng);
    let mut cells: Vec<Cell> = Cell::all().collect();
    cells.shuffle(rng);
    let side = cfg.size as f32 / 3.0;
    let mut objects: Vec<Object> = classes
        .into_iter()
        .zip(cells)
        .map(|(class, cell)| {
            let size = Size::random(rng);
            let radius = size.radius_fraction() * side;
            // Jitter inside the cell, never past its border, so objects cannot overlap.
            let slack = (side / 2.0 - radius - 1.0).max(0.0);
            let jitter = |rng: &mut dyn rand::RngCore| (rng.random::<f32>() * 2.0 - 1.0) * slack;
            let cx = (cell.col as f32 + 0.5) * side + jitter(rng);
            let cy = (cell.row as f32 + 0.5) * side + jitter(rng);
            let bbox = pixel_box(cx, cy, radius, cfg.size);
            Object { colour: class.colour, shape: class.shape, size, cell, center: [cx, cy], radius, bbox }
        })
        .collect();
    objects.sort_by_key(|o| o.cell);
    let mut light = || -> [u8; 3] {
        let base: i32 = rng.random_range(215..=240);
        std::array::from_fn(|_| (base + rng.random_range(-8..=8)).clamp(0, 255) as u8)
    };
    let background = [light(), light()];
    Scene { objects, background }
}

/// Draws `n` classes: by frequency, with partners following their mates and repeats of colour or shape.
fn sample_classes(
    n: usize,
    cfg: &SceneConfig,
    weights: &WeightedIndex<f64>,
    rng: &mut impl Rng,
) -> Vec<Class> {
    let all: Vec<Class> = Class::all().collect();
    let mut out: Vec<Class> = Vec::with_capacity(n);
    let mut pending: Option<Class> = None;
    while out.len() < n {
        let class = if let Some(p) = pending.take() {
            p
        } else if !out.is_empty() && rng.random_bool(cfg.repeat) {
            let prev = out[rng.random_range(0..out.len())];
            if rng.random_bool(0.5) {
                Class { colour: prev.colour, shape: Shape::ALL[rng.random_range(0..Shape::ALL.len())] }
            } else {
                Class { colour: Colour::ALL[rng.random_range(0..Colour::ALL.len())], shape: prev.shape }
            }
        } else {
            all[weights.sample(rng)]
        };
        if let Some(p) = partner(class)
            && !out.contains(&p)
            && p != class
            && rng.random_bool(cfg.cooccurrence)
        {
            pending = Some(p);
        }
        out.push(class);
    }
    out
}

/// The pixels a shape of this radius around (cx, cy) can touch, clipped to the image.
fn pixel_box(cx: f32, cy: f32, radius: f32, size: u32) -> [u32; 4] {
    let lo = |c: f32| (c - radius).floor().max(0.0) as u32;
    let hi = |c: f32| ((c + radius).ceil() as u32).min(size);
    [lo(cx), lo(cy), hi(cx), hi(cy)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cfg() -> SceneConfig {
        SceneConfig { size: 64, min_objects: 1, max_objects: 6, cooccurrence: 0.75, repeat: 0.3 }
    }

    #[test]
    fn partners_share_neither_colour_nor_shape_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for (a, b) in PARTNERS {
            assert_ne!(a.colour, b.colour);
            assert_ne!(a.shape, b.shape);
            assert!(seen.insert(a) && seen.insert(b), "{a:?} or {b:?} has two partners");
        }
    }

    #[test]
    fn class_index_round_trips() {
        for (i, c) in Class::all().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Class::parse(&c.name()), Some(c));
        }
    }

    #[test]
    fn scenes_respect_counts_cells_and_boxes() {
        let weights = WeightedIndex::new(class_weights()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..500 {
            let s = sample_scene(&cfg(), &weights, &mut rng);
            assert!((1..=6).contains(&s.objects.len()));
            for (i, a) in s.objects.iter().enumerate() {
                let side = 64.0 / 3.0;
                // The shape's disc stays inside its cell, hence no overlaps.
                assert!(a.center[0] - a.radius >= a.cell.col as f32 * side - 1e-3);
                assert!(a.center[0] + a.radius <= (a.cell.col + 1) as f32 * side + 1e-3);
                assert!(a.center[1] - a.radius >= a.cell.row as f32 * side - 1e-3);
                assert!(a.center[1] + a.radius <= (a.cell.row + 1) as f32 * side + 1e-3);
                for b in &s.objects[i + 1..] {
                    assert!(a.cell < b.cell, "objects sorted by distinct cells");
                }
            }
        }
    }

    #[test]
    fn partners_cooccur_far_above_chance() {
        let weights = WeightedIndex::new(class_weights()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut with_a, mut both) = (0, 0);
        let (a, b) = PARTNERS[0];
        for _ in 0..4000 {
            let s = sample_scene(&cfg(), &weights, &mut rng);
            if s.has(a) {
                with_a += 1;
                both += s.has(b) as usize;
            }
        }
        let rate = both as f64 / with_a as f64;
        assert!(rate > 0.5, "partner present with its mate in only {rate:.2} of scenes");
    }
}
