//! LLaVA's `vicuna_v1` conversation format as token ids with training targets:
//! `USER: <image>\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>`, BOS first.
//!
//! llava-hf's LLaVA-1.5 chat template has no system line, and neither does this one. Only the
//! assistant's tokens (its answer and the `</s>` that ends it) are targets.

use super::formats::{Role, Turn};
use tokenizers::Tokenizer;

/// The prompt of one round, up to where the assistant starts answering.
pub fn prompt(question: &str) -> String {
    format!("USER: {question} ASSISTANT:")
}

/// The text of a whole conversation; with `open`, the last gpt turn is left out so the text ends
/// with "ASSISTANT:", ready for generation.
pub fn text(turns: &[Turn], open: bool) -> String {
    let turns = match turns.split_last() {
        Some((last, rest)) if open && last.from == Role::Gpt => rest,
        _ => turns,
    };
    turns
        .iter()
        .map(|t| match t.from {
            Role::Human => prompt(&t.value),
            Role::Gpt => format!(" {}</s>", t.value),
        })
        .collect()
}

/// Token ids of a conversation and, per token, whether it is a training target.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Ids, BOS first; the image placeholder not yet expanded.
    pub ids: Vec<u32>,
    /// `target[p]`: the model is trained to predict `ids[p]` (from position `p - 1`).
    pub target: Vec<bool>,
}

/// Why a conversation cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Turns must alternate human, gpt, human, gpt.
    #[error("turn {0} should be from {1}")]
    Order(usize, &'static str),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Encodes a conversation for training. Each piece is tokenised alone and the ids concatenated;
/// for tokenizers that split at spaces and punctuation (the world's) that equals tokenising the
/// whole text, which `pieces_match_the_whole_text` checks.
pub fn encode(tok: &Tokenizer, turns: &[Turn]) -> Result<Encoded, ChatError> {
    let piece = |s: &str| -> Result<Vec<u32>, ChatError> {
        tok.encode(s, false).map(|e| e.get_ids().to_vec()).map_err(|e| ChatError::Tokenizer(e.to_string()))
    };
    let bos = tok.encode("", true).map_err(|e| ChatError::Tokenizer(e.to_string()))?.get_ids().to_vec();
    let mut enc = Encoded { target: vec![false; bos.len()], ids: bos };
    for (i, t) in turns.iter().enumerate() {
        let (want, name) = if i % 2 == 0 { (Role::Human, "human") } else { (Role::Gpt, "gpt") };
        if t.from != want {
            return Err(ChatError::Order(i + 1, name));
        }
        let (ids, is_target) = match t.from {
            Role::Human => (piece(&prompt(&t.value))?, false),
            Role::Gpt => (piece(&format!(" {}</s>", t.value))?, true),
        };
        enc.target.extend(std::iter::repeat_n(is_target, ids.len()));
        enc.ids.extend(ids);
    }
    if turns.len() < 2 || turns.len() % 2 == 1 {
        return Err(ChatError::Order(turns.len() + 1, "gpt"));
    }
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns() -> Vec<Turn> {
        vec![
            Turn::human("<image>\nIs there a red circle in the image?"),
            Turn::gpt("Yes."),
            Turn::human("How many objects are there in the image?"),
            Turn::gpt("There are two objects."),
        ]
    }

    #[test]
    fn text_follows_vicuna_v1() {
        assert_eq!(
            text(&turns(), false),
            "USER: <image>\nIs there a red circle in the image? ASSISTANT: Yes.</s>USER: How many objects are there in the image? ASSISTANT: There are two objects.</s>"
        );
        assert_eq!(
            text(&turns(), true),
            "USER: <image>\nIs there a red circle in the image? ASSISTANT: Yes.</s>USER: How many objects are there in the image? ASSISTANT:"
        );
    }

    #[test]
    fn pieces_match_the_whole_text_and_only_answers_are_targets() {
        let tok = crate::world::tokenizer::load().unwrap();
        let enc = encode(&tok, &turns()).unwrap();
        let whole = tok.encode(text(&turns(), false), true).unwrap();
        assert_eq!(enc.ids, whole.get_ids());
        let targets: Vec<&str> = whole
            .get_tokens()
            .iter()
            .zip(&enc.target)
            .filter(|(_, t)| **t)
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(targets, ["Yes", ".", "</s>", "There", "are", "two", "objects", ".", "</s>"]);
    }

    #[test]
    fn turns_out_of_order_are_named() {
        let tok = crate::world::tokenizer::load().unwrap();
        let err = encode(&tok, &[Turn::gpt("Yes.")]).unwrap_err().to_string();
        assert_eq!(err, "turn 1 should be from human");
        let err = encode(&tok, &turns()[..3]).unwrap_err().to_string();
        assert_eq!(err, "turn 4 should be from gpt");
    }
}
