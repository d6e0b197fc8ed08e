//! Object mentions in free text written in the world's language.
//!
//! Text is split into [`Token`]s (lower-cased words and punctuation marks, each with its byte span);
//! a mention is a noun naming objects (a shape word in any of its forms, or the generic "object")
//! with the words directly before it (number, size, colour, in the world's order
//! `[number] [size] [colour] noun`) and the cell the same clause gives right after it
//! ("... circle is in the top left"). Punctuation between two words breaks adjacency, so
//! "red, circle" is a bare circle. Parsing never fails: words it does not know are skipped.

use crate::world::scene::{Cell, Colour, Object, Shape, Size};
use std::ops::Range;

/// A word (lower-cased) or a punctuation mark, with its byte span in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The lower-cased word, or the punctuation mark itself.
    pub text: String,
    /// Whether this is a word (letters, digits and apostrophes) rather than punctuation.
    pub word: bool,
    /// Byte range in the original text.
    pub span: Range<usize>,
}

/// Splits text into words and punctuation marks; whitespace only separates.
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut start: Option<usize> = None;
    let flush = |out: &mut Vec<Token>, start: &mut Option<usize>, end: usize| {
        if let Some(s) = start.take() {
            out.push(Token { text: text[s..end].to_lowercase(), word: true, span: s..end });
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '\'' {
            start.get_or_insert(i);
        } else {
            flush(&mut out, &mut start, i);
            if !c.is_whitespace() {
                out.push(Token { text: c.to_string(), word: false, span: i..i + c.len_utf8() });
            }
        }
    }
    flush(&mut out, &mut start, text.len());
    out
}

/// One noun phrase naming objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    /// The shape named, or `None` for the generic "object(s)".
    pub shape: Option<Shape>,
    /// Whether the noun is plural ("circles", "discs", "objects").
    pub plural: bool,
    /// The colour word directly before the noun.
    pub colour: Option<Colour>,
    /// The size word directly before the colour (or the noun).
    pub size: Option<Size>,
    /// A number directly before the phrase: "two" = 2, digits, and "no" / "zero" / "not a" /
    /// "not any" = 0 (a denial). Articles are not numbers.
    pub number: Option<usize>,
    /// The cell given by "in the {cell}" (optionally after "is" / "are") right after the noun.
    pub cell: Option<Cell>,
    /// Bytes from the first size / colour word (or the noun) to the end of the noun.
    pub span: Range<usize>,
    /// Index of the noun among [`tokens`] of the same text.
    pub token: usize,
}

impl Mention {
    /// Whether the phrase denies the objects exist ("no red circle", "not a star").
    pub fn denied(&self) -> bool {
        self.number == Some(0)
    }

    /// Index among [`tokens`] of the phrase's first word (size, colour or noun).
    pub fn first_token(&self) -> usize {
        self.token - usize::from(self.colour.is_some()) - usize::from(self.size.is_some())
    }

    /// Whether an object has every attribute the phrase states (shape, colour, size; the cell and
    /// the number are not attributes of one object).
    pub fn matches(&self, o: &Object) -> bool {
        self.shape.is_none_or(|s| s == o.shape)
            && self.colour.is_none_or(|c| c == o.colour)
            && self.size.is_none_or(|s| s == o.size)
    }

    /// Whether an object has the phrase's shape and colour (where stated): its class is named.
    pub fn names_class_of(&self, o: &Object) -> bool {
        self.shape.is_none_or(|s| s == o.shape) && self.colour.is_none_or(|c| c == o.colour)
    }
}

/// The shape a noun names and whether it is plural.
pub fn shape_word(word: &str) -> Option<(Shape, bool)> {
    Shape::ALL.into_iter().find_map(|s| {
        let forms = std::iter::once((s.name(), s.plural())).chain(s.synonyms().iter().copied());
        forms.into_iter().find_map(|(one, many)| match word {
            w if w == one => Some((s, false)),
            w if w == many => Some((s, true)),
            _ => None,
        })
    })
}

/// The colour a word names.
pub fn colour_word(word: &str) -> Option<Colour> {
    Colour::ALL.into_iter().find(|c| c.name() == word)
}

/// The size a word names ("big" and "little" included).
pub fn size_word(word: &str) -> Option<Size> {
    match word {
        "small" | "little" => Some(Size::Small),
        "large" | "big" => Some(Size::Large),
        _ => None,
    }
}

/// The number a word names: "no" / "zero" / "none" = 0, "one" .. "nine", or digits.
pub fn number_word(word: &str) -> Option<usize> {
    const W: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    match word {
        "no" | "none" => Some(0),
        w => W.iter().position(|n| *n == w).or_else(|| w.parse().ok()),
    }
}

/// The cell named by the words at `at` ("top left", "center" / "centre", "middle"), and how many
/// words it takes.
pub fn cell_at(tokens: &[Token], at: usize) -> Option<(Cell, usize)> {
    let word = |i: usize| tokens.get(i).filter(|t| t.word).map(|t| t.text.as_str());
    let row = |w: &str| ["top", "middle", "bottom"].iter().position(|r| *r == w);
    let col = |w: &str| ["left", "middle", "right"].iter().position(|c| *c == w);
    let first = word(at)?;
    if matches!(first, "center" | "centre") {
        return Some((Cell { row: 1, col: 1 }, 1));
    }
    let (r, c) = (row(first)?, word(at + 1).and_then(col));
    match c {
        Some(c) if !(r == 1 && c == 1) => Some((Cell { row: r as u8, col: c as u8 }, 2)),
        _ if first == "middle" => Some((Cell { row: 1, col: 1 }, 1)),
        _ => None,
    }
}

/// The cell given by "[is|are] in the {cell}" starting at token `at`.
fn cell_after(tokens: &[Token], at: usize) -> Option<Cell> {
    let is = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.word && t.text == w);
    let at = if is(at, "is") || is(at, "are") { at + 1 } else { at };
    if !(is(at, "in") && is(at + 1, "the")) {
        return None;
    }
    cell_at(tokens, at + 2).map(|(c, _)| c)
}

/// Every noun phrase naming objects, shape words and "object(s)" alike, in text order.
pub fn phrases(text: &str) -> Vec<Mention> {
    let toks = tokens(text);
    let word = |i: usize| toks.get(i).filter(|t| t.word).map(|t| t.text.as_str());
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let noun = match t.text.as_str() {
            _ if !t.word => None,
            "object" => Some((None, false)),
            "objects" => Some((None, true)),
            w => shape_word(w).map(|(s, plural)| (Some(s), plural)),
        };
        let Some((shape, plural)) = noun else { continue };
        // Walk back over [number] [size] [colour].
        let mut first = i;
        let colour = i.checked_sub(1).and_then(word).and_then(colour_word);
        if colour.is_some() {
            first -= 1;
        }
        let size = first.checked_sub(1).and_then(word).and_then(size_word);
        if size.is_some() {
            first -= 1;
        }
        let before = first.checked_sub(1).and_then(word);
        let number = match before {
            Some("a" | "an" | "any") if first >= 2 && word(first - 2) == Some("not") => Some(0),
            Some(w) => number_word(w),
            None => None,
        };
        out.push(Mention {
            shape,
            plural,
            colour,
            size,
            number,
            cell: cell_after(&toks, i + 1),
            span: toks[first].span.start..t.span.end,
            token: i,
        });
    }
    out
}

/// The mentions of shapes (what CHAIR counts): [`phrases`] without the generic "object(s)".
pub fn mentions(text: &str) -> Vec<Mention> {
    phrases(text).into_iter().filter(|m| m.shape.is_some()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_sentences_give_class_size_and_cell() {
        let text = "There are two objects. A large red circle is in the top left. A small orange star is in the center.";
        let m = mentions(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].shape, m[0].colour, m[0].size, m[0].cell),
            (Some(Shape::Circle), Some(Colour::Red), Some(Size::Large), Some(Cell { row: 0, col: 0 }))
        );
        assert_eq!(&text[m[0].span.clone()], "large red circle");
        assert_eq!(m[1].cell, Some(Cell { row: 1, col: 1 }));
        // The count sentence is a generic phrase with a number.
        let p = phrases(text);
        assert_eq!((p[0].shape, p[0].number, p[0].plural), (None, Some(2), true));
    }

    #[test]
    fn plurals_synonyms_numbers_and_denials() {
        let m = phrases("There are no diamonds. Three Blue DISCS, not a star; a plus.");
        let got: Vec<_> = m.iter().map(|m| (m.shape, m.plural, m.colour, m.number)).collect();
        assert_eq!(
            got,
            [
                (Some(Shape::Diamond), true, None, Some(0)),
                (Some(Shape::Circle), true, Some(Colour::Blue), Some(3)),
                (Some(Shape::Star), false, None, Some(0)),
                (Some(Shape::Cross), false, None, None),
            ]
        );
        assert!(m[0].denied() && !m[3].denied());
    }

    #[test]
    fn punctuation_breaks_adjacency_and_cells_need_the_same_clause() {
        let m = mentions("A red, circle. A blue square. In the top left.");
        assert_eq!((m[0].colour, m[0].cell), (None, None));
        assert_eq!(m[1].cell, None);
        let m = mentions("There is a green ring in the bottom middle");
        assert_eq!(m[0].cell, Some(Cell { row: 2, col: 1 }));
        // "in the image" is no cell; "middle" alone is the center.
        assert_eq!(mentions("a star in the image")[0].cell, None);
        assert_eq!(mentions("a star is in the middle.")[0].cell, Some(Cell { row: 1, col: 1 }));
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "",
            "   ",
            "circle",
            "red",
            "in the",
            "circle is in the",
            "circle in the top",
            "ÄÖÜ großer roter Kreis — circle… in the top left",
            "🙂 red🙂circle",
            "no",
            "not a",
            "99999999999999999999999999 circles",
            "\u{0}\n\t.,;:!?",
        ] {
            let _ = phrases(s);
        }
        let m = mentions("🙂 red circle");
        assert_eq!(&"🙂 red circle"[m[0].span.clone()], "red circle");
        // A number too large for usize is no number.
        assert_eq!(phrases("99999999999999999999999999 circles")[0].number, None);
    }

    #[test]
    fn tokens_keep_byte_spans() {
        let t = tokens("Big É-star.");
        let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["big", "é", "-", "star", "."]);
        assert_eq!(t[1].span, 4..6);
    }
}
