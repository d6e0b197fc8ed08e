//! The world's tokenizer: one token per word or punctuation mark, in Hugging Face `tokenizer.json`
//! form, so the `tokenizers` crate and Python's `tokenizers` / `transformers` load it unchanged.
//!
//! A word-level vocabulary suits a closed language: every word the world writes is one token, so
//! sequences are short and a small model spends no capacity on spelling. Ids 0-4 are the special
//! tokens in LLaMA's order (`<unk>`, `<s>`, `</s>`) plus `<pad>` and `<image>`.

use super::language::LEXICON;
use super::scene::{Cell, Colour, Shape, Size};
use crate::data::template::{FACTUAL_PROMPT, REWARD_PROMPT, SHORT_REWARD_PROMPT};
use serde_json::json;
use std::collections::BTreeSet;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer};

/// The special tokens, in id order.
pub const SPECIAL: [&str; 5] = ["<unk>", "<s>", "</s>", "<pad>", "<image>"];

/// Splits text into words and punctuation exactly as the tokenizer's pre-tokenizer does.
fn words(text: &str) -> Vec<String> {
    let mut pts = PreTokenizedString::from(text);
    if BertPreTokenizer.pre_tokenize(&mut pts).is_err() {
        return Vec::new();
    }
    pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(w, _, _)| w.to_string())
        .collect()
}

/// The vocabulary after the special tokens: every word of the lexicon, the names, the digits and the
/// reward-model prompt, each also capitalised, sorted.
pub fn vocabulary() -> Vec<String> {
    let mut sources: Vec<String> =
        [LEXICON, REWARD_PROMPT, SHORT_REWARD_PROMPT, FACTUAL_PROMPT].map(str::to_string).to_vec();
    for s in Shape::ALL {
        sources.push(format!("{} {}", s.name(), s.plural()));
        sources.extend(s.synonyms().iter().map(|(a, b)| format!("{a} {b}")));
    }
    sources.extend(Colour::ALL.iter().map(|c| c.name().to_string()));
    sources.extend([Size::Small, Size::Large].iter().map(|s| s.name().to_string()));
    sources.extend(Cell::all().map(|c| c.name().to_string()));
    sources.push("A B C D 0 1 2 3 4 5 6 7 8 9".to_string());
    let mut set = BTreeSet::new();
    for w in sources.iter().flat_map(|s| words(s)) {
        set.insert(super::language::capitalise(&w));
        set.insert(w);
    }
    set.into_iter().filter(|w| !SPECIAL.contains(&w.as_str())).collect()
}

/// The tokenizer as `tokenizer.json` text: word-level model, BERT pre-tokenizer (splits on spaces and
/// isolates punctuation), `<s>` prepended by the post-processor as LLaMA does, and a decoder that
/// joins words with spaces and reattaches punctuation.
pub fn tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (id, w) in SPECIAL.iter().map(|s| s.to_string()).chain(vocabulary()).enumerate() {
        vocab.insert(w, json!(id));
    }
    let added: Vec<_> = SPECIAL
        .iter()
        .enumerate()
        .map(|(id, t)| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let value = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}}
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Loads the world's tokenizer (a round trip through the `tokenizers` crate, which validates it).
pub fn load() -> Result<Tokenizer, tokenizers::Error> {
    tokenizer_json().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_have_llama_ids_and_bos_is_prepended() {
        let tok = load().unwrap();
        for (id, t) in SPECIAL.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(id as u32));
        }
        let enc = tok
            .encode("USER: <image>\nIs there a red circle in the image? ASSISTANT: No.</s>", true)
            .unwrap();
        let toks = enc.get_tokens();
        assert_eq!(
            toks,
            [
                "<s>",
                "USER",
                ":",
                "<image>",
                "Is",
                "there",
                "a",
                "red",
                "circle",
                "in",
                "the",
                "image",
                "?",
                "ASSISTANT",
                ":",
                "No",
                ".",
                "</s>"
            ]
        );
    }

    #[test]
    fn decoding_reattaches_punctuation() {
        let tok = load().unwrap();
        let enc = tok.encode("There are two objects. A small red circle is in the center.", false).unwrap();
        let text = tok.decode(enc.get_ids(), true).unwrap();
        assert_eq!(text, "There are two objects. A small red circle is in the center.");
    }

    #[test]
    fn the_caption_list_is_found_by_offsets() {
        let tok = load().unwrap();
        let turns = [crate::data::formats::Turn::human("<image>\nDescribe the image.")];
        let caps = ["A small red circle is in the center.".to_string(), "There is one object.".to_string()];
        let (text, span) = crate::data::template::reward_text_with_facts(
            crate::data::template::GradingPrompt::Short,
            &turns,
            "A red star is in the top left.",
            Some(&caps),
        );
        let enc = tok.encode(text, true).unwrap();
        let inside = crate::model::jobs::tokens_within(&enc, &span.unwrap());
        let ids: Vec<u32> =
            enc.get_ids().iter().zip(&inside).filter(|(_, i)| **i).map(|(id, _)| *id).collect();
        assert_eq!(
            tok.decode(&ids, true).unwrap(),
            "- A small red circle is in the center. - There is one object.",
            "{:?}",
            enc.get_tokens()
        );
    }

    #[test]
    fn reward_prompt_has_no_unknown_words() {
        use crate::data::template::{GradingPrompt, reward_prompt};
        let tok = load().unwrap();
        for prompt in [GradingPrompt::LlavaRlhf, GradingPrompt::Short] {
            let enc = tok.encode(reward_prompt(prompt, Some(&["A red circle.".into()])), false).unwrap();
            assert!(!enc.get_ids().contains(&0), "{:?}", enc.get_tokens());
        }
    }
}
