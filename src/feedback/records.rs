//! The records of `candidates.json` and `prefs.json` (see the [module docs](super)), reading them
//! with errors that name the record, the field and the line, and image paths moved between folders.

use super::FeedbackError;
use crate::data::formats::{Role, Task, Turn};
use crate::eval::claims::Hallucinations;
use crate::io::{self, IoError};
use crate::model::jobs::IMAGE_PLACEHOLDER;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// A prompt record with its sampled responses: one record of `candidates.json`. A prompt file
/// (`prefs_prompts.json`, `ppo_prompts.json`) reads as candidates without responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The prompt's id.
    pub id: String,
    /// Image path, relative to the folder of the file that holds the record.
    pub image: String,
    /// The prompt's conversation, unchanged: human first, alternating; a last gpt turn is the
    /// reference answer that the responses replace.
    pub conversations: Vec<Turn>,
    /// The kind of question (factrl's extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// True captions of the image (PPO prompts carry them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<Vec<String>>,
    /// Sampled responses, EOS stripped.
    #[serde(default)]
    pub responses: Vec<String>,
}

impl Candidate {
    /// The question the responses answer: the last human turn (with its `<image>` marker, if it
    /// is the first).
    pub fn question(&self) -> &str {
        self.conversations.iter().rev().find(|t| t.from == Role::Human).map_or("", |t| t.value.as_str())
    }

    /// The reference answer: a last gpt turn, if any.
    pub fn reference(&self) -> Option<&str> {
        self.conversations.last().filter(|t| t.from == Role::Gpt).map(|t| t.value.as_str())
    }

    /// The conversation up to the question: without the reference answer (a last gpt turn).
    pub fn context(&self) -> &[Turn] {
        match self.conversations.split_last() {
            Some((last, rest)) if last.from == Role::Gpt => rest,
            _ => &self.conversations,
        }
    }

    /// Every pair `(i, j)`, `i < j`, of response indices.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let k = self.responses.len();
        (0..k).flat_map(move |i| (i + 1..k).map(move |j| (i, j)))
    }

    /// The pairs whose two responses differ: identical texts are a tie no one needs to judge.
    pub fn distinct_pairs(&self) -> impl Iterator<Item = (usize, usize)> + use<'_> {
        self.pairs().filter(|&(i, j)| self.responses[i] != self.responses[j])
    }

    /// What is wrong with the record, naming the field; `min_responses` is 0 for prompt files.
    fn problem(&self, min_responses: usize) -> Option<String> {
        if self.id.is_empty() {
            return Some("field `id` is empty".into());
        }
        if self.image.is_empty() {
            return Some("field `image` is empty".into());
        }
        if self.conversations.is_empty() {
            return Some("field `conversations` is empty".into());
        }
        for (k, turn) in self.conversations.iter().enumerate() {
            let want = if k % 2 == 0 { Role::Human } else { Role::Gpt };
            if turn.from != want {
                return Some(format!("field `conversations[{k}].from` should be {want:?}, turns alternate"));
            }
        }
        let images: usize =
            self.conversations.iter().map(|t| t.value.matches(IMAGE_PLACEHOLDER).count()).sum();
        if images != 1 || !self.conversations[0].value.contains(IMAGE_PLACEHOLDER) {
            return Some(format!(
                "field `conversations`: the first human turn should hold the one {IMAGE_PLACEHOLDER} \
                 marker ({images} found)"
            ));
        }
        if self.responses.len() < min_responses {
            return Some(format!(
                "field `responses` has {} response(s), a pair needs at least {min_responses}",
                self.responses.len()
            ));
        }
        None
    }
}

/// A kind of hallucination an annotator can flag in a response (the guidelines' list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// An object that is not in the image.
    Object,
    /// A wrong colour, size or shape.
    Attribute,
    /// A wrong number of objects.
    Count,
    /// A wrong spatial relation or position.
    Relation,
    /// Text that is not in the image.
    Text,
    /// A guess about what cannot be seen.
    Guess,
}

impl Flag {
    /// Every flag, in the order the page shows them.
    pub const ALL: [Flag; 6] =
        [Flag::Object, Flag::Attribute, Flag::Count, Flag::Relation, Flag::Text, Flag::Guess];

    /// The flags for the kinds the ground-truth judge counted.
    pub fn found(h: &Hallucinations) -> Vec<Flag> {
        [
            (Flag::Object, h.object),
            (Flag::Attribute, h.attribute),
            (Flag::Count, h.count),
            (Flag::Relation, h.relation),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(f, _)| f)
        .collect()
    }
}

/// One output of a preference record: `{"from": "llava", "value": text}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Always "llava", as in LLaVA-Human-Preference-10K.
    pub from: String,
    /// The response.
    pub value: String,
}

/// One record of `prefs.json`: a judged pair (see the [module docs](super)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    /// The candidate's id.
    pub id: String,
    /// Image path, relative to the prefs file's folder.
    pub image: String,
    /// The candidate's conversation.
    pub conversations: Vec<Turn>,
    /// The first response of the pair.
    pub output_1: Output,
    /// The second response of the pair.
    pub output_2: Output,
    /// 1 or 2: the preferred output.
    pub preference: u8,
    /// Whether the choice was made on hallucinations (Q1) rather than helpfulness (Q2).
    pub hallucination: bool,
    /// Indices of `output_1` and `output_2` among the candidate's responses; absent for an
    /// injected pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<[usize; 2]>,
    /// Built, not judged: the true description against a copy with one injected hallucination
    /// ([`auto`](super::auto)). Reward training learns from such pairs but never scores its
    /// held-out accuracy on them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub injected: bool,
    /// Built, not judged: two answers of one form to a short question, the one its facts name
    /// preferred whatever the image shows ([`auto`](super::auto)). Only a reward model that reads
    /// the facts can learn from it; none is held out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
    /// Whether `output_1` hallucinates.
    pub hallucinated_1: bool,
    /// Whether `output_2` hallucinates.
    pub hallucinated_2: bool,
    /// Kinds of hallucination found in `output_1`.
    pub flags_1: Vec<Flag>,
    /// Kinds of hallucination found in `output_2`.
    pub flags_2: Vec<Flag>,
    /// Who judged: an annotator's name, "simulated", or the judge model.
    pub annotator: String,
    /// The candidate's task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The candidate's captions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<Vec<String>>,
}

/// An annotator's answer on the pair `(i, j)` of a candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// 1 or 2.
    pub preference: u8,
    /// Decided on Q1.
    pub hallucination: bool,
    /// Flags of response `i`.
    pub flags_1: Vec<Flag>,
    /// Flags of response `j`.
    pub flags_2: Vec<Flag>,
}

impl Preference {
    /// The record for the pair `(i, j)` of `c`, its image already rebased to the prefs folder.
    pub fn new(
        c: &Candidate,
        image: String,
        (i, j): (usize, usize),
        v: Verdict,
        annotator: &str,
    ) -> Preference {
        let outputs = [c.responses[i].as_str(), c.responses[j].as_str()];
        Preference::with_outputs(c, image, outputs, Some([i, j]), v, annotator)
    }

    /// The record for two texts answering `c`: its responses `pair`, or, with `None`, a built pair
    /// (`injected`).
    pub fn with_outputs(
        c: &Candidate,
        image: String,
        [first, second]: [&str; 2],
        pair: Option<[usize; 2]>,
        v: Verdict,
        annotator: &str,
    ) -> Preference {
        let output = |value: &str| Output { from: "llava".into(), value: value.to_string() };
        Preference {
            id: c.id.clone(),
            image,
            conversations: c.conversations.clone(),
            output_1: output(first),
            output_2: output(second),
            preference: v.preference,
            hallucination: v.hallucination,
            pair,
            injected: pair.is_none(),
            copy: false,
            hallucinated_1: !v.flags_1.is_empty(),
            hallucinated_2: !v.flags_2.is_empty(),
            flags_1: v.flags_1,
            flags_2: v.flags_2,
            annotator: annotator.to_string(),
            task: c.task,
            captions: c.captions.clone(),
        }
    }
}

/// Parses the JSON array of records in `bytes` (read from `path`); a malformed record is named by
/// its index, the path of the bad field and the line and column.
fn parse_array<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<Vec<T>, FeedbackError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let field = if at == "." { String::new() } else { format!("record {at}: ") };
        FeedbackError::Record { path: path.to_path_buf(), problem: format!("{field}{}", e.inner()) }
    })
}

/// The line (1-based) where element `n` of the top-level JSON array in `bytes` starts.
fn element_line(bytes: &[u8], n: usize) -> Option<usize> {
    let (mut depth, mut line, mut seen) = (0usize, 1, 0);
    let (mut in_string, mut escaped, mut waiting) = (false, false, true);
    for &b in bytes {
        line += usize::from(b == b'\n');
        if in_string {
            (escaped, in_string) = match (escaped, b) {
                (true, _) => (false, true),
                (false, b'\\') => (true, true),
                (false, b'"') => (false, false),
                _ => (false, true),
            };
            continue;
        }
        if depth == 1 && waiting && !b.is_ascii_whitespace() && b != b']' {
            if seen == n {
                return Some(line);
            }
            (seen, waiting) = (seen + 1, false);
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => waiting = true,
            _ => {}
        }
    }
    None
}

/// Reads and checks a prompt file (`min_responses` 0) or a candidates file (2); an error names the
/// record, its line and the field.
pub fn read_candidates(path: &Path, min_responses: usize) -> Result<Vec<Candidate>, FeedbackError> {
    let bytes = std::fs::read(path).map_err(io::at(path))?;
    let records: Vec<Candidate> = parse_array(path, &bytes)?;
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (n, c) in records.iter().enumerate() {
        // Answers, stores and exports are keyed by id: two records with one id would mix.
        let taken = first.insert(c.id.as_str(), n).map(|m| format!("id already used by record [{m}]"));
        if let Some(problem) = c.problem(min_responses).or(taken) {
            let line = element_line(&bytes, n).map(|l| format!(", line {l}")).unwrap_or_default();
            return Err(FeedbackError::Record {
                path: path.to_path_buf(),
                problem: format!("record [{n}] (id {:?}{line}): {problem}", c.id),
            });
        }
    }
    Ok(records)
}

/// The folder of a file (`.` for a bare name).
pub fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The existing file `target` as a path relative to the existing folder `from`, `/`-separated.
pub fn relative_to(target: &Path, from: &Path) -> Result<String, IoError> {
    let target = target.canonicalize().map_err(io::at(target))?;
    let from = from.canonicalize().map_err(io::at(from))?;
    let (t, f): (Vec<Component>, Vec<Component>) =
        (target.components().collect(), from.components().collect());
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    rel.extend(&t[common..]);
    Ok(rel.to_string_lossy().replace('\\', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(responses: &[&str]) -> Candidate {
        Candidate {
            id: "7".into(),
            image: "a.png".into(),
            conversations: vec![
                Turn::human("<image>\nIs there a red circle in the image?"),
                Turn::gpt("Yes."),
            ],
            task: None,
            captions: None,
            responses: responses.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn k_responses_make_k_choose_2_pairs() {
        assert_eq!(candidate(&["a", "b"]).pairs().collect::<Vec<_>>(), [(0, 1)]);
        assert_eq!(candidate(&["a", "b", "c"]).pairs().collect::<Vec<_>>(), [(0, 1), (0, 2), (1, 2)]);
        assert_eq!(candidate(&["a", "b", "c", "d"]).pairs().count(), 6);
        assert_eq!(candidate(&["a", "b", "a"]).distinct_pairs().collect::<Vec<_>>(), [(0, 1), (1, 2)]);
    }

    #[test]
    fn malformed_candidates_name_record_field_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candidates.json");
        let good = serde_json::to_string_pretty(&candidate(&["a", "b"])).unwrap();
        std::fs::write(&path, format!("[{good},\n{{\"id\": \"8\", \"image\": \"a.png\", \"conversations\": [], \"responses\": [\"a\", 3]}}]")).unwrap();
        let err = read_candidates(&path, 2).unwrap_err().to_string();
        assert!(err.contains("candidates.json: record [1].responses[1]: invalid type: integer `3`"), "{err}");
        assert!(err.contains(&format!("line {}", good.lines().count() + 1)), "{err}");

        let one = serde_json::to_string(&candidate(&["a"])).unwrap();
        std::fs::write(&path, format!("[{good}, {one}]")).unwrap();
        let err = read_candidates(&path, 2).unwrap_err().to_string();
        let line = good.lines().count();
        assert!(
            err.contains(&format!("record [1] (id \"7\", line {line}): field `responses` has 1 response(s)")),
            "{err}"
        );

        let mut c = candidate(&["a", "b"]);
        c.conversations.swap(0, 1);
        std::fs::write(&path, serde_json::to_string(&[c]).unwrap()).unwrap();
        let err = read_candidates(&path, 2).unwrap_err().to_string();
        assert!(
            err.contains("record [0] (id \"7\", line 1): field `conversations[0].from` should be Human"),
            "{err}"
        );
    }

    #[test]
    fn elements_are_found_by_line_past_strings_and_nesting() {
        let text =
            "[\n  {\"a\": \"x, ] } [\\\" {\", \"b\": [1, {\"c\": 2}]},\n\n  \"s\",\n  3, [4,\n5], {}\n]";
        let lines: Vec<Option<usize>> = (0..6).map(|n| element_line(text.as_bytes(), n)).collect();
        assert_eq!(lines, [Some(2), Some(4), Some(5), Some(5), Some(6), None]);
    }

    #[test]
    fn missing_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "[\n{\"id\": \"1\", \"image\": \"a.png\"}\n]").unwrap();
        let err = read_candidates(&path, 0).unwrap_err().to_string();
        assert!(err.contains("record [0]: missing field `conversations` at line 2"), "{err}");
    }

    #[test]
    fn relative_paths_cross_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("world/images"), dir.path().join("runs/prefs"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("1.png"), b"").unwrap();
        assert_eq!(relative_to(&a.join("1.png"), &b).unwrap(), "../../world/images/1.png");
        assert_eq!(relative_to(&a.join("1.png"), &a).unwrap(), "1.png");
        assert_eq!(folder_of(Path::new("x.json")), Path::new("."));
    }

    #[test]
    fn flags_follow_the_counted_kinds() {
        let h = Hallucinations { object: 2, attribute: 0, count: 1, relation: 0 };
        assert_eq!(Flag::found(&h), [Flag::Object, Flag::Count]);
        assert_eq!(
            serde_json::to_string(&Flag::ALL).unwrap(),
            r#"["object","attribute","count","relation","text","guess"]"#
        );
    }
}
