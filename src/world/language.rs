//! The world's language: descriptions, captions and question-answer pairs written from a scene.
//!
//! Every text is built from a small fixed lexicon ([`LEXICON`]), so the world's tokenizer covers all of
//! it. Objects are listed in reading order (by cell) everywhere, so a description has one right form.

use super::scene::{AbsentKind, Cell, Class, Colour, Object, Scene, Shape, Size};
use crate::data::formats::{CaptionType, Task};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

/// Every word the templates below use (besides the names of shapes, colours, sizes and cells, which
/// the tokenizer takes from their enums). Capitalised forms are added by the tokenizer builder.
pub const LEXICON: &str = "a an the is are there in of to and or what which where how many \
    image picture object objects it its nothing no yes not with from on than same size colour \
    shape describe description detail detailed give short caption briefly brief concise concisely every each \
    answer option options letter given choices directly question using single word phrase \
    left right above below relative larger smaller background look looks like plain light \
    scenery other do does see you this can be found at part empty all one two three four five \
    six seven eight nine zero , . ? ! : ; ' \" - USER ASSISTANT";

/// Instructions that ask for a detailed description.
pub const DESCRIBE: [&str; 3] = [
    "Describe the image in detail.",
    "Give a detailed description of the image.",
    "What do you see in this image? Describe every object.",
];

/// Instructions that ask for a short caption.
pub const CAPTION: [&str; 3] =
    ["Give a short caption of the image.", "Describe the image briefly.", "Describe the image concisely."];

/// The multiple-choice instruction, as LLaVA-1.5 phrases it.
pub const CHOICE_SUFFIX: &str = "Answer with the option's letter from the given choices directly.";

/// A question with its answer and the symbolic check that applies to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Qa {
    /// The question.
    pub question: String,
    /// The right answer.
    pub answer: String,
    /// Its kind.
    pub task: Task,
    /// Which correctness check a PPO reward can apply.
    pub check: CaptionType,
}

impl Qa {
    fn new(question: String, answer: String, task: Task) -> Qa {
        Qa { question, answer, task, check: CaptionType::General }
    }

    fn yes_no(question: String, yes: bool, task: Task) -> Qa {
        let (answer, check) = if yes { ("Yes.", CaptionType::Yes) } else { ("No.", CaptionType::No) };
        Qa { question, answer: answer.into(), task, check }
    }
}

/// Knobs of the language.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LanguageConfig {
    /// Share of existence questions whose answer is yes (a yes-heavy prior, as in VQA data).
    pub existence_yes_ratio: f64,
    /// Share of "no" existence questions that ask for an absent class sharing the colour or the shape
    /// of a present object.
    pub hard_negative_share: f64,
    /// Share of "no" existence questions that ask for the absent usual partner of a present object.
    pub partner_negative_share: f64,
}

/// "a" or "an" before a word.
pub fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// The word with its article: "an orange star".
pub fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// First letter upper-cased.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "one" .. "nine"; "no" for zero.
pub fn number(n: usize) -> &'static str {
    const W: [&str; 10] = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    W[n.min(9)]
}

/// "a, b and c".
pub fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "There are three objects." / "There is one object."
fn count_sentence(n: usize, noun_singular: &str, noun_plural: &str) -> String {
    match n {
        1 => format!("There is one {noun_singular}."),
        _ => format!("There are {} {noun_plural}.", number(n)),
    }
}

/// "large red circle".
pub fn object_phrase(o: &Object) -> String {
    format!("{} {} {}", o.size.name(), o.colour.name(), o.shape.name())
}

/// A phrase naming exactly one object of the scene ("red circle", or "small red circle" when the
/// class repeats), or `None` when even the size does not single it out.
pub fn refer(scene: &Scene, i: usize) -> Option<String> {
    let o = &scene.objects[i];
    let same_class = scene.objects.iter().filter(|p| p.class() == o.class()).count();
    if same_class == 1 {
        return Some(o.class().name());
    }
    let same_size = scene.objects.iter().filter(|p| p.class() == o.class() && p.size == o.size).count();
    (same_size == 1).then(|| object_phrase(o))
}

/// Indices of the objects that [`refer`] can name.
fn referable(scene: &Scene) -> Vec<usize> {
    (0..scene.objects.len()).filter(|&i| refer(scene, i).is_some()).collect()
}

/// A detailed description: the object count, then one sentence per object in reading order.
/// `extra` is an object that is not in the scene, written in as if it were (the hallucination that
/// instruction data written by a text-only model contains).
pub fn describe(scene: &Scene, extra: Option<&Object>) -> String {
    let mut objects: Vec<&Object> = scene.objects.iter().chain(extra).collect();
    objects.sort_by_key(|o| o.cell);
    let mut out = count_sentence(objects.len(), "object", "objects");
    for o in objects {
        let phrase = object_phrase(o);
        out.push_str(&format!(" {} {phrase} is in the {}.", capitalise(article(&phrase)), o.cell.name()));
    }
    out
}

/// A short caption listing the objects in reading order ("A large red circle and a blue square.").
pub fn caption(objects: &[&Object], sizes: bool) -> String {
    let names: Vec<String> = objects
        .iter()
        .map(|o| with_article(&if sizes { object_phrase(o) } else { o.class().name() }))
        .collect();
    format!("{}.", capitalise(&list(&names)))
}

/// Absent usual partners of the present classes.
fn absent_partners(scene: &Scene) -> Vec<Class> {
    scene.classes().into_iter().filter_map(super::scene::partner).filter(|c| !scene.has(*c)).collect()
}

/// Cells with no object.
fn free_cells(scene: &Scene) -> Vec<Cell> {
    Cell::all().filter(|c| scene.at(*c).is_none()).collect()
}

/// Whether [`plausible_absent`] has something to add.
pub fn can_hallucinate(scene: &Scene) -> bool {
    !absent_partners(scene).is_empty() && !free_cells(scene).is_empty()
}

/// The hallucination a text-only writer would add: the absent usual partner of a present class,
/// placed in an empty cell. `None` when every partner is present or no cell is free.
pub fn plausible_absent(scene: &Scene, rng: &mut impl Rng) -> Option<Object> {
    let class = *absent_partners(scene).choose(rng)?;
    let cell = *free_cells(scene).choose(rng)?;
    Some(imagined(class, Size::random(rng), cell))
}

/// An object that exists only in a text: no pixels, so no centre, radius or box.
fn imagined(class: Class, size: Size, cell: Cell) -> Object {
    Object {
        colour: class.colour,
        shape: class.shape,
        size,
        cell,
        center: [0.0, 0.0],
        radius: 0.0,
        bbox: [0; 4],
    }
}

/// An existence question, biased as configured: yes-heavy, with hard and partner negatives.
pub fn existence(scene: &Scene, cfg: &LanguageConfig, rng: &mut impl Rng) -> Qa {
    let yes = rng.random_bool(cfg.existence_yes_ratio);
    let level = rng.random_range(0..20);
    if level == 0 {
        // Shape alone.
        let present: Vec<Shape> =
            Shape::ALL.into_iter().filter(|s| scene.objects.iter().any(|o| o.shape == *s)).collect();
        let absent: Vec<Shape> = Shape::ALL.into_iter().filter(|s| !present.contains(s)).collect();
        let (pool, yes) = if yes || absent.is_empty() { (present, true) } else { (absent, false) };
        let s = pool.choose(rng).copied().unwrap_or(Shape::Circle);
        return Qa::yes_no(
            format!("Is there {} in the image?", with_article(s.name())),
            yes,
            Task::Existence,
        );
    }
    if level == 1 {
        // Colour alone.
        let present: Vec<Colour> =
            Colour::ALL.into_iter().filter(|c| scene.objects.iter().any(|o| o.colour == *c)).collect();
        let absent: Vec<Colour> = Colour::ALL.into_iter().filter(|c| !present.contains(c)).collect();
        let (pool, yes) = if yes || absent.is_empty() { (present, true) } else { (absent, false) };
        let c = pool.choose(rng).copied().unwrap_or(Colour::Red);
        let phrase = format!("{} object", c.name());
        return Qa::yes_no(format!("Is there {} in the image?", with_article(&phrase)), yes, Task::Existence);
    }
    let class = if yes { scene.classes().choose(rng).copied() } else { Some(negative(scene, cfg, rng)) };
    let class = class.unwrap_or_else(|| negative(scene, cfg, rng));
    let yes = scene.has(class);
    Qa::yes_no(pope_question(class), yes, Task::Existence)
}

/// POPE's question: "Is there a {object} in the image?".
pub fn pope_question(class: Class) -> String {
    format!("Is there {} in the image?", with_article(&class.name()))
}

/// The class a POPE question asks about (the inverse of [`pope_question`]).
pub fn pope_class(text: &str) -> Option<Class> {
    let rest = text.strip_prefix("Is there an ").or_else(|| text.strip_prefix("Is there a "))?;
    Class::parse(rest.strip_suffix(" in the image?")?)
}

/// An absent class of the configured kind (falling back to any absent class).
fn negative(scene: &Scene, cfg: &LanguageConfig, rng: &mut impl Rng) -> Class {
    let roll: f64 = rng.random();
    let kind = if roll < cfg.hard_negative_share {
        if rng.random_bool(0.5) { AbsentKind::SameColour } else { AbsentKind::SameShape }
    } else if roll < cfg.hard_negative_share + cfg.partner_negative_share {
        AbsentKind::Partner
    } else {
        AbsentKind::Unrelated
    };
    let absent: Vec<Class> = Class::all().filter(|c| !scene.has(*c)).collect();
    let of_kind: Vec<Class> =
        absent.iter().copied().filter(|c| scene.absent_kind(*c) == Some(kind)).collect();
    // At most 6 objects among 42 classes, so some class is always absent.
    *of_kind
        .choose(rng)
        .or_else(|| absent.choose(rng))
        .unwrap_or(&Class { colour: Colour::Red, shape: Shape::Circle })
}

/// A counting question: all objects, a shape, or a colour.
pub fn counting(scene: &Scene, rng: &mut impl Rng) -> Qa {
    let q = "are there in the image?";
    match rng.random_range(0..3) {
        0 => Qa::new(
            format!("How many objects {q}"),
            count_sentence(scene.objects.len(), "object", "objects"),
            Task::Counting,
        ),
        1 => {
            let shape = pick_shape(scene, rng);
            let n = scene.objects.iter().filter(|o| o.shape == shape).count();
            Qa::new(
                format!("How many {} {q}", shape.plural()),
                count_sentence(n, shape.name(), shape.plural()),
                Task::Counting,
            )
        }
        _ => {
            let colour = if rng.random_bool(0.7) {
                scene.objects.choose(rng).map(|o| o.colour).unwrap_or(Colour::Red)
            } else {
                Colour::ALL[rng.random_range(0..Colour::ALL.len())]
            };
            let n = scene.objects.iter().filter(|o| o.colour == colour).count();
            let (one, many) = (format!("{} object", colour.name()), format!("{} objects", colour.name()));
            Qa::new(format!("How many {many} {q}"), count_sentence(n, &one, &many), Task::Counting)
        }
    }
}

/// A present shape most of the time, any shape otherwise.
fn pick_shape(scene: &Scene, rng: &mut impl Rng) -> Shape {
    match scene.objects.choose(rng) {
        Some(o) if rng.random_bool(0.7) => o.shape,
        _ => Shape::ALL[rng.random_range(0..Shape::ALL.len())],
    }
}

/// An attribute question: an object's colour, shape or size, or what a cell holds.
pub fn attribute(scene: &Scene, rng: &mut impl Rng) -> Qa {
    let i = rng.random_range(0..scene.objects.len());
    let o = &scene.objects[i];
    let cell = o.cell.name();
    match rng.random_range(0..4) {
        0 => Qa::new(
            format!("What colour is the {} in the {cell}?", o.shape.name()),
            format!("It is {}.", o.colour.name()),
            Task::Attribute,
        ),
        1 => Qa::new(
            format!("What shape is the {} object in the {cell}?", o.colour.name()),
            format!("It is {}.", with_article(o.shape.name())),
            Task::Attribute,
        ),
        2 if scene.objects.iter().filter(|p| p.class() == o.class()).count() == 1 => Qa::new(
            format!("What size is the {}?", o.class().name()),
            format!("It is {}.", o.size.name()),
            Task::Attribute,
        ),
        _ => {
            let cell = if rng.random_bool(0.25) {
                Cell::all().collect::<Vec<_>>()[rng.random_range(0..9)]
            } else {
                o.cell
            };
            what_is_in(scene, cell)
        }
    }
}

/// "What is in the {cell}?"
fn what_is_in(scene: &Scene, cell: Cell) -> Qa {
    let answer = match scene.at(cell) {
        Some(o) => format!("There is {}.", with_article(&object_phrase(o))),
        None => format!("There is nothing in the {}.", cell.name()),
    };
    Qa::new(format!("What is in the {}?", cell.name()), answer, Task::Attribute)
}

/// How `a` lies relative to `b`: "above and to the left of", "to the right of", ...
pub fn relation_phrase(a: &Object, b: &Object) -> String {
    let h = match a.cell.col.cmp(&b.cell.col) {
        std::cmp::Ordering::Less => Some("to the left of"),
        std::cmp::Ordering::Greater => Some("to the right of"),
        std::cmp::Ordering::Equal => None,
    };
    let v = match a.cell.row.cmp(&b.cell.row) {
        std::cmp::Ordering::Less => Some("above"),
        std::cmp::Ordering::Greater => Some("below"),
        std::cmp::Ordering::Equal => None,
    };
    match (v, h) {
        (Some(v), Some(h)) => format!("{v} and {h}"),
        (Some(x), None) | (None, Some(x)) => x.to_string(),
        (None, None) => "at the same place as".to_string(),
    }
}

/// A spatial question: a yes/no relation, a relative position, or an absolute position.
pub fn relation(scene: &Scene, rng: &mut impl Rng) -> Qa {
    let named = referable(scene);
    let pair = {
        let mut two: Vec<usize> = named.choose_multiple(rng, 2).copied().collect();
        two.shuffle(rng);
        (two.len() == 2).then(|| (two[0], two[1]))
    };
    match (pair, rng.random_range(0..3)) {
        (Some((i, j)), 0) => {
            let (a, b) = (&scene.objects[i], &scene.objects[j]);
            let (ra, rb) = (refer(scene, i).unwrap_or_default(), refer(scene, j).unwrap_or_default());
            let rels: [(&str, bool); 4] = [
                ("to the left of", a.cell.col < b.cell.col),
                ("to the right of", a.cell.col > b.cell.col),
                ("above", a.cell.row < b.cell.row),
                ("below", a.cell.row > b.cell.row),
            ];
            // Balance yes and no where the pair allows it.
            let want = rng.random_bool(0.5);
            let fitting: Vec<&(&str, bool)> = rels.iter().filter(|r| r.1 == want).collect();
            let (rel, truth) = **fitting.choose(rng).unwrap_or(&&rels[0]);
            Qa::yes_no(format!("Is the {ra} {rel} the {rb}?"), truth, Task::Relation)
        }
        (Some((i, j)), 1) => {
            let (a, b) = (&scene.objects[i], &scene.objects[j]);
            let (ra, rb) = (refer(scene, i).unwrap_or_default(), refer(scene, j).unwrap_or_default());
            Qa::new(
                format!("Where is the {ra} relative to the {rb}?"),
                format!("It is {} the {rb}.", relation_phrase(a, b)),
                Task::Relation,
            )
        }
        _ => match named.choose(rng) {
            Some(&i) => Qa::new(
                format!("Where is the {}?", refer(scene, i).unwrap_or_default()),
                format!("It is in the {}.", scene.objects[i].cell.name()),
                Task::Relation,
            ),
            None => attribute(scene, rng),
        },
    }
}

/// A multiple-choice question with four options; the answer is the right option's letter.
pub fn multiple_choice(scene: &Scene, rng: &mut impl Rng) -> Qa {
    let o = &scene.objects[rng.random_range(0..scene.objects.len())];
    let cell = o.cell.name();
    let (question, right, mut wrong): (String, String, Vec<String>) = if rng.random_bool(0.5) {
        // Distractors: absent classes sharing colour or shape first, then other present classes.
        let mut hard: Vec<String> = Class::all()
            .filter(|c| *c != o.class() && (c.colour == o.colour || c.shape == o.shape))
            .map(|c| c.name())
            .collect();
        hard.shuffle(rng);
        (format!("Which object is in the {cell}?"), o.class().name(), hard)
    } else {
        let mut others: Vec<String> =
            Colour::ALL.into_iter().filter(|c| *c != o.colour).map(|c| c.name().to_string()).collect();
        others.shuffle(rng);
        (format!("What colour is the {} in the {cell}?", o.shape.name()), o.colour.name().to_string(), others)
    };
    wrong.truncate(3);
    let mut options = wrong;
    let right_at = rng.random_range(0..=options.len());
    options.insert(right_at, right);
    let letters = ["A", "B", "C", "D"];
    let mut q = question;
    for (l, opt) in letters.iter().zip(&options) {
        q.push_str(&format!("\n{l}. {opt}"));
    }
    q.push('\n');
    q.push_str(CHOICE_SUFFIX);
    Qa {
        question: q,
        answer: format!("{}.", letters[right_at]),
        task: Task::MultipleChoice,
        check: CaptionType::Choice(right_at as u8),
    }
}

/// The fact-augmented reward model's facts for a prompt, in the words the responses use: for a
/// description the true description (the image's dense caption), for a short question its right
/// answer alone ([`answer_fact`]), as LLaVA-RLHF adds ground-truth options to the captions of
/// multiple-choice prompts. Each fact then follows from a right response alone. A short question
/// gets no caption: the dense caption's many "is in the ..." would make the answer "It is large."
/// look supported whatever the object's size.
pub fn reward_facts(scene: &Scene, qa: &Qa) -> Vec<String> {
    match qa.task {
        Task::Description => vec![describe(scene, None)],
        _ => vec![answer_fact(&qa.answer)],
    }
}

/// The fact that names a short question's right answer.
pub fn answer_fact(answer: &str) -> String {
    format!("The answer is: {answer}")
}

/// An image's captions (`image_to_caption.json`, the facts of records that carry none of their
/// own), in the words the responses use: five short, true, partial captions
/// that together name every object (as five COCO captions together name the main objects), and
/// last a dense caption, the true description, that places each one. Only the dense caption lets
/// a position or size claim be checked; it adds no draw from `rng`, so every other text of a
/// world is the same with or without it.
pub fn captions(scene: &Scene, rng: &mut impl Rng) -> Vec<String> {
    let mut order: Vec<&Object> = scene.objects.iter().collect();
    order.shuffle(rng);
    let half = order.len().div_ceil(2);
    let (mut first, mut second) = (order[..half].to_vec(), order[half..].to_vec());
    first.sort_by_key(|o| o.cell);
    second.sort_by_key(|o| o.cell);
    let one = order[0];
    let mut out = vec![
        caption(&first, true),
        format!("There is {} in the {}.", with_article(&one.class().name()), one.cell.name()),
        count_sentence(scene.objects.len(), "object", "objects"),
    ];
    let named = referable(scene);
    out.push(match named.choose_multiple(rng, 2).copied().collect::<Vec<_>>()[..] {
        [i, j] => format!(
            "The {} is {} the {}.",
            refer(scene, i).unwrap_or_default(),
            relation_phrase(&scene.objects[i], &scene.objects[j]),
            refer(scene, j).unwrap_or_default()
        ),
        _ => format!("The {} is {}.", one.shape.name(), one.colour.name()),
    });
    out.push(if second.is_empty() {
        format!(
            "{} {} {} on a plain background.",
            capitalise(article(one.size.name())),
            one.size.name(),
            one.shape.name()
        )
    } else {
        caption(&second, false)
    });
    out.shuffle(rng);
    out.push(describe(scene, None));
    out
}

/// The true description with one injected hallucination, as POVID builds dispreferred answers:
/// an object moved to an empty cell, resized, recoloured or reshaped, an absent object added (the
/// usual partner of a present class when there is one), or a wrong count. The result differs from
/// [`describe`]`(scene, None)` in one claim, so a preference pair of the two isolates it.
pub fn describe_with_error(scene: &Scene, rng: &mut impl Rng) -> String {
    let mut s = scene.clone();
    let free = free_cells(scene);
    let n = s.objects.len();
    let i = rng.random_range(0..n.max(1));
    let kind = if n == 0 { 4 } else { rng.random_range(0..6) };
    match kind {
        0 if !free.is_empty() => s.objects[i].cell = *free.choose(rng).unwrap_or(&s.objects[i].cell),
        1 => {
            s.objects[i].size = match s.objects[i].size {
                Size::Small => Size::Large,
                Size::Large => Size::Small,
            }
        }
        2 => s.objects[i].colour = *other(&Colour::ALL, s.objects[i].colour, rng),
        3 => s.objects[i].shape = *other(&Shape::ALL, s.objects[i].shape, rng),
        4 if !free.is_empty() => {
            let added = plausible_absent(scene, rng).unwrap_or_else(|| {
                let colour = *Colour::ALL.choose(rng).unwrap_or(&Colour::Red);
                let shape = *Shape::ALL.choose(rng).unwrap_or(&Shape::Circle);
                let size = Size::random(rng);
                imagined(Class { colour, shape }, size, *free.choose(rng).unwrap_or(&free[0]))
            });
            s.objects.push(added);
        }
        _ => {
            let wrong = *[n.saturating_sub(1), n + 1].choose(rng).unwrap_or(&(n + 1));
            let wrong = if wrong == 0 { n + 1 } else { wrong };
            let text = describe(scene, None);
            let right = count_sentence(n, "object", "objects");
            return text.replacen(&right, &count_sentence(wrong, "object", "objects"), 1);
        }
    }
    describe(&s, None)
}

/// A value of `all` other than `current`.
fn other<'a, T: PartialEq>(all: &'a [T], current: T, rng: &mut impl Rng) -> &'a T {
    let rest: Vec<&T> = all.iter().filter(|v| **v != current).collect();
    rest.choose(rng).copied().unwrap_or(&all[0])
}

#[cfg(test)]
mod tests {
    use super::super::scene::Size;
    use super::*;

    fn obj(colour: Colour, shape: Shape, size: Size, row: u8, col: u8) -> Object {
        Object { colour, shape, size, cell: Cell { row, col }, center: [0.0; 2], radius: 1.0, bbox: [0; 4] }
    }

    fn scene() -> Scene {
        Scene {
            objects: vec![
                obj(Colour::Red, Shape::Circle, Size::Large, 0, 0),
                obj(Colour::Orange, Shape::Star, Size::Small, 1, 1),
                obj(Colour::Red, Shape::Circle, Size::Small, 2, 2),
            ],
            background: [[230; 3]; 2],
        }
    }

    #[test]
    fn description_lists_objects_in_reading_order() {
        assert_eq!(
            describe(&scene(), None),
            "There are three objects. A large red circle is in the top left. \
             A small orange star is in the center. A small red circle is in the bottom right."
        );
        let extra = obj(Colour::Blue, Shape::Square, Size::Large, 0, 2);
        let d = describe(&scene(), Some(&extra));
        assert!(d.starts_with("There are four objects. A large red circle is in the top left. A large blue square is in the top right."), "{d}");
    }

    #[test]
    fn references_add_size_only_when_needed() {
        let s = scene();
        assert_eq!(refer(&s, 0).as_deref(), Some("large red circle"));
        assert_eq!(refer(&s, 1).as_deref(), Some("orange star"));
    }

    #[test]
    fn relations_read_from_cells() {
        let s = scene();
        assert_eq!(relation_phrase(&s.objects[0], &s.objects[1]), "above and to the left of");
        assert_eq!(relation_phrase(&s.objects[2], &s.objects[1]), "below and to the right of");
    }

    #[test]
    fn captions_together_name_every_object() {
        let s = scene();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        for _ in 0..50 {
            let c = captions(&s, &mut rng).join(" ");
            assert!(c.contains("red circle") && c.contains("orange star"), "{c}");
        }
    }

    #[test]
    fn the_dense_caption_is_the_true_description_last() {
        let s = scene();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let c = captions(&s, &mut rng);
        assert_eq!((c.len(), c.last()), (6, Some(&describe(&s, None))));
    }

    #[test]
    fn an_injected_error_is_one_false_claim_of_every_kind() {
        let s = scene();
        let truth = describe(&s, None);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let mut kinds = [0; 4];
        for _ in 0..200 {
            let wrong = describe_with_error(&s, &mut rng);
            let h = crate::eval::claims::check(&s, &wrong).hallucinations;
            assert!(wrong != truth && h.total() >= 1, "{wrong}");
            for (k, n) in kinds.iter_mut().zip([h.object, h.attribute, h.count, h.relation]) {
                *k += usize::from(n > 0);
            }
            // One claim changed: one sentence differs, or one object sentence is added.
            let sentences =
                |t: &str| t.split('.').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
            let (a, b): (Vec<String>, Vec<String>) = (sentences(&truth), sentences(&wrong));
            let same = a.iter().filter(|x| b.contains(x)).count();
            assert!(same + 1 >= a.len(), "{truth} | {wrong}");
        }
        assert!(kinds.iter().all(|&k| k > 0), "{kinds:?}");
    }

    #[test]
    fn plausible_absent_is_the_partner() {
        let s = scene(); // red circle's partner is the blue square, orange star's is the green ring
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        for _ in 0..20 {
            let o = plausible_absent(&s, &mut rng).unwrap();
            assert!(
                [
                    Class { colour: Colour::Blue, shape: Shape::Square },
                    Class { colour: Colour::Green, shape: Shape::Ring }
                ]
                .contains(&o.class())
            );
            assert!(s.at(o.cell).is_none());
        }
    }

    #[test]
    fn articles_follow_the_sound() {
        assert_eq!(
            pope_question(Class { colour: Colour::Orange, shape: Shape::Star }),
            "Is there an orange star in the image?"
        );
        assert_eq!(
            pope_question(Class { colour: Colour::Red, shape: Shape::Star }),
            "Is there a red star in the image?"
        );
    }
}
