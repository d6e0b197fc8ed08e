//! Preference collection (the paper's phase 3): candidate responses sampled from a policy, then
//! annotators (people through a web page, a simulated annotator that knows the world's ground
//! truth, or an AI judge) say which of two responses is better, honesty first.
//!
//! # Files
//! `candidates.json` ([`collect`]) is a JSON array of prompt records with the sampled responses:
//! `{"id", "image", "conversations", "task"?, "captions"?, "responses": ["...", ...]}`. `image` is
//! relative to the candidates file's folder; `conversations` is the prompt record's, unchanged, so
//! its last `gpt` turn (if any) is the reference answer the responses replace; each response was
//! sampled from `chat::text(conversations, open = true)`, the conversation up to its last human
//! turn, and has its EOS stripped.
//!
//! `prefs.json` ([`auto`], [`store`]'s export) is a JSON array in LLaVA-Human-Preference-10K's
//! format, one record per judged pair of responses of a candidate (all pairs when there are more
//! than two): `{"id", "image", "conversations", "output_1": {"from": "llava", "value"},
//! "output_2": {...}, "preference": 1 | 2, "hallucination": bool}`. `id` and `conversations` are the
//! candidate's; `image` is relative to the prefs file's folder; `hallucination` is true when the
//! choice was made on Q1 (the outputs differ in hallucinations, the preferred one has fewer).
//! factrl's extra fields: `pair` (the two responses' indices in the candidate), `injected` (true
//! for a pair the simulated annotator built rather than judged, `annotate auto --inject`: the true
//! description against a copy with one injected hallucination; it has no `pair`), `hallucinated_1`,
//! `hallucinated_2` (does that output hallucinate), `flags_1`, `flags_2` (the kinds of
//! hallucination found in it, [`Flag`] names), `annotator` (a name, `simulated`, or the judge
//! model), and the candidate's `task` and `captions` when present.
//!
//! # Guidelines
//! Every annotator follows LLaVA-RLHF's: Q1, which response has fewer hallucinations (objects not
//! in the image, wrong attributes, counts or spatial relations, text not in the image, guesses
//! about what cannot be seen); Q2, only when Q1 is a tie, which response is more helpful.

pub mod agreement;
pub mod auto;
pub mod collect;
pub mod judge_api;
pub mod records;
pub mod server;
pub mod store;

use crate::io::IoError;
use crate::model::ModelError;
use std::path::PathBuf;

pub use records::{Candidate, Flag, Output, Preference};

/// Why collecting or annotating failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// A file could not be read or written, or is not JSON.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The policy failed to load or generate.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A record of an input file is malformed.
    #[error("{path}: {problem}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Which record, which field, what is wrong.
        problem: String,
    },
    /// A setting is out of range, or a request cannot be carried out as asked.
    #[error("{0}")]
    Setting(String),
    /// The annotation store (SQLite).
    #[error("annotation store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The web server could not start or stopped.
    #[error("server: {0}")]
    Server(String),
}
