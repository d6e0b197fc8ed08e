//! DPO (Rafailov et al. 2023) on the same preference files as the reward model: the policy learns
//! the pairs directly, against a frozen reference whose log-probs are computed once, before
//! training, with the scoring path ([`Llava::response_logprobs`]).

use super::common::{
    ImageTable, TrainError, host, progress_bar, resume_checkpoint, save_checkpoint, save_model_folder, say,
    state_step, weights_source,
};
use super::config;
use super::optim::{adamw, clip_global_norm};
use super::reward::{PrefPair, load_pairs, pair_metrics, train_and_val};
use super::run::RunDir;
use super::schedule::warmup_cosine;
use super::sft::{Part, epoch_batches, prepare};
use crate::backend::{inference_device, training_device};
use crate::data::chat;
use crate::model::Llava;
use crate::model::jobs::ModelFolder;
use crate::model::lora::LoraConfig;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `factrl train dpo` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoConfig {
    /// Run folder (config, metrics, checkpoint, `final/` policy).
    pub out: PathBuf,
    /// Preference pairs (LLaVA-Human-Preference-10K format).
    pub train: PathBuf,
    /// Held-out pairs; without it, `val_fraction` of the training file's images are held out.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Share of images whose pairs are held out when `val` is not set.
    pub val_fraction: f64,
    /// Policy to start from (the SFT model folder).
    pub policy: PathBuf,
    /// Frozen reference; the policy's folder if unset.
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// Parts that train: "projector", "decoder" (the tower stays frozen).
    pub trainable: Vec<Part>,
    /// Train the decoder through LoRA adapters (`[lora]`: `rank`, `alpha`, optional `targets`)
    /// instead of all its weights; saved models have the adapters merged.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// DPO's beta: strength of the implicit KL leash.
    pub beta: f64,
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
    /// Passes over the pairs.
    pub epochs: usize,
    /// Stop after this many optimiser steps, if set.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Seed of shuffling and the held-out split.
    pub seed: u64,
    /// Steps between metric lines.
    pub log_every: usize,
    /// Steps between held-out evals.
    pub eval_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

/// The DPO loss (Rafailov et al. 2023, eq. 7) over a batch of pairs, from summed response
/// log-probs: `mean(-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))))`. Also returns the
/// implicit reward margins `beta * ((pi_c - ref_c) - (pi_r - ref_r))`.
///
/// # Shapes
/// - all inputs `[b]` -> `[1]`, `[b]`
pub fn dpo_loss(
    pi_c: Tensor<1>,
    pi_r: Tensor<1>,
    ref_c: Tensor<1>,
    ref_r: Tensor<1>,
    beta: f64,
) -> (Tensor<1>, Tensor<1>) {
    let margin = ((pi_c - ref_c) - (pi_r - ref_r)).mul_scalar(beta);
    (log_sigmoid(margin.clone()).mean().neg(), margin)
}

/// A pair as token ids: prompt, chosen and rejected responses, image row.
struct Encoded {
    prompt: Vec<u32>,
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    image: usize,
}

/// The prompt (conversation up to its last human turn, image expanded) and the two responses as
/// the assistant turn's tokens (`" {response}</s>"`), split off the whole conversation's tokens.
fn encode(folder: &ModelFolder, p: &PrefPair) -> Result<Encoded, TrainError> {
    let prompt_text = chat::text(&p.turns, true);
    let prompt = folder.expand_images(&folder.encode(&prompt_text)?, 1)?;
    let response = |r: &str| -> Result<Vec<u32>, TrainError> {
        let mut full = folder.expand_images(&folder.encode(&format!("{prompt_text} {r}</s>"))?, 1)?;
        Ok(full.split_off(prompt.len().min(full.len())))
    };
    Ok(Encoded { chosen: response(&p.chosen)?, rejected: response(&p.rejected)?, prompt, image: p.image })
}

/// Summed response log-probs of the chosen, then the rejected responses of `pairs`.
///
/// # Shapes
/// - -> `[2b]`
fn sequence_logprobs(model: &Llava, table: &ImageTable, pairs: &[&Encoded]) -> Result<Tensor<1>, TrainError> {
    let prompts: Vec<Vec<u32>> = pairs.iter().chain(pairs).map(|e| e.prompt.clone()).collect();
    let responses: Vec<Vec<u32>> =
        pairs.iter().map(|e| e.chosen.clone()).chain(pairs.iter().map(|e| e.rejected.clone())).collect();
    let rows: Vec<usize> = pairs.iter().chain(pairs).map(|e| e.image).collect();
    let images = table.input(&rows, model.config.vision.image_size, &model.device());
    let logp = model.response_logprobs(&prompts, &responses, images)?; // [2b, r]
    let n = logp.dims()[0];
    Ok(logp.sum_dim(1).reshape([n]))
}

/// What a finished DPO run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// Last training loss.
    pub loss: f32,
    /// Held-out share of pairs whose implicit reward margin is positive.
    pub eval_accuracy: Option<f64>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The policy folder.
    pub model: PathBuf,
}

/// Reads the config file with overrides.
pub fn load_config(path: &Path, sets: &[String]) -> Result<DpoConfig, TrainError> {
    let cfg: DpoConfig = config::load(path, sets)?;
    if cfg.batch_size == 0 || cfg.epochs == 0 || cfg.beta <= 0.0 {
        return Err(TrainError::Setting("batch_size and epochs must be non-zero, beta positive".into()));
    }
    if cfg.trainable.contains(&Part::Vision) || cfg.trainable.is_empty() {
        return Err(TrainError::Setting(
            "trainable: DPO trains \"projector\" and/or \"decoder\"; the vision tower stays frozen".into(),
        ));
    }
    Ok(cfg)
}

/// Held-out implicit-reward accuracy and loss.
fn evaluate(
    model: &Llava,
    table: &ImageTable,
    val: &[Encoded],
    refs: &[(f32, f32)],
    val_pairs: &[PrefPair],
    cfg: &DpoConfig,
) -> Result<(f32, super::reward::PairMetrics), TrainError> {
    let model = model.valid();
    let (mut margins, mut loss) = (Vec::with_capacity(val.len()), 0.0);
    for (k, chunk) in val.chunks(cfg.batch_size).enumerate() {
        let batch: Vec<&Encoded> = chunk.iter().collect();
        let r = &refs[k * cfg.batch_size..k * cfg.batch_size + chunk.len()];
        let (l, m) = batch_loss(&model, table, &batch, r, cfg.beta)?;
        loss += l.into_scalar::<f32>() * chunk.len() as f32;
        margins.extend(host(m)?);
    }
    Ok((loss / val.len().max(1) as f32, pair_metrics(&margins, val_pairs)))
}

fn batch_loss(
    model: &Llava,
    table: &ImageTable,
    batch: &[&Encoded],
    refs: &[(f32, f32)],
    beta: f64,
) -> Result<(Tensor<1>, Tensor<1>), TrainError> {
    let b = batch.len();
    let device = model.device();
    let logp = sequence_logprobs(model, table, batch)?;
    let ref_c = Tensor::<1>::from_floats(refs.iter().map(|r| r.0).collect::<Vec<_>>().as_slice(), &device);
    let ref_r = Tensor::<1>::from_floats(refs.iter().map(|r| r.1).collect::<Vec<_>>().as_slice(), &device);
    Ok(dpo_loss(logp.clone().narrow(0, 0, b), logp.narrow(0, b, b), ref_c, ref_r, beta))
}

/// Reference log-probs `(chosen, rejected)` of every pair, computed once.
fn reference_logprobs(
    reference: &Llava,
    table: &ImageTable,
    pairs: &[Encoded],
    batch: usize,
) -> Result<Vec<(f32, f32)>, TrainError> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let v = host(sequence_logprobs(reference, table, &refs)?)?;
        out.extend((0..chunk.len()).map(|i| (v[i], v[chunk.len() + i])));
    }
    Ok(out)
}

/// Trains the policy with DPO, resuming from the run folder's checkpoint with `resume`;
/// `halt_after` stops after that many steps of this invocation (at a checkpoint).
pub fn train(cfg: &DpoConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let run = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);

    // 1. Policy (from the checkpoint on resume) and the frozen reference.
    let checkpoint = if resume { run.checkpoint() } else { None };
    let source = weights_source(checkpoint.as_deref(), &cfg.policy, cfg.lora.is_some());
    let folder = ModelFolder::load(&source, &device)?;
    let mut policy = prepare(folder.model.clone(), &cfg.trainable, cfg.lora.as_ref())?;
    let reference = ModelFolder::load(cfg.reference.as_ref().unwrap_or(&cfg.policy), &inference_device())?;

    // 2. Pairs, the split, features once, reference log-probs once.
    let mut index = BTreeMap::new();
    let all = load_pairs(&cfg.train, false, None, &mut index)?;
    let val = cfg.val.as_ref().map(|v| load_pairs(v, false, None, &mut index)).transpose()?;
    let (train, val) = train_and_val(all, val, index.len(), cfg.val_fraction, cfg.seed);
    if train.is_empty() {
        return Err(TrainError::Data { file: cfg.train.clone(), message: "no training pairs".into() });
    }
    let enc = |pairs: &[PrefPair]| -> Result<Vec<Encoded>, TrainError> {
        pairs
            .iter()
            .map(|p| {
                encode(&folder, p).map_err(|e| TrainError::Data {
                    file: cfg.train.clone(),
                    message: format!("record {}: {e}", p.id),
                })
            })
            .collect()
    };
    let (train_enc, val_enc) = (enc(&train)?, enc(&val)?);
    let table = ImageTable::build(&policy, &folder.processor, &index, true)?;
    let ref_table = ImageTable::build(&reference.model, &reference.processor, &index, true)?;
    let train_ref = reference_logprobs(&reference.model, &ref_table, &train_enc, cfg.batch_size)?;
    let val_ref = reference_logprobs(&reference.model, &ref_table, &val_enc, cfg.batch_size)?;

    // 3. Optimiser, schedule, resume.
    let lens: Vec<usize> = train_enc.iter().map(|e| e.chosen.len() + e.rejected.len()).collect();
    let per_epoch = train.len().div_ceil(cfg.batch_size);
    let total = (cfg.epochs * per_epoch).max(1).min(cfg.max_steps.unwrap_or(usize::MAX));
    let mut optim = adamw(cfg.weight_decay).init();
    let mut step = 0;
    if let Some(ck) = &checkpoint {
        let state;
        (policy, optim, state) = resume_checkpoint(ck, policy, optim, cfg.lora.is_some())?;
        step = state_step(&state);
    }
    let mut metrics = run.metrics(checkpoint.as_ref().map(|_| step))?;
    let bar = progress_bar(total, step, &cfg.out);

    // 4. The loop.
    let (mut last_loss, mut last_eval) = (f32::NAN, None);
    let mut epoch_cache = None::<(usize, Vec<Vec<usize>>)>;
    let stop = halt_after.map_or(total, |n| (step + n).min(total));
    while step < stop {
        let epoch = step / per_epoch;
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((epoch, epoch_batches(&lens, cfg.batch_size, cfg.seed, epoch)));
        }
        let ids: &[usize] = match &epoch_cache {
            Some((_, batches)) => &batches[step % per_epoch],
            None => return Err(TrainError::Setting("no batches".into())),
        };
        let batch: Vec<&Encoded> = ids.iter().map(|&i| &train_enc[i]).collect();
        let refs: Vec<(f32, f32)> = ids.iter().map(|&i| train_ref[i]).collect();
        let (loss, margins) = batch_loss(&policy, &table, &batch, &refs, cfg.beta)?;
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFinite { step, value, checkpoint: run.dir.join("checkpoint") });
        }
        let margins = host(margins)?;
        let mut grads = GradientsParams::from_grads(loss.backward(), &policy);
        let norm = clip_global_norm(&policy, &mut grads, cfg.grad_clip);
        let lr = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr, cfg.min_lr);
        policy = optim.step(lr, policy, grads);
        step += 1;
        last_loss = value;
        bar.set_position(step as u64);
        if step % cfg.log_every.max(1) == 0 || step == total {
            let acc = margins.iter().filter(|&&m| m > 0.0).count() as f64 / margins.len().max(1) as f64;
            bar.set_message(format!("loss {value:.4} | acc {acc:.2}"));
            metrics.log(&serde_json::json!({"step": step, "loss": value, "accuracy": acc, "lr": lr, "grad_norm": norm}))?;
        }
        if !val.is_empty() && (step % cfg.eval_every.max(1) == 0 || step == total) {
            let (loss, m) = evaluate(&policy, &table, &val_enc, &val_ref, &val, cfg)?;
            say(
                &bar,
                format!(
                    "step {step}/{total}: held-out accuracy {:.3}, margin {:.3}, loss {loss:.4}",
                    m.all.accuracy, m.margin_mean
                ),
            );
            metrics.log(&serde_json::json!({"step": step, "eval_loss": loss, "eval": m}))?;
            last_eval = Some(m.all.accuracy);
        }
        if step % cfg.checkpoint_every.max(1) == 0 || step == stop {
            let state = serde_json::json!({"step": step});
            save_checkpoint(&run, &policy, &optim, &state, cfg.lora.is_some(), |dir| {
                save_model_folder(&policy, &folder.tokenizer_path, &folder.processor, dir)
            })?;
        }
    }
    bar.finish();
    let model = if step == total {
        let dir = run.dir.join("final");
        save_model_folder(&policy, &folder.tokenizer_path, &folder.processor, &dir)?;
        dir
    } else {
        run.dir.join("checkpoint")
    };
    Ok(Summary {
        steps: step,
        loss: last_loss,
        eval_accuracy: last_eval,
        seconds: start.elapsed().as_secs_f64(),
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpo_loss_by_hand() {
        let device = inference_device();
        let t = |v: &[f32]| Tensor::<1>::from_floats(v, &device);
        // Policy equals reference: margin 0, loss ln 2.
        let (l, m) = dpo_loss(t(&[-3.0]), t(&[-5.0]), t(&[-3.0]), t(&[-5.0]), 0.1);
        assert!((l.into_scalar::<f32>() - std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(m.into_scalar::<f32>(), 0.0);
        // Chosen up by 2 nats, rejected down by 3, beta 0.2: margin 0.2 * 5 = 1;
        // -ln sigmoid(1) = 0.313262.
        let (l, m) = dpo_loss(t(&[-1.0]), t(&[-8.0]), t(&[-3.0]), t(&[-5.0]), 0.2);
        assert!((l.into_scalar::<f32>() - 0.313_262).abs() < 1e-5);
        assert!((m.into_scalar::<f32>() - 1.0).abs() < 1e-6);
    }
}
