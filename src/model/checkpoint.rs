//! Safetensors checkpoints in the llava-hf layout: loading every key variant found in the wild
//! (single or sharded, f32 / f16 / bf16) and saving in the original llava-hf layout.
//!
//! Module paths are the checkpoint keys without their layout prefix (`language_model.layers.0...`),
//! so a key is mapped to a path by its prefix alone ([`super::store`] does the tensor I/O).

use super::ModelError;
use super::config::LlavaConfig;
use super::llava::{Llava, ScalarHead};
use super::lora::merge_lora;
use super::store::{SaveDtype, checkpoint_files, collect_params, load_params, save_tensors};
use burn::tensor::Device;
use std::path::Path;

/// File stem of a reward or value model's scalar head, saved beside the llava-hf weights
/// (transformers ignores it): `score.weight` `[1, d]` and `score.bias` `[1]`.
pub const SCALAR_HEAD_STEM: &str = "scalar_head";

/// File stem of the weights: `model.safetensors` or `model-0000i-of-0000n.safetensors` shards.
pub const MODEL_STEM: &str = "model";

/// Checkpoint key prefixes and the module path prefix each maps to, most specific first.
const LAYOUTS: [(&str, &str); 10] = [
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model."),
    ("language_model.model.", "language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
];

/// Loads `config.json` and the safetensors of a llava-hf model folder.
pub fn load_llava(dir: &Path, device: &Device) -> Result<Llava, ModelError> {
    let config = LlavaConfig::from_hf_file(&dir.join("config.json"))?;
    let mut model = Llava::init(&config, device)?;
    let vision_layers = model.vision_tower.encoder.layers.len();
    // Tensors the model does not compute with: carried (vision) or dropped (buffers).
    let unused = move |path: &str| {
        path == "vision_tower.embeddings.position_ids"
            || path.starts_with("vision_tower.post_layernorm.")
            || path.ends_with("rotary_emb.inv_freq")
            || path
                .strip_prefix("vision_tower.encoder.layers.")
                .and_then(|rest| rest.split('.').next()?.parse::<usize>().ok())
                .is_some_and(|layer| layer >= vision_layers)
    };
    let to_path = |key: &str| {
        let Some((from, to)) = LAYOUTS.iter().find(|(from, _)| key.starts_with(from)) else {
            let known: Vec<&str> = LAYOUTS.iter().map(|l| l.0).collect();
            return Err(format!("unknown checkpoint layout (known prefixes: {})", known.join(", ")));
        };
        let path = format!("{to}{}", &key[from.len()..]);
        let used = !unused(&path);
        Ok((path, used))
    };
    let files = checkpoint_files(dir, MODEL_STEM)?;
    let (loaded, leftovers) = load_params(model, dir, &files, to_path)?;
    model = loaded;
    for (path, shape, values) in &mut model.vision_tower.carried.0 {
        let full = format!("vision_tower.{path}");
        match leftovers.iter().find(|(p, _, _)| *p == full) {
            Some((_, s, v)) if s == shape => *values = v.clone(),
            Some((_, s, _)) => {
                return Err(ModelError::Tensor {
                    path: dir.to_path_buf(),
                    tensor: full,
                    problem: format!("shape {s:?}, the model expects {shape:?}"),
                });
            }
            // Checkpoints written without the unused tensors keep the initial values.
            None => {}
        }
    }
    Ok(model)
}

/// Writes `config.json` and the weights of `model` in the original llava-hf layout (which
/// every transformers version loads), in shards of at most `max_shard_bytes` (with an index)
/// when the weights are larger. LoRA adapters are saved merged into their weights.
pub fn save_llava(
    model: &Llava,
    dir: &Path,
    dtype: SaveDtype,
    max_shard_bytes: usize,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    model.config.save_hf_file(&dir.join("config.json"))?;
    let carried = model
        .vision_tower
        .carried
        .0
        .iter()
        .map(|(p, s, v)| (format!("vision_tower.{p}"), s.clone(), v.clone()));
    // Visitors see a reparameterised weight's base, so adapters are folded in first.
    let tensors = collect_params(&merge_lora(model))?
        .into_iter()
        .chain(carried)
        .map(|(path, shape, data)| {
            let key = match path.split_once('.') {
                Some(("vision_tower", rest)) => format!("vision_tower.vision_model.{rest}"),
                Some(("language_model", rest)) => format!("language_model.model.{rest}"),
                Some(("lm_head", rest)) => format!("language_model.lm_head.{rest}"),
                _ => path,
            };
            (key, shape, data)
        })
        .collect();
    save_tensors(tensors, dir, MODEL_STEM, dtype, max_shard_bytes)
}

/// Writes `head` as `scalar_head.safetensors` in `dir`.
pub fn save_scalar_head(head: &ScalarHead, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    save_tensors(collect_params(head)?, dir, SCALAR_HEAD_STEM, SaveDtype::F32, usize::MAX)
}

/// Reads the scalar head of the model folder `dir` (its width from `config.json`).
pub fn load_scalar_head(dir: &Path, device: &Device) -> Result<ScalarHead, ModelError> {
    let config = LlavaConfig::from_hf_file(&dir.join("config.json"))?;
    let head = ScalarHead::init(config.text.hidden_size, false, device);
    let files = checkpoint_files(dir, SCALAR_HEAD_STEM)?;
    let (head, _) = load_params(head, dir, &files, |key| Ok((key.to_string(), true)))?;
    Ok(head)
}
