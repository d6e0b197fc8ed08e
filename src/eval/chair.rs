//! CHAIR (Rohrbach et al., 2018) on the world's descriptions, with exact ground truth, and object
//! recall as the helpfulness that CHAIR alone does not see.
//!
//! Every shape mention that does not deny its object ("no star") counts, plurals and synonyms mapped
//! to their shape ([`mentions`]). A mention with a colour is hallucinated when no object of that
//! colour and shape is in the scene; a shape-only mention when no object of that shape is. Size and
//! cell do not matter here (the judge checks them).

use super::mentions::{Mention, mentions};
use crate::world::scene::Scene;
use serde::{Deserialize, Serialize};

/// Whether a mention names a class (or, without a colour, a shape) that the scene does not hold.
pub fn hallucinated(scene: &Scene, m: &Mention) -> bool {
    !scene.objects.iter().any(|o| m.names_class_of(o))
}

/// CHAIR counts of one caption or description.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptionChair {
    /// Shape mentions that claim an object (denials excluded).
    pub mentions: usize,
    /// Those naming an absent class (or shape).
    pub hallucinated: usize,
    /// Distinct classes of the scene named with their colour and shape.
    pub recalled: usize,
    /// Distinct classes of the scene.
    pub classes: usize,
}

impl CaptionChair {
    /// CHAIR_i of this caption: hallucinated / mentions (0 without mentions).
    pub fn chair_i(&self) -> f64 {
        ratio(self.hallucinated, self.mentions)
    }

    /// CHAIR_s of this caption: 1 if any mention is hallucinated.
    pub fn chair_s(&self) -> f64 {
        if self.hallucinated > 0 { 1.0 } else { 0.0 }
    }

    /// recalled / classes (1 for an empty scene: nothing was missed).
    pub fn recall(&self) -> f64 {
        if self.classes == 0 { 1.0 } else { ratio(self.recalled, self.classes) }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// CHAIR of one text against its scene.
pub fn chair(scene: &Scene, text: &str) -> CaptionChair {
    let claimed: Vec<Mention> = mentions(text).into_iter().filter(|m| !m.denied()).collect();
    let classes = scene.classes();
    CaptionChair {
        mentions: claimed.len(),
        hallucinated: claimed.iter().filter(|m| hallucinated(scene, m)).count(),
        recalled: classes
            .iter()
            .filter(|c| claimed.iter().any(|m| m.shape == Some(c.shape) && m.colour == Some(c.colour)))
            .count(),
        classes: classes.len(),
    }
}

/// CHAIR over many captions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChairSummary {
    /// Captions scored.
    pub captions: usize,
    /// Object mentions over all captions.
    pub mentions: usize,
    /// Hallucinated mentions over all captions.
    pub hallucinated: usize,
    /// CHAIR_i pooled as the CHAIR paper does: sum of hallucinated / sum of mentions.
    pub chair_i: f64,
    /// CHAIR_s: share of captions with at least one hallucinated mention.
    pub chair_s: f64,
    /// Mean per-caption object recall.
    pub recall: f64,
}

/// Aggregates per-caption counts (all ratios 0 for no captions).
pub fn summarize(items: &[CaptionChair]) -> ChairSummary {
    let mentions = items.iter().map(|c| c.mentions).sum();
    let hallucinated = items.iter().map(|c| c.hallucinated).sum();
    let n = items.len();
    let mean = |f: fn(&CaptionChair) -> f64| {
        if n == 0 { 0.0 } else { items.iter().map(f).sum::<f64>() / n as f64 }
    };
    ChairSummary {
        captions: n,
        mentions,
        hallucinated,
        chair_i: ratio(hallucinated, mentions),
        chair_s: mean(CaptionChair::chair_s),
        recall: mean(CaptionChair::recall),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::world::scene::{Cell, Colour, Object, Shape, Size};

    /// Large red circle top left, small orange star center, small red circle bottom right.
    pub(crate) fn scene() -> Scene {
        use Colour::{Orange, Red};
        use Shape::{Circle, Star};
        use Size::{Large, Small};
        let objects = [(Red, Circle, Large, 0, 0), (Orange, Star, Small, 1, 1), (Red, Circle, Small, 2, 2)]
            .map(|(colour, shape, size, row, col)| Object {
                colour,
                shape,
                size,
                cell: Cell { row, col },
                center: [0.0; 2],
                radius: 1.0,
                bbox: [0; 4],
            });
        Scene { objects: objects.to_vec(), background: [[230; 3]; 2] }
    }

    #[test]
    fn counts_by_hand() {
        // Mentions: red circle (ok), blue square (absent class), star (shape present), discs (circle
        // synonym, present), green ring (absent); "no diamond" is a denial and does not count.
        // 5 mentions, 2 hallucinated -> CHAIR_i 2/5. Classes: red circle (named), orange star (only
        // "star", no colour: not recalled) -> recall 1/2.
        let c =
            chair(&scene(), "A red circle, a blue square and a star. Two discs. A green ring; no diamond.");
        assert_eq!(c, CaptionChair { mentions: 5, hallucinated: 2, recalled: 1, classes: 2 });
        assert!((c.chair_i() - 0.4).abs() < 1e-12);
        assert_eq!((c.chair_s(), c.recall()), (1.0, 0.5));
    }

    #[test]
    fn size_and_cell_do_not_matter_to_chair() {
        // A small orange star exists; "large" and "top left" are wrong but the class is present.
        let c = chair(&scene(), "A large orange star is in the top left.");
        assert_eq!((c.mentions, c.hallucinated, c.recalled), (1, 0, 1));
    }

    #[test]
    fn pooled_chair_i_weighs_by_mentions() {
        // Caption 1: 1 of 1 hallucinated, recall 0. Caption 2: 0 of 3, recall 1.
        // Pooled CHAIR_i = 1/4 (the mean of per-caption rates would be 1/2); CHAIR_s = 1/2.
        let a = CaptionChair { mentions: 1, hallucinated: 1, recalled: 0, classes: 2 };
        let b = CaptionChair { mentions: 3, hallucinated: 0, recalled: 2, classes: 2 };
        let s = summarize(&[a, b]);
        assert_eq!((s.captions, s.mentions, s.hallucinated), (2, 4, 1));
        assert_eq!((s.chair_i, s.chair_s, s.recall), (0.25, 0.5, 0.5));
        assert_eq!(summarize(&[]), ChairSummary::default());
    }

    #[test]
    fn empty_text_mentions_nothing() {
        let c = chair(&scene(), "");
        assert_eq!((c.chair_i(), c.chair_s(), c.recall()), (0.0, 0.0, 0.0));
    }
}
