//! `factrl collect`: K sampled responses per prompt from a policy, written as `candidates.json`.

use super::FeedbackError;
use super::records::{Candidate, folder_of, read_candidates, relative_to};
use crate::backend::inference_device;
use crate::data::chat;
use crate::io;
use crate::model::generate::SamplingConfig;
use crate::model::jobs::ModelFolder;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// What [`collect`] does.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// The policy's model folder.
    pub policy: PathBuf,
    /// A prompt file: a JSON array of `{id, image, conversations, task?, captions?}`.
    pub prompts: PathBuf,
    /// `candidates.json` to write.
    pub output: PathBuf,
    /// Responses per prompt (K >= 2).
    pub samples: usize,
    /// Temperature, top-p, length and seed of the sampler.
    pub sampling: SamplingConfig,
    /// Sequences generated together.
    pub batch: usize,
    /// Only the first N prompts.
    pub limit: Option<usize>,
}

impl CollectOptions {
    /// The command's defaults: 4 samples at temperature 0.7, top-p 1, 96 new tokens, seed 0,
    /// batches of 32.
    pub fn new(policy: PathBuf, prompts: PathBuf, output: PathBuf) -> CollectOptions {
        CollectOptions {
            policy,
            prompts,
            output,
            samples: 4,
            sampling: SamplingConfig { max_new_tokens: 96, temperature: 0.7, ..SamplingConfig::default() },
            batch: 32,
            limit: None,
        }
    }
}

/// What [`collect`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollectSummary {
    /// Prompts answered.
    pub prompts: usize,
    /// Responses sampled.
    pub responses: usize,
    /// Responses cut at `max_new_tokens` without EOS.
    pub unfinished: usize,
    /// Mean number of distinct responses per prompt: below K, some pairs are sure ties.
    pub distinct_per_prompt: f64,
}

/// Samples `samples` responses to each prompt (the conversation up to its last human turn, in
/// the vicuna_v1 template) and writes them, with the prompt records, to `output` atomically.
pub fn collect(opts: &CollectOptions) -> Result<CollectSummary, FeedbackError> {
    if opts.samples < 2 {
        return Err(FeedbackError::Setting(format!(
            "--samples must be at least 2 to make pairs, got {}",
            opts.samples
        )));
    }
    let s = &opts.sampling;
    if s.temperature <= 0.0 || !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(FeedbackError::Setting(format!(
            "sampling needs --temperature > 0 and --top-p in (0, 1], got {} and {}",
            s.temperature, s.top_p
        )));
    }
    // 1. Prompts and the policy.
    let mut prompts = read_candidates(&opts.prompts, 0)?;
    prompts.truncate(opts.limit.unwrap_or(usize::MAX));
    let out_dir = folder_of(&opts.output);
    std::fs::create_dir_all(out_dir).map_err(io::at(out_dir))?;
    let source = folder_of(&opts.prompts);
    let images = prompts
        .iter()
        .map(|p| relative_to(&source.join(&p.image), out_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let folder = ModelFolder::load(&opts.policy, &inference_device())?;

    // 2. K copies of each prompt, sampled together so a batch's rows differ by their draws.
    let items: Vec<(Option<PathBuf>, String)> = prompts
        .iter()
        .flat_map(|p| {
            let item = (Some(source.join(&p.image)), chat::text(&p.conversations, true));
            std::iter::repeat_n(item, opts.samples)
        })
        .collect();
    let generations = folder.generate_all(&items, &opts.sampling, opts.batch)?;

    // 3. Records, image paths relative to the output's folder.
    let unfinished = generations.iter().filter(|(_, g)| !g.finished).count();
    let mut texts = generations.into_iter().map(|(text, _)| text.trim().to_string());
    let candidates: Vec<Candidate> = prompts
        .into_iter()
        .zip(images)
        .map(|(p, image)| Candidate { image, responses: texts.by_ref().take(opts.samples).collect(), ..p })
        .collect();
    io::write_json(&opts.output, &candidates)?;
    let distinct: usize = candidates.iter().map(|c| c.responses.iter().collect::<BTreeSet<_>>().len()).sum();
    Ok(CollectSummary {
        prompts: candidates.len(),
        responses: candidates.len() * opts.samples,
        unfinished,
        distinct_per_prompt: distinct as f64 / candidates.len().max(1) as f64,
    })
}
