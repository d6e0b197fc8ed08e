//! Stage 4: PPO against the (fact-augmented) reward model, as LLaVA-RLHF runs it. The policy
//! (from SFT) samples responses; a frozen reference (SFT) gives the KL leash; the frozen reward
//! model scores each response at its last token, with a -8 penalty for no EOS, a length term
//! weighted by the prompt's `length_bonus` and a symbolic correctness bonus (`caption_type`); a
//! value model initialised from the reward model (new zero head) learns the returns. GAE,
//! whitened advantages, clipped policy and value losses, several epochs over minibatches.
//!
//! The math is in small pure functions below; [`train`] orchestrates.

use super::common::{
    ImageTable, TrainError, host, progress_bar, resume_checkpoint, save_checkpoint, save_model_folder, say,
    state_step, weights_source,
};
use super::config;
use super::optim::{adamw, clip_global_norm};
use super::reward::{RewardFolder, RewardModel};
use super::run::RunDir;
use super::schedule::warmup_cosine;
use super::sft::{Part, prepare};
use crate::backend::{inference_device, training_device};
use crate::data::chat;
use crate::data::formats::{CaptionType, PpoPrompt};
use crate::io;
use crate::model::checkpoint::{load_llava, load_scalar_head, save_scalar_head};
use crate::model::generate::{SamplingConfig, generate};
use crate::model::jobs::ModelFolder;
use crate::model::llava::{ScalarHead, response_entries};
use crate::model::lora::LoraConfig;
use crate::model::processor::ClipProcessor;
use crate::model::store::collect_params;
use crate::model::{ImageInput, Llava, ModelError, PaddingSide, TextBatch};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Per-token KL estimator between policy and reference (Schulman's k1 / k3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `logp - logp_ref`, clamped at 0 (LLaVA-RLHF's penalty).
    K1,
    /// `exp(r) - 1 - r` with `r = logp_ref - logp` clamped to `[-kl_clamp, kl_clamp]`.
    K3,
}

/// How the reward of a response is made (every term configurable; defaults as LLaVA-RLHF in
/// `configs/ppo.toml`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    /// Per-token KL estimator.
    pub kl_estimator: KlEstimator,
    /// KL penalty coefficient (the initial one when adaptive).
    pub beta: f64,
    /// Adapt beta towards this per-response KL (Ziegler et al.'s controller); fixed if unset.
    #[serde(default)]
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive controller, in responses.
    pub kl_horizon: f64,
    /// Bound on `|logp_ref - logp|` inside k3 (unclamped k3 overflows to NaN).
    pub kl_clamp: f64,
    /// Replaces the reward model's score of a response that hit `max_new_tokens` without EOS.
    pub no_eos_reward: f64,
    /// Length term `-length_penalty * length_bonus * len / max_new_tokens`.
    pub length_penalty: f64,
    /// Weight of the correctness check (+1 right option; +-0.5 yes/no against the truth).
    pub correctness_bonus: f64,
    /// Multiplies the sequence reward (score + length + correctness).
    pub reward_scale: f64,
    /// Clips the scaled sequence reward to `[-reward_clip, reward_clip]` (0: off).
    pub reward_clip: f64,
}

/// `factrl train ppo` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoConfig {
    /// Run folder (config, metrics, checkpoint, `final/` policy).
    pub out: PathBuf,
    /// PPO prompts (LLaVA-RLHF's format); image paths relative to its folder.
    pub prompts: PathBuf,
    /// The last this many prompts are held out: the RM score of greedy answers to them is logged.
    pub val_prompts: usize,
    /// Policy to start from (the SFT model folder).
    pub policy: PathBuf,
    /// Frozen reference; the policy's folder if unset.
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// Reward model folder (`factrl train reward`, with or without facts).
    pub reward_model: PathBuf,
    /// Model the value model starts from (a new zero head on top); the reward model if unset.
    #[serde(default)]
    pub value_model: Option<PathBuf>,
    /// Parts of policy and value model that train: "projector", "decoder" (the tower stays frozen).
    pub trainable: Vec<Part>,
    /// Train both decoders through LoRA adapters (`[lora]`: `rank`, `alpha`, optional `targets`)
    /// instead of all their weights; saved models have the adapters merged.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Sampling temperature of rollouts.
    pub temperature: f64,
    /// Nucleus mass of rollouts.
    pub top_p: f64,
    /// Longest response in tokens.
    pub max_new_tokens: usize,
    /// Reward shaping.
    pub shaping: Shaping,
    /// GAE discount.
    pub gamma: f64,
    /// GAE lambda.
    pub lam: f64,
    /// Whiten advantages over each rollout.
    pub whiten_advantages: bool,
    /// Policy ratio clip.
    pub clip_eps: f64,
    /// Value clip around the rollout's values.
    pub value_clip: f64,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Prompts per rollout (one response each).
    pub rollout_batch: usize,
    /// Responses generated together.
    pub generation_batch: usize,
    /// Responses per optimiser step.
    pub minibatch: usize,
    /// Passes over each rollout.
    pub ppo_epochs: usize,
    /// Rollout-train iterations.
    pub iterations: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup optimiser steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// Seed of sampling, shuffling and caption order.
    pub seed: u64,
    /// Iterations between held-out evals.
    pub eval_every: usize,
    /// Iterations between checkpoints.
    pub checkpoint_every: usize,
    /// Warn when mean length or object mentions fall below this share of the first iteration's.
    pub collapse_ratio: f64,
    /// Warn when the mean per-response KL exceeds this.
    pub kl_warn: f64,
}

/// Per-token KL estimate of `logp` (policy) against `logp_ref`.
///
/// k1 = `max(logp - logp_ref, 0)` (clamped at 0 as LLaVA-RLHF's penalty); k3 =
/// `exp(r) - 1 - r`, `r = clamp(logp_ref - logp, -clamp, clamp)` (Schulman, "Approximating KL").
pub fn kl_estimate(est: KlEstimator, logp: f32, logp_ref: f32, clamp: f64) -> f32 {
    match est {
        KlEstimator::K1 => (logp - logp_ref).max(0.0),
        KlEstimator::K3 => {
            let r = f64::from(logp_ref - logp).clamp(-clamp, clamp);
            (r.exp() - 1.0 - r) as f32
        }
    }
}

/// The symbolic correctness `c` of a response (LLaVA-RLHF's `caption_type` checks), read from its
/// first word: +1 for the right option letter (0 for another), +0.5 / -0.5 for a yes/no answer that matches / contradicts
/// the truth, 0 when the check does not apply or the answer gives neither.
pub fn correctness(kind: CaptionType, response: &str) -> f64 {
    let first = response.split_whitespace().next().unwrap_or("");
    let word = first.trim_matches(|c: char| !c.is_alphanumeric());
    let yes_no = |truth_yes: bool| match word.to_lowercase().as_str() {
        "yes" => {
            if truth_yes {
                0.5
            } else {
                -0.5
            }
        }
        "no" => {
            if truth_yes {
                -0.5
            } else {
                0.5
            }
        }
        _ => 0.0,
    };
    match kind {
        CaptionType::General => 0.0,
        CaptionType::Choice(i) => {
            // "C." or a bare "C" is an option letter; "A blue circle." starts with an article.
            let letter = first.trim_end_matches(|c: char| c.is_ascii_punctuation());
            let answer = letter.len() == 1 && (letter != first || response.split_whitespace().count() == 1);
            f64::from(u8::from(answer && letter.as_bytes()[0] == b'A' + i))
        }
        CaptionType::No => yes_no(false),
        CaptionType::Yes => yes_no(true),
    }
}

/// The sequence-level reward placed on the last response token:
/// `clip(scale * (s + length + bonus * c))`, where `s` is the reward model's score (or
/// `no_eos_reward` when the response has no EOS), `length = -length_penalty * length_bonus * len /
/// max_len` and `c` is [`correctness`].
pub fn sequence_reward(
    score: f64,
    finished: bool,
    len: usize,
    max_len: usize,
    length_bonus: f64,
    c: f64,
    s: &Shaping,
) -> f64 {
    let base = if finished { score } else { s.no_eos_reward };
    let length = -s.length_penalty * length_bonus * len as f64 / max_len.max(1) as f64;
    let r = s.reward_scale * (base + length + s.correctness_bonus * c);
    if s.reward_clip > 0.0 { r.clamp(-s.reward_clip, s.reward_clip) } else { r }
}

/// Per-token rewards: `-beta * kl_t`, plus the sequence reward on the last token.
pub fn token_rewards(kl: &[f32], beta: f64, sequence: f64) -> Vec<f32> {
    let mut r: Vec<f32> = kl.iter().map(|&k| (-beta * f64::from(k)) as f32).collect();
    if let Some(last) = r.last_mut() {
        *last += sequence as f32;
    }
    r
}

/// Generalised advantage estimation over one response (Schulman et al. 2016, eq. 16):
/// `delta_t = r_t + gamma V_{t+1} - V_t` (`V_T = 0`), `A_t = delta_t + gamma lam A_{t+1}`;
/// returns `(A, A + V)`.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next = (0.0f64, 0.0f64); // (A_{t+1}, V_{t+1})
    for t in (0..n).rev() {
        let delta = f64::from(rewards[t]) + gamma * next.1 - f64::from(values[t]);
        let a = delta + gamma * lam * next.0;
        adv[t] = a as f32;
        next = (a, f64::from(values[t]));
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// `(x - mean) / (std + 1e-8)` over all entries (population variance).
pub fn whiten(x: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    for v in x.iter_mut() {
        *v = ((f64::from(*v) - mean) / (var.sqrt() + 1e-8)) as f32;
    }
}

/// `1 - Var(returns - values) / Var(returns)`: how much of the returns the values explain.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |x: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = x.collect();
        let n = v.len().max(1) as f64;
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
    };
    let vr = var(&mut returns.iter().map(|&r| f64::from(r)));
    let vd = var(&mut returns.iter().zip(values).map(|(&r, &v)| f64::from(r - v)));
    if vr > 0.0 { 1.0 - vd / vr } else { 0.0 }
}

/// Mean of `x` over the entries where `mask` is 1.
fn masked_mean(x: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    let n = mask.clone().sum();
    (x * mask).sum().div(n.clamp_min(1.0))
}

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated to a loss, over masked tokens:
/// `mean(max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)))`, `ratio = exp(logp - logp_old)`.
/// Also returns the share of tokens where the clipped term was taken.
///
/// # Shapes
/// - all inputs `[b, r]` -> `[1]`, `[1]`
pub fn policy_loss(
    logp: Tensor<2>,
    logp_old: Tensor<2>,
    adv: Tensor<2>,
    mask: Tensor<2>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>) {
    let ratio = (logp - logp_old).exp();
    let unclipped = adv.clone().neg() * ratio.clone();
    let clipped = adv.neg() * ratio.clamp(1.0 - eps, 1.0 + eps);
    let frac = masked_mean(clipped.clone().greater(unclipped.clone()).float(), mask.clone());
    (masked_mean(unclipped.max_pair(clipped), mask), frac)
}

/// The clipped value loss: `0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))`
/// over masked tokens, and the share of tokens where the clipped term was taken.
///
/// # Shapes
/// - all inputs `[b, r]` -> `[1]`, `[1]`
pub fn value_loss(
    values: Tensor<2>,
    values_old: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>) {
    let clipped = values_old.clone() + (values.clone() - values_old).clamp(-eps, eps);
    let a = (values - returns.clone()).powi_scalar(2);
    let b = (clipped - returns).powi_scalar(2);
    let frac = masked_mean(b.clone().greater(a.clone()).float(), mask.clone());
    (masked_mean(a.max_pair(b), mask).mul_scalar(0.5), frac)
}

/// Ziegler et al.'s adaptive KL controller: `beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n /
/// horizon)` after `n` responses with mean KL `kl`.
pub fn adapt_beta(beta: f64, kl: f64, target: f64, n: usize, horizon: f64) -> f64 {
    let err = (kl / target - 1.0).clamp(-0.2, 0.2);
    beta * (1.0 + err * n as f64 / horizon)
}

/// Policy and value model: the modules PPO trains, under one optimiser.
#[derive(Module, Debug)]
pub struct ActorCritic {
    /// The policy.
    pub policy: Llava,
    /// The value model (scalar head per token).
    pub value: RewardModel,
}

/// Values of the states that emit each response token (the value head at every position).
///
/// # Shapes
/// - -> `[b, r]`
fn token_values(
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

/// A prompt ready to sample from.
struct Prompt {
    record: PpoPrompt,
    ids: Vec<u32>,
    image: usize,
}

/// One sampled response with what PPO needs of it.
struct Sample {
    prompt: usize,
    response: Vec<u32>,
    logp: Vec<f32>,
    values: Vec<f32>,
    adv: Vec<f32>,
    returns: Vec<f32>,
}

/// Whether two models have the same vision tower and processor, so image features can be shared.
fn same_tower(a: (&Llava, &ClipProcessor), b: (&Llava, &ClipProcessor)) -> Result<bool, TrainError> {
    Ok(a.0.config.vision == b.0.config.vision
        && format!("{:?}", a.1) == format!("{:?}", b.1)
        && collect_params(&a.0.vision_tower)? == collect_params(&b.0.vision_tower)?)
}

/// Rows of a `[b, r]` tensor, each cut to its length.
fn rows(t: Tensor<2>, lens: &[usize]) -> Result<Vec<Vec<f32>>, TrainError> {
    let r = t.dims()[1];
    let flat = host(t)?;
    Ok(lens.iter().enumerate().map(|(i, &n)| flat[i * r..i * r + n].to_vec()).collect())
}

/// A `[b, r]` tensor from ragged rows, zero-padded.
fn padded(rows: &[&[f32]], device: &Device) -> Tensor<2> {
    let r = rows.iter().map(|x| x.len()).max().unwrap_or(0);
    let flat: Vec<f32> =
        rows.iter().flat_map(|x| x.iter().copied().chain(std::iter::repeat_n(0.0, r - x.len()))).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), r]), device)
}

/// Everything frozen that a rollout reads.
struct Frozen {
    reference: Llava,
    rm: RewardFolder,
    policy_table: ImageTable,
    reference_table: Option<ImageTable>,
    rm_table: Option<ImageTable>,
}

impl Frozen {
    fn reference_table(&self) -> &ImageTable {
        self.reference_table.as_ref().unwrap_or(&self.policy_table)
    }
    fn rm_table(&self) -> &ImageTable {
        self.rm_table.as_ref().unwrap_or(&self.policy_table)
    }
}

/// Reward-model scores of responses (texts) to prompts, captions shuffled by `rng`.
fn rm_scores(
    frozen: &Frozen,
    prompts: &[Prompt],
    items: &[(usize, String)],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>, TrainError> {
    let rm = &frozen.rm;
    let model = &rm.folder.model;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(16) {
        let mut seqs = Vec::with_capacity(chunk.len());
        for (p, text) in chunk {
            let rec = &prompts[*p].record;
            let mut caps = rec.captions.clone();
            caps.shuffle(rng);
            seqs.push(rm.encode(&rec.conversations, text, Some(&caps))?);
        }
        let rows: Vec<usize> = chunk.iter().map(|(p, _)| prompts[*p].image).collect();
        let images = frozen.rm_table().input(&rows, model.config.vision.image_size, &model.device());
        out.extend(rm.rewards(&seqs, images)?);
    }
    Ok(out)
}

/// Generates one response per prompt index (batches of `batch`, sampling stream `seed + i`).
fn sample(
    policy: &Llava,
    table: &ImageTable,
    prompts: &[Prompt],
    which: &[usize],
    sampling: &SamplingConfig,
    batch: usize,
) -> Result<Vec<crate::model::generate::Generation>, TrainError> {
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

/// Per-iteration metrics (one metrics.jsonl line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IterationMetrics {
    /// Iteration (1-based).
    pub step: usize,
    /// Mean reward-model score.
    pub rm_score: f64,
    /// Mean sequence reward (score, penalties, bonus; scaled and clipped).
    pub sequence_reward: f64,
    /// Mean sum of per-token shaped rewards (sequence reward minus the KL penalty).
    pub shaped_reward: f64,
    /// Mean per-response KL to the reference (sum over tokens of `logp - logp_ref`).
    pub kl: f64,
    /// KL coefficient used.
    pub beta: f64,
    /// Mean per-token entropy, estimated by `-logp` of the sampled tokens.
    pub entropy: f64,
    /// Mean correctness `c` over prompts with a check.
    pub correctness: f64,
    /// Share of tokens where the policy's clipped term was taken.
    pub clip_fraction: f64,
    /// Share of tokens where the value's clipped term was taken.
    pub value_clip_fraction: f64,
    /// Mean policy loss.
    pub policy_loss: f64,
    /// Mean value loss.
    pub value_loss: f64,
    /// Explained variance of the returns by the rollout's values.
    pub explained_variance: f64,
    /// Mean response length in tokens.
    pub response_length: f64,
    /// Mean object mentions per response.
    pub objects: f64,
    /// Share of responses without EOS.
    pub no_eos_rate: f64,
    /// Learning rate at the iteration's last step.
    pub lr: f64,
    /// Held-out: mean reward-model score of greedy answers (eval iterations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_rm_score: Option<f64>,
}

/// What a finished PPO run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Iterations in all.
    pub iterations: usize,
    /// Held-out mean RM score before training (of this run's first eval).
    pub eval_rm_score_first: Option<f64>,
    /// Held-out mean RM score at the end.
    pub eval_rm_score_last: Option<f64>,
    /// Last iteration's metrics.
    pub last: Option<IterationMetrics>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The policy folder.
    pub model: PathBuf,
}

/// Reads the config file with overrides.
pub fn load_config(path: &Path, sets: &[String]) -> Result<PpoConfig, TrainError> {
    let cfg: PpoConfig = config::load(path, sets)?;
    if cfg.rollout_batch == 0 || cfg.minibatch == 0 || cfg.ppo_epochs == 0 || cfg.max_new_tokens == 0 {
        return Err(TrainError::Setting(
            "rollout_batch, minibatch, ppo_epochs and max_new_tokens must be non-zero".into(),
        ));
    }
    if cfg.trainable.contains(&Part::Vision) || cfg.trainable.is_empty() {
        return Err(TrainError::Setting(
            "trainable: PPO trains \"projector\" and/or \"decoder\"; the vision tower stays frozen".into(),
        ));
    }
    if cfg.shaping.kl_target.is_some_and(|t| t <= 0.0) {
        return Err(TrainError::Setting("shaping.kl_target must be positive".into()));
    }
    Ok(cfg)
}

/// Loads the prompts; images go into `index`.
fn load_prompts(
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
            let ids = folder
                .encode(&chat::text(&record.conversations, true))
                .and_then(|ids| folder.expand_images(&ids, 1))
                .map_err(|e| TrainError::Data {
                    file: file.to_path_buf(),
                    message: format!("record [{n}] (id {}): {e}", record.id),
                })?;
            let next = index.len();
            let image = *index.entry(base.join(&record.image)).or_insert(next);
            Ok(Prompt { record, ids, image })
        })
        .collect()
}

/// Mean RM score of greedy answers to the held-out prompts.
fn evaluate(
    policy: &Llava,
    frozen: &Frozen,
    prompts: &[Prompt],
    val: &[usize],
    cfg: &PpoConfig,
    tokenizer: &ModelFolder,
) -> Result<f64, TrainError> {
    let greedy = SamplingConfig { max_new_tokens: cfg.max_new_tokens, ..Default::default() };
    let gens = sample(policy, &frozen.policy_table, prompts, val, &greedy, cfg.generation_batch)?;
    let items = val
        .iter()
        .zip(&gens)
        .map(|(&p, g)| Ok((p, decode(tokenizer, &g.token_ids)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(0xE7A1));
    let scores = rm_scores(frozen, prompts, &items, &mut rng)?;
    Ok(scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len().max(1) as f64)
}

fn decode(folder: &ModelFolder, ids: &[u32]) -> Result<String, TrainError> {
    folder.tokenizer.decode(ids, true).map_err(|e| {
        TrainError::Model(ModelError::Tokenizer {
            path: folder.tokenizer_path.clone(),
            problem: e.to_string(),
        })
    })
}

/// State a resumed run continues from, beside the iteration count.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Progress {
    beta: f64,
    /// First iteration's mean length and object mentions (the collapse baseline).
    first: Option<(f64, f64)>,
    eval_first: Option<f64>,
}

/// Runs PPO, resuming from the run folder's checkpoint with `resume`; `halt_after` stops after that
/// many iterations of this invocation (at a checkpoint).
pub fn train(cfg: &PpoConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let run = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);
    let frozen_device = inference_device();

    // 1. Models: policy and value (trainable; from the checkpoint on resume), reference and
    //    reward model (frozen). A LoRA run starts from the initial models again and its
    //    checkpoint gives back the adapters.
    let (checkpoint, lora) = (if resume { run.checkpoint() } else { None }, cfg.lora.as_ref());
    let folder =
        ModelFolder::load(&weights_source(checkpoint.as_deref(), &cfg.policy, lora.is_some()), &device)?;
    let value_src = cfg.value_model.clone().unwrap_or_else(|| cfg.reward_model.clone());
    let value = match checkpoint.as_ref().filter(|_| lora.is_none()) {
        Some(ck) => {
            let dir = ck.join("value");
            RewardModel { llava: load_llava(&dir, &device)?, head: load_scalar_head(&dir, &device)? }
        }
        None => {
            let llava = load_llava(&value_src, &device)?;
            let d = llava.config.text.hidden_size;
            RewardModel { llava, head: ScalarHead::init(d, true, &device) }
        }
    };
    let mut ac = ActorCritic {
        policy: prepare(folder.model.clone(), &cfg.trainable, lora)?,
        value: RewardModel { llava: prepare(value.llava, &cfg.trainable, lora)?, head: value.head },
    };
    let reference_folder = ModelFolder::load(cfg.reference.as_ref().unwrap_or(&cfg.policy), &frozen_device)?;
    let rm = RewardFolder::load(&cfg.reward_model, &frozen_device)?;

    // 2. Prompts and image features: one table per distinct frozen tower.
    let mut index = BTreeMap::new();
    let prompts = load_prompts(&cfg.prompts, &folder, &mut index)?;
    if prompts.len() <= cfg.val_prompts {
        return Err(TrainError::Data {
            file: cfg.prompts.clone(),
            message: format!(
                "{} prompts, {} held out: none left to train on",
                prompts.len(),
                cfg.val_prompts
            ),
        });
    }
    let n_train = prompts.len() - cfg.val_prompts;
    let val: Vec<usize> = (n_train..prompts.len()).collect();
    let policy_table = ImageTable::build(&ac.policy, &folder.processor, &index, true)?;
    let own_table = |model: &Llava, processor: &ClipProcessor| -> Result<Option<ImageTable>, TrainError> {
        if same_tower((&folder.model, &folder.processor), (model, processor))? {
            Ok(None)
        } else {
            ImageTable::build(model, processor, &index, true).map(Some)
        }
    };
    let reference_table = own_table(&reference_folder.model, &reference_folder.processor)?;
    let rm_table = own_table(&rm.folder.model, &rm.folder.processor)?;
    let value_processor = ClipProcessor::from_file(&value_src.join("preprocessor_config.json"))?;
    let value_table = own_table(&ac.value.llava, &value_processor)?;
    let frozen = Frozen { reference: reference_folder.model, rm, policy_table, reference_table, rm_table };

    // 3. Optimiser and schedule: every iteration takes ppo_epochs * ceil(rollout / minibatch) steps.
    let per_iter = cfg.ppo_epochs * cfg.rollout_batch.div_ceil(cfg.minibatch);
    let total_steps = (cfg.iterations * per_iter).max(1);
    let mut optim = adamw(cfg.weight_decay).init();
    let (mut it, mut progress) = (0, Progress { beta: cfg.shaping.beta, first: None, eval_first: None });
    if let Some(ck) = &checkpoint {
        let state;
        (ac, optim, state) = resume_checkpoint(ck, ac, optim, lora.is_some())?;
        it = state_step(&state);
        progress = serde_json::from_value(state["progress"].clone())
            .map_err(|e| TrainError::Setting(format!("checkpoint state: {e}")))?;
    }
    let mut metrics = run.metrics(checkpoint.as_ref().map(|_| it))?;
    let bar = progress_bar(cfg.iterations, it, &cfg.out);
    let sampling = SamplingConfig {
        max_new_tokens: cfg.max_new_tokens,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        ..Default::default()
    };
    let side = ac.policy.config.vision.image_size;
    if progress.eval_first.is_none() && !val.is_empty() {
        progress.eval_first = Some(evaluate(&ac.policy.valid(), &frozen, &prompts, &val, cfg, &folder)?);
        metrics.log(&serde_json::json!({"step": 0, "eval_rm_score": progress.eval_first}))?;
    }
    let (mut last, mut eval_last) = (None, progress.eval_first);

    // 4. The loop: rollout, score, advantages, PPO epochs.
    let stop = halt_after.map_or(cfg.iterations, |n| (it + n).min(cfg.iterations));
    while it < stop {
        let iter_seed = cfg.seed ^ (it as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = ChaCha8Rng::seed_from_u64(iter_seed);
        // 4a. Prompts of this iteration: a seeded permutation per pass over the training prompts.
        let which: Vec<usize> = (0..cfg.rollout_batch)
            .map(|k| {
                let g = it * cfg.rollout_batch + k;
                let mut order: Vec<usize> = (0..n_train).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ (g / n_train) as u64));
                order[g % n_train]
            })
            .collect();
        // 4b. Sample; drop responses holding the image placeholder (it has no image to stand for).
        let policy = ac.policy.valid();
        let image_id = policy.config.image_token_id;
        let gens = sample(
            &policy,
            &frozen.policy_table,
            &prompts,
            &which,
            &SamplingConfig { seed: iter_seed, ..sampling.clone() },
            cfg.generation_batch,
        )?;
        let (which, gens): (Vec<usize>, Vec<_>) =
            which.into_iter().zip(gens).filter(|(_, g)| !g.token_ids.contains(&image_id)).unzip();
        let responses: Vec<Vec<u32>> = gens.iter().map(|g| g.token_ids.clone()).collect();
        let lens: Vec<usize> = responses.iter().map(Vec::len).collect();
        let texts: Vec<String> = responses.iter().map(|r| decode(&folder, r)).collect::<Result<_, _>>()?;
        // 4c. Old log-probs, reference log-probs and values, once per rollout.
        let (mut logp, mut logp_ref, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let value_model = ac.value.valid();
        let idx: Vec<usize> = (0..which.len()).collect();
        for chunk in idx.chunks(cfg.generation_batch.max(1)) {
            let p_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[which[i]].ids.clone()).collect();
            let r_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| responses[i].clone()).collect();
            let img: Vec<usize> = chunk.iter().map(|&i| prompts[which[i]].image).collect();
            let l: Vec<usize> = chunk.iter().map(|&i| lens[i]).collect();
            let input = |t: &ImageTable, d: &Device| t.input(&img, side, d);
            logp.extend(rows(
                policy.response_logprobs(&p_ids, &r_ids, input(&frozen.policy_table, &policy.device()))?,
                &l,
            )?);
            logp_ref.extend(rows(
                frozen.reference.response_logprobs(
                    &p_ids,
                    &r_ids,
                    input(frozen.reference_table(), &frozen_device),
                )?,
                &l,
            )?);
            let vt = value_table.as_ref().unwrap_or(&frozen.policy_table);
            values.extend(rows(
                token_values(&value_model, &p_ids, &r_ids, input(vt, &value_model.llava.device()))?,
                &l,
            )?);
        }
        // 4d. Rewards: RM score, penalties and bonus at the last token, KL per token.
        let items: Vec<(usize, String)> = which.iter().copied().zip(texts.iter().cloned()).collect();
        let scores = rm_scores(&frozen, &prompts, &items, &mut rng)?;
        let mut m = IterationMetrics { step: it + 1, beta: progress.beta, ..Default::default() };
        let mut samples = Vec::with_capacity(which.len());
        let (mut checked, mut kl_sum) = (0usize, 0.0);
        for (i, &p) in which.iter().enumerate() {
            let rec = &prompts[p].record;
            let c = correctness(rec.caption_type, &texts[i]);
            checked += usize::from(rec.caption_type != CaptionType::General);
            m.correctness += c;
            let seq = sequence_reward(
                f64::from(scores[i]),
                gens[i].finished,
                lens[i],
                cfg.max_new_tokens,
                rec.length_bonus,
                c,
                &cfg.shaping,
            );
            let s = &cfg.shaping;
            let kl: Vec<f32> = logp[i]
                .iter()
                .zip(&logp_ref[i])
                .map(|(&a, &b)| kl_estimate(s.kl_estimator, a, b, s.kl_clamp))
                .collect();
            let rewards = token_rewards(&kl, progress.beta, seq);
            let (adv, returns) = gae(&rewards, &values[i], cfg.gamma, cfg.lam);
            let true_kl: f64 = logp[i].iter().zip(&logp_ref[i]).map(|(&a, &b)| f64::from(a - b)).sum();
            kl_sum += true_kl;
            m.sequence_reward += seq;
            m.shaped_reward += rewards.iter().map(|&r| f64::from(r)).sum::<f64>();
            m.entropy += -logp[i].iter().map(|&l| f64::from(l)).sum::<f64>();
            m.objects += crate::eval::mentions::mentions(&texts[i]).len() as f64;
            m.no_eos_rate += f64::from(u8::from(!gens[i].finished));
            samples.push(Sample {
                prompt: p,
                response: responses[i].clone(),
                logp: logp[i].clone(),
                values: values[i].clone(),
                adv,
                returns,
            });
        }
        let n = samples.len().max(1) as f64;
        let tokens = lens.iter().sum::<usize>().max(1) as f64;
        m.rm_score = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
        m.kl = kl_sum / n;
        (m.sequence_reward, m.shaped_reward, m.objects, m.no_eos_rate) =
            (m.sequence_reward / n, m.shaped_reward / n, m.objects / n, m.no_eos_rate / n);
        m.entropy /= tokens;
        m.correctness /= checked.max(1) as f64;
        m.response_length = tokens / n;
        let all_values: Vec<f32> = samples.iter().flat_map(|s| s.values.iter().copied()).collect();
        let all_returns: Vec<f32> = samples.iter().flat_map(|s| s.returns.iter().copied()).collect();
        m.explained_variance = explained_variance(&all_values, &all_returns);
        // 4e. Whiten the advantages over the rollout.
        if cfg.whiten_advantages {
            let mut flat: Vec<f32> = samples.iter().flat_map(|s| s.adv.iter().copied()).collect();
            whiten(&mut flat);
            let mut k = 0;
            for s in &mut samples {
                let n = s.adv.len();
                s.adv.copy_from_slice(&flat[k..k + n]);
                k += n;
            }
        }
        // 4f. PPO epochs over shuffled minibatches.
        let mut sums = [0.0f64; 4]; // policy loss, value loss, clip fraction, value clip fraction
        let mut steps_done = 0;
        for epoch in 0..cfg.ppo_epochs {
            let mut order: Vec<usize> = (0..samples.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(iter_seed ^ (epoch as u64 + 1)));
            for mb in order.chunks(cfg.minibatch) {
                let batch: Vec<&Sample> = mb.iter().map(|&i| &samples[i]).collect();
                let p_ids: Vec<Vec<u32>> = batch.iter().map(|s| prompts[s.prompt].ids.clone()).collect();
                let r_ids: Vec<Vec<u32>> = batch.iter().map(|s| s.response.clone()).collect();
                let img: Vec<usize> = batch.iter().map(|s| prompts[s.prompt].image).collect();
                let ones: Vec<Vec<f32>> = batch.iter().map(|s| vec![1.0; s.response.len()]).collect();
                let tensor = |f: fn(&Sample) -> &[f32]| {
                    padded(&batch.iter().map(|s| f(s)).collect::<Vec<_>>(), &device)
                };
                let mask = padded(&ones.iter().map(Vec::as_slice).collect::<Vec<_>>(), &device);
                let new_logp = ac.policy.response_logprobs(
                    &p_ids,
                    &r_ids,
                    frozen.policy_table.input(&img, side, &device),
                )?;
                let vt = value_table.as_ref().unwrap_or(&frozen.policy_table);
                let new_values = token_values(&ac.value, &p_ids, &r_ids, vt.input(&img, side, &device))?;
                let (pl, cf) = policy_loss(
                    new_logp,
                    tensor(|s| &s.logp),
                    tensor(|s| &s.adv),
                    mask.clone(),
                    cfg.clip_eps,
                );
                let (vl, vcf) = value_loss(
                    new_values,
                    tensor(|s| &s.values),
                    tensor(|s| &s.returns),
                    mask,
                    cfg.value_clip,
                );
                let loss = pl.clone() + vl.clone().mul_scalar(cfg.vf_coef);
                let value: f32 = loss.clone().into_scalar();
                let opt_step = it * per_iter + steps_done;
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: opt_step,
                        value,
                        checkpoint: run.dir.join("checkpoint"),
                    });
                }
                for (sum, t) in sums.iter_mut().zip([pl, vl, cf, vcf]) {
                    *sum += f64::from(t.into_scalar::<f32>());
                }
                let mut grads = GradientsParams::from_grads(loss.backward(), &ac);
                clip_global_norm(&ac, &mut grads, cfg.grad_clip);
                m.lr = warmup_cosine(opt_step, total_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr);
                ac = optim.step(m.lr, ac, grads);
                steps_done += 1;
            }
        }
        let k = steps_done.max(1) as f64;
        (m.policy_loss, m.value_loss, m.clip_fraction, m.value_clip_fraction) =
            (sums[0] / k, sums[1] / k, sums[2] / k, sums[3] / k);
        // 4g. Adaptive beta, warnings, eval, log, checkpoint.
        if let Some(target) = cfg.shaping.kl_target {
            progress.beta = adapt_beta(progress.beta, m.kl, target, samples.len(), cfg.shaping.kl_horizon);
        }
        let first = *progress.first.get_or_insert((m.response_length, m.objects));
        for warning in collapse_warnings(&m, first, cfg) {
            say(&bar, warning);
        }
        it += 1;
        if !val.is_empty() && (it % cfg.eval_every.max(1) == 0 || it == cfg.iterations) {
            let e = evaluate(&ac.policy.valid(), &frozen, &prompts, &val, cfg, &folder)?;
            m.eval_rm_score = Some(e);
            eval_last = Some(e);
            say(
                &bar,
                format!(
                    "iteration {it}/{}: held-out RM score {e:.3} (before PPO {:.3})",
                    cfg.iterations,
                    progress.eval_first.unwrap_or(f64::NAN)
                ),
            );
        }
        metrics.log(&m)?;
        bar.set_position(it as u64);
        bar.set_message(format!("rm {:.3} | kl {:.2} | len {:.1}", m.rm_score, m.kl, m.response_length));
        if it % cfg.checkpoint_every.max(1) == 0 || it == stop {
            let state = serde_json::json!({"step": it, "progress": progress});
            save_checkpoint(&run, &ac, &optim, &state, cfg.lora.is_some(), |dir| {
                save_model_folder(&ac.policy, &folder.tokenizer_path, &folder.processor, dir)?;
                let v = dir.join("value");
                save_model_folder(&ac.value.llava, &value_src.join("tokenizer.json"), &value_processor, &v)?;
                Ok(save_scalar_head(&ac.value.head, &v)?)
            })?;
        }
        last = Some(m);
    }
    bar.finish();
    let model = if it == cfg.iterations {
        let dir = run.dir.join("final");
        save_model_folder(&ac.policy, &folder.tokenizer_path, &folder.processor, &dir)?;
        dir
    } else {
        run.dir.join("checkpoint")
    };
    Ok(Summary {
        iterations: it,
        eval_rm_score_first: progress.eval_first,
        eval_rm_score_last: eval_last,
        last,
        seconds: start.elapsed().as_secs_f64(),
        model,
    })
}

/// Loud warnings for reward hacking: responses or object mentions shrinking below
/// `collapse_ratio` of the first iteration's, or KL beyond `kl_warn`.
fn collapse_warnings(m: &IterationMetrics, (len0, obj0): (f64, f64), cfg: &PpoConfig) -> Vec<String> {
    let mut out = Vec::new();
    if m.response_length < cfg.collapse_ratio * len0 {
        out.push(format!(
            "WARNING: iteration {}: mean response length {:.1} fell below {:.0}% of the first iteration's {len0:.1}: \
             the policy may be hacking the reward by brevity (raise shaping.beta, lower the length penalty)",
            m.step,
            m.response_length,
            100.0 * cfg.collapse_ratio
        ));
    }
    if obj0 > 0.0 && m.objects < cfg.collapse_ratio * obj0 {
        out.push(format!(
            "WARNING: iteration {}: {:.2} object mentions per response, below {:.0}% of the first iteration's {obj0:.2}: \
             descriptions are collapsing",
            m.step,
            m.objects,
            100.0 * cfg.collapse_ratio
        ));
    }
    if m.kl > cfg.kl_warn {
        out.push(format!(
            "WARNING: iteration {}: KL to the reference {:.2} exceeds {}: the policy is drifting (raise shaping.beta \
             or set shaping.kl_target)",
            m.step, m.kl, cfg.kl_warn
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaping() -> Shaping {
        Shaping {
            kl_estimator: KlEstimator::K1,
            beta: 0.1,
            kl_target: None,
            kl_horizon: 10000.0,
            kl_clamp: 10.0,
            no_eos_reward: -8.0,
            length_penalty: 10.0,
            correctness_bonus: 2.0,
            reward_scale: 1.0,
            reward_clip: 0.0,
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn kl_estimators_by_hand() {
        // logp -1, logp_ref -1.5: k1 = 0.5; r = -0.5, k3 = e^-0.5 - 1 + 0.5 = 0.106531.
        assert_eq!(kl_estimate(KlEstimator::K1, -1.0, -1.5, 10.0), 0.5);
        assert!((kl_estimate(KlEstimator::K3, -1.0, -1.5, 10.0) - 0.106_531).abs() < 1e-6);
        // k1 is clamped at 0 where the policy is less likely than the reference.
        assert_eq!(kl_estimate(KlEstimator::K1, -2.0, -1.0, 10.0), 0.0);
        // k3 with r = 1: e - 2 = 0.718282; with r = 50 clamped to 10: e^10 - 11 = 22015.47.
        assert!((kl_estimate(KlEstimator::K3, -2.0, -1.0, 10.0) - 0.718_282).abs() < 1e-5);
        let big = kl_estimate(KlEstimator::K3, -60.0, -10.0, 10.0);
        assert!(big.is_finite() && (big - 22_015.465).abs() < 0.1, "{big}");
        // Equal log-probs: both 0.
        assert_eq!(kl_estimate(KlEstimator::K3, -1.0, -1.0, 10.0), 0.0);
    }

    #[test]
    fn gae_by_hand() {
        // rewards (0, 0, 1), values (0.5, 0.4, 0.3), gamma 1, lam 0.5:
        // delta_2 = 1 - 0.3 = 0.7, A_2 = 0.7
        // delta_1 = 0 + 0.3 - 0.4 = -0.1, A_1 = -0.1 + 0.5 * 0.7 = 0.25
        // delta_0 = 0 + 0.4 - 0.5 = -0.1, A_0 = -0.1 + 0.5 * 0.25 = 0.025
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 0.5);
        close(&adv, &[0.025, 0.25, 0.7]);
        close(&ret, &[0.525, 0.65, 1.0]);
        // gamma 1, lam 1 (LLaVA-RLHF): A_t = sum of future rewards - V_t.
        let (adv, _) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 1.0);
        close(&adv, &[0.5, 0.6, 0.7]);
        // gamma 0.5, lam 1: A_1 = 0 + 0.5 * 1 - 0.4 = 0.1, A_0 = 0 + 0.25 * 1 - 0.5 = -0.25.
        let (adv, _) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 0.5, 1.0);
        close(&adv, &[-0.25, 0.1, 0.7]);
    }

    #[test]
    fn whitening_by_hand() {
        // (1, 2, 3, 6): mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5, std 1.870829.
        let mut x = [1.0, 2.0, 3.0, 6.0];
        whiten(&mut x);
        let s = 3.5f32.sqrt();
        close(&x, &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s]);
    }

    #[test]
    fn explained_variance_by_hand() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        // returns (1, 3): variance 1; residuals (1, 1): variance 0 -> 1. Values 0: residual = returns -> 0.
        assert!((explained_variance(&[0.0, 2.0], &[1.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[0.0, 0.0], &[1.0, 3.0]).abs() < 1e-12);
    }

    #[test]
    fn rewards_by_hand() {
        let s = shaping();
        // RM 1.5, EOS, 20 of 100 tokens, length_bonus 1 -> -10 * 0.2 = -2; wrong letter c = 0: -0.5.
        assert!((sequence_reward(1.5, true, 20, 100, 1.0, 0.0, &s) + 0.5).abs() < 1e-12);
        // No EOS: the score is replaced by -8; length_bonus -0.5 rewards length: +5 * 1.0; c = 0.5: +1.
        assert!((sequence_reward(1.5, false, 100, 100, -0.5, 0.5, &s) - (-8.0 + 5.0 + 1.0)).abs() < 1e-12);
        // Scaled x10 and clipped at 5.
        let clipped = Shaping { reward_scale: 10.0, reward_clip: 5.0, ..s.clone() };
        assert_eq!(sequence_reward(1.5, true, 0, 100, 1.0, 0.0, &clipped), 5.0);
        // Per-token: -beta * kl, the sequence reward on the last token only.
        close(&token_rewards(&[0.5, 0.0, 2.0], 0.1, 3.0), &[-0.05, 0.0, 2.8]);
    }

    #[test]
    fn correctness_by_hand() {
        assert_eq!(correctness(CaptionType::Choice(2), "C."), 1.0);
        assert_eq!(correctness(CaptionType::Choice(2), "B."), 0.0);
        assert_eq!(correctness(CaptionType::Choice(3), "D"), 1.0);
        assert_eq!(correctness(CaptionType::Choice(0), "A blue circle."), 0.0);
        assert_eq!(correctness(CaptionType::No, "No."), 0.5);
        assert_eq!(correctness(CaptionType::No, "Yes, there is."), -0.5);
        assert_eq!(correctness(CaptionType::Yes, "yes."), 0.5);
        assert_eq!(correctness(CaptionType::Yes, "No."), -0.5);
        assert_eq!(correctness(CaptionType::Yes, "There is a star."), 0.0);
        assert_eq!(correctness(CaptionType::General, "Yes."), 0.0);
    }

    fn t(rows: &[&[f32]]) -> Tensor<2> {
        padded(rows, &inference_device())
    }

    #[test]
    fn policy_loss_by_hand() {
        // Ratio 1 (logp = old): clipping is inactive and the loss is -mean(A) = -(1 - 2) / 2 = 0.5.
        let (l, f) =
            policy_loss(t(&[&[-1.0, -2.0]]), t(&[&[-1.0, -2.0]]), t(&[&[1.0, -2.0]]), t(&[&[1.0, 1.0]]), 0.2);
        assert!((l.into_scalar::<f32>() - 0.5).abs() < 1e-6);
        assert_eq!(f.into_scalar::<f32>(), 0.0);
        // Ratio e^0.5 = 1.6487 with A = 1: min(1.6487, 1.2) -> loss -1.2, clipped.
        // Ratio e^-0.5 = 0.6065 with A = -1: max(0.6065, 0.8) -> loss 0.8, clipped. Mean -0.2.
        // The padded third token (mask 0) does not count.
        let (l, f) = policy_loss(
            t(&[&[-0.5, -1.5, 9.0]]),
            t(&[&[-1.0, -1.0, 0.0]]),
            t(&[&[1.0, -1.0, 5.0]]),
            t(&[&[1.0, 1.0, 0.0]]),
            0.2,
        );
        assert!((l.into_scalar::<f32>() + 0.2).abs() < 1e-6);
        assert_eq!(f.into_scalar::<f32>(), 1.0);
        // Ratio e^0.1 = 1.10517 inside the clip range, A = 2: loss -2.21034, unclipped.
        let (l, f) = policy_loss(t(&[&[-0.9]]), t(&[&[-1.0]]), t(&[&[2.0]]), t(&[&[1.0]]), 0.2);
        assert!((l.into_scalar::<f32>() + 2.210_342).abs() < 1e-5);
        assert_eq!(f.into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn value_loss_by_hand() {
        // V 1.0, V_old 0.5, R 2.0, eps 0.2: unclipped (1 - 2)^2 = 1; clipped V = 0.7, (0.7 - 2)^2 = 1.69;
        // max 1.69, times 0.5 = 0.845. Second token: V 0.6 (within 0.2 of 0.5), R 0.6: both 0.
        let (l, f) =
            value_loss(t(&[&[1.0, 0.6]]), t(&[&[0.5, 0.5]]), t(&[&[2.0, 0.6]]), t(&[&[1.0, 1.0]]), 0.2);
        assert!((l.into_scalar::<f32>() - 0.845 / 2.0).abs() < 1e-6);
        assert_eq!(f.into_scalar::<f32>(), 0.5);
    }

    #[test]
    fn adaptive_beta_moves_towards_the_target() {
        // KL twice the target: error clipped to 0.2; 100 of horizon 1000 -> beta * 1.02.
        assert!((adapt_beta(0.1, 12.0, 6.0, 100, 1000.0) - 0.102).abs() < 1e-12);
        // KL at 90% of the target: error -0.1 -> beta * 0.99.
        assert!((adapt_beta(0.1, 5.4, 6.0, 100, 1000.0) - 0.099).abs() < 1e-12);
    }
}
