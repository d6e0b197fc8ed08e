//! Pieces every trainer shares: the error type, the image table (a frozen tower's features computed
//! once per image), model folders, checkpoints with optimizer state, and the progress bar.

use super::config::ConfigError;
use super::optim::{param_ids, restore_param_ids};
use super::run::{RunDir, RunError};
use crate::io::{self, IoError};
use crate::model::checkpoint::save_llava;
use crate::model::jobs::MAX_SHARD_BYTES;
use crate::model::processor::{ClipProcessor, pixel_batch};
use crate::model::store::SaveDtype;
use crate::model::{ImageInput, Llava, LlavaConfig, ModelError};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run folder.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A file.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A record that cannot be trained on.
    #[error("{file}: {message}")]
    Data {
        /// The data file.
        file: PathBuf,
        /// What is wrong, with the record id.
        message: String,
    },
    /// A setting out of range.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The loss stopped being a number.
    #[error(
        "the loss became {value} at step {step}; stopped (the last good checkpoint, if any, is in {checkpoint})"
    )]
    NonFinite {
        /// Optimiser step.
        step: usize,
        /// The loss.
        value: f32,
        /// Where the last good checkpoint is.
        checkpoint: PathBuf,
    },
    /// The optimiser state could not be saved or loaded.
    #[error("optimizer state {path}: {message}")]
    Optimizer {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// Images of a dataset: processed pixels, or the frozen tower's features computed once.
pub enum ImageTable {
    /// Processed pixels per image (the tower trains).
    Pixels(Vec<Vec<f32>>),
    /// Tower features per image, `[features, d_vision]` each.
    Features {
        /// One row per image.
        rows: Vec<Vec<f32>>,
        /// `[features, d_vision]`.
        shape: [usize; 2],
    },
}

impl ImageTable {
    /// Processes every image of `index` (path -> row) once; with a frozen tower, also runs
    /// `model`'s tower once per image.
    pub fn build(
        model: &Llava,
        processor: &ClipProcessor,
        index: &BTreeMap<PathBuf, usize>,
        frozen: bool,
    ) -> Result<ImageTable, TrainError> {
        let mut paths: Vec<(&PathBuf, usize)> = index.iter().map(|(p, &i)| (p, i)).collect();
        paths.sort_by_key(|(_, i)| *i);
        let pixels: Vec<Vec<f32>> =
            paths.iter().map(|(p, _)| processor.process_file(p)).collect::<Result<_, _>>()?;
        if !frozen {
            return Ok(ImageTable::Pixels(pixels));
        }
        let side = model.config.vision.image_size;
        let (f, d) = (model.config.image_features(), model.config.vision.hidden_size);
        let tower = model.valid();
        let mut rows = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(64) {
            let feats = tower.image_features(pixel_batch(chunk.to_vec(), side, side, &tower.device()));
            rows.extend(host(feats)?.chunks(f * d).map(<[f32]>::to_vec));
        }
        Ok(ImageTable::Features { rows, shape: [f, d] })
    }

    /// The model input for images `rows` (in order; repeats allowed), for a tower taking `side`
    /// pixels square.
    pub fn input(&self, rows: &[usize], side: usize, device: &Device) -> ImageInput {
        match self {
            ImageTable::Pixels(pixels) => ImageInput::Pixels(pixel_batch(
                rows.iter().map(|&i| pixels[i].clone()).collect(),
                side,
                side,
                device,
            )),
            ImageTable::Features { rows: feats, shape: [f, d] } => {
                let flat: Vec<f32> = rows.iter().flat_map(|&i| feats[i].iter().copied()).collect();
                ImageInput::Features(Tensor::from_data(TensorData::new(flat, [rows.len(), *f, *d]), device))
            }
        }
    }
}

/// A tensor's values on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Setting(format!("reading a tensor: {e:?}")))
}

/// Writes a complete model folder: weights and config, tokenizer, image processor.
pub fn save_model_folder(
    model: &Llava,
    tokenizer: &Path,
    processor: &ClipProcessor,
    dir: &Path,
) -> Result<(), TrainError> {
    save_llava(model, dir, SaveDtype::F32, MAX_SHARD_BYTES)?;
    let bytes = std::fs::read(tokenizer).map_err(io::at(tokenizer))?;
    io::write_atomic(&dir.join("tokenizer.json"), &bytes)?;
    processor.save(&dir.join("preprocessor_config.json"))?;
    Ok(())
}

/// A new [`LlavaConfig::tiny`] model over the tokenizer at `tok_path` (its special tokens must
/// include `<image>`, `<s>`, `</s>` and `<pad>`), optionally at another image or patch size or
/// tower depth, and a square image processor for it (normalisation not yet fitted).
pub fn new_tiny_model(
    tok_path: &Path,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    vision_layers: Option<usize>,
    device: &Device,
) -> Result<(Llava, ClipProcessor), TrainError> {
    let tok = load_tokenizer(tok_path)?;
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| TrainError::Setting(format!("{}: no {t} token", tok_path.display())))
    };
    let mut c = LlavaConfig::tiny(tok.get_vocab_size(true));
    c.image_token_id = id("<image>")?;
    c.bos_token_id = Some(id("<s>")?);
    c.eos_token_id = Some(id("</s>")?);
    c.pad_token_id = Some(id("<pad>")?);
    c.vision.image_size = image_size.unwrap_or(c.vision.image_size);
    c.vision.patch_size = patch_size.unwrap_or(c.vision.patch_size);
    c.vision.num_hidden_layers = vision_layers.unwrap_or(c.vision.num_hidden_layers);
    if c.vision.num_hidden_layers == 0 {
        return Err(TrainError::Setting("`vision_layers` must be at least 1".into()));
    }
    if c.vision.patch_size == 0 || !c.vision.image_size.is_multiple_of(c.vision.patch_size) {
        return Err(TrainError::Setting("`patch_size` must divide `image_size`".into()));
    }
    let processor = ClipProcessor::square(c.vision.image_size as u32);
    Ok((Llava::init(&c, device)?, processor))
}

/// Reads a `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TrainError> {
    Tokenizer::from_file(path)
        .map_err(|e| TrainError::Data { file: path.to_path_buf(), message: e.to_string() })
}

/// A LoRA run's checkpoint file of the unmerged trained module (base weights and adapters): the
/// model folders beside it hold merged weights, from which the adapters cannot be recovered.
const TRAINING_RECORD: &str = "training.bpk";

/// Writes a checkpoint of a run: `models` writes the model folders; with `unmerged` (a LoRA run)
/// `module` itself follows, adapters apart; then the optimizer state, the parameter ids of
/// `module` (the optimizer's keys) and `state` (with at least `"step"`), last.
pub fn save_checkpoint<M: Module>(
    run: &RunDir,
    module: &M,
    optim: &ModuleOptimizer,
    state: &serde_json::Value,
    unmerged: bool,
    models: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    run.save_checkpoint(|dir| -> Result<(), TrainError> {
        models(dir)?;
        if unmerged {
            let path = dir.join(TRAINING_RECORD);
            module
                .clone()
                .save_file(&path)
                .map_err(|e| TrainError::Data { file: path, message: format!("{e:?}") })?;
        }
        let path = dir.join("optimizer.bpk");
        optim.save(&path).map_err(|e| TrainError::Optimizer { path, message: format!("{e:?}") })?;
        io::write_json(&dir.join("param_ids.json"), &param_ids(module))?;
        io::write_json(&dir.join("state.json"), state)?;
        Ok(())
    })
}

/// Continues from checkpoint `ck`: with `unmerged` (a LoRA run) loads the module it saved into
/// `module` (the same structure, adapters attached), gives `module` its saved parameter ids,
/// loads the optimizer state into `optim`, and returns them with the saved `state.json`.
pub fn resume_checkpoint<M: Module>(
    ck: &Path,
    module: M,
    optim: ModuleOptimizer,
    unmerged: bool,
) -> Result<(M, ModuleOptimizer, serde_json::Value), TrainError> {
    let module = if unmerged {
        let path = ck.join(TRAINING_RECORD);
        module.try_load_file(&path).map_err(|e| TrainError::Data { file: path, message: format!("{e:?}") })?
    } else {
        module
    };
    let ids: BTreeMap<String, u64> = io::read_json(&ck.join("param_ids.json"))?;
    let module = restore_param_ids(module, &ids);
    let path = ck.join("optimizer.bpk");
    let optim = optim
        .load(&path)
        .map_err(|e| TrainError::Optimizer { path: path.clone(), message: format!("{e:?}") })?;
    let state = io::read_json(&ck.join("state.json"))?;
    Ok((module, optim, state))
}

/// The folder a run's weights start from: its checkpoint when resuming a full run, else `init`
/// (a LoRA run: [`resume_checkpoint`] then loads the rest).
pub fn weights_source(checkpoint: Option<&Path>, init: &Path, lora: bool) -> PathBuf {
    match checkpoint {
        Some(ck) if !lora => ck.to_path_buf(),
        _ => init.to_path_buf(),
    }
}

/// The step saved in a checkpoint's state.
pub fn state_step(state: &serde_json::Value) -> usize {
    state["step"].as_u64().unwrap_or(0) as usize
}

/// A progress bar over `total` steps, at `step`, labelled with the run folder.
pub fn progress_bar(total: usize, step: usize, out: &Path) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64).with_position(step as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(out.display().to_string());
    bar
}

/// Prints a line above the bar, or to stderr when the bar is hidden (no terminal), where it would
/// print nothing.
pub fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) }
}
