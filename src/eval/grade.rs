//! Short answers graded against the truth the scene gives for a recognised question.
//!
//! A response is right, wrong (a false claim of some [`Kind`]) or missing (no answer, or a true but
//! incomplete one). The right answer is computed from the scene for each [`Question`] template;
//! a question about an object that is not there is answered right by denying it.

use super::claims::{Kind, Spatial, check_phrase, referents, spatial};
use super::mentions::{Mention, Token, cell_at, colour_word, number_word, phrases, size_word, tokens};
use super::question::Question;
use crate::world::scene::{Cell, Colour, Object, Scene, Shape, Size};
use std::cmp::Ordering;

/// How a response answers a question that has one right answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The right answer.
    Right,
    /// A wrong answer: a false claim of this kind.
    Wrong(Kind),
    /// No answer, or a true but incomplete one.
    Missing,
}

/// How `response` answers `q` in this scene; `None` when the question has no single right answer
/// (descriptions, captions, unrecognised questions, choices without a right option).
pub fn grade(q: &Question, scene: &Scene, response: &str) -> Option<Answer> {
    let toks = tokens(response);
    let ps = phrases(response);
    let denies = ps.iter().any(Mention::denied)
        || first_word(&toks).is_some_and(|w| w == "no")
        || toks.iter().any(|t| matches!(t.text.as_str(), "nothing" | "none" | "empty" | "isn't" | "aren't"));
    let colour = toks.iter().find_map(|t| colour_word(&t.text));
    let shape = ps.iter().filter(|m| !m.denied()).find_map(|m| m.shape);
    let size = toks.iter().find_map(|t| size_word(&t.text));
    Some(match q {
        Question::Describe | Question::Caption | Question::Unknown => return None,
        Question::Exists(m) => {
            let said = yes_no(&toks).or_else(|| {
                let about: Vec<&Mention> =
                    ps.iter().filter(|p| p.shape == m.shape && p.colour == m.colour).collect();
                about.first().map(|p| !p.denied())
            });
            yes_no_answer(!referents(scene, m).is_empty(), said, Kind::Object, Kind::Count)
        }
        Question::Count(m) => {
            let said =
                ps.iter().find_map(|p| p.number).or_else(|| toks.iter().find_map(|t| number_word(&t.text)));
            match said {
                Some(n) if n == referents(scene, m).len() => Answer::Right,
                Some(_) => Answer::Wrong(Kind::Count),
                None => Answer::Missing,
            }
        }
        Question::ColourOf(m) => attribute::<Colour>(&referents(scene, m), colour, |o| o.colour, denies),
        Question::ShapeOf(m) => attribute::<Shape>(&referents(scene, m), shape, |o| o.shape, denies),
        Question::SizeOf(m) => attribute::<Size>(&referents(scene, m), size, |o| o.size, denies),
        Question::WhatIsIn(cell) => what_is_in(scene, *cell, &ps, denies),
        Question::IsRelated { a, relation, b } => {
            let truth = pairs(scene, a, b).iter().any(|(x, y)| relation.holds(x, y));
            yes_no_answer(truth, yes_no(&toks), Kind::Relation, Kind::Relation)
        }
        Question::RelativePosition { a, b } => {
            let pairs = pairs(scene, a, b);
            let words: Vec<&str> = toks.iter().map(|t| t.text.as_str()).collect();
            match spatial(&words, false) {
                _ if pairs.is_empty() => premise(denies),
                Some(s) if pairs.iter().any(|(x, y)| Spatial::between(x, y) == s) => Answer::Right,
                Some(s) if pairs.iter().any(|(x, y)| s.holds(x, y)) => Answer::Missing,
                Some(_) => Answer::Wrong(Kind::Relation),
                None => Answer::Missing,
            }
        }
        Question::Position(m) => {
            let said = toks.windows(2).enumerate().find_map(|(i, w)| {
                (w[0].text == "in" && w[1].text == "the").then(|| cell_at(&toks, i + 2)).flatten()
            });
            let at: Vec<Cell> = referents(scene, m).iter().map(|o| o.cell).collect();
            match said {
                _ if at.is_empty() => premise(denies),
                Some((c, _)) if at.contains(&c) => Answer::Right,
                Some(_) => Answer::Wrong(Kind::Relation),
                None => Answer::Missing,
            }
        }
        Question::Larger { a, b } => larger(scene, (a, b), &toks, &ps, denies),
        Question::Background => {
            let plain = toks.iter().any(|t| matches!(t.text.as_str(), "plain" | "light" | "white" | "blank"));
            if plain { Answer::Right } else { Answer::Missing }
        }
        Question::Choice { stem, options } => {
            let right = options.iter().position(|o| grade(stem, scene, o) == Some(Answer::Right))?;
            match letter(response, &toks) {
                Some(l) if l == right => Answer::Right,
                Some(l) => match options.get(l).and_then(|o| grade(stem, scene, o)) {
                    Some(Answer::Wrong(kind)) => Answer::Wrong(kind),
                    Some(_) => Answer::Wrong(Kind::Attribute),
                    None => Answer::Missing,
                },
                None => grade(stem, scene, response)?,
            }
        }
    })
}

/// The first word of a text.
fn first_word(toks: &[Token]) -> Option<&str> {
    toks.iter().find(|t| t.word).map(|t| t.text.as_str())
}

/// "Yes ..." / "No ..." by the first word.
fn yes_no(toks: &[Token]) -> Option<bool> {
    match first_word(toks)? {
        "yes" | "yeah" | "yep" | "true" | "correct" => Some(true),
        "no" | "nope" | "false" | "incorrect" | "not" => Some(false),
        _ => None,
    }
}

/// A yes/no answer: a false yes is a hallucination of kind `false_yes`, a false no of `false_no`.
fn yes_no_answer(truth: bool, said: Option<bool>, false_yes: Kind, false_no: Kind) -> Answer {
    match said {
        Some(s) if s == truth => Answer::Right,
        Some(true) => Answer::Wrong(false_yes),
        Some(false) => Answer::Wrong(false_no),
        None => Answer::Missing,
    }
}

/// A question about an object that is not there: denying it is right.
fn premise(denies: bool) -> Answer {
    if denies { Answer::Right } else { Answer::Missing }
}

/// The colour, shape or size of the objects a question names; when none is there, denying it is
/// right (even beside other colours: "no cross, but a blue circle") and naming a value claims one
/// is (an object hallucination).
fn attribute<T: PartialEq>(
    targets: &[&Object],
    said: Option<T>,
    of: fn(&Object) -> T,
    denies: bool,
) -> Answer {
    match said {
        _ if targets.is_empty() && denies => Answer::Right,
        Some(_) if targets.is_empty() => Answer::Wrong(Kind::Object),
        Some(v) if targets.iter().any(|o| of(o) == v) => Answer::Right,
        Some(_) => Answer::Wrong(Kind::Attribute),
        None if denies => Answer::Wrong(Kind::Count),
        None => Answer::Missing,
    }
}

/// "What is in the {cell}?": right when a phrase names the object there with its colour and shape
/// (and its size, if given); a phrase naming something else is judged as a claim about that cell.
fn what_is_in(scene: &Scene, cell: Cell, ps: &[Mention], denies: bool) -> Answer {
    let named: Vec<Mention> = ps
        .iter()
        .filter(|m| !m.denied() && m.shape.is_some() && m.cell.is_none_or(|c| c == cell))
        .map(|m| Mention { cell: Some(cell), ..m.clone() })
        .collect();
    let there = scene.at(cell);
    if there.is_some_and(|o| named.iter().any(|m| m.colour.is_some() && m.matches(o))) {
        return Answer::Right;
    }
    match (named.iter().find_map(|m| check_phrase(scene, m)), there) {
        (Some(kind), _) => Answer::Wrong(kind),
        (None, Some(_)) if denies => Answer::Wrong(Kind::Count),
        (None, None) if named.is_empty() => premise(denies),
        _ => Answer::Missing,
    }
}

/// Pairs of distinct objects the two phrases can refer to.
fn pairs<'s>(scene: &'s Scene, a: &Mention, b: &Mention) -> Vec<(&'s Object, &'s Object)> {
    let ys = referents(scene, b);
    let xs = referents(scene, a);
    xs.iter().flat_map(|x| ys.iter().map(move |y| (*x, *y))).filter(|(x, y)| !std::ptr::eq(*x, *y)).collect()
}

/// "Which is larger, the A or the B?": "the same size", or the first phrase named is the larger
/// (the smaller with "smaller").
fn larger(
    scene: &Scene,
    (a, b): (&Mention, &Mention),
    toks: &[Token],
    ps: &[Mention],
    denies: bool,
) -> Answer {
    let Some(&(x, y)) = pairs(scene, a, b).first() else { return premise(denies) };
    let truth = x.size.cmp(&y.size);
    let same = |p: &Mention, q: &Mention| (p.shape, p.colour, p.size) == (q.shape, q.colour, q.size);
    let said = if toks.iter().any(|t| t.text == "same") {
        Some(Ordering::Equal)
    } else {
        let flip = toks.iter().any(|t| t.text == "smaller");
        let first = ps.first().and_then(|p| {
            if same(p, a) {
                Some(Ordering::Greater)
            } else if same(p, b) {
                Some(Ordering::Less)
            } else {
                None
            }
        });
        first.map(|o| if flip { o.reverse() } else { o })
    };
    match said {
        Some(o) if o == truth => Answer::Right,
        Some(_) => Answer::Wrong(Kind::Attribute),
        None => Answer::Missing,
    }
}

/// The option letter a response gives ("B", "B.", "(B)", "The answer is B."), as an index; "A red
/// circle" is an article, not a letter.
fn letter(response: &str, toks: &[Token]) -> Option<usize> {
    let lead = ["the", "answer", "is", "option", "letter"];
    let at = toks.iter().position(|t| t.word && !lead.contains(&t.text.as_str()))?;
    let t = &toks[at];
    let raw = response.get(t.span.clone())?;
    let alone = toks.get(at + 1).is_none_or(|n| !n.word);
    match raw.as_bytes() {
        [c @ b'A'..=b'Z'] if alone => Some((c - b'A') as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_told_from_articles() {
        let l = |r: &str| letter(r, &tokens(r));
        assert_eq!((l("B"), l("B."), l("(C)"), l("The answer is D.")), (Some(1), Some(1), Some(2), Some(3)));
        assert_eq!((l("A red circle."), l("a."), l("Yes."), l("")), (None, None, None, None));
    }

    #[test]
    fn unanswerable_questions_have_no_grade() {
        let s = super::super::chair::tests::scene();
        assert_eq!(grade(&Question::Describe, &s, "A red circle."), None);
        // No option is right for the center (an orange star): no single right answer.
        let q = super::super::question::parse("Which object is in the center?\nA. red circle\nB. blue star");
        assert_eq!(grade(&q, &s, "A."), None);
    }
}
