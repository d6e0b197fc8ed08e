//! A rollout: the iteration's prompts (each `group_size` times), the policy's sampled responses,
//! and the log-probs of policy and reference (and the critic's values) on them, computed once.

use super::PpoConfig;
use crate::data::chat;
use crate::data::formats::PpoPrompt;
use crate::io;
use crate::model::generate::{Generation, SamplingConfig, generate};
use crate::model::jobs::ModelFolder;
use crate::model::llava::response_entries;
use crate::model::{ImageInput, Llava, ModelError, PaddingSide, TextBatch};
use crate::train::common::{ImageTable, TrainError, host};
use crate::train::reward::RewardModel;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A prompt ready to sample from.
pub struct Prompt {
    /// The record.
    pub record: PpoPrompt,
    /// Its conversation up to the answer, encoded, image tokens expanded.
    pub ids: Vec<u32>,
    /// Row of its image in the image tables.
    pub image: usize,
    /// Its image's path (the prompts file's folder joined with the record's).
    pub path: PathBuf,
    /// The record's reference answer (its last gpt turn) as response tokens, EOS included.
    pub reference: Vec<u32>,
}

/// Loads the prompts; images go into `index` (path -> table row).
pub fn load_prompts(
    file: &Path,
    folder: &ModelFolder,
    index: &mut BTreeMap<PathBuf, usize>,
) -> Result<Vec<Prompt>, TrainError> {
    let records: Vec<PpoPrompt> = io::read_json(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    records
        .into_iter()
        .enumerate()
        .map(|(n, record)| {
            let bad = |message: String| TrainError::Data {
                file: file.to_path_buf(),
                message: format!("record [{n}] (id {}): {message}", record.id),
            };
            let open =
                folder.encode(&chat::text(&record.conversations, true)).map_err(|e| bad(e.to_string()))?;
            let whole =
                folder.encode(&chat::text(&record.conversations, false)).map_err(|e| bad(e.to_string()))?;
            // The answer's tokens follow the prompt's when the conversation ends with it.
            let reference = match whole.strip_prefix(open.as_slice()) {
                Some(answer) if whole.len() > open.len() => answer.to_vec(),
                _ => Vec::new(),
            };
            let ids = folder.expand_images(&open, 1).map_err(|e| bad(e.to_string()))?;
            let path = base.join(&record.image);
            let next = index.len();
            let image = *index.entry(path.clone()).or_insert(next);
            Ok(Prompt { record, ids, image, path, reference })
        })
        .collect()
}

/// The prompts of iteration `it`: `per_iter` training prompts, taken in a seeded permutation per
/// pass over the `n_train` of them, each repeated `group` times in a row (one group per prompt).
pub fn iteration_prompts(it: usize, per_iter: usize, group: usize, n_train: usize, seed: u64) -> Vec<usize> {
    (0..per_iter)
        .flat_map(|k| {
            let g = it * per_iter + k;
            let mut order: Vec<usize> = (0..n_train).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ (g / n_train) as u64));
            std::iter::repeat_n(order[g % n_train], group.max(1))
        })
        .collect()
}

/// Generates one response per prompt index (batches of `batch`, sampling stream `seed + i`).
pub fn sample(
    policy: &Llava,
    table: &ImageTable,
    prompts: &[Prompt],
    which: &[usize],
    sampling: &SamplingConfig,
    batch: usize,
) -> Result<Vec<Generation>, TrainError> {
    let mut out = Vec::with_capacity(which.len());
    for (i, chunk) in which.chunks(batch.max(1)).enumerate() {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|&p| prompts[p].ids.clone()).collect();
        let rows: Vec<usize> = chunk.iter().map(|&p| prompts[p].image).collect();
        let images = table.input(&rows, policy.config.vision.image_size, &policy.device());
        let s = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
        out.extend(generate(policy, &ids, images, &s)?);
    }
    Ok(out)
}

/// Whether response `i` of a rollout is its group's reference answer (`reference_in_group`: the
/// last of each group, for prompts that have one).
fn is_reference(i: usize, prompt: &Prompt, cfg: &PpoConfig) -> bool {
    cfg.reference_in_group && i % cfg.group_size == cfg.group_size - 1 && !prompt.reference.is_empty()
}

/// Samples the rollout's responses; with `reference_in_group` the last of each group is the
/// prompt's reference answer instead of a sample, so a group can hold an answer the policy would
/// seldom sample, and the reward decides whether it is better.
fn with_references(
    m: &Models,
    prompts: &[Prompt],
    which: &[usize],
    sampling: &SamplingConfig,
    cfg: &PpoConfig,
) -> Result<Vec<Generation>, TrainError> {
    let sampled: Vec<usize> = which
        .iter()
        .enumerate()
        .filter(|&(i, &p)| !is_reference(i, &prompts[p], cfg))
        .map(|(_, &p)| p)
        .collect();
    let mut gens =
        sample(m.policy, m.policy_table, prompts, &sampled, sampling, cfg.generation_batch)?.into_iter();
    let eos = m.policy.config.eos_token_id;
    which
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            if is_reference(i, &prompts[p], cfg) {
                let r = &prompts[p].reference;
                let finished = eos.is_some_and(|e| r.last() == Some(&e));
                return Ok(Generation { token_ids: r.clone(), logprobs: Vec::new(), finished });
            }
            gens.next().ok_or_else(|| TrainError::Setting("fewer generations than prompts".into()))
        })
        .collect()
}

/// Values of the states that emit each response token (the value head at every position).
///
/// # Shapes
/// - -> `[b, r]`
pub fn token_values(
    value: &RewardModel,
    prompts: &[Vec<u32>],
    responses: &[Vec<u32>],
    images: ImageInput,
) -> Result<Tensor<2>, ModelError> {
    let seqs: Vec<Vec<u32>> =
        prompts.iter().zip(responses).map(|(p, r)| [p.as_slice(), r].concat()).collect();
    let pad = value.llava.config.pad_token_id.unwrap_or(0);
    let batch = TextBatch::pad(&seqs, pad, PaddingSide::Right);
    let hidden = value.llava.hidden_states(&batch, images)?; // [b, t, d]
    let v = value.head.score.forward(hidden).reshape([batch.batch, batch.len]); // [b, t]
    let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let response_lens: Vec<usize> = responses.iter().map(Vec::len).collect();
    Ok(response_entries(v, &prompt_lens, &response_lens))
}

/// Rows of a `[b, r]` tensor, each cut to its length.
pub fn rows(t: Tensor<2>, lens: &[usize]) -> Result<Vec<Vec<f32>>, TrainError> {
    let r = t.dims()[1];
    let flat = host(t)?;
    Ok(lens.iter().enumerate().map(|(i, &n)| flat[i * r..i * r + n].to_vec()).collect())
}

/// A `[b, r]` tensor from ragged rows, zero-padded.
pub fn padded(rows: &[&[f32]], device: &Device) -> Tensor<2> {
    let r = rows.iter().map(|x| x.len()).max().unwrap_or(0);
    let flat: Vec<f32> =
        rows.iter().flat_map(|x| x.iter().copied().chain(std::iter::repeat_n(0.0, r - x.len()))).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), r]), device)
}

/// The sampled responses of one rollout and what the update needs of them.
pub struct Rollout {
    /// Prompt index of each response.
    pub which: Vec<usize>,
    /// Group of each response (the responses to one draw of a prompt share it).
    pub group: Vec<usize>,
    /// Generated token ids (EOS included when produced).
    pub responses: Vec<Vec<u32>>,
    /// Whether each ended with EOS.
    pub finished: Vec<bool>,
    /// Whether each was sampled from the policy (not a group's reference answer).
    pub sampled: Vec<bool>,
    /// Decoded texts.
    pub texts: Vec<String>,
    /// Per-token log-probs under the policy that sampled them.
    pub logp: Vec<Vec<f32>>,
    /// Per-token log-probs under the reference.
    pub logp_ref: Vec<Vec<f32>>,
    /// Per-token critic values (GAE only).
    pub values: Option<Vec<Vec<f32>>>,
    /// Seconds spent generating, and on the log-probs (and values) of the responses.
    pub seconds: (f64, f64),
}

impl Rollout {
    /// Response lengths in tokens.
    pub fn lens(&self) -> Vec<usize> {
        self.responses.iter().map(Vec::len).collect()
    }
}

/// The models and image tables a rollout reads.
pub struct Models<'a> {
    /// The policy (inference copy).
    pub policy: &'a Llava,
    /// Its image table.
    pub policy_table: &'a ImageTable,
    /// The frozen reference.
    pub reference: &'a Llava,
    /// Its image table.
    pub reference_table: &'a ImageTable,
    /// The critic (inference copy) and its table, with GAE.
    pub value: Option<(&'a RewardModel, &'a ImageTable)>,
    /// Decodes responses.
    pub tokenizer: &'a ModelFolder,
}

/// Samples the responses to `which` and takes the log-probs (and values) of them, once per
/// rollout. Responses holding the image placeholder are dropped: it has no image to stand for.
pub fn roll_out(
    m: &Models,
    prompts: &[Prompt],
    which: Vec<usize>,
    sampling: &SamplingConfig,
    cfg: &PpoConfig,
) -> Result<Rollout, TrainError> {
    let start = std::time::Instant::now();
    let gens = with_references(m, prompts, &which, sampling, cfg)?;
    let generated = start.elapsed().as_secs_f64();
    let image_id = m.policy.config.image_token_id;
    let k = cfg.group_size.max(1);
    let kept: Vec<(usize, (usize, Generation))> = which
        .into_iter()
        .zip(gens)
        .enumerate()
        .filter(|(_, (_, g))| !g.token_ids.contains(&image_id))
        .collect();
    let group = kept.iter().map(|(i, _)| i / k).collect();
    let sampled = kept.iter().map(|(i, (p, _))| !is_reference(*i, &prompts[*p], cfg)).collect();
    let (which, gens): (Vec<usize>, Vec<Generation>) = kept.into_iter().map(|(_, x)| x).unzip();
    let finished = gens.iter().map(|g| g.finished).collect();
    let responses: Vec<Vec<u32>> = gens.into_iter().map(|g| g.token_ids).collect();
    let texts = responses.iter().map(|r| decode(m.tokenizer, r)).collect::<Result<_, _>>()?;
    let mut out = Rollout {
        which,
        group,
        responses,
        finished,
        sampled,
        texts,
        logp: Vec::new(),
        logp_ref: Vec::new(),
        values: None,
        seconds: (generated, 0.0),
    };
    let mut values = Vec::new();
    let side = m.policy.config.vision.image_size;
    let idx: Vec<usize> = (0..out.which.len()).collect();
    for chunk in idx.chunks(cfg.generation_batch.max(1)) {
        let p_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[out.which[i]].ids.clone()).collect();
        let r_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| out.responses[i].clone()).collect();
        let img: Vec<usize> = chunk.iter().map(|&i| prompts[out.which[i]].image).collect();
        let l: Vec<usize> = r_ids.iter().map(Vec::len).collect();
        let input = |t: &ImageTable, d: &Device| t.input(&img, side, d);
        let policy_in = input(m.policy_table, &m.policy.device());
        out.logp.extend(rows(m.policy.response_logprobs(&p_ids, &r_ids, policy_in)?, &l)?);
        let reference_in = input(m.reference_table, &m.reference.device());
        out.logp_ref.extend(rows(m.reference.response_logprobs(&p_ids, &r_ids, reference_in)?, &l)?);
        if let Some((value, table)) = m.value {
            let v = token_values(value, &p_ids, &r_ids, input(table, &value.llava.device()))?;
            values.extend(rows(v, &l)?);
        }
    }
    out.values = m.value.map(|_| values);
    out.seconds.1 = start.elapsed().as_secs_f64() - generated;
    Ok(out)
}

/// Decodes response tokens (special tokens skipped).
pub fn decode(folder: &ModelFolder, ids: &[u32]) -> Result<String, TrainError> {
    folder.tokenizer.decode(ids, true).map_err(|e| {
        TrainError::Model(ModelError::Tokenizer {
            path: folder.tokenizer_path.clone(),
            problem: e.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_prompts_repeat_each_prompt_per_group() {
        // Two prompts an iteration of five training prompts, groups of three: each prompt thrice
        // in a row, and every prompt once per pass (iterations 0 and 1 take 4 of the first pass).
        let a = iteration_prompts(0, 2, 3, 5, 7);
        assert_eq!(a.len(), 6);
        assert!(a[0] == a[1] && a[1] == a[2] && a[3] == a[4] && a[4] == a[5] && a[0] != a[3]);
        let b = iteration_prompts(1, 2, 3, 5, 7);
        let mut firsts = vec![a[0], a[3], b[0], b[3]];
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 4);
        // Group 1 is the old one-response-per-prompt order.
        assert_eq!(iteration_prompts(0, 2, 1, 5, 7), vec![a[0], a[3]]);
    }
}
