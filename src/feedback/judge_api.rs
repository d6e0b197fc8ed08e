//! `factrl annotate auto --judge URL --judge-model NAME`: an AI annotator (RLAIF) over any
//! OpenAI-compatible chat-completions API, for images whose ground truth nobody has.
//!
//! Each pair of two different responses is one request: the guidelines as the system message; the conversation, the two
//! responses and the answer format as text, and the image as a base64 `data:` URL. The reply must
//! hold a JSON object `{"q1": 1 | 2 | 0, "q2": 1 | 2 | null, "flags_1": [...], "flags_2": [...]}`
//! (the web page's questions); a reply without a usable one is counted and its pair left out. With
//! `--judge-both-orders` each pair is asked about twice, the responses swapped, and kept only when
//! both verdicts (the preferred response, and whether Q1 decided) agree. The key, if the server
//! needs one, is read from `OPENAI_API_KEY`.

use super::FeedbackError;
use super::records::{Candidate, Preference, folder_of, read_candidates, relative_to};
use super::store::Answer;
use crate::io;
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The annotation guidelines, as the system message.
const GUIDELINES: &str = "You compare two responses of an AI assistant to a conversation about an image. \
Q1, first: which response has fewer hallucinations? Penalise objects that are not in the image, wrong \
attributes (colour, size, shape) or counts, wrong spatial relations or positions, text that is not in the \
image, and guesses about what cannot be seen. Q2, only when both are equally faithful: which response is \
more helpful (more complete and precise)? For each response, list the kinds of hallucination it contains, \
from: object, attribute, count, relation, text, guess.";

/// Where and whom to ask.
#[derive(Clone, Debug)]
pub struct JudgeOptions {
    /// The API's base URL (`.../v1`) or its full `/chat/completions` URL.
    pub url: String,
    /// The model to ask.
    pub model: String,
    /// Longest wait for one reply.
    pub timeout: Duration,
    /// Ask about each pair in both orders and keep only the verdicts that agree.
    pub both_orders: bool,
}

/// What [`annotate`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JudgeSummary {
    /// Candidates read.
    pub candidates: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Pairs left out because a reply held no usable answer.
    pub unusable: usize,
    /// Pairs left out because the verdict changed with the order of the responses.
    pub inconsistent: usize,
    /// Share of written pairs decided on hallucinations (Q1).
    pub decided_on_hallucination: f64,
}

fn endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/chat/completions") { url.to_string() } else { format!("{url}/chat/completions") }
}

/// The `data:` URL of an image file.
fn data_url(path: &Path) -> Result<String, FeedbackError> {
    let bytes = std::fs::read(path).map_err(io::at(path))?;
    let kind = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "image/png",
    };
    Ok(format!("data:{kind};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// The user message's text: the conversation up to the question, the two responses, the format.
fn prompt(turns: &[crate::data::formats::Turn], a: &str, b: &str) -> String {
    let mut text = String::from("Conversation:\n");
    for t in turns {
        let who = if t.from == crate::data::formats::Role::Human { "User" } else { "Assistant" };
        text += &format!("{who}: {}\n", t.value.replace("<image>\n", "").replace("<image>", ""));
    }
    text += &format!("\nResponse 1:\n{a}\n\nResponse 2:\n{b}\n\n");
    text += "Reply with one JSON object only: {\"q1\": 1 or 2 (the response with fewer hallucinations) or 0 \
             (equally faithful), \"q2\": 1 or 2 (the more helpful one) if q1 is 0, else null, \"flags_1\": [kinds \
             in response 1], \"flags_2\": [kinds in response 2]}";
    text
}

/// The answer in a reply's text: the outermost `{...}`, checked like a person's.
pub fn parse_reply(text: &str) -> Option<Answer> {
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    let answer: Answer = serde_json::from_str(text.get(start..=end)?).ok()?;
    answer.problem().is_none().then_some(answer)
}

/// One judge endpoint and model.
struct Judge<'a> {
    agent: ureq::Agent,
    url: String,
    key: Option<String>,
    model: &'a str,
}

impl Judge<'_> {
    /// The judge's answer on responses `i` (shown first) and `j` of `c`; `None` if the reply holds
    /// no usable one. A failed request is an error.
    fn ask(
        &self,
        c: &Candidate,
        image: &str,
        (i, j): (usize, usize),
    ) -> Result<Option<Answer>, FeedbackError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": GUIDELINES},
                {"role": "user", "content": [
                    {"type": "text", "text": prompt(c.context(), &c.responses[i], &c.responses[j])},
                    {"type": "image_url", "image_url": {"url": image}},
                ]},
            ],
        });
        let mut request = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let failed = |e: String| {
            FeedbackError::Server(format!("judge {}, candidate {:?} pair ({i}, {j}): {e}", self.url, c.id))
        };
        let text = request
            .send(body.to_string())
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| failed(e.to_string()))?;
        let reply: Value =
            serde_json::from_str(&text).map_err(|e| failed(format!("the reply is not JSON: {e}")))?;
        Ok(parse_reply(reply["choices"][0]["message"]["content"].as_str().unwrap_or_default()))
    }
}

/// Asks the judge about every pair of two different responses of `candidates` and writes `output`
/// (`prefs.json`) atomically.
pub fn annotate(
    candidates: &Path,
    output: &Path,
    opts: &JudgeOptions,
) -> Result<JudgeSummary, FeedbackError> {
    let records = read_candidates(candidates, 2)?;
    let (source, out_dir) = (folder_of(candidates), folder_of(output));
    std::fs::create_dir_all(out_dir).map_err(io::at(out_dir))?;
    let judge = Judge {
        agent: ureq::Agent::config_builder().timeout_global(Some(opts.timeout)).build().into(),
        url: endpoint(&opts.url),
        key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
        model: &opts.model,
    };
    let mut prefs = Vec::new();
    let (mut unusable, mut inconsistent) = (0, 0);
    for c in &records {
        let file = source.join(&c.image);
        let (image, data) = (relative_to(&file, out_dir)?, data_url(&file)?);
        for (i, j) in c.distinct_pairs() {
            let first = judge.ask(c, &data, (i, j))?;
            // LLM judges favour a position; asked both ways, only an order-independent verdict counts.
            let second = match (&first, opts.both_orders) {
                (Some(_), true) => Some(judge.ask(c, &data, (j, i))?.map(|a| a.swapped())),
                _ => None,
            };
            let verdict = match (first, second) {
                (None, _) | (_, Some(None)) => {
                    unusable += 1;
                    continue;
                }
                (Some(a), Some(Some(b)))
                    if (a.verdict().preference, a.q1 == 0) != (b.verdict().preference, b.q1 == 0) =>
                {
                    inconsistent += 1;
                    continue;
                }
                (Some(a), _) => a.verdict(),
            };
            prefs.push(Preference::new(c, image.clone(), (i, j), verdict, &opts.model));
        }
    }
    if prefs.is_empty() && unusable + inconsistent > 0 {
        return Err(FeedbackError::Server(format!(
            "the judge at {} gave no usable, consistent answer ({unusable} unusable, {inconsistent} inconsistent)",
            judge.url
        )));
    }
    io::write_json(output, &prefs)?;
    let on_hallucination = prefs.iter().filter(|p| p.hallucination).count();
    Ok(JudgeSummary {
        candidates: records.len(),
        pairs: prefs.len(),
        unusable,
        inconsistent,
        decided_on_hallucination: on_hallucination as f64 / prefs.len().max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::Flag;

    #[test]
    fn replies_are_read_like_a_persons_answer() {
        let a = parse_reply(
            "Sure.\n```json\n{\"q1\": 2, \"q2\": null, \"flags_1\": [\"object\"], \"flags_2\": []}\n```",
        )
        .unwrap();
        assert_eq!((a.q1, a.q2, a.flags_1), (2, None, vec![Flag::Object]));
        assert_eq!(parse_reply("{\"q1\": 0, \"q2\": 1}").map(|a| a.q2), Some(Some(1)));
        // A tie without Q2, an unknown flag, no JSON: unusable.
        assert_eq!(parse_reply("{\"q1\": 0}"), None);
        assert_eq!(parse_reply("{\"q1\": 1, \"flags_1\": [\"vibes\"]}"), None);
        assert_eq!(parse_reply("Response 1 is better."), None);
        assert_eq!(endpoint("http://h/v1/"), "http://h/v1/chat/completions");
        assert_eq!(endpoint("http://h/v1/chat/completions"), "http://h/v1/chat/completions");
    }
}
