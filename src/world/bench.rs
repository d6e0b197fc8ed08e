//! Benchmarks built from held-out scenes: POPE's three settings and an MMHal-Bench-style file.

use super::language::{self as lang, describe, pope_question, refer, relation_phrase};
use super::scene::{Cell, Class, Scene, Shape};
use crate::data::formats::{MmhalRecord, PopeQuestion, YesNo};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

/// POPE's negative sampling settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopeSetting {
    /// Absent objects drawn at random from those seen in the sampled images.
    Random,
    /// The most frequent absent objects.
    Popular,
    /// The absent objects that co-occur most with each positive.
    Adversarial,
}

impl PopeSetting {
    /// All three, in file order.
    pub const ALL: [PopeSetting; 3] = [PopeSetting::Random, PopeSetting::Popular, PopeSetting::Adversarial];

    /// "random", "popular", "adversarial".
    pub fn name(self) -> &'static str {
        match self {
            PopeSetting::Random => "random",
            PopeSetting::Popular => "popular",
            PopeSetting::Adversarial => "adversarial",
        }
    }
}

/// Objects (positives and negatives) asked about per image, as POPE does.
pub const POPE_PER_IMAGE: usize = 3;

/// Builds the three POPE files as POPE's own builder does: sample `n_images` images that have at least
/// three objects; per image, the first three objects in annotation order are the positives, and each
/// is followed by one negative that is neither in the image nor already asked. Random negatives come
/// from the objects seen in the sample; popular ones in order of how many sampled images contain
/// them; adversarial ones in order of how often they co-occur with that positive. Ties keep the order
/// in which objects were first met; popular and adversarial fall back to random when nothing fits.
/// Returns one question list per [`PopeSetting::ALL`] entry.
pub fn pope(scenes: &[(String, &Scene)], n_images: usize, rng: &mut impl Rng) -> Vec<Vec<PopeQuestion>> {
    let eligible: Vec<&(String, &Scene)> =
        scenes.iter().filter(|(_, s)| s.classes().len() >= POPE_PER_IMAGE).collect();
    let sample: Vec<&(String, &Scene)> =
        eligible.choose_multiple(rng, n_images.min(eligible.len())).copied().collect();
    let classes: Vec<Vec<Class>> = sample.iter().map(|(_, s)| s.classes()).collect();

    // Frequency and co-occurrence over the sample, each list in first-met order before a stable sort.
    let mut seen: Vec<Class> = Vec::new();
    let mut freq = vec![0usize; Class::COUNT];
    let mut cooc: Vec<Vec<(Class, usize)>> = vec![Vec::new(); Class::COUNT];
    for cs in &classes {
        for &a in cs {
            if freq[a.index()] == 0 {
                seen.push(a);
            }
            freq[a.index()] += 1;
            for &b in cs.iter().filter(|b| **b != a) {
                match cooc[a.index()].iter_mut().find(|(c, _)| *c == b) {
                    Some((_, n)) => *n += 1,
                    None => cooc[a.index()].push((b, 1)),
                }
            }
        }
    }
    let mut popular = seen.clone();
    popular.sort_by_key(|c| std::cmp::Reverse(freq[c.index()]));
    for list in &mut cooc {
        list.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    }

    PopeSetting::ALL
        .iter()
        .map(|&setting| {
            let mut out = Vec::new();
            for ((image, _), gt) in sample.iter().zip(&classes) {
                let mut asked: Vec<Class> = Vec::new();
                for &pos in &gt[..POPE_PER_IMAGE] {
                    let fits = |c: &Class| !gt.contains(c) && !asked.contains(c);
                    let ranked: Option<Class> = match setting {
                        PopeSetting::Random => None,
                        PopeSetting::Popular => popular.iter().copied().find(fits),
                        PopeSetting::Adversarial => cooc[pos.index()].iter().map(|(c, _)| *c).find(fits),
                    };
                    let neg = ranked.unwrap_or_else(|| {
                        let pool: Vec<Class> = seen.iter().copied().filter(fits).collect();
                        let fallback: Vec<Class> = Class::all().filter(fits).collect();
                        *pool
                            .choose(rng)
                            .or_else(|| fallback.choose(rng))
                            .expect("42 classes, at most 12 excluded")
                    });
                    asked.push(neg);
                    for (class, label) in [(pos, YesNo::Yes), (neg, YesNo::No)] {
                        out.push(PopeQuestion {
                            question_id: out.len() as u64 + 1,
                            image: image.clone(),
                            text: pope_question(class),
                            label,
                        });
                    }
                }
            }
            out
        })
        .collect()
}

/// MMHal-Bench's question types, in its order (question `i` has type `i % 8`).
pub const MMHAL_TYPES: [&str; 8] =
    ["attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other"];

/// Builds `per_type * 8` MMHal-style questions over distinct held-out images, cycling through the
/// types as MMHal-Bench orders them. Each image is used once; an image that cannot carry a type (a
/// comparison needs two nameable objects) is kept for a later type.
pub fn mmhal(scenes: &[(String, &Scene)], per_type: usize, rng: &mut impl Rng) -> Vec<MmhalRecord> {
    let mut pool: Vec<&(String, &Scene)> = scenes.iter().collect();
    pool.shuffle(rng);
    let mut out = Vec::new();
    for i in 0..per_type * MMHAL_TYPES.len() {
        let kind = MMHAL_TYPES[i % MMHAL_TYPES.len()];
        let Some(at) = pool.iter().position(|(_, s)| mmhal_question(kind, s, rng).is_some()) else {
            break;
        };
        let (image, scene) = pool.remove(at);
        let (question, gt_answer) = mmhal_question(kind, scene, rng).expect("checked above");
        let image_id = std::path::Path::new(image)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(MmhalRecord {
            question_type: kind.to_string(),
            question_topic: "shapes".to_string(),
            image_id,
            image_src: image.clone(),
            image_content: scene.classes().iter().map(|c| c.name()).collect(),
            question,
            gt_answer,
        });
    }
    out
}

/// One question of a type with its informative, correct answer; `None` if the scene cannot carry it.
fn mmhal_question(kind: &str, scene: &Scene, rng: &mut impl Rng) -> Option<(String, String)> {
    let named: Vec<usize> = (0..scene.objects.len()).filter(|&i| refer(scene, i).is_some()).collect();
    let name = |i: usize| refer(scene, i).unwrap_or_default();
    match kind {
        "attribute" => {
            let o = scene.objects.choose(rng)?;
            let cell = o.cell.name();
            Some((
                format!("What colour is the {} in the {cell}?", o.shape.name()),
                format!("The {} in the {cell} is {}.", o.shape.name(), o.colour.name()),
            ))
        }
        "adversarial" => {
            let absent: Vec<Shape> =
                Shape::ALL.into_iter().filter(|s| scene.objects.iter().all(|o| o.shape != *s)).collect();
            let s = absent.choose(rng)?;
            Some((
                format!("What colour is the {} in the image?", s.name()),
                format!("There is no {} in the image.", s.name()),
            ))
        }
        "comparison" => {
            let pair: Vec<usize> = named.choose_multiple(rng, 2).copied().collect();
            let [i, j] = pair[..] else { return None };
            let (a, b) = (&scene.objects[i], &scene.objects[j]);
            let answer = match a.size.cmp(&b.size) {
                std::cmp::Ordering::Greater => format!("The {} is larger than the {}.", name(i), name(j)),
                std::cmp::Ordering::Less => format!("The {} is larger than the {}.", name(j), name(i)),
                std::cmp::Ordering::Equal => {
                    format!("The {} and the {} are the same size.", name(i), name(j))
                }
            };
            Some((format!("Which is larger, the {} or the {}?", name(i), name(j)), answer))
        }
        "counting" => {
            let n = scene.objects.len();
            let answer = if n == 1 {
                "There is one object in the image.".to_string()
            } else {
                format!("There are {} objects in the image.", lang::number(n))
            };
            Some(("How many objects are there in the image?".to_string(), answer))
        }
        "relation" => {
            let pair: Vec<usize> = named.choose_multiple(rng, 2).copied().collect();
            let [i, j] = pair[..] else { return None };
            Some((
                format!("Where is the {} relative to the {}?", name(i), name(j)),
                format!(
                    "The {} is {} the {}.",
                    name(i),
                    relation_phrase(&scene.objects[i], &scene.objects[j]),
                    name(j)
                ),
            ))
        }
        "environment" => Some((
            "What does the background of the image look like?".to_string(),
            "The background is plain and light, with no scenery.".to_string(),
        )),
        "holistic" => Some(("Describe the image in detail.".to_string(), describe(scene, None))),
        _ => {
            let cells: Vec<Cell> = Cell::all().collect();
            let cell = *cells.choose(rng)?;
            let answer = match scene.at(cell) {
                Some(o) => format!(
                    "There is {} in the {}.",
                    lang::with_article(&lang::object_phrase(o)),
                    cell.name()
                ),
                None => format!("There is nothing in the {}.", cell.name()),
            };
            Some((format!("What is in the {}?", cell.name()), answer))
        }
    }
}
