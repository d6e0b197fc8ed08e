//! LLaVA's stages 1 and 2: feature-alignment pretraining and supervised fine-tuning. Both are the
//! same loop (cross-entropy on the assistant's tokens of vicuna_v1 conversations); they differ in
//! their data and in which parts of the model train (`trainable`).

pub use super::common::TrainError;
use super::common::{
    ImageTable, load_tokenizer, new_tiny_model, progress_bar, resume_checkpoint, save_checkpoint,
    save_model_folder, say, state_step, weights_source,
};
use super::config;
use super::optim::{adamw, clip_global_norm};
use super::run::RunDir;
use super::schedule::warmup_cosine;
use crate::backend::training_device;
use crate::data::chat;
use crate::data::formats::{Conversation, Task};
use crate::io;
use crate::model::batch::PaddingSide;
use crate::model::checkpoint::load_llava;
use crate::model::lora::{LoraConfig, apply_lora};
use crate::model::processor::ClipProcessor;
use crate::model::{Llava, LlavaConfig, TextBatch};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

/// A part of the model that can train or stay frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The vision tower.
    Vision,
    /// The projector.
    Projector,
    /// The decoder and LM head.
    Decoder,
}

/// How the cross-entropy of a batch averages over its target tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossAverage {
    /// Mean over all target tokens of the batch (LLaVA).
    #[default]
    Token,
    /// Mean over examples of each example's mean: short answers weigh as much as long ones.
    Sequence,
}

/// `factrl train pretrain | sft` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// Run folder (config, metrics, checkpoint, `final/` model).
    pub out: PathBuf,
    /// LLaVA conversation JSON to train on; image paths are relative to its folder.
    pub train: PathBuf,
    /// Held-out conversations for the eval loss.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Held-out records per eval.
    pub val_records: usize,
    /// Train and evaluate only on records whose `task` is one of these (a focus phase, e.g.
    /// `["existence"]`); empty (the default): every record.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// Model folder to start from; without it, a new `LlavaConfig::tiny` model over `tokenizer`.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// `tokenizer.json` of a new model.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Image side of a new model, pixels (images are resized to it); default `LlavaConfig::tiny`'s.
    /// A model from `init` keeps its own.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Patch side of a new model, pixels; default `LlavaConfig::tiny`'s.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Encoder layers of a new model's vision tower; default `LlavaConfig::tiny`'s.
    #[serde(default)]
    pub vision_layers: Option<usize>,
    /// Parts that train: any of "vision", "projector", "decoder".
    pub trainable: Vec<Part>,
    /// Train the decoder through LoRA adapters instead of all its weights (`[lora]` with `rank`,
    /// `alpha`, optional `targets`); the other parts in `trainable` train in full. Saved models
    /// have the adapters merged.
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
    /// Loss averaging, `token` (default) or `sequence`.
    #[serde(default)]
    pub loss_average: LossAverage,
    /// Conversations per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimiser steps, if set.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Steps between metric lines.
    pub log_every: usize,
    /// Steps between eval losses.
    pub eval_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

/// One training sequence: ids with the image placeholder expanded, targets, and its image.
struct Example {
    ids: Vec<u32>,
    target: Vec<bool>,
    image: usize,
}

/// Conversations of a file as training examples; images go into `images` (path -> index).
fn load_examples(
    file: &Path,
    tasks: &[Task],
    limit: Option<usize>,
    tok: &Tokenizer,
    model: &LlavaConfig,
    images: &mut BTreeMap<PathBuf, usize>,
) -> Result<Vec<Example>, TrainError> {
    let records: Vec<Conversation> = io::read_json(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let per_image = model.image_features();
    let data_err = |message: String| TrainError::Data { file: file.to_path_buf(), message };
    let mut out = Vec::new();
    let chosen = records.iter().filter(|r| tasks.is_empty() || r.task.is_some_and(|t| tasks.contains(&t)));
    for r in chosen.take(limit.unwrap_or(usize::MAX)) {
        let enc =
            chat::encode(tok, &r.conversations).map_err(|e| data_err(format!("record {}: {e}", r.id)))?;
        let placeholders = enc.ids.iter().filter(|&&i| i == model.image_token_id).count();
        if placeholders != 1 {
            return Err(data_err(format!(
                "record {}: {placeholders} <image> placeholders, expected 1",
                r.id
            )));
        }
        let (mut ids, mut target) = (Vec::new(), Vec::new());
        for (&i, &t) in enc.ids.iter().zip(&enc.target) {
            let n = if i == model.image_token_id { per_image } else { 1 };
            ids.extend(std::iter::repeat_n(i, n));
            target.extend(std::iter::repeat_n(t, n));
        }
        let path = base.join(&r.image);
        let next = images.len();
        let image = *images.entry(path).or_insert(next);
        out.push(Example { ids, target, image });
    }
    Ok(out)
}

/// Batches of one epoch: shuffled, then grouped by length within windows of 16 batches so padding
/// stays small while batches still mix, then the batch order shuffled. Deterministic in (seed,
/// epoch).
pub fn epoch_batches(lens: &[usize], batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch * 16) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lens[i]);
        batches.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Mean cross-entropy of the target tokens of a batch.
fn batch_loss(
    model: &Llava,
    examples: &[&Example],
    table: &ImageTable,
    pad: u32,
    average: LossAverage,
) -> Result<(Tensor<1>, usize), TrainError> {
    let device = model.device();
    let seqs: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
    let batch = TextBatch::pad(&seqs, pad, PaddingSide::Right);
    let (b, t) = (batch.batch, batch.len);
    let targets: Vec<&[bool]> = examples.iter().map(|e| e.target.as_slice()).collect();
    let (weights, tokens) = loss_weights(&targets, t, average);
    let rows: Vec<usize> = examples.iter().map(|e| e.image).collect();
    let images = table.input(&rows, model.config.vision.image_size, &device);
    let logp = model.token_logprobs(&batch, images)?; // [b, t - 1]
    let w = Tensor::<2>::from_data(TensorData::new(weights, [b, t - 1]), &device);
    Ok((logp.mul(w).sum().neg(), tokens))
}

/// Weight of each log-prob column (`[b, t - 1]`, column j scores token j + 1) in the loss, and
/// the number of target tokens. `Token`: every target token of the batch weighs the same (LLaVA's
/// mean). `Sequence`: each example weighs the same, spread over its target tokens, so a one-word
/// answer counts as much as a long description.
pub fn loss_weights(targets: &[&[bool]], t: usize, average: LossAverage) -> (Vec<f32>, usize) {
    let b = targets.len();
    let mut weights = vec![0f32; b * (t - 1)];
    let tokens: usize = targets.iter().map(|r| r.iter().skip(1).filter(|&&x| x).count()).sum();
    for (row, target) in targets.iter().enumerate() {
        let n = target.iter().skip(1).filter(|&&x| x).count();
        let w = match average {
            LossAverage::Token => 1.0 / tokens.max(1) as f32,
            LossAverage::Sequence => 1.0 / (n.max(1) * b) as f32,
        };
        for (j, &is_target) in target.iter().enumerate().skip(1) {
            if is_target {
                weights[row * (t - 1) + j - 1] = w;
            }
        }
    }
    (weights, tokens)
}

/// The model as it trains: the parts not in `trainable` frozen, and with `lora`, the decoder
/// frozen but for adapters on its projections.
pub fn prepare(model: Llava, trainable: &[Part], lora: Option<&LoraConfig>) -> Result<Llava, TrainError> {
    let Some(lora) = lora else { return Ok(freeze(model, trainable)) };
    if !trainable.contains(&Part::Decoder) {
        return Err(TrainError::Setting("`lora` adapts the decoder: list \"decoder\" in `trainable`".into()));
    }
    // apply_lora freezes every base weight; the other trainable parts train in full.
    let mut model = apply_lora(model, lora)?;
    if trainable.contains(&Part::Vision) {
        model.vision_tower = model.vision_tower.unfreeze();
    }
    if trainable.contains(&Part::Projector) {
        model.multi_modal_projector = model.multi_modal_projector.unfreeze();
    }
    Ok(model)
}

/// Freezes the parts that do not train.
pub fn freeze(mut model: Llava, trainable: &[Part]) -> Llava {
    if !trainable.contains(&Part::Vision) {
        model.vision_tower = model.vision_tower.freeze();
    }
    if !trainable.contains(&Part::Projector) {
        model.multi_modal_projector = model.multi_modal_projector.freeze();
    }
    if !trainable.contains(&Part::Decoder) {
        model.language_model = model.language_model.freeze();
        model.lm_head = model.lm_head.map(Module::freeze);
    }
    model
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// Last training loss.
    pub loss: f32,
    /// Last eval loss, if a val set was given.
    pub eval_loss: Option<f32>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The trained model folder.
    pub model: PathBuf,
}

/// Reads the config file with overrides.
pub fn load_config(path: &Path, sets: &[String]) -> Result<SftConfig, TrainError> {
    Ok(config::load(path, sets)?)
}

/// Trains, resuming from the run folder's checkpoint with `resume`. With `halt_after`, stops after
/// that many steps of this invocation (at a checkpoint), for time-sliced or preemptible runs; the
/// schedule is the full run's either way.
pub fn train(cfg: &SftConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    if cfg.batch_size == 0 || cfg.grad_accum == 0 || cfg.epochs == 0 || cfg.trainable.is_empty() {
        return Err(TrainError::Setting(
            "batch_size, grad_accum, epochs and trainable must be non-zero / non-empty".into(),
        ));
    }
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let run = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);

    // 1. Model, tokenizer, processor: from the checkpoint, the init folder, or new. A LoRA run
    // starts again from `init` and then its checkpoint gives back the adapters.
    let checkpoint = if resume { run.checkpoint() } else { None };
    let source = match &cfg.init {
        Some(init) => Some(weights_source(checkpoint.as_deref(), init, cfg.lora.is_some())),
        None => checkpoint.clone().filter(|_| cfg.lora.is_none()),
    };
    let (model, tokenizer_path, processor) = match &source {
        Some(dir) => (
            load_llava(dir, &device)?,
            dir.join("tokenizer.json"),
            ClipProcessor::from_file(&dir.join("preprocessor_config.json"))?,
        ),
        None => {
            let tok_path = cfg.tokenizer.clone().ok_or_else(|| {
                TrainError::Setting("set `init` (a model folder) or `tokenizer` (for a new model)".into())
            })?;
            let (model, processor) =
                new_tiny_model(&tok_path, cfg.image_size, cfg.patch_size, cfg.vision_layers, &device)?;
            (model, tok_path, processor)
        }
    };
    let tok = load_tokenizer(&tokenizer_path)?;
    let model = prepare(model, &cfg.trainable, cfg.lora.as_ref())?;
    let pad = model.config.pad_token_id.or(model.config.eos_token_id).unwrap_or(0);

    // 2. Data, and the image table (features once when the tower is frozen).
    let mut image_index = BTreeMap::new();
    let nonempty = |examples: Vec<Example>, file: &Path| {
        if !examples.is_empty() {
            return Ok(examples);
        }
        let message = if cfg.tasks.is_empty() {
            "no records".into()
        } else {
            format!("no records of tasks {:?}", cfg.tasks)
        };
        Err(TrainError::Data { file: file.to_path_buf(), message })
    };
    let train = load_examples(&cfg.train, &cfg.tasks, None, &tok, &model.config, &mut image_index)?;
    let train = nonempty(train, &cfg.train)?;
    let val = match &cfg.val {
        Some(v) => nonempty(
            load_examples(v, &cfg.tasks, Some(cfg.val_records), &tok, &model.config, &mut image_index)?,
            v,
        )?,
        None => Vec::new(),
    };
    let mut processor = processor;
    if source.is_none() {
        // A new model: normalise with the statistics of (up to 512 of) its training images.
        let sample: Vec<PathBuf> = image_index.keys().take(512).cloned().collect();
        processor.fit_normalisation(&sample)?;
    }
    let table = ImageTable::build(&model, &processor, &image_index, !cfg.trainable.contains(&Part::Vision))?;

    // 3. Optimiser and schedule.
    let lens: Vec<usize> = train.iter().map(|e| e.ids.len()).collect();
    let micro_per_epoch = lens.len().div_ceil(cfg.batch_size);
    let total =
        (cfg.epochs * micro_per_epoch / cfg.grad_accum).max(1).min(cfg.max_steps.unwrap_or(usize::MAX));
    let mut optim = adamw(cfg.weight_decay).init();
    let (mut model, mut step) = (model, 0);
    if let Some(ck) = &checkpoint {
        let state;
        (model, optim, state) = resume_checkpoint(ck, model, optim, cfg.lora.is_some())?;
        step = state_step(&state);
    }
    let mut metrics = run.metrics(checkpoint.as_ref().map(|_| step))?;
    let bar = progress_bar(total, step, &cfg.out);

    // 4. The loop.
    let (mut epoch_cache, mut last_loss, mut last_eval) = (None::<(usize, Vec<Vec<usize>>)>, f32::NAN, None);
    let (mut tokens_seen, mut timer) = (0usize, Instant::now());
    let stop = halt_after.map_or(total, |n| (step + n).min(total));
    while step < stop {
        let mut acc = GradientsAccumulator::new();
        let mut loss_sum = 0.0;
        for k in 0..cfg.grad_accum {
            let micro = step * cfg.grad_accum + k;
            let epoch = micro / micro_per_epoch;
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, epoch_batches(&lens, cfg.batch_size, cfg.seed, epoch)));
            }
            let batches = &epoch_cache
                .as_ref()
                .map(|(_, b)| b)
                .ok_or_else(|| TrainError::Setting("no batches".into()))?;
            let examples: Vec<&Example> =
                batches[micro % micro_per_epoch].iter().map(|&i| &train[i]).collect();
            let (loss, tokens) = batch_loss(&model, &examples, &table, pad, cfg.loss_average)?;
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step, value, checkpoint: run.dir.join("checkpoint") });
            }
            loss_sum += value / cfg.grad_accum as f32;
            tokens_seen += tokens;
            let grads =
                GradientsParams::from_grads(loss.div_scalar(cfg.grad_accum as f32).backward(), &model);
            acc.accumulate(&model, grads);
        }
        let mut grads = acc.grads();
        let norm = clip_global_norm(&model, &mut grads, cfg.grad_clip);
        let lr = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr, cfg.min_lr);
        model = optim.step(lr, model, grads);
        step += 1;
        last_loss = loss_sum;
        bar.set_position(step as u64);
        if step % cfg.log_every.max(1) == 0 || step == total {
            let tps = tokens_seen as f64 / timer.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss_sum:.4} | {tps:.0} tok/s"));
            metrics.log(&serde_json::json!({"step": step, "loss": loss_sum, "lr": lr, "grad_norm": norm, "tokens_per_s": tps}))?;
            (tokens_seen, timer) = (0, Instant::now());
        }
        if !val.is_empty() && (step % cfg.eval_every.max(1) == 0 || step == total) {
            let e = eval_loss(&model, &val, &table, pad, cfg.batch_size)?;
            let line = format!("step {step}/{total}: train loss {loss_sum:.4}, eval loss {e:.4}");
            say(&bar, line);
            metrics.log(&serde_json::json!({"step": step, "eval_loss": e}))?;
            last_eval = Some(e);
        }
        if step % cfg.checkpoint_every.max(1) == 0 || step == stop {
            let state = serde_json::json!({"step": step});
            save_checkpoint(&run, &model, &optim, &state, cfg.lora.is_some(), |dir| {
                save_model_folder(&model, &tokenizer_path, &processor, dir)
            })?;
        }
    }
    bar.finish();
    let final_dir = if step == total { run.dir.join("final") } else { run.dir.join("checkpoint") };
    if step == total {
        save_model_folder(&model, &tokenizer_path, &processor, &final_dir)?;
    }
    Ok(Summary {
        steps: step,
        loss: last_loss,
        eval_loss: last_eval,
        seconds: start.elapsed().as_secs_f64(),
        model: final_dir,
    })
}

/// Mean eval loss over held-out examples (no gradients).
fn eval_loss(
    model: &Llava,
    val: &[Example],
    table: &ImageTable,
    pad: u32,
    batch: usize,
) -> Result<f32, TrainError> {
    let model = model.valid();
    let (mut sum, mut n) = (0.0, 0);
    for chunk in val.chunks(batch) {
        let examples: Vec<&Example> = chunk.iter().collect();
        let (loss, tokens) = batch_loss(&model, &examples, table, pad, LossAverage::Token)?;
        sum += loss.into_scalar::<f32>() * tokens as f32;
        n += tokens;
    }
    Ok(sum / n.max(1) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_weights_by_hand() {
        // Row 0: 1 target token (index 2); row 1: 3 target tokens (indices 1..=3). Index 0 (BOS)
        // is never scored.
        let a = [true, false, true, false];
        let b = [false, true, true, true];
        let (w, n) = loss_weights(&[&a, &b], 4, LossAverage::Token);
        assert_eq!(n, 4);
        assert_eq!(w, vec![0.0, 0.25, 0.0, 0.25, 0.25, 0.25]);
        let (w, _) = loss_weights(&[&a, &b], 4, LossAverage::Sequence);
        let third = 1.0 / 6.0;
        assert_eq!(w, vec![0.0, 0.5, 0.0, third, third, third]);
    }

    #[test]
    fn epoch_batches_cover_every_example_once_and_repeat_per_seed() {
        let lens: Vec<usize> = (0..103).map(|i| (i * 37) % 50).collect();
        let a = epoch_batches(&lens, 8, 1, 0);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(&lens, 8, 1, 0));
        assert_ne!(a, epoch_batches(&lens, 8, 1, 1));
        // Grouped by length: within a batch, lengths span less than across the data.
        let spread = |b: &Vec<usize>| {
            b.iter().map(|&i| lens[i]).max().unwrap() - b.iter().map(|&i| lens[i]).min().unwrap()
        };
        let mean: f64 = a.iter().map(|b| spread(b) as f64).sum::<f64>() / a.len() as f64;
        assert!(mean < 25.0, "mean spread {mean}");
    }
}
