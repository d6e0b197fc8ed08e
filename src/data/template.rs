//! Prompt texts shared by the stages: the reward model's grading prompt, as LLaVA-RLHF words it,
//! or the same criteria in one sentence.
//!
//! The world's tokenizer covers every word here, so the reward model and PPO can use them unchanged.

use super::chat;
use super::formats::Turn;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Appended after the conversation (as a new user turn) to ask the reward model for a score; the
/// score is read at the end of this text. `{factual_prompt}` is replaced by [`FACTUAL_PROMPT`] and
/// the captions, or by nothing for a standard reward model.
pub const REWARD_PROMPT: &str = "USER: Please evaluate the quality of your last response. There are several dimensions you should consider in your evaluation:\n\n1. Accurate: The AI should provide factual and accurate information from the image, and refrain from making statements that are not supported by the image or inconsistent with the image. {factual_prompt}\n2. Helpful: The AI\u{2019}s response should precisely serve the user's needs and interests, while grounding the response in the image.\n3. Language Natural: The AI should employ language that flows smoothly and is free from repetitive or awkward constructs.\n4. Concise: The AI should efficiently address the task or answer the question, communicating the necessary information with brevity and clarity.\n\nA good response should be accurate, helpful, language natural, and concise. ASSISTANT: Following your definitions, the quality score of my last response is";

/// The same four criteria in one sentence, with the captions last, right before the score: a
/// fifth of [`REWARD_PROMPT`]'s length, in its words.
pub const SHORT_REWARD_PROMPT: &str = "USER: Please evaluate the quality of your last response: accurate, helpful, language natural, and concise. {factual_prompt}ASSISTANT: The quality score of my last response is";

/// Which grading prompt a reward model reads (`prompt` in its config; saved in `reward.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradingPrompt {
    /// [`REWARD_PROMPT`], LLaVA-RLHF's: the captions sit under "Accurate", about 100 words before
    /// the score.
    #[default]
    LlavaRlhf,
    /// [`SHORT_REWARD_PROMPT`].
    Short,
}

impl GradingPrompt {
    /// The template, and what to take out of it when there are no captions (its `{factual_prompt}`
    /// slot, with the space before it where the slot ends a sentence).
    fn template(self) -> (&'static str, &'static str) {
        match self {
            GradingPrompt::LlavaRlhf => (REWARD_PROMPT, " {factual_prompt}"),
            GradingPrompt::Short => (SHORT_REWARD_PROMPT, "{factual_prompt}"),
        }
    }
}

/// Introduces the captions in the fact-augmented grading prompt.
pub const FACTUAL_PROMPT: &str = "Specifically, the AI's response should be fully supported by the combination of the following captions:\n";

/// The grading prompt with facts (`Some(captions)`) or without (`None`).
pub fn reward_prompt(prompt: GradingPrompt, captions: Option<&[String]>) -> String {
    prompt_marking_facts(prompt, captions).0
}

/// [`reward_prompt`] and, with captions, the byte range of their list in it. The captions follow
/// [`FACTUAL_PROMPT`], one per line as LLaVA-RLHF formats them (the caller shuffles them first).
fn prompt_marking_facts(
    prompt: GradingPrompt,
    captions: Option<&[String]>,
) -> (String, Option<Range<usize>>) {
    let (template, slot) = prompt.template();
    let Some(captions) = captions else { return (template.replace(slot, ""), None) };
    let (before, after) = template.split_once("{factual_prompt}").expect("every template has the slot");
    let mut out = format!("{before}{FACTUAL_PROMPT}");
    let start = out.len();
    for c in captions {
        out.push_str(&format!("  - {c}\n"));
    }
    let span = start..out.len();
    out.push_str(after);
    (out, Some(span))
}

/// The reward model's whole input text: the conversation up to its last human turn (`turns` may
/// end with the gpt turn that `response` replaces), the response closed by `</s>`, then the grading
/// prompt. Reward training, `factrl score --reward-model` and PPO all score this text, so the
/// reward model sees the same words everywhere.
pub fn reward_text(
    prompt: GradingPrompt,
    turns: &[Turn],
    response: &str,
    captions: Option<&[String]>,
) -> String {
    reward_text_with_facts(prompt, turns, response, captions).0
}

/// [`reward_text`] and, with captions, the byte range of their list in it: the text a reward
/// model trained with `facts_lm_coef` learns to predict.
pub fn reward_text_with_facts(
    prompt: GradingPrompt,
    turns: &[Turn],
    response: &str,
    captions: Option<&[String]>,
) -> (String, Option<Range<usize>>) {
    let head = format!("{} {response}</s>", chat::text(turns, true));
    let (prompt, span) = prompt_marking_facts(prompt, captions);
    let span = span.map(|r| head.len() + r.start..head.len() + r.end);
    (head + &prompt, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    use GradingPrompt::{LlavaRlhf, Short};

    #[test]
    fn reward_text_replaces_the_last_answer_and_ends_with_the_grading_prompt() {
        let turns = [Turn::human("<image>\nIs there a red circle in the image?"), Turn::gpt("Yes.")];
        for prompt in [LlavaRlhf, Short] {
            let t = reward_text(prompt, &turns, "No.", None);
            assert!(t.starts_with(
                "USER: <image>\nIs there a red circle in the image? ASSISTANT: No.</s>USER: Please"
            ));
            assert!(t.ends_with("quality score of my last response is"));
        }
    }

    #[test]
    fn facts_span_covers_the_caption_list() {
        let turns = [Turn::human("<image>\nDescribe the image.")];
        let caps = ["A red circle.".to_string(), "There is one object.".to_string()];
        for prompt in [LlavaRlhf, Short] {
            let (text, span) = reward_text_with_facts(prompt, &turns, "A red circle.", Some(&caps));
            assert_eq!(text, reward_text(prompt, &turns, "A red circle.", Some(&caps)));
            assert_eq!(&text[span.unwrap()], "  - A red circle.\n  - There is one object.\n");
            assert_eq!(reward_text_with_facts(prompt, &turns, "x", None).1, None);
        }
    }

    #[test]
    fn reward_prompt_lists_captions_one_per_line() {
        let caps = ["a red circle.".to_string(), "two objects.".to_string()];
        let p = reward_prompt(LlavaRlhf, Some(&caps));
        assert!(p.contains("following captions:\n  - a red circle.\n  - two objects.\n\n2. Helpful"));
        let plain = reward_prompt(LlavaRlhf, None);
        assert!(plain.contains("inconsistent with the image.\n2. Helpful"));
        assert!(!plain.contains("captions"));
    }

    #[test]
    fn short_prompt_puts_the_captions_last() {
        let caps = ["a red circle.".to_string()];
        assert_eq!(
            reward_prompt(Short, Some(&caps)),
            "USER: Please evaluate the quality of your last response: accurate, helpful, language natural, \
             and concise. Specifically, the AI's response should be fully supported by the combination \
             of the following captions:\n  - a red circle.\nASSISTANT: The quality score of my last \
             response is"
        );
        assert_eq!(
            reward_prompt(Short, None),
            "USER: Please evaluate the quality of your last response: accurate, helpful, language natural, \
             and concise. ASSISTANT: The quality score of my last response is"
        );
    }
}
