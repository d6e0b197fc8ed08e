//! Stage 3: the (factually augmented) reward model. The SFT model with a scalar head on the last
//! token reads the conversation, the response and a grading prompt (LLaVA-RLHF's or a short one:
//! [`crate::data::template::reward_text`]), which with facts lists the image's captions (shuffled
//! each time) and says the response should be fully supported by them. It learns preference pairs
//! with the Bradley-Terry loss, optionally with a next-token loss on the captions
//! (`facts_lm_coef`).
//!
//! A reward model folder is a llava-hf model folder plus `scalar_head.safetensors` and
//! `reward.json` ([`RewardInfo`]: `{"facts": bool, "prompt": "llava-rlhf" | "short"}`, whether its
//! grading prompt lists captions and which prompt it is).

use super::common::{
    ImageTable, TrainError, host, progress_bar, resume_checkpoint, save_checkpoint, save_model_folder, say,
    state_step, weights_source,
};
use super::config;
use super::optim::{adamw, clip_global_norm};
use super::run::RunDir;
use super::schedule::warmup_cosine;
use super::sft::{Part, epoch_batches, prepare};
use crate::backend::{inference_device, training_device};
use crate::data::formats::{Role, Task, Turn};
use crate::data::template::{GradingPrompt, reward_text_with_facts};
use crate::io;
use crate::model::checkpoint::{load_scalar_head, save_scalar_head};
use crate::model::jobs::ModelFolder;
use crate::model::llava::ScalarHead;
use crate::model::lora::LoraConfig;
use crate::model::processor::pixel_batch;
use crate::model::{ImageInput, Llava, ModelError, PaddingSide, TextBatch};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File of a reward model folder that says how it reads its input.
pub const REWARD_INFO: &str = "reward.json";

/// `factrl train reward` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// Run folder (config, metrics, checkpoint, `best/`, `final/` reward model).
    pub out: PathBuf,
    /// Preference pairs (LLaVA-Human-Preference-10K format); image paths relative to its folder.
    pub train: PathBuf,
    /// Held-out pairs; without it, `val_fraction` of the training file's images are held out.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Share of images whose pairs are held out when `val` is not set.
    pub val_fraction: f64,
    /// Model folder to start from (the SFT model; a reward model folder keeps its head).
    pub init: PathBuf,
    /// `image_to_caption.json` (image path relative to its folder -> captions), for records
    /// without their own `captions`.
    #[serde(default)]
    pub captions: Option<PathBuf>,
    /// List the captions in the grading prompt (Fact-RLHF); false trains the standard reward model.
    pub facts: bool,
    /// The grading prompt: "llava-rlhf" (LLaVA-RLHF's, the default) or "short" (the same criteria
    /// in one sentence, the captions last: inputs about 40% shorter on the built-in world).
    #[serde(default)]
    pub prompt: GradingPrompt,
    /// Parts that train besides the head: any of "vision", "projector", "decoder".
    pub trainable: Vec<Part>,
    /// Train the decoder through LoRA adapters (`[lora]`: `rank`, `alpha`, optional `targets`)
    /// instead of all its weights; saved models have the adapters merged.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// Pairs per optimiser step.
    pub batch_size: usize,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Stop after this many optimiser steps, if set.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Stop when held-out accuracy has not risen for this many evals; the best model is kept.
    #[serde(default)]
    pub patience: Option<usize>,
    /// Weight of the centring term `|mean(r_chosen + r_rejected)|` (LLaVA-RLHF: 1e-3).
    pub center_coef: f64,
    /// Weight of an auxiliary next-token loss on the captions that follow the chosen responses,
    /// the image blanked as for `facts_likelihood` (with facts; 0: off). Predicting a caption
    /// means finding its object in the response: the lookup the reward needs, taught densely
    /// rather than through one bit per pair.
    #[serde(default)]
    pub facts_lm_coef: f64,
    /// Weight, in the reward, of the summed log-probs of the captions' tokens given the text
    /// before them, the image blanked (with facts; 0: the head alone, as LLaVA-RLHF). Facts that
    /// follow from the response are likely and facts it contradicts are not, so this term checks
    /// the response against the facts token by token, a check the head on the last token learns
    /// only slowly.
    #[serde(default)]
    pub facts_likelihood: f64,
    /// Seed of initialisation, shuffling, the held-out split and caption order.
    pub seed: u64,
    /// Steps between metric lines.
    pub log_every: usize,
    /// Steps between held-out evals.
    pub eval_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

/// One response of a preference record (`{"from", "value"}`; only the text is used).
#[derive(Clone, Debug, Deserialize)]
pub struct PrefOutput {
    /// The response.
    pub value: String,
}

/// A preference record as LLaVA-Human-Preference-10K publishes it, with factrl's optional extras;
/// other fields are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct PrefRecord {
    /// Record id (a string or a number).
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Image path, relative to the file's folder.
    pub image: String,
    /// The conversation; its last gpt turn, if any, is what the outputs replace.
    pub conversations: Vec<Turn>,
    /// First response.
    pub output_1: PrefOutput,
    /// Second response.
    pub output_2: PrefOutput,
    /// 1 or 2: the preferred output.
    pub preference: u8,
    /// Whether the choice was made on hallucination (bool, or 0 / 1).
    #[serde(default, deserialize_with = "flexible_bool")]
    pub hallucination: bool,
    /// factrl: whether output 1 hallucinates.
    #[serde(default)]
    pub hallucinated_1: Option<bool>,
    /// factrl: whether output 2 hallucinates.
    #[serde(default)]
    pub hallucinated_2: Option<bool>,
    /// factrl: the image's captions.
    #[serde(default)]
    pub captions: Option<Vec<String>>,
    /// factrl: what kind of question the prompt is (held-out accuracy is also reported by kind).
    #[serde(default)]
    pub task: Option<Task>,
    /// factrl: a built pair (`annotate auto --inject`), trained on but never held out.
    #[serde(default)]
    pub injected: bool,
    /// factrl: a copy pair (`annotate auto --copy`), labelled by its facts rather than its image:
    /// trained on with facts, never held out, skipped without facts (see
    /// [`crate::feedback::auto`]).
    #[serde(default)]
    pub copy: bool,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a string or a number, found {other}"))),
    }
}

fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => {
            Ok(n.as_u64() == Some(1))
        }
        serde_json::Value::Null => Ok(false),
        other => Err(serde::de::Error::custom(format!("expected true/false or 0/1, found {other}"))),
    }
}

/// A preference pair ready to score.
#[derive(Clone, Debug)]
pub struct PrefPair {
    /// The record's id.
    pub id: String,
    /// The conversation (its last gpt turn, if any, is replaced).
    pub turns: Vec<Turn>,
    /// The preferred response.
    pub chosen: String,
    /// The other response.
    pub rejected: String,
    /// The image's captions (facts), when the reward model reads them.
    pub captions: Option<Vec<String>>,
    /// Row of the image in the run's image table.
    pub image: usize,
    /// Exactly one of the two responses hallucinates.
    pub hallucination_pair: bool,
    /// What kind of question the prompt is, when the record says.
    pub task: Option<Task>,
    /// Built rather than judged ([`PrefRecord::injected`], [`PrefRecord::copy`]): trained on,
    /// never held out.
    pub built: bool,
}

/// Captions by image, from an `image_to_caption.json`.
pub struct CaptionIndex {
    dir: PathBuf,
    map: BTreeMap<String, Vec<String>>,
    file: PathBuf,
}

impl CaptionIndex {
    /// Reads `image_to_caption.json` (keys are image paths relative to its folder).
    pub fn load(file: &Path) -> Result<CaptionIndex, TrainError> {
        let map = io::read_json(file)?;
        let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(folder).map_err(io::at(folder))?;
        Ok(CaptionIndex { dir, map, file: file.to_path_buf() })
    }

    /// The captions of the image at `path` (any form that resolves to a file under the index's
    /// folder).
    pub fn get(&self, path: &Path) -> Result<&Vec<String>, String> {
        let full = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = full.strip_prefix(&self.dir).ok().map(|k| k.to_string_lossy().replace('\\', "/"));
        key.and_then(|k| self.map.get(&k))
            .ok_or_else(|| format!("no captions for {} in {}", path.display(), self.file.display()))
    }
}

/// Reads a preference file as pairs. With `facts`, each pair carries captions: the record's own,
/// else `captions`'; without, copy pairs are left out (only their facts decide them). Images go
/// into `images` (path -> table row).
pub fn load_pairs(
    file: &Path,
    facts: bool,
    captions: Option<&CaptionIndex>,
    images: &mut BTreeMap<PathBuf, usize>,
) -> Result<Vec<PrefPair>, TrainError> {
    let records: Vec<PrefRecord> = io::read_json(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::with_capacity(records.len());
    for (n, r) in records.into_iter().enumerate() {
        // Every record's image gets its row, a skipped copy pair's too, so the held-out split
        // ([`split_by_image`]) is the same with facts and without.
        let path = base.join(&r.image);
        let next = images.len();
        let image = *images.entry(path.clone()).or_insert(next);
        if r.copy && !facts {
            continue;
        }
        let err = |message: String| TrainError::Data {
            file: file.to_path_buf(),
            message: format!("record [{n}] (id {}): {message}", r.id),
        };
        let (chosen, rejected) = match r.preference {
            1 => (r.output_1.value.clone(), r.output_2.value.clone()),
            2 => (r.output_2.value.clone(), r.output_1.value.clone()),
            p => return Err(err(format!("preference is {p}, expected 1 or 2"))),
        };
        if r.conversations.first().is_none_or(|t| t.from != Role::Human) {
            return Err(err("conversations must start with a human turn".into()));
        }
        let captions = match (facts, r.captions, captions) {
            (false, _, _) => None,
            (true, Some(c), _) => Some(c),
            (true, None, Some(index)) => Some(index.get(&path).map_err(err)?.clone()),
            (true, None, None) => {
                return Err(err("no `captions` field and no captions file (set `captions`)".into()));
            }
        };
        let hallucination_pair = match (r.hallucinated_1, r.hallucinated_2) {
            (Some(a), Some(b)) => a != b,
            _ => r.hallucination,
        };
        out.push(PrefPair {
            id: r.id,
            turns: r.conversations,
            chosen,
            rejected,
            captions,
            image,
            hallucination_pair,
            task: r.task,
            built: r.injected || r.copy,
        });
    }
    Ok(out)
}

/// Splits pairs into training and held-out ones by image, `fraction` of the `images` image rows
/// (the file's images, [`load_pairs`]) held out (at least one when there are two or more),
/// deterministically in `seed`. Drawn from the rows rather than the pairs' images, the split does
/// not move when some pairs are left out.
pub fn split_by_image(
    pairs: Vec<PrefPair>,
    images: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<PrefPair>, Vec<PrefPair>) {
    let mut images: Vec<usize> = (0..images).collect();
    images.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n = ((images.len() as f64 * fraction).round() as usize)
        .max(usize::from(fraction > 0.0 && images.len() > 1));
    let held: BTreeSet<usize> = images.into_iter().take(n).collect();
    pairs.into_iter().partition(|p| !held.contains(&p.image))
}

/// The training and held-out pairs: `val` when given, else `fraction` of the images' pairs
/// ([`split_by_image`]). Built pairs are never held out: held-out accuracy measures agreement
/// with the annotators.
pub fn train_and_val(
    all: Vec<PrefPair>,
    val: Option<Vec<PrefPair>>,
    images: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<PrefPair>, Vec<PrefPair>) {
    let (train, val) = match val {
        Some(v) => (all, v),
        None => split_by_image(all, images, fraction, seed),
    };
    (train, val.into_iter().filter(|p| !p.built).collect())
}

/// Bradley-Terry loss of reward pairs with LLaVA-RLHF's centring term:
/// `mean(-log sigmoid(r_c - r_r)) + center * |mean(r_c + r_r)|`.
///
/// # Shapes
/// - `chosen`, `rejected`: `[b]` -> `[1]`
pub fn bradley_terry_loss(chosen: Tensor<1>, rejected: Tensor<1>, center: f64) -> Tensor<1> {
    let bt = log_sigmoid(chosen.clone() - rejected.clone()).mean().neg();
    bt + (chosen + rejected).mean().abs().mul_scalar(center)
}

/// Accuracy of some pairs, overall and on those where exactly one response hallucinates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Pairs scored.
    pub pairs: usize,
    /// Share of pairs with a positive margin.
    pub accuracy: f64,
    /// Pairs where exactly one response hallucinates.
    pub hallucination_pairs: usize,
    /// Accuracy on those pairs (0 when there are none).
    pub hallucination_accuracy: f64,
}

impl Accuracy {
    /// From `(margin, hallucination pair)`; a tie (margin 0) counts as wrong.
    fn of(scored: &[(f32, bool)]) -> Accuracy {
        let rate = |v: &[f32]| v.iter().filter(|m| **m > 0.0).count() as f64 / v.len().max(1) as f64;
        let all: Vec<f32> = scored.iter().map(|s| s.0).collect();
        let hall: Vec<f32> = scored.iter().filter(|s| s.1).map(|s| s.0).collect();
        Accuracy {
            pairs: all.len(),
            accuracy: rate(&all),
            hallucination_pairs: hall.len(),
            hallucination_accuracy: rate(&hall),
        }
    }
}

/// Held-out metrics of reward margins `r_chosen - r_rejected`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PairMetrics {
    /// Over all pairs.
    #[serde(flatten)]
    pub all: Accuracy,
    /// Mean margin.
    pub margin_mean: f64,
    /// 10th percentile of the margin.
    pub margin_p10: f64,
    /// Median margin.
    pub margin_p50: f64,
    /// 90th percentile of the margin.
    pub margin_p90: f64,
    /// By the records' `task` (pairs without one are only in `all`): where the model is right.
    pub by_task: BTreeMap<String, Accuracy>,
}

/// Accuracy overall, by task and on hallucination pairs, and the margin's distribution, of
/// `margins[i]` for `pairs[i]`. A tie (margin 0) counts as wrong.
pub fn pair_metrics(margins: &[f32], pairs: &[PrefPair]) -> PairMetrics {
    let n = margins.len();
    if n == 0 {
        return PairMetrics::default();
    }
    let scored: Vec<(f32, bool)> =
        margins.iter().zip(pairs).map(|(m, p)| (*m, p.hallucination_pair)).collect();
    let mut tasks: BTreeMap<String, Vec<(f32, bool)>> = BTreeMap::new();
    for (s, p) in scored.iter().zip(pairs) {
        if let Some(t) = p.task {
            tasks.entry(t.name().to_string()).or_default().push(*s);
        }
    }
    let mut sorted = margins.to_vec();
    sorted.sort_by(f32::total_cmp);
    let pct = |q: f64| f64::from(sorted[((n - 1) as f64 * q).round() as usize]);
    PairMetrics {
        all: Accuracy::of(&scored),
        margin_mean: margins.iter().map(|&m| f64::from(m)).sum::<f64>() / n as f64,
        margin_p10: pct(0.1),
        margin_p50: pct(0.5),
        margin_p90: pct(0.9),
        by_task: tasks.into_iter().map(|(t, s)| (t, Accuracy::of(&s))).collect(),
    }
}

/// A reward (or value) model: a LLaVA model and a scalar head on its last token.
#[derive(Module, Debug)]
pub struct RewardModel {
    /// The model.
    pub llava: Llava,
    /// `d -> 1` on the last real token.
    pub head: ScalarHead,
}

impl RewardModel {
    /// Rewards of reward inputs (ids with image tokens expanded, and which of them are caption
    /// tokens), their images in row order: the head on the last token plus `facts_likelihood`
    /// times the summed log-probs of the caption tokens. Those log-probs are taken with the
    /// images blanked: with the image, the model predicts the captions from it and from each
    /// other rather than from the response. Each row's caption log-probs come back too when the
    /// reward uses them or `with_facts_logp` asks.
    ///
    /// # Shapes
    /// - -> `[b]`, `[b]`
    pub fn rewards(
        &self,
        inputs: &[MarkedIds],
        images: ImageInput,
        facts_likelihood: f64,
        with_facts_logp: bool,
    ) -> Result<(Tensor<1>, Option<Tensor<1>>), ModelError> {
        let seqs: Vec<Vec<u32>> = inputs.iter().map(|(ids, _)| ids.clone()).collect();
        let blank = (facts_likelihood != 0.0 || with_facts_logp).then(|| images.blank());
        let (head, batch, _) = self.scores_and_hidden(&seqs, images)?;
        let Some(blank) = blank.filter(|_| batch.len >= 2) else { return Ok((head, None)) };
        let (_, batch, hidden) = self.scores_and_hidden(&seqs, blank)?;
        let (b, t) = (batch.batch, batch.len);
        let logp = self.llava.token_logprobs_of(&batch, hidden)?; // [b, t - 1]; column j scores token j + 1
        let marks: Vec<f32> = inputs
            .iter()
            .flat_map(|(_, facts)| (1..t).map(move |j| if facts.get(j) == Some(&true) { 1.0 } else { 0.0 }))
            .collect();
        let marks = Tensor::<2>::from_data(TensorData::new(marks, [b, t - 1]), &logp.device());
        let facts = logp.mul(marks).sum_dim(1).reshape([b]);
        Ok((head + facts.clone().mul_scalar(facts_likelihood), Some(facts)))
    }

    /// The head's scores, the padded batch and its final hidden states (for a loss on other
    /// positions).
    ///
    /// # Shapes
    /// - -> `[b]`, `[b, t, d]`
    pub fn scores_and_hidden(
        &self,
        seqs: &[Vec<u32>],
        images: ImageInput,
    ) -> Result<(Tensor<1>, TextBatch, Tensor<3>), ModelError> {
        let pad = self.llava.config.pad_token_id.or(self.llava.config.eos_token_id).unwrap_or(0);
        let batch = TextBatch::pad(seqs, pad, PaddingSide::Right);
        let hidden = self.llava.hidden_states(&batch, images)?; // [b, t, d]
        Ok((self.head.forward(hidden.clone(), &batch.last_real()), batch, hidden))
    }
}

/// How a reward model folder reads its input: whether its grading prompt lists captions, which
/// prompt it is (LLaVA-RLHF's when the file predates the choice), and the weight of the
/// captions' log-probs in its reward (0, the head alone, when the file predates it).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RewardInfo {
    /// Fact-augmented.
    pub facts: bool,
    /// The grading prompt.
    #[serde(default)]
    pub prompt: GradingPrompt,
    /// [`RewardConfig::facts_likelihood`].
    #[serde(default)]
    pub facts_likelihood: f64,
}

/// A loaded reward model folder.
pub struct RewardFolder {
    /// Tokenizer, processor and the LLaVA part.
    pub folder: ModelFolder,
    /// The head.
    pub head: ScalarHead,
    /// How it reads its input.
    pub info: RewardInfo,
}

impl RewardFolder {
    /// Loads a reward model folder.
    pub fn load(dir: &Path, device: &Device) -> Result<RewardFolder, TrainError> {
        let info_path = dir.join(REWARD_INFO);
        if !info_path.exists() {
            return Err(TrainError::Setting(format!(
                "{} is not a reward model folder (no {REWARD_INFO}; train one with `factrl train reward`)",
                dir.display()
            )));
        }
        let info = io::read_json(&info_path)?;
        Ok(RewardFolder {
            folder: ModelFolder::load(dir, device)?,
            head: load_scalar_head(dir, device)?,
            info,
        })
    }

    /// The reward input for `response` (image placeholder expanded). With facts, `captions` must
    /// be given (in the order to list them).
    pub fn encode(
        &self,
        turns: &[Turn],
        response: &str,
        captions: Option<&[String]>,
    ) -> Result<MarkedIds, TrainError> {
        let captions = captions.filter(|_| self.info.facts);
        encode_marking_facts(&self.folder, self.info.prompt, turns, response, captions)
    }

    /// Rewards of inputs from [`RewardFolder::encode`], their images in row order.
    pub fn rewards(&self, inputs: &[MarkedIds], images: ImageInput) -> Result<Vec<f32>, TrainError> {
        let rm = RewardModel { llava: self.folder.model.clone(), head: self.head.clone() };
        host(rm.rewards(inputs, images, self.info.facts_likelihood, false)?.0)
    }
}

/// Token ids of a reward input and which of them belong to the caption list.
pub type MarkedIds = (Vec<u32>, Vec<bool>);

/// The reward input's token ids ([`crate::data::template::reward_text`], image placeholder
/// expanded) and which of its tokens belong to the caption list (none without
/// captions).
fn encode_marking_facts(
    folder: &ModelFolder,
    prompt: GradingPrompt,
    turns: &[Turn],
    response: &str,
    captions: Option<&[String]>,
) -> Result<MarkedIds, TrainError> {
    let (text, span) = reward_text_with_facts(prompt, turns, response, captions);
    let (ids, mut facts) = folder.encode_marking(&text, &span.unwrap_or(0..0))?;
    let ids = folder.expand_images(&ids, 1)?;
    // The image placeholder comes before the captions, so its expansion only shifts them.
    let added = ids.len().checked_sub(facts.len()).ok_or_else(|| {
        TrainError::Setting("the model gives images no features: it cannot read a reward input".into())
    })?;
    facts.splice(0..0, std::iter::repeat_n(false, added));
    Ok((ids, facts))
}

/// Writes a reward model folder.
fn save_reward_folder(
    rm: &RewardModel,
    folder: &ModelFolder,
    info: RewardInfo,
    dir: &Path,
) -> Result<(), TrainError> {
    save_model_folder(&rm.llava, &folder.tokenizer_path, &folder.processor, dir)?;
    save_scalar_head(&rm.head, dir)?;
    io::write_json(&dir.join(REWARD_INFO), &info)?;
    Ok(())
}

/// Sequences of a batch of pairs: the chosen responses, then the rejected ones, each pair's
/// captions shuffled once by `rng`, with which of their tokens are captions; and the image row of
/// each sequence.
fn pair_batch(
    folder: &ModelFolder,
    prompt: GradingPrompt,
    pairs: &[&PrefPair],
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<MarkedIds>, Vec<usize>), TrainError> {
    let mut chosen = Vec::with_capacity(pairs.len());
    let mut rejected = Vec::with_capacity(pairs.len());
    for p in pairs {
        let mut caps = p.captions.clone();
        if let Some(c) = caps.as_mut() {
            c.shuffle(rng);
        }
        chosen.push(encode_marking_facts(folder, prompt, &p.turns, &p.chosen, caps.as_deref())?);
        rejected.push(encode_marking_facts(folder, prompt, &p.turns, &p.rejected, caps.as_deref())?);
    }
    let rows: Vec<usize> = pairs.iter().chain(pairs).map(|p| p.image).collect();
    chosen.extend(rejected);
    Ok((chosen, rows))
}

/// What a batch of pairs gives: the loss to minimise, each pair's margin, and the mean negative
/// log-likelihood of the chosen responses' caption tokens when `facts_lm_coef` puts it in the
/// loss.
struct BatchLoss {
    loss: Tensor<1>,
    margins: Vec<f32>,
    facts_nll: Option<f32>,
}

/// The weights a batch's loss and rewards take from the config: centring, the captions'
/// next-token loss, and the captions' log-probs in the reward.
#[derive(Clone, Copy)]
struct Coefs {
    center: f64,
    facts_lm: f64,
    facts_likelihood: f64,
}

impl Coefs {
    /// The config's weights; the facts' two are 0 without facts, where no token is a caption and
    /// the blanked pass would cost a forward pass for nothing.
    fn of(cfg: &RewardConfig) -> Coefs {
        let facts = if cfg.facts { 1.0 } else { 0.0 };
        Coefs {
            center: cfg.center_coef,
            facts_lm: facts * cfg.facts_lm_coef,
            facts_likelihood: facts * cfg.facts_likelihood,
        }
    }
}

/// Loss and margins of a batch of pairs: Bradley-Terry with centring, plus `facts_lm` times the
/// next-token loss of the captions after the chosen responses (averaged over their tokens) when
/// it is above 0.
fn batch_loss(
    rm: &RewardModel,
    (folder, prompt): (&ModelFolder, GradingPrompt),
    table: &ImageTable,
    pairs: &[&PrefPair],
    coefs: Coefs,
    rng: &mut ChaCha8Rng,
) -> Result<BatchLoss, TrainError> {
    let (seqs, rows) = pair_batch(folder, prompt, pairs, rng)?;
    let b = pairs.len();
    let device = rm.llava.device();
    let images = table.input(&rows, rm.llava.config.vision.image_size, &device);
    // Caption tokens of the chosen sequences (the first b), token 0 never being a target.
    let tokens: usize = seqs[..b].iter().map(|(_, f)| f.iter().skip(1).filter(|&&x| x).count()).sum();
    let lm = coefs.facts_lm > 0.0 && tokens > 0;
    let (r, facts_logp) = rm.rewards(&seqs, images, coefs.facts_likelihood, lm)?; // r: [2b]
    let (chosen, rejected) = (r.clone().narrow(0, 0, b), r.narrow(0, b, b));
    let margins = host(chosen.clone() - rejected.clone())?;
    let mut loss = bradley_terry_loss(chosen, rejected, coefs.center);
    let mut facts_nll = None;
    if let (true, Some(logp)) = (lm, facts_logp) {
        let nll = logp.narrow(0, 0, b).sum().neg().div_scalar(tokens as f64);
        facts_nll = Some(nll.clone().into_scalar::<f32>());
        loss = loss + nll.mul_scalar(coefs.facts_lm);
    }
    Ok(BatchLoss { loss, margins, facts_nll })
}

/// Held-out loss and metrics; captions are shuffled by a fixed stream so evals compare.
fn evaluate(
    rm: &RewardModel,
    folder: &ModelFolder,
    table: &ImageTable,
    pairs: &[PrefPair],
    cfg: &RewardConfig,
) -> Result<(f32, PairMetrics), TrainError> {
    let rm = rm.valid();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(0xE7A1));
    let (mut loss, mut margins) = (0.0, Vec::with_capacity(pairs.len()));
    let coefs = Coefs { facts_lm: 0.0, ..Coefs::of(cfg) };
    for chunk in pairs.chunks(cfg.batch_size.max(1)) {
        let refs: Vec<&PrefPair> = chunk.iter().collect();
        let l = batch_loss(&rm, (folder, cfg.prompt), table, &refs, coefs, &mut rng)?;
        loss += l.loss.into_scalar::<f32>() * chunk.len() as f32;
        margins.extend(l.margins);
    }
    Ok((loss / pairs.len().max(1) as f32, pair_metrics(&margins, pairs)))
}

/// What a finished reward run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// Last training loss.
    pub loss: f32,
    /// Held-out metrics of the returned model, if there are held-out pairs.
    pub eval: Option<PairMetrics>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The reward model folder.
    pub model: PathBuf,
}

/// Reads the config file with overrides.
pub fn load_config(path: &Path, sets: &[String]) -> Result<RewardConfig, TrainError> {
    let cfg: RewardConfig = config::load(path, sets)?;
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(TrainError::Setting("batch_size and epochs must be non-zero".into()));
    }
    for (name, c) in [("facts_lm_coef", cfg.facts_lm_coef), ("facts_likelihood", cfg.facts_likelihood)] {
        if !(c.is_finite() && c >= 0.0) {
            return Err(TrainError::Setting(format!("{name} {c} must be 0 or more")));
        }
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(TrainError::Setting(format!("val_fraction {} is not in [0, 1)", cfg.val_fraction)));
    }
    Ok(cfg)
}

/// Progress the run keeps across a resume: the best held-out accuracy and evals since.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Best {
    accuracy: f64,
    stale: usize,
}

/// Trains a reward model, resuming from the run folder's checkpoint with `resume`; `halt_after`
/// stops after that many steps of this invocation (at a checkpoint).
pub fn train(cfg: &RewardConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let run = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);
    let coefs = Coefs::of(cfg);
    let info = RewardInfo { facts: cfg.facts, prompt: cfg.prompt, facts_likelihood: coefs.facts_likelihood };

    // 1. Model and head: from the checkpoint, or the init folder (its head if it has one).
    let checkpoint = if resume { run.checkpoint() } else { None };
    let source = weights_source(checkpoint.as_deref(), &cfg.init, cfg.lora.is_some());
    let folder = ModelFolder::load(&source, &device)?;
    let head = if source.join("scalar_head.safetensors").exists() {
        load_scalar_head(&source, &device)?
    } else {
        ScalarHead::init(folder.model.config.text.hidden_size, false, &device)
    };
    let mut rm =
        RewardModel { llava: prepare(folder.model.clone(), &cfg.trainable, cfg.lora.as_ref())?, head };

    // 2. Pairs, the held-out split, and the image table.
    let captions = cfg.captions.as_deref().filter(|_| cfg.facts).map(CaptionIndex::load).transpose()?;
    let mut index = BTreeMap::new();
    let all = load_pairs(&cfg.train, cfg.facts, captions.as_ref(), &mut index)?;
    let val =
        cfg.val.as_ref().map(|v| load_pairs(v, cfg.facts, captions.as_ref(), &mut index)).transpose()?;
    let (train, val) = train_and_val(all, val, index.len(), cfg.val_fraction, cfg.seed);
    if train.is_empty() {
        return Err(TrainError::Data { file: cfg.train.clone(), message: "no training pairs".into() });
    }
    // Check every record encodes (one image placeholder) before spending time on training.
    for p in train.iter().chain(&val) {
        encode_marking_facts(&folder, cfg.prompt, &p.turns, &p.chosen, p.captions.as_deref()).map_err(
            |e| TrainError::Data { file: cfg.train.clone(), message: format!("record {}: {e}", p.id) },
        )?;
    }
    let table =
        ImageTable::build(&rm.llava, &folder.processor, &index, !cfg.trainable.contains(&Part::Vision))?;

    // 3. Optimiser, schedule, resume.
    let lens: Vec<usize> = train.iter().map(|p| p.chosen.len() + p.rejected.len()).collect();
    let per_epoch = train.len().div_ceil(cfg.batch_size);
    let total = (cfg.epochs * per_epoch).max(1).min(cfg.max_steps.unwrap_or(usize::MAX));
    let mut optim = adamw(cfg.weight_decay).init();
    let (mut step, mut best) = (0, Best::default());
    if let Some(ck) = &checkpoint {
        let state;
        (rm, optim, state) = resume_checkpoint(ck, rm, optim, cfg.lora.is_some())?;
        step = state_step(&state);
        best = serde_json::from_value(state["best"].clone()).unwrap_or_default();
    }
    let mut metrics = run.metrics(checkpoint.as_ref().map(|_| step))?;
    let bar = progress_bar(total, step, &cfg.out);
    let best_dir = run.dir.join("best");

    // 4. The loop.
    let (mut last_loss, mut epoch_cache) = (f32::NAN, None::<(usize, Vec<Vec<usize>>)>);
    let stop = halt_after.map_or(total, |n| (step + n).min(total));
    let mut early = false;
    while step < stop && !early {
        let epoch = step / per_epoch;
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((epoch, epoch_batches(&lens, cfg.batch_size, cfg.seed, epoch)));
        }
        let batch: Vec<&PrefPair> = match &epoch_cache {
            Some((_, batches)) => batches[step % per_epoch].iter().map(|&i| &train[i]).collect(),
            None => return Err(TrainError::Setting("no batches".into())),
        };
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (step as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let BatchLoss { loss, margins, facts_nll } =
            batch_loss(&rm, (&folder, cfg.prompt), &table, &batch, coefs, &mut rng)?;
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFinite { step, value, checkpoint: run.dir.join("checkpoint") });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &rm);
        let norm = clip_global_norm(&rm, &mut grads, cfg.grad_clip);
        let lr = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr, cfg.min_lr);
        rm = optim.step(lr, rm, grads);
        step += 1;
        last_loss = value;
        bar.set_position(step as u64);
        if step % cfg.log_every.max(1) == 0 || step == total {
            let acc = margins.iter().filter(|&&m| m > 0.0).count() as f64 / margins.len() as f64;
            bar.set_message(format!("loss {value:.4} | acc {acc:.2}"));
            let mut line = serde_json::json!({"step": step, "loss": value, "accuracy": acc, "lr": lr, "grad_norm": norm});
            if let Some(nll) = facts_nll {
                line["facts_nll"] = nll.into();
            }
            metrics.log(&line)?;
        }
        if !val.is_empty() && (step % cfg.eval_every.max(1) == 0 || step == total) {
            let (loss, m) = evaluate(&rm, &folder, &table, &val, cfg)?;
            say(
                &bar,
                format!(
                    "step {step}/{total}: held-out accuracy {:.3} (hallucination pairs {:.3} of {}), margin {:.2}, loss {loss:.4}",
                    m.all.accuracy, m.all.hallucination_accuracy, m.all.hallucination_pairs, m.margin_mean
                ),
            );
            metrics.log(&serde_json::json!({"step": step, "eval_loss": loss, "eval": m}))?;
            if m.all.accuracy > best.accuracy || !best_dir.exists() {
                best = Best { accuracy: m.all.accuracy, stale: 0 };
                write_folder(&best_dir, |d| save_reward_folder(&rm, &folder, info, d))?;
            } else {
                best.stale += 1;
                early = cfg.patience.is_some_and(|p| best.stale >= p);
            }
        }
        if step % cfg.checkpoint_every.max(1) == 0 || step == stop || early {
            let state = serde_json::json!({"step": step, "best": best});
            save_checkpoint(&run, &rm, &optim, &state, cfg.lora.is_some(), |dir| {
                save_reward_folder(&rm, &folder, info, dir)
            })?;
        }
    }
    bar.finish();
    if step < total && !early {
        return Ok(Summary {
            steps: step,
            loss: last_loss,
            eval: None,
            seconds: start.elapsed().as_secs_f64(),
            model: run.dir.join("checkpoint"),
        });
    }
    // 5. The final model: the best held-out one when there was an eval, else the last.
    let final_dir = run.dir.join("final");
    if best_dir.exists() {
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io::at(&final_dir))?;
        }
        std::fs::rename(&best_dir, &final_dir).map_err(io::at(&final_dir))?;
    } else {
        write_folder(&final_dir, |d| save_reward_folder(&rm, &folder, info, d))?;
    }
    let eval = if val.is_empty() {
        None
    } else {
        let rf = RewardFolder::load(&final_dir, &device)?;
        let rm = RewardModel { llava: rf.folder.model, head: rf.head };
        let (_, m) = evaluate(&rm, &folder, &table, &val, cfg)?;
        io::write_json(&final_dir.join("eval.json"), &m)?;
        Some(m)
    };
    Ok(Summary {
        steps: step,
        loss: last_loss,
        eval,
        seconds: start.elapsed().as_secs_f64(),
        model: final_dir,
    })
}

/// Writes a folder under `{dir}.partial`, then swaps it in for `dir`.
fn write_folder(dir: &Path, write: impl FnOnce(&Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let partial = dir.with_extension("partial");
    for p in [&partial, dir] {
        if p.exists() {
            std::fs::remove_dir_all(p).map_err(io::at(p))?;
        }
    }
    std::fs::create_dir_all(&partial).map_err(io::at(&partial))?;
    write(&partial)?;
    std::fs::rename(&partial, dir).map_err(io::at(dir))?;
    Ok(())
}

/// One input line of `factrl score --reward-model`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreLine {
    image: PathBuf,
    #[serde(default)]
    conversations: Option<Vec<Turn>>,
    #[serde(default)]
    prompt: Option<String>,
    response: String,
    #[serde(default)]
    captions: Option<Vec<String>>,
}

/// `factrl score --reward-model`: the reward of each line's response. Lines are
/// `{"image", "prompt" | "conversations", "response", "captions"?}` (captions, in the order given,
/// are required by a fact-augmented model); output lines `{"reward"}`.
pub fn score_file(rm_dir: &Path, input: &Path, output: &Path) -> Result<(), TrainError> {
    let device = inference_device();
    let rf = RewardFolder::load(rm_dir, &device)?;
    let base = input.parent().unwrap_or(Path::new("."));
    let lines: Vec<ScoreLine> = io::read_jsonl(input)?;
    let side = rf.folder.model.config.vision.image_size;
    let mut rows = Vec::with_capacity(lines.len());
    for (c, chunk) in lines.chunks(16).enumerate() {
        let (mut seqs, mut pixels) = (Vec::new(), Vec::new());
        for (k, l) in chunk.iter().enumerate() {
            let err = |message: String| TrainError::Data {
                file: input.to_path_buf(),
                message: format!("line {}: {message}", c * 16 + k + 1),
            };
            let turns = match (&l.conversations, &l.prompt) {
                (Some(t), None) => t.clone(),
                (None, Some(p)) => vec![Turn::human(p.clone())],
                _ => return Err(err("give exactly one of `prompt` and `conversations`".into())),
            };
            if rf.info.facts && l.captions.is_none() {
                return Err(err(format!("{} is fact-augmented: give `captions`", rm_dir.display())));
            }
            seqs.push(rf.encode(&turns, &l.response, l.captions.as_deref()).map_err(|e| err(e.to_string()))?);
            pixels.push(rf.folder.processor.process_file(&base.join(&l.image))?);
        }
        let images = ImageInput::Pixels(pixel_batch(pixels, side, side, &device));
        rows.extend(rf.rewards(&seqs, images)?.into_iter().map(|r| serde_json::json!({"reward": r})));
    }
    Ok(io::write_jsonl(output, &rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reward_info_without_a_prompt_is_llava_rlhf() {
        let old: RewardInfo = serde_json::from_str(r#"{"facts": true}"#).unwrap();
        assert_eq!(old.prompt, GradingPrompt::LlavaRlhf);
        let short: RewardInfo = serde_json::from_str(r#"{"facts": false, "prompt": "short"}"#).unwrap();
        assert_eq!(short.prompt, GradingPrompt::Short);
    }

    #[test]
    fn facts_likelihood_adds_the_captions_log_probs_without_the_image() {
        use crate::model::LlavaConfig;
        let device = inference_device();
        let config = LlavaConfig::tiny(20);
        let llava = Llava::init(&config, &device).unwrap();
        let rm = RewardModel { llava, head: ScalarHead::init(config.text.hidden_size, false, &device) };
        // Rows of different lengths: BOS, the image, text, and the last three tokens captions.
        let row = |text: &[u32]| {
            let mut ids = vec![1];
            ids.extend(std::iter::repeat_n(config.image_token_id, config.image_features()));
            ids.extend(text);
            let marks = (0..ids.len()).map(|j| j + 3 >= ids.len()).collect();
            (ids, marks)
        };
        let inputs = vec![row(&[3, 4, 5, 6, 7, 8, 9]), row(&[3, 10, 6, 7, 8])];
        let side = config.vision.image_size;
        let image = |v: f32| ImageInput::Pixels(Tensor::<4>::full([2, 3, side, side], v, &device));
        let (head, none) = rm.rewards(&inputs, image(0.5), 0.0, false).unwrap();
        assert!(none.is_none());
        let (r, facts) = rm.rewards(&inputs, image(0.5), 2.0, false).unwrap();
        let (head, r, facts) = (host(head).unwrap(), host(r).unwrap(), host(facts.unwrap()).unwrap());
        // By hand: the log-probs of the caption tokens, the image all zeros.
        let ids: Vec<Vec<u32>> = inputs.iter().map(|(ids, _)| ids.clone()).collect();
        let batch = TextBatch::pad(&ids, 0, PaddingSide::Right);
        let logp = host(rm.llava.token_logprobs(&batch, image(0.0)).unwrap()).unwrap();
        for (i, (ids, _)) in inputs.iter().enumerate() {
            let want: f32 = (ids.len() - 4..ids.len() - 1).map(|j| logp[i * (batch.len - 1) + j]).sum();
            assert!((facts[i] - want).abs() < 1e-4, "row {i}: {} against {want}", facts[i]);
            assert!((r[i] - (head[i] + 2.0 * want)).abs() < 1e-4, "row {i}");
        }
        // Another image moves the head, not the captions' term.
        let (other, again) = rm.rewards(&inputs, image(-0.5), 0.0, true).unwrap();
        assert!(host(other).unwrap().iter().zip(&head).any(|(a, b)| (a - b).abs() > 1e-6));
        assert_eq!(host(again.unwrap()).unwrap(), facts);
    }

    #[test]
    fn bradley_terry_by_hand() {
        // margins (1, 0): -ln sigmoid(1) = 0.313262, -ln sigmoid(0) = 0.693147, mean 0.503204;
        // centring: mean(r_c + r_r) = mean(1 + 0, 0 + 0) = 0.5, times 1e-3 = 0.0005.
        let device = inference_device();
        let c = Tensor::<1>::from_floats([1.0, 0.0], &device);
        let r = Tensor::<1>::from_floats([0.0, 0.0], &device);
        let loss: f32 = bradley_terry_loss(c.clone(), r.clone(), 1e-3).into_scalar();
        assert!((loss - 0.503_704).abs() < 1e-5, "{loss}");
        // Equal rewards: ln 2 whatever their level, plus the centring term.
        let loss: f32 = bradley_terry_loss(c.clone(), c, 0.0).into_scalar();
        assert!((loss - std::f32::consts::LN_2).abs() < 1e-6);
    }

    fn pair(image: usize, hallucination_pair: bool, task: Option<Task>) -> PrefPair {
        PrefPair {
            id: String::new(),
            turns: Vec::new(),
            chosen: String::new(),
            rejected: String::new(),
            captions: None,
            image,
            hallucination_pair,
            task,
            built: false,
        }
    }

    #[test]
    fn metrics_count_hallucination_pairs_and_ties_as_wrong() {
        let (d, c) = (Some(Task::Description), Some(Task::Counting));
        let pairs =
            [pair(0, true, d), pair(0, true, c), pair(0, false, d), pair(0, false, None), pair(0, true, d)];
        let m = pair_metrics(&[2.0, -1.0, 0.0, 0.5, 3.0], &pairs);
        assert_eq!((m.all.pairs, m.all.hallucination_pairs), (5, 3));
        assert!((m.all.accuracy - 0.6).abs() < 1e-12);
        assert!((m.all.hallucination_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.margin_mean - 0.9).abs() < 1e-6);
        // sorted -1, 0, 0.5, 2, 3: p10 at index round(0.4) = 0, p50 at 2, p90 at round(3.6) = 4
        assert_eq!((m.margin_p10, m.margin_p50, m.margin_p90), (-1.0, 0.5, 3.0));
        // descriptions: margins 2, 0 (tie), 3, two of them hallucination pairs; counting: -1; the
        // pair without a task only counts overall
        let desc =
            Accuracy { pairs: 3, accuracy: 2.0 / 3.0, hallucination_pairs: 2, hallucination_accuracy: 1.0 };
        let count = Accuracy { pairs: 1, accuracy: 0.0, hallucination_pairs: 1, hallucination_accuracy: 0.0 };
        let want = BTreeMap::from([("counting".to_string(), count), ("description".to_string(), desc)]);
        assert_eq!(m.by_task, want);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["hallucination_pairs"], 3, "overall figures stay at the top level: {json}");
    }

    #[test]
    fn published_records_parse_with_missing_and_extra_fields() {
        let r: PrefRecord = serde_json::from_str(
            r#"{"id": 7, "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}],
                "output_1": {"from": "llava", "value": "a"}, "output_2": {"from": "llava", "value": "b"},
                "preference": 2, "hallucination": 1, "extra": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!((r.id.as_str(), r.preference, r.hallucination), ("7", 2, true));
        assert_eq!((r.hallucinated_1, r.captions), (None, None));
    }

    #[test]
    fn copy_pairs_need_facts_and_are_built() {
        // Three records: judged, injected, copy. With facts all three load, the last two built;
        // without, the copy pair (decided by its facts alone) is left out.
        let tmp = tempfile::tempdir().unwrap();
        let record = |extra: serde_json::Value| {
            let mut r = serde_json::json!({"id": "q", "image": "a.png", "preference": 1,
                "conversations": [{"from": "human", "value": "<image>\nIs there a red circle?"}],
                "output_1": {"value": "Yes."}, "output_2": {"value": "No."},
                "captions": ["The answer is: Yes."]});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            r
        };
        let records = [
            record(serde_json::json!({})),
            record(serde_json::json!({"injected": true})),
            record(serde_json::json!({"copy": true, "image": "b.png"})),
        ];
        let file = tmp.path().join("prefs.json");
        std::fs::write(&file, serde_json::to_string(&records).unwrap()).unwrap();
        let load = |facts| {
            let mut index = BTreeMap::new();
            let pairs = load_pairs(&file, facts, None, &mut index).unwrap();
            (pairs.iter().map(|p| (p.built, p.captions.is_some())).collect::<Vec<_>>(), index.len())
        };
        assert_eq!(load(true), (vec![(false, true), (true, true), (true, true)], 2));
        // The copy pair's image keeps its row: the held-out split draws from the same rows.
        assert_eq!(load(false), (vec![(false, false), (true, false)], 2));
    }

    #[test]
    fn split_holds_out_whole_images() {
        let pairs: Vec<PrefPair> = (0..40).map(|i| pair(i % 10, false, None)).collect();
        let (train, val) = split_by_image(pairs, 10, 0.2, 1);
        assert_eq!((train.len(), val.len()), (32, 8));
        let held: BTreeSet<usize> = val.iter().map(|p| p.image).collect();
        assert_eq!(held.len(), 2);
        assert!(train.iter().all(|p| !held.contains(&p.image)));
    }

    #[test]
    fn built_pairs_only_train() {
        // Half of each image's pairs built: the same images are held out, their built pairs gone.
        let pairs = || -> Vec<PrefPair> {
            (0..40).map(|i| PrefPair { built: (i / 10) % 2 == 1, ..pair(i % 10, false, None) }).collect()
        };
        let (train, val) = train_and_val(pairs(), None, 10, 0.2, 1);
        let (_, all_val) = split_by_image(pairs(), 10, 0.2, 1);
        assert_eq!((train.len(), val.len()), (32, 4));
        assert!(val.iter().all(|p| !p.built) && train.iter().filter(|p| p.built).count() == 16);
        assert_eq!(
            val.iter().map(|p| p.image).collect::<BTreeSet<_>>(),
            all_val.iter().map(|p| p.image).collect()
        );
        let (train, val) = train_and_val(pairs(), Some(pairs()), 10, 0.2, 1);
        assert_eq!((train.len(), val.len()), (40, 20));
    }
}
