//! `factrl train clip`: CLIP-style contrastive pretraining of the vision tower on images and their
//! captions, the world's stand-in for the pretrained CLIP that LLaVA starts from.
//!
//! A tower trained only through the language model's caption loss learns to see very slowly: the
//! decoder must find the image tokens before the tower gets a useful gradient, and the caption
//! loss sits on the language prior for hundreds of steps (README, "Stage 0"). The contrastive
//! objective gives the tower a direct signal: the mean of its patch features must pick out the
//! image's caption among the batch's. The text side is a bag of words and of adjacent word pairs
//! (the mean of their embeddings, projected): the words name which colours, shapes and sizes a
//! caption lists, the pairs bind them ("red circle" is not "red" and "circle" anywhere), which the
//! tower must then see too. It is discarded after training. The run's `final/` is a full model folder whose tower is trained and
//! whose projector and decoder are freshly initialised, for `factrl train pretrain` to start from.

pub use super::common::TrainError;
use super::common::{
    load_tokenizer, new_tiny_model, progress_bar, resume_checkpoint, save_checkpoint, save_model_folder, say,
    state_step,
};
use super::config;
use super::optim::{adamw, clip_global_norm};
use super::run::RunDir;
use super::schedule::warmup_cosine;
use super::sft::{Part, epoch_batches, freeze};
use crate::backend::training_device;
use crate::data::formats::{Conversation, Role};
use crate::io;
use crate::model::checkpoint::load_llava;
use crate::model::processor::{ClipProcessor, pixel_batch};
use crate::model::store::{SaveDtype, checkpoint_files, collect_params, load_params, save_tensors};
use crate::model::{Llava, ModelError};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File stem of the contrastive heads inside a checkpoint (only needed to resume).
const HEADS_STEM: &str = "clip_heads";

/// Hash buckets of the text side's word pairs.
const PAIR_BUCKETS: usize = 4096;

/// The text side's bag of a caption's tokens: each token id, then each adjacent pair hashed into
/// `PAIR_BUCKETS` ids after the vocabulary's.
pub fn bag_ids(tokens: &[u32], vocab: usize) -> Vec<u32> {
    let pairs = tokens.windows(2).map(|w| {
        let h = (u64::from(w[0]) * 1_000_003 + u64::from(w[1])) % PAIR_BUCKETS as u64;
        (vocab as u64 + h) as u32
    });
    tokens.iter().copied().chain(pairs).collect()
}

/// `factrl train clip` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// Run folder (config, metrics, checkpoint, `final/` model).
    pub out: PathBuf,
    /// LLaVA conversation JSON: each record's image and, as its caption, its assistant turns.
    pub train: PathBuf,
    /// Held-out records for retrieval accuracy.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Held-out records per eval.
    pub val_records: usize,
    /// `tokenizer.json` of the new model.
    pub tokenizer: PathBuf,
    /// Image side of the new model, pixels; default `LlavaConfig::tiny`'s.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Patch side of the new model, pixels; default `LlavaConfig::tiny`'s.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Encoder layers of the new model's vision tower; default `LlavaConfig::tiny`'s.
    #[serde(default)]
    pub vision_layers: Option<usize>,
    /// Width of the shared image-text embedding.
    pub embed_dim: usize,
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
    /// Image-caption pairs per step; each is contrasted with the other captions of its batch.
    pub batch_size: usize,
    /// Hard negatives, as NegCLIP makes them: each step every caption that has a word of one of
    /// these groups also meets a copy of itself with one such word (chosen at random) replaced by
    /// another word of its group. In-batch captions differ in so many words that colours alone
    /// pick the right one; a copy that differs only in a shape word is what makes the tower see
    /// shape. Empty: plain CLIP.
    #[serde(default)]
    pub swap_groups: Vec<Vec<String>>,
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimiser steps, if set.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Steps between metric lines.
    pub log_every: usize,
    /// Steps between evals.
    pub eval_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

/// The text side and the two projections into the shared embedding.
#[derive(Module, Debug)]
pub struct ClipHeads {
    /// Embeddings of the text side's words and hashed word pairs ([`bag_ids`]).
    pub token_embedding: Embedding,
    /// Text features -> shared embedding.
    pub text_projection: Linear,
    /// Mean patch feature -> shared embedding.
    pub visual_projection: Linear,
    /// Log of the inverse softmax temperature (CLIP starts at ln(1 / 0.07)).
    pub logit_scale: Param<Tensor<1>>,
}

impl ClipHeads {
    /// Fresh heads for a vocabulary of `vocab`, vision width `d_vision`, embedding width `e`.
    pub fn init(vocab: usize, d_vision: usize, e: usize, device: &Device) -> Self {
        ClipHeads {
            // Unit-variance embeddings (burn's and PyTorch's default): with LLaMA's 0.02 the mean of
            // a few of them starts near zero and the text side learns markedly slower.
            token_embedding: EmbeddingConfig::new(vocab + PAIR_BUCKETS, e).init(device),
            text_projection: LinearConfig::new(e, e).init(device),
            visual_projection: LinearConfig::new(d_vision, e).init(device),
            logit_scale: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![(1.0f32 / 0.07).ln()], [1]),
                device,
            )),
        }
    }
}

/// The model that trains: the LLaVA model (only its tower unfrozen) and the contrastive heads.
#[derive(Module, Debug)]
pub struct ClipModel {
    /// The model whose tower trains.
    pub llava: Llava,
    /// Text encoder and projections.
    pub heads: ClipHeads,
}

impl ClipModel {
    /// Image-to-caption similarity logits, `[n, t]` (row i: image i against every caption, given
    /// as its [`bag_ids`]; the first `n` captions are the images' own, any further ones negatives).
    fn logits(&self, pixels: Tensor<4>, captions: &[Vec<u32>]) -> Tensor<2> {
        let device = pixels.device();
        let feats = self.llava.image_features(pixels); // [n, f, d]
        let [n, _, d] = feats.dims();
        let image = self.heads.visual_projection.forward(feats.mean_dim(1).reshape([n, d]));
        let t = captions.len();
        let l = captions.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let (mut ids, mut weights) = (vec![0i64; t * l], vec![0f32; t * l]);
        for (row, caption) in captions.iter().enumerate() {
            for (j, &id) in caption.iter().enumerate() {
                ids[row * l + j] = i64::from(id);
                weights[row * l + j] = 1.0 / caption.len() as f32;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [t, l]), &device);
        let weights = Tensor::<3>::from_data(TensorData::new(weights, [t, l, 1]), &device);
        let bag = self.heads.token_embedding.forward(ids).mul(weights).sum_dim(1); // [t, 1, e]
        let e = bag.dims()[2];
        let text = self.heads.text_projection.forward(bag.reshape([t, e]));
        let scale = self.heads.logit_scale.val().clamp_max(100f32.ln()).exp().reshape([1, 1]);
        unit_rows(image).matmul(unit_rows(text).transpose()).mul(scale)
    }
}

/// Rows scaled to unit length.
fn unit_rows(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).add_scalar(1e-12).sqrt();
    x.div(norm)
}

/// CLIP's symmetric loss: the mean of the cross-entropies of picking each image's caption (rows)
/// and each caption's image (columns), the matching pairs on the diagonal. Columns past the
/// `n`-th are hard negatives (NegCLIP): they compete in the rows only, having no image of their own.
///
/// # Shapes
/// - `logits`: `[n, t]` with `t >= n` -> `[1]`
pub fn contrastive_loss(logits: Tensor<2>) -> Tensor<1> {
    let [n, t] = logits.dims();
    let device = logits.device();
    let eye = |cols: usize| {
        let v: Vec<f32> = (0..n * cols).map(|k| if k / cols == k % cols { 1.0 } else { 0.0 }).collect();
        Tensor::<2>::from_data(TensorData::new(v, [n, cols]), &device)
    };
    let rows = log_softmax(logits.clone(), 1).mul(eye(t)).sum();
    let cols = log_softmax(logits.slice([0..n, 0..n]), 0).mul(eye(n)).sum();
    rows.add(cols).div_scalar(-2.0 * n as f32)
}

/// A copy of `text` with one word of `groups` (chosen by `rng` among those present) replaced by a
/// different word of the same group, keeping its capital and trailing punctuation; `None` when no
/// word of `text` is in a group with another word.
pub fn swap_word(text: &str, groups: &[Vec<String>], rng: &mut impl Rng) -> Option<String> {
    let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
    // (word index, group index, the word's place in its group) for every swappable word.
    let mut found = Vec::new();
    for (w, word) in words.iter().enumerate() {
        let bare = word.trim_end_matches(|c: char| c.is_ascii_punctuation()).to_lowercase();
        for (g, group) in groups.iter().enumerate().filter(|(_, g)| g.len() > 1) {
            if let Some(k) = group.iter().position(|x| *x == bare) {
                found.push((w, g, k));
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    let (w, g, k) = found[rng.random_range(0..found.len())];
    let group = &groups[g];
    let other = &group[(k + rng.random_range(1..group.len())) % group.len()];
    let word = &words[w];
    let stem = word.trim_end_matches(|c: char| c.is_ascii_punctuation());
    let tail = &word[stem.len()..];
    let mut new = other.clone();
    if stem.starts_with(char::is_uppercase) {
        let mut chars = other.chars();
        new = chars.next().into_iter().flat_map(char::to_uppercase).chain(chars).collect();
    }
    words[w] = new + tail;
    Some(words.join(" "))
}

/// Share of rows whose largest logit is on the diagonal (image -> caption top-1 accuracy).
pub fn retrieval_accuracy(logits: &[f32], n: usize) -> f32 {
    let hits = (0..n)
        .filter(|&i| {
            let row = &logits[i * n..(i + 1) * n];
            row.iter().all(|&x| x <= row[i])
        })
        .count();
    hits as f32 / n.max(1) as f32
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Optimiser steps taken in all.
    pub steps: usize,
    /// Last training loss.
    pub loss: f32,
    /// Last held-out image -> caption accuracy within batches of `batch_size`, if a val set was given.
    pub eval_accuracy: Option<f32>,
    /// Last held-out share of images that score their caption above its hard negative, if a val
    /// set and `swap_groups` were given.
    pub eval_negative_accuracy: Option<f32>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The model folder (trained tower).
    pub model: PathBuf,
}

/// Reads the config file with overrides.
pub fn load_config(path: &Path, sets: &[String]) -> Result<ClipConfig, TrainError> {
    Ok(config::load(path, sets)?)
}

/// A conversation file's images, captions (its assistant turns joined) and their [`bag_ids`].
#[derive(Default)]
struct Pairs {
    images: Vec<PathBuf>,
    texts: Vec<String>,
    bags: Vec<Vec<u32>>,
}

/// The [`bag_ids`] of a caption.
fn caption_bag(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>, String> {
    let ids = tok.encode(text, false).map_err(|e| e.to_string())?.get_ids().to_vec();
    if ids.is_empty() {
        return Err("no assistant text to use as its caption".into());
    }
    Ok(bag_ids(&ids, tok.get_vocab_size(true)))
}

/// Reads the pairs of a conversation file.
fn load_pairs(file: &Path, limit: Option<usize>, tok: &tokenizers::Tokenizer) -> Result<Pairs, TrainError> {
    let records: Vec<Conversation> = io::read_json(file)?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut pairs = Pairs::default();
    for r in records.iter().take(limit.unwrap_or(usize::MAX)) {
        let text: Vec<&str> =
            r.conversations.iter().filter(|t| t.from == Role::Gpt).map(|t| t.value.as_str()).collect();
        let text = text.join(" ");
        let bag = caption_bag(tok, &text).map_err(|message| TrainError::Data {
            file: file.to_path_buf(),
            message: format!("record {}: {message}", r.id),
        })?;
        pairs.images.push(base.join(&r.image));
        pairs.texts.push(text);
        pairs.bags.push(bag);
    }
    Ok(pairs)
}

/// The text side of a batch: the bags of its rows' captions, then those of their hard negatives.
struct BatchCaptions {
    bags: Vec<Vec<u32>>,
    /// Each row's negative's index in `bags`, where the caption had one ([`swap_word`]).
    negatives: Vec<Option<usize>>,
}

/// The text side of the batch of `rows`.
fn batch_captions(
    pairs: &Pairs,
    rows: &[usize],
    groups: &[Vec<String>],
    tok: &tokenizers::Tokenizer,
    rng: &mut impl Rng,
) -> Result<BatchCaptions, TrainError> {
    let mut bags: Vec<Vec<u32>> = rows.iter().map(|&i| pairs.bags[i].clone()).collect();
    let mut negatives = Vec::with_capacity(rows.len());
    for &i in rows {
        let column = match swap_word(&pairs.texts[i], groups, rng) {
            Some(text) => {
                bags.push(
                    caption_bag(tok, &text)
                        .map_err(|e| TrainError::Setting(format!("negative {text:?}: {e}")))?,
                );
                Some(bags.len() - 1)
            }
            None => None,
        };
        negatives.push(column);
    }
    Ok(BatchCaptions { bags, negatives })
}

/// The generator of the hard negatives of one step (or, `u64::MAX`, of the evals), fixed by the
/// seed so that a resumed run draws what an uninterrupted one would.
fn negatives_rng(seed: u64, step: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Trains, resuming from the run folder's checkpoint with `resume`; `halt_after` as in SFT.
pub fn train(cfg: &ClipConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    if cfg.batch_size < 2 || cfg.epochs == 0 || cfg.embed_dim == 0 {
        return Err(TrainError::Setting(
            "batch_size must be at least 2, epochs and embed_dim non-zero".into(),
        ));
    }
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let run = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);

    // 1. Data and model (from the checkpoint when resuming).
    let tok = load_tokenizer(&cfg.tokenizer)?;
    let train_pairs = load_pairs(&cfg.train, None, &tok)?;
    let val_pairs = match &cfg.val {
        Some(v) => load_pairs(v, Some(cfg.val_records), &tok)?,
        None => Pairs::default(),
    };
    if train_pairs.images.len() < cfg.batch_size {
        return Err(TrainError::Data {
            file: cfg.train.clone(),
            message: format!(
                "{} records, fewer than one batch of {}",
                train_pairs.images.len(),
                cfg.batch_size
            ),
        });
    }
    let checkpoint = if resume { run.checkpoint() } else { None };
    let (llava, processor, heads) = match &checkpoint {
        Some(ck) => {
            let llava = load_llava(ck, &device)?;
            let processor = ClipProcessor::from_file(&ck.join("preprocessor_config.json"))?;
            let d = llava.config.vision.hidden_size;
            let heads = ClipHeads::init(llava.config.text.vocab_size, d, cfg.embed_dim, &device);
            let (heads, _) =
                load_params(heads, ck, &checkpoint_files(ck, HEADS_STEM)?, |k| Ok((k.to_string(), true)))?;
            (llava, processor, heads)
        }
        None => {
            let (llava, mut processor) =
                new_tiny_model(&cfg.tokenizer, cfg.image_size, cfg.patch_size, cfg.vision_layers, &device)?;
            let sample: Vec<PathBuf> = train_pairs.images.iter().take(512).cloned().collect();
            processor.fit_normalisation(&sample)?;
            let d = llava.config.vision.hidden_size;
            let heads = ClipHeads::init(llava.config.text.vocab_size, d, cfg.embed_dim, &device);
            (llava, processor, heads)
        }
    };
    let side = llava.config.vision.image_size;
    let process = |paths: &[PathBuf]| -> Result<Vec<Vec<f32>>, ModelError> {
        paths.iter().map(|p| processor.process_file(p)).collect()
    };
    let (train_pixels, val_pixels) = (process(&train_pairs.images)?, process(&val_pairs.images)?);
    let mut model = ClipModel { llava: freeze(llava, &[Part::Vision]), heads };

    // 2. Optimiser and schedule.
    let per_epoch = train_pixels.len() / cfg.batch_size;
    let total = (cfg.epochs * per_epoch).max(1).min(cfg.max_steps.unwrap_or(usize::MAX));
    let mut optim = adamw(cfg.weight_decay).init();
    let mut step = 0;
    if let Some(ck) = &checkpoint {
        let state;
        (model, optim, state) = resume_checkpoint(ck, model, optim, false)?;
        step = state_step(&state);
    }
    let mut metrics = run.metrics(checkpoint.as_ref().map(|_| step))?;
    let bar = progress_bar(total, step, &cfg.out);

    // 3. The loop: each epoch SFT's seeded shuffle (all pairs of one length), full batches only,
    // so every image meets `batch_size - 1` other captions.
    let (mut epoch_cache, mut last_loss, mut last_eval, mut last_negative) =
        (None::<(usize, Vec<Vec<usize>>)>, f32::NAN, None, None);
    let same_length = vec![0; train_pixels.len()];
    let stop = halt_after.map_or(total, |n| (step + n).min(total));
    while step < stop {
        let epoch = step / per_epoch;
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut batches = epoch_batches(&same_length, cfg.batch_size, cfg.seed, epoch);
            batches.retain(|b| b.len() == cfg.batch_size);
            epoch_cache = Some((epoch, batches));
        }
        let batches = epoch_cache.as_ref().map(|(_, b)| b.as_slice()).unwrap_or_default();
        let rows = &batches[step % per_epoch];
        let pixels =
            pixel_batch(rows.iter().map(|&i| train_pixels[i].clone()).collect(), side, side, &device);
        let mut rng = negatives_rng(cfg.seed, step as u64);
        let text = batch_captions(&train_pairs, rows, &cfg.swap_groups, &tok, &mut rng)?;
        let loss = contrastive_loss(model.logits(pixels, &text.bags));
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(TrainError::NonFinite { step, value, checkpoint: run.dir.join("checkpoint") });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = clip_global_norm(&model, &mut grads, cfg.grad_clip);
        let lr = warmup_cosine(step, total, cfg.warmup_steps, cfg.lr, cfg.min_lr);
        model = optim.step(lr, model, grads);
        step += 1;
        last_loss = value;
        bar.set_position(step as u64);
        if step % cfg.log_every.max(1) == 0 || step == total {
            bar.set_message(format!("loss {value:.4}"));
            metrics.log(&serde_json::json!({"step": step, "loss": value, "lr": lr, "grad_norm": norm}))?;
        }
        if !val_pixels.is_empty() && (step % cfg.eval_every.max(1) == 0 || step == total) {
            let (acc, neg) = eval_accuracy(&model, &val_pixels, &val_pairs, cfg, &tok)?;
            let neg_text = neg.map(|a| format!(", against its hard negative {a:.3}")).unwrap_or_default();
            say(
                &bar,
                format!(
                    "step {step}/{total}: train loss {value:.4}, held-out retrieval accuracy {acc:.3}{neg_text}"
                ),
            );
            metrics.log(
                &serde_json::json!({"step": step, "eval_accuracy": acc, "eval_negative_accuracy": neg}),
            )?;
            last_eval = Some(acc);
            last_negative = neg;
        }
        if step % cfg.checkpoint_every.max(1) == 0 || step == stop {
            let state = serde_json::json!({"step": step});
            save_checkpoint(&run, &model, &optim, &state, false, |dir| {
                save_model_folder(&model.llava, &cfg.tokenizer, &processor, dir)?;
                Ok(save_tensors(collect_params(&model.heads)?, dir, HEADS_STEM, SaveDtype::F32, usize::MAX)?)
            })?;
        }
    }
    bar.finish();
    let final_dir = if step == total { run.dir.join("final") } else { run.dir.join("checkpoint") };
    if step == total {
        save_model_folder(&model.llava, &cfg.tokenizer, &processor, &final_dir)?;
    }
    Ok(Summary {
        steps: step,
        loss: last_loss,
        eval_accuracy: last_eval,
        eval_negative_accuracy: last_negative,
        seconds: start.elapsed().as_secs_f64(),
        model: final_dir,
    })
}

/// Held-out image -> caption accuracy, each image against the captions of its batch (the last,
/// shorter batch included when it has at least two pairs); and, with `swap_groups`, the share of
/// images whose caption scores above its hard negative.
fn eval_accuracy(
    model: &ClipModel,
    pixels: &[Vec<f32>],
    pairs: &Pairs,
    cfg: &ClipConfig,
    tok: &tokenizers::Tokenizer,
) -> Result<(f32, Option<f32>), TrainError> {
    let model = model.valid();
    let device = model.llava.device();
    let side = model.llava.config.vision.image_size;
    let mut rng = negatives_rng(cfg.seed, u64::MAX);
    let (mut hits, mut n, mut neg_hits, mut neg_n) = (0.0, 0, 0, 0);
    let indices: Vec<usize> = (0..pixels.len()).collect();
    for rows in indices.chunks(cfg.batch_size).filter(|r| r.len() >= 2) {
        let BatchCaptions { bags: captions, negatives } =
            batch_captions(pairs, rows, &cfg.swap_groups, tok, &mut rng)?;
        let batch = pixel_batch(rows.iter().map(|&i| pixels[i].clone()).collect(), side, side, &device);
        let values = super::common::host(model.logits(batch, &captions))?;
        let (m, t) = (rows.len(), captions.len());
        let own: Vec<f32> = (0..m).flat_map(|r| values[r * t..r * t + m].to_vec()).collect();
        hits += retrieval_accuracy(&own, m) * m as f32;
        n += m;
        for (r, column) in negatives.iter().enumerate() {
            if let Some(c) = column {
                neg_hits += usize::from(values[r * t + r] > values[r * t + c]);
                neg_n += 1;
            }
        }
    }
    Ok((hits / n.max(1) as f32, (neg_n > 0).then(|| neg_hits as f32 / neg_n as f32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrastive_loss_by_hand() {
        // logits [[2, 0], [0, 1]]: rows give -log(e^2/(e^2+1)) and -log(e/(e+1)); the matrix is
        // symmetric, so columns give the same, and the loss is their mean.
        let device = crate::backend::inference_device();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![2f32, 0.0, 0.0, 1.0], [2, 2]), &device);
        let got: f32 = contrastive_loss(logits).into_scalar();
        let e = std::f32::consts::E;
        let want = (-(e * e / (e * e + 1.0)).ln() - (e / (e + 1.0)).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn a_hard_negative_column_counts_in_the_rows_only() {
        // logits [[2, 0, 1], [0, 1, 0]]: row 0 picks 0 among (2, 0, 1), row 1 picks 1 among
        // (0, 1, 0); the columns are those of the 2x2 case above, the negative column left out.
        let device = crate::backend::inference_device();
        let logits =
            Tensor::<2>::from_data(TensorData::new(vec![2f32, 0.0, 1.0, 0.0, 1.0, 0.0], [2, 3]), &device);
        let got: f32 = contrastive_loss(logits).into_scalar();
        let e = std::f32::consts::E;
        let rows = -(e * e / (e * e + 1.0 + e)).ln() - (e / (e + 2.0)).ln();
        let cols = -(e * e / (e * e + 1.0)).ln() - (e / (e + 1.0)).ln();
        let want = (rows + cols) / 4.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn swap_word_replaces_one_grouped_word_within_its_group() {
        let groups = vec![
            vec!["circle".to_string(), "square".to_string()],
            vec!["circles".to_string(), "squares".to_string()],
            vec!["lonely".to_string()],
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(swap_word("A red circle.", &groups, &mut rng).unwrap(), "A red square.");
        assert_eq!(swap_word("Squares, here", &groups, &mut rng).unwrap(), "Circles, here");
        assert_eq!(swap_word("A lonely dot.", &groups, &mut rng), None, "a group of one has no swap");
        let text = "A red circle and two blue squares.";
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            seen.insert(swap_word(text, &groups, &mut rng).unwrap());
        }
        let want = ["A red circle and two blue circles.", "A red square and two blue squares."];
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "each word in turn, never both");
    }

    #[test]
    fn bag_ids_are_the_words_then_their_hashed_pairs() {
        let bag = bag_ids(&[5, 7, 5], 10);
        assert_eq!(bag[..3], [5, 7, 5]);
        let pair = |a: u64, b: u64| (10 + (a * 1_000_003 + b) % PAIR_BUCKETS as u64) as u32;
        assert_eq!(bag[3..], [pair(5, 7), pair(7, 5)]);
        assert_ne!(bag[3], bag[4], "word order matters within a pair");
        assert_eq!(bag_ids(&[3], 10), [3]);
    }

    #[test]
    fn retrieval_accuracy_counts_diagonal_maxima() {
        // Row 0 picks 0 (hit), row 1 picks 0 (miss), row 2 picks 2 (hit).
        let logits = [3.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.5, 0.9];
        assert!((retrieval_accuracy(&logits, 3) - 2.0 / 3.0).abs() < 1e-6);
    }
}
