//! What a free text claims about a scene, checked claim by claim: objects, their attributes and
//! cells, numbers, and relations between two named objects.
//!
//! Each noun phrase ([`phrases`]) is one claim, judged by the first rule that applies:
//! 1. with a number `n` ("two red circles", "no star", "three objects"): if `n > 0` and no object of
//!    the named class (or shape, or colour) exists, an **object** hallucination; otherwise, if the
//!    objects with every stated attribute (in the stated cell, if any) are not exactly `n`, a
//!    **count** hallucination (so a false denial is a count hallucination: it claims zero);
//! 2. without a number: no object of the named class -> **object**; the class exists but not in the
//!    stated size -> **attribute**; such an object exists but not in the stated cell -> **relation**
//!    (wrong cell).
//!
//! Two phrases joined by `is <relation> the` ("the red circle is above and to the left of the blue
//! square", "the A is larger than the B") make a relation claim, true when some pair of objects
//! matching the two phrases satisfies it; a false spatial claim is a **relation** hallucination, a
//! false size comparison an **attribute** one.

use super::chair;
use super::mentions::{Mention, Token, phrases, tokens};
use crate::world::scene::{Object, Scene};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What a false claim is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An object that is not in the image.
    Object,
    /// A wrong colour, size or shape for an object that is there.
    Attribute,
    /// A wrong number.
    Count,
    /// A wrong spatial relation or a wrong cell.
    Relation,
}

/// Hallucinations by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hallucinations {
    /// Objects that are not there.
    pub object: usize,
    /// Wrong colour, size or shape.
    pub attribute: usize,
    /// Wrong numbers.
    pub count: usize,
    /// Wrong relations or cells.
    pub relation: usize,
}

impl Hallucinations {
    /// All kinds together.
    pub fn total(&self) -> usize {
        self.object + self.attribute + self.count + self.relation
    }

    /// Counts one more of a kind.
    pub fn add(&mut self, kind: Kind) {
        *match kind {
            Kind::Object => &mut self.object,
            Kind::Attribute => &mut self.attribute,
            Kind::Count => &mut self.count,
            Kind::Relation => &mut self.relation,
        } += 1;
    }
}

/// The verdict on every claim of a text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// False claims by kind.
    pub hallucinations: Hallucinations,
    /// True claims (noun phrases and relations checked against the scene and found right).
    pub verified: usize,
}

/// Where one object lies relative to another: row order (`Less` = above) and column order
/// (`Less` = to the left); `None` where the phrase says nothing (or, for [`Spatial::between`], where
/// the two share the row or column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spatial {
    /// `Less`: above; `Greater`: below.
    pub vertical: Option<Ordering>,
    /// `Less`: to the left; `Greater`: to the right.
    pub horizontal: Option<Ordering>,
}

impl Spatial {
    /// The exact relation of `a` to `b`, as [`crate::world::language::relation_phrase`] words it.
    pub fn between(a: &Object, b: &Object) -> Spatial {
        let exact = |o: Ordering| (o != Ordering::Equal).then_some(o);
        Spatial {
            vertical: exact(a.cell.row.cmp(&b.cell.row)),
            horizontal: exact(a.cell.col.cmp(&b.cell.col)),
        }
    }

    /// Whether `a` stands so to `b`; a direction the phrase leaves out is not checked.
    pub fn holds(self, a: &Object, b: &Object) -> bool {
        self.vertical.is_none_or(|v| a.cell.row.cmp(&b.cell.row) == v)
            && self.horizontal.is_none_or(|h| a.cell.col.cmp(&b.cell.col) == h)
    }
}

/// Reads spatial words ("above", "below", "left", "right") from words. With `strict`, any other
/// word than the fillers of the world's phrases ("and", "to", "the", "of", "is", ...) means the
/// words are not a relation. `None` without a direction or with two opposite ones.
pub fn spatial(words: &[&str], strict: bool) -> Option<Spatial> {
    let mut s = Spatial { vertical: None, horizontal: None };
    let set = |slot: &mut Option<Ordering>, o: Ordering| match *slot {
        Some(prev) if prev != o => false,
        _ => {
            *slot = Some(o);
            true
        }
    };
    for w in words {
        let ok = match *w {
            "above" => set(&mut s.vertical, Ordering::Less),
            "below" | "under" | "beneath" => set(&mut s.vertical, Ordering::Greater),
            "left" => set(&mut s.horizontal, Ordering::Less),
            "right" => set(&mut s.horizontal, Ordering::Greater),
            "and" | "to" | "the" | "of" | "is" | "are" | "on" | "directly" => true,
            _ => !strict,
        };
        if !ok {
            return None;
        }
    }
    (s.vertical.is_some() || s.horizontal.is_some()).then_some(s)
}

/// The objects a phrase can refer to (every stated attribute, and the cell if stated).
pub fn referents<'s>(scene: &'s Scene, m: &Mention) -> Vec<&'s Object> {
    scene.objects.iter().filter(|o| m.matches(o) && m.cell.is_none_or(|c| c == o.cell)).collect()
}

/// The verdict on one noun phrase (module docs, rules 1 and 2); `None` when it is true.
pub fn check_phrase(scene: &Scene, m: &Mention) -> Option<Kind> {
    let exists = !chair::hallucinated(scene, m);
    match m.number {
        Some(n) if n > 0 && !exists => Some(Kind::Object),
        Some(n) => (referents(scene, m).len() != n).then_some(Kind::Count),
        None if !exists => Some(Kind::Object),
        None if !scene.objects.iter().any(|o| m.matches(o)) => Some(Kind::Attribute),
        None => referents(scene, m).is_empty().then_some(Kind::Relation),
    }
}

/// A relation claim between two phrases: the words from the end of `a` to the start of `b` must be
/// `is|are <relation> the|a|an`. `Err` holds the kind of a false claim; `None` when there is none.
fn check_relation(scene: &Scene, toks: &[Token], a: &Mention, b: &Mention) -> Option<Result<(), Kind>> {
    let between: Vec<&str> =
        toks.get(a.token + 1..b.first_token())?.iter().map(|t| t.text.as_str()).collect();
    let [verb, middle @ .., det] = between.as_slice() else { return None };
    if !matches!(*verb, "is" | "are") || !matches!(*det, "the" | "a" | "an") {
        return None;
    }
    // A relation between objects that are not there is already an object hallucination.
    let (xs, ys) = (referents(scene, a), referents(scene, b));
    if xs.is_empty() || ys.is_empty() {
        return None;
    }
    let pairs = || xs.iter().flat_map(|x| ys.iter().map(move |y| (*x, *y)));
    let (holds, kind) = match middle {
        ["larger" | "bigger", "than"] => (pairs().any(|(x, y)| x.size > y.size), Kind::Attribute),
        ["smaller", "than"] => (pairs().any(|(x, y)| x.size < y.size), Kind::Attribute),
        _ => {
            let s = spatial(middle, true)?;
            (pairs().any(|(x, y)| !std::ptr::eq(x, y) && s.holds(x, y)), Kind::Relation)
        }
    };
    Some(if holds { Ok(()) } else { Err(kind) })
}

/// Checks every claim of a text against the scene.
pub fn check(scene: &Scene, text: &str) -> Claims {
    let toks = tokens(text);
    let ps = phrases(text);
    let mut out = Claims::default();
    for m in &ps {
        match check_phrase(scene, m) {
            Some(kind) => out.hallucinations.add(kind),
            None => out.verified += 1,
        }
    }
    for pair in ps.windows(2) {
        match check_relation(scene, &toks, &pair[0], &pair[1]) {
            Some(Ok(())) => out.verified += 1,
            Some(Err(kind)) => out.hallucinations.add(kind),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::chair::tests::scene;
    use super::*;

    fn kinds(text: &str) -> (usize, usize, usize, usize, usize) {
        let c = check(&scene(), text);
        let h = c.hallucinations;
        (h.object, h.attribute, h.count, h.relation, c.verified)
    }

    // The scene: large red circle top left, small orange star center, small red circle bottom right.

    #[test]
    fn phrases_follow_the_rules_in_order() {
        // The reference description: four true claims (the count and three objects).
        let truth = crate::world::language::describe(&scene(), None);
        assert_eq!(kinds(&truth), (0, 0, 0, 0, 4));
        // Blue square absent: object. Large orange star: the star is small: attribute. Small red
        // circle in the top left: one exists, in the bottom right: relation.
        assert_eq!(kinds("A blue square."), (1, 0, 0, 0, 0));
        assert_eq!(kinds("A large orange star is in the center."), (0, 1, 0, 0, 0));
        assert_eq!(kinds("A small red circle is in the top left."), (0, 0, 0, 1, 0));
    }

    #[test]
    fn numbers_are_counted_with_every_stated_attribute() {
        // Two red circles: right. Two objects: there are three. No star: there is one (a false
        // denial). Three green rings: none at all, an object hallucination, not a count one.
        assert_eq!(kinds("There are two red circles."), (0, 0, 0, 0, 1));
        assert_eq!(kinds("There are two objects."), (0, 0, 1, 0, 0));
        assert_eq!(kinds("There is no star."), (0, 0, 1, 0, 0));
        assert_eq!(kinds("There are three green rings."), (1, 0, 0, 0, 0));
        // One large circle: right (the other red circle is small); no purple objects: right.
        assert_eq!(kinds("One large circle. No purple objects."), (0, 0, 0, 0, 2));
    }

    #[test]
    fn relations_between_two_phrases() {
        // The orange star (1,1) is above and to the left of the small red circle (2,2): true (2
        // phrases + 1 relation). It is not above the large red circle (0,0): a relation
        // hallucination. "above" alone is true when the star's row is smaller, whatever the column.
        assert_eq!(
            kinds("The orange star is above and to the left of the small red circle."),
            (0, 0, 0, 0, 3)
        );
        assert_eq!(kinds("The orange star is above the large red circle."), (0, 0, 0, 1, 2));
        assert_eq!(kinds("The orange star is above the small red circle."), (0, 0, 0, 0, 3));
        // Size comparisons: the large red circle is larger than the orange star; not the reverse.
        assert_eq!(kinds("The large red circle is larger than the orange star."), (0, 0, 0, 0, 3));
        assert_eq!(kinds("The orange star is larger than the large red circle."), (0, 1, 0, 0, 2));
        // No relation with an absent object: only the object hallucination counts.
        assert_eq!(kinds("The blue square is above the orange star."), (1, 0, 0, 0, 1));
    }

    #[test]
    fn spatial_words() {
        use Ordering::*;
        let s = |t: &str, strict| spatial(&t.split(' ').collect::<Vec<_>>(), strict);
        assert_eq!(
            s("above and to the left of", true),
            Some(Spatial { vertical: Some(Less), horizontal: Some(Less) })
        );
        assert_eq!(s("to the right of", true), Some(Spatial { vertical: None, horizontal: Some(Greater) }));
        assert_eq!(s("in the top left", true), None);
        assert_eq!(
            s("it sits a bit below", false),
            Some(Spatial { vertical: Some(Greater), horizontal: None })
        );
        assert_eq!(s("above or below", false), None);
        assert_eq!(s("near", false), None);
    }
}
