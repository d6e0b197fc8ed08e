//! Questions in the world's language, recognised template by template, so that the judge computes
//! the right answer from the scene instead of trusting a reference answer.
//!
//! The templates are those of [`crate::world::language`] (SFT, preference, PPO and eval prompts) and
//! [`crate::world::bench`] (MMHal-style questions). Matching is on lower-cased words, so case,
//! punctuation and the `<image>` marker do not matter; a question that fits no template is
//! [`Question::Unknown`].

use super::claims::{Spatial, spatial};
use super::mentions::{Mention, Token, cell_at, phrases, tokens};
use crate::world::language::{CAPTION, DESCRIBE};
use crate::world::scene::Cell;

/// A recognised question, with the phrases it names.
#[derive(Clone, Debug, PartialEq)]
pub enum Question {
    /// A detailed description ([`DESCRIBE`], MMHal's holistic question).
    Describe,
    /// A short caption ([`CAPTION`]).
    Caption,
    /// "Is there a {class | shape | colour object} in the image?"
    Exists(Mention),
    /// "How many {objects | shapes | colour objects} are there in the image?"
    Count(Mention),
    /// "What colour is the {shape} in the {cell | image}?" (the phrase holds shape and cell).
    ColourOf(Mention),
    /// "What shape is the {colour} object in the {cell}?"
    ShapeOf(Mention),
    /// "What size is the {class}?"
    SizeOf(Mention),
    /// "What is in the {cell}?", "Which object is in the {cell}?"
    WhatIsIn(Cell),
    /// "Is the {a} {relation} the {b}?"
    IsRelated {
        /// The subject.
        a: Mention,
        /// The relation asked about.
        relation: Spatial,
        /// The reference object.
        b: Mention,
    },
    /// "Where is the {a} relative to the {b}?"
    RelativePosition {
        /// The subject.
        a: Mention,
        /// The reference object.
        b: Mention,
    },
    /// "Where is the {ref}?"
    Position(Mention),
    /// "Which is larger, the {a} or the {b}?"
    Larger {
        /// The first object named.
        a: Mention,
        /// The second object named.
        b: Mention,
    },
    /// "What does the background of the image look like?"
    Background,
    /// A question followed by lettered options ("A. red circle") and an instruction.
    Choice {
        /// The question the options answer.
        stem: Box<Question>,
        /// Option texts in letter order (A first).
        options: Vec<String>,
    },
    /// Fits no template.
    Unknown,
}

/// Recognises a question (a human turn, with or without `<image>`).
pub fn parse(question: &str) -> Question {
    let text = question.replace("<image>", " ");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let options: Vec<(usize, String)> = lines.iter().filter_map(|l| option(l)).collect();
    let lettered = options.iter().enumerate().all(|(i, (letter, _))| *letter == i);
    match lines.first() {
        Some(stem) if options.len() >= 2 && lettered => Question::Choice {
            stem: Box::new(single(stem)),
            options: options.into_iter().map(|(_, o)| o).collect(),
        },
        _ => single(&lines.join(" ")),
    }
}

/// "B. red circle" -> (1, "red circle").
fn option(line: &str) -> Option<(usize, String)> {
    let mut chars = line.chars();
    let letter = chars.next().filter(char::is_ascii_uppercase)?;
    let rest = chars.as_str().strip_prefix(['.', ')'])?;
    let index = (letter as u8 - b'A') as usize;
    Some((index, rest.trim().trim_end_matches('.').to_string()))
}

/// The words of a text.
fn words(toks: &[Token]) -> Vec<&str> {
    toks.iter().filter(|t| t.word).map(|t| t.text.as_str()).collect()
}

/// A one-line question.
fn single(text: &str) -> Question {
    let toks = tokens(text);
    let w = words(&toks);
    let ps = phrases(text);
    let same_words = |t: &str| words(&tokens(t)) == w;
    if DESCRIBE.iter().any(|t| same_words(t)) {
        return Question::Describe;
    }
    if CAPTION.iter().any(|t| same_words(t)) {
        return Question::Caption;
    }
    let one = ps.first().filter(|_| ps.len() == 1).cloned();
    let two = match &ps[..] {
        [a, b] => Some((a.clone(), b.clone())),
        _ => None,
    };
    // "... in the {cell}" ending the question, from word `at`.
    let word_toks: Vec<Token> = toks.iter().filter(|t| t.word).cloned().collect();
    let cell_from = |at: usize| cell_at(&word_toks, at).filter(|(_, n)| at + n == w.len()).map(|(c, _)| c);
    let q = match w.as_slice() {
        ["is", "there", .., "in", "the", "image"] => one.map(Question::Exists),
        ["how", "many", .., "are", "there", "in", "the", "image"] => one.map(Question::Count),
        ["what", "colour" | "color", "is", "the", ..] => {
            one.filter(|m| m.shape.is_some()).map(Question::ColourOf)
        }
        ["what", "shape", "is", "the", ..] => one.map(Question::ShapeOf),
        ["what", "size", "is", "the", ..] => one.map(Question::SizeOf),
        ["what", "is", "in", "the", ..] => cell_from(4).map(Question::WhatIsIn),
        ["which", "object", "is", "in", "the", ..] => cell_from(5).map(Question::WhatIsIn),
        ["is", "the", ..] => two.and_then(|(a, b)| {
            let between = words(toks.get(a.token + 1..b.first_token())?);
            let (the, relation) = between.split_last()?;
            let relation = spatial(relation, true).filter(|_| *the == "the")?;
            Some(Question::IsRelated { a, relation, b })
        }),
        ["where", "is", "the", ..] if w.contains(&"relative") => {
            two.map(|(a, b)| Question::RelativePosition { a, b })
        }
        ["where", "is", "the", ..] => one.map(Question::Position),
        ["which", "is", "larger" | "bigger", ..] => two.map(|(a, b)| Question::Larger { a, b }),
        ["what", "does", "the", "background", ..] => Some(Question::Background),
        _ => None,
    };
    q.unwrap_or(Question::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::scene::{Colour, Shape};
    use std::cmp::Ordering;

    #[test]
    fn templates_by_hand() {
        assert_eq!(parse("<image>\nDescribe the image in detail."), Question::Describe);
        assert_eq!(parse("describe the image BRIEFLY"), Question::Caption);
        let Question::Exists(m) = parse("Is there an orange star in the image?") else { panic!() };
        assert_eq!((m.colour, m.shape), (Some(Colour::Orange), Some(Shape::Star)));
        let Question::Count(m) = parse("How many red objects are there in the image?") else { panic!() };
        assert_eq!((m.colour, m.shape), (Some(Colour::Red), None));
        let Question::ColourOf(m) = parse("What colour is the cross in the image?") else { panic!() };
        assert_eq!((m.shape, m.cell), (Some(Shape::Cross), None));
        assert_eq!(parse("What is in the middle right?"), Question::WhatIsIn(Cell { row: 1, col: 2 }));
        assert_eq!(parse("What is in the middle right corner?"), Question::Unknown);
        let Question::IsRelated { a, relation, b } = parse("Is the small red circle below the orange star?")
        else {
            panic!()
        };
        assert_eq!((a.colour, b.shape), (Some(Colour::Red), Some(Shape::Star)));
        assert_eq!(relation, Spatial { vertical: Some(Ordering::Greater), horizontal: None });
        assert!(matches!(
            parse("Where is the red ring relative to the red triangle?"),
            Question::RelativePosition { .. }
        ));
        assert!(matches!(parse("Which is larger, the red ring or the blue star?"), Question::Larger { .. }));
        assert_eq!(parse("Why?"), Question::Unknown);
        assert_eq!(parse(""), Question::Unknown);
    }

    #[test]
    fn choices_keep_the_stem_and_the_options_in_letter_order() {
        let q = "Which object is in the top right?\nA. red square\nB. orange ring\nC. orange circle\nD. orange square\nAnswer with the option's letter from the given choices directly.";
        let Question::Choice { stem, options } = parse(q) else { panic!("{:?}", parse(q)) };
        assert_eq!(*stem, Question::WhatIsIn(Cell { row: 0, col: 2 }));
        assert_eq!(options, ["red square", "orange ring", "orange circle", "orange square"]);
        // Letters out of order are no option list.
        assert!(!matches!(parse("Is there a star?\nB. yes\nA. no"), Question::Choice { .. }));
    }

    #[test]
    fn every_generated_question_is_recognised() {
        use crate::world::language as lang;
        let s = super::super::chair::tests::scene();
        let lc = crate::world::WorldConfig::default().language;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        for _ in 0..300 {
            for qa in [
                lang::existence(&s, &lc, &mut rng),
                lang::counting(&s, &mut rng),
                lang::attribute(&s, &mut rng),
                lang::relation(&s, &mut rng),
                lang::multiple_choice(&s, &mut rng),
            ] {
                assert_ne!(parse(&qa.question), Question::Unknown, "{}", qa.question);
            }
        }
    }
}
