//! POPE scoring, exactly as POPE's official `evaluate.py` does it.

use crate::data::formats::{PopeQuestion, YesNo};
use crate::io::{self, IoError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Reads a free-text answer as POPE does: keep the text before the first '.', remove commas, split
/// on single spaces; "No", "not" or "no" among the words means no, anything else (even an empty
/// answer) yes. Case-sensitive, and a newline does not split words, as in the official script.
pub fn parse_answer(text: &str) -> YesNo {
    let first = text.split('.').next().unwrap_or("");
    let cleaned = first.replace(',', "");
    if cleaned.split(' ').any(|w| matches!(w, "No" | "not" | "no")) { YesNo::No } else { YesNo::Yes }
}

/// POPE's metrics; yes is the positive class. A ratio whose denominator is zero is reported as 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PopeMetrics {
    /// (tp + tn) / all.
    pub accuracy: f64,
    /// tp / (tp + fp).
    pub precision: f64,
    /// tp / (tp + fn).
    pub recall: f64,
    /// 2 precision recall / (precision + recall).
    pub f1: f64,
    /// Share of answers read as yes.
    pub yes_ratio: f64,
    /// Yes to a present object.
    pub tp: usize,
    /// Yes to an absent object: a hallucination.
    pub fp: usize,
    /// No to an absent object.
    pub tn: usize,
    /// No to a present object.
    pub r#fn: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Scores predictions against labels (same order, same length).
pub fn score(labels: &[YesNo], predictions: &[YesNo]) -> PopeMetrics {
    let mut m = PopeMetrics::default();
    for (l, p) in labels.iter().zip(predictions) {
        match (l, p) {
            (YesNo::Yes, YesNo::Yes) => m.tp += 1,
            (YesNo::No, YesNo::Yes) => m.fp += 1,
            (YesNo::No, YesNo::No) => m.tn += 1,
            (YesNo::Yes, YesNo::No) => m.r#fn += 1,
        }
    }
    let n = m.tp + m.fp + m.tn + m.r#fn;
    m.accuracy = ratio(m.tp + m.tn, n);
    m.precision = ratio(m.tp, m.tp + m.fp);
    m.recall = ratio(m.tp, m.tp + m.r#fn);
    m.f1 = if m.precision + m.recall > 0.0 {
        2.0 * m.precision * m.recall / (m.precision + m.recall)
    } else {
        0.0
    };
    m.yes_ratio = ratio(m.tp + m.fp, n);
    m
}

/// One line of an answer file: `{"question", "answer"}` in question order, or LLaVA's
/// `{"question_id", "text"}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AnswerLine {
    /// LLaVA's `model_vqa_loader` output.
    ById {
        /// The question's id.
        question_id: u64,
        /// The model's answer.
        text: String,
    },
    /// POPE's own answer format.
    InOrder {
        /// The question text (checked against the question file).
        question: String,
        /// The model's answer.
        answer: String,
    },
}

/// Why answers could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum PopeError {
    /// A file could not be read or parsed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The answers do not match the questions, or there are no questions.
    #[error("{file}: {message}")]
    Mismatch {
        /// The answer file (the question file when it is empty).
        file: String,
        /// What does not match.
        message: String,
    },
}

/// Scores an answer file against a POPE question file.
pub fn evaluate(questions: &Path, answers: &Path) -> Result<PopeMetrics, PopeError> {
    let qs: Vec<PopeQuestion> = io::read_jsonl(questions)?;
    if qs.is_empty() {
        // Every ratio of an empty benchmark would read 0: a plausible-looking nothing.
        let file = questions.display().to_string();
        return Err(PopeError::Mismatch { file, message: "no questions: there is nothing to score".into() });
    }
    let ans: Vec<AnswerLine> = io::read_jsonl(answers)?;
    let mismatch = |message: String| PopeError::Mismatch { file: answers.display().to_string(), message };
    let by_id: HashMap<u64, &str> = ans
        .iter()
        .filter_map(|a| match a {
            AnswerLine::ById { question_id, text } => Some((*question_id, text.as_str())),
            AnswerLine::InOrder { .. } => None,
        })
        .collect();
    let texts: Vec<&str> = if by_id.is_empty() {
        if ans.len() != qs.len() {
            return Err(mismatch(format!("{} answers for {} questions", ans.len(), qs.len())));
        }
        let mut out = Vec::with_capacity(qs.len());
        for (i, (q, a)) in qs.iter().zip(&ans).enumerate() {
            match a {
                AnswerLine::InOrder { question, answer } if *question == q.text => out.push(answer.as_str()),
                AnswerLine::InOrder { question, .. } => {
                    return Err(mismatch(format!(
                        "line {}: question {question:?} is not {:?}, the question at that position",
                        i + 1,
                        q.text
                    )));
                }
                AnswerLine::ById { .. } => {
                    return Err(mismatch(format!(
                        "line {}: mixes question_id lines with question lines",
                        i + 1
                    )));
                }
            }
        }
        out
    } else {
        if by_id.len() != ans.len() {
            return Err(mismatch("mixes question_id lines with question lines, or repeats an id".into()));
        }
        let mut out = Vec::with_capacity(qs.len());
        for q in &qs {
            out.push(
                *by_id
                    .get(&q.question_id)
                    .ok_or_else(|| mismatch(format!("no answer for question_id {}", q.question_id)))?,
            );
        }
        if by_id.len() != qs.len() {
            return Err(mismatch(format!(
                "{} answers for {} questions (unknown question ids)",
                by_id.len(),
                qs.len()
            )));
        }
        out
    };
    let labels: Vec<YesNo> = qs.iter().map(|q| q.label).collect();
    let predictions: Vec<YesNo> = texts.iter().map(|t| parse_answer(t)).collect();
    Ok(score(&labels, &predictions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use YesNo::*;

    #[test]
    fn parsing_follows_the_official_script() {
        assert_eq!(parse_answer("No."), No);
        assert_eq!(parse_answer("Yes, there is a red circle."), Yes);
        assert_eq!(parse_answer("No, there is not."), No);
        // Only the first sentence counts.
        assert_eq!(parse_answer("Yes. There is no blue square."), Yes);
        // Commas are removed before splitting, so "No," reads as "No".
        assert_eq!(parse_answer("No,"), No);
        // Case-sensitive: "NO" is not a no.
        assert_eq!(parse_answer("NO"), Yes);
        // A newline does not split words.
        assert_eq!(parse_answer("Answer:\nno"), Yes);
        assert_eq!(parse_answer(""), Yes);
        assert_eq!(parse_answer("There is not a star"), No);
        // "nothing" is not "no".
        assert_eq!(parse_answer("There is nothing"), Yes);
    }

    #[test]
    fn metrics_match_a_hand_count() {
        // labels:      Y Y Y N N N N
        // predictions: Y Y N Y N N N  -> tp 2, fn 1, fp 1, tn 3
        let labels = [Yes, Yes, Yes, No, No, No, No];
        let preds = [Yes, Yes, No, Yes, No, No, No];
        let m = score(&labels, &preds);
        assert_eq!((m.tp, m.fp, m.tn, m.r#fn), (2, 1, 3, 1));
        assert!((m.accuracy - 5.0 / 7.0).abs() < 1e-12);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.yes_ratio - 3.0 / 7.0).abs() < 1e-12);
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(json["fn"], 1);
    }

    #[test]
    fn undefined_ratios_are_zero() {
        let m = score(&[No, No], &[No, No]);
        assert_eq!((m.precision, m.recall, m.f1, m.accuracy), (0.0, 0.0, 0.0, 1.0));
        assert_eq!(score(&[], &[]), PopeMetrics::default());
    }
}
