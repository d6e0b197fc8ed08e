//! The jobs behind `factrl score`, `factrl generate` and `factrl export`: a model folder (llava-hf
//! layout), JSONL in, JSONL or a model folder out.

use super::ModelError;
use super::checkpoint::{load_llava, save_llava};
use super::generate::{Generation, SamplingConfig, generate};
use super::llava::{ImageInput, Llava};
use super::processor::{ClipProcessor, pixel_batch};
use super::store::SaveDtype;
use crate::backend::inference_device;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The image placeholder in prompts.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// Shards written by [`export`] are at most this large (transformers' default).
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// Files of a model folder that [`export`] copies unchanged when present.
const COMPANION_FILES: [&str; 5] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "processor_config.json",
    "chat_template.json",
];

/// Lines scored or generated together.
const BATCH: usize = 8;

/// How a prompt becomes model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Template {
    /// The prompt as given.
    Verbatim,
    /// LLaVA's `vicuna_v1` conversation: as llava-hf's LLaVA-1.5 chat template writes
    /// it, `USER: <prompt> ASSISTANT:` (no system line).
    VicunaV1,
}

impl Template {
    /// The text fed to the tokenizer.
    pub fn apply(self, prompt: &str) -> String {
        match self {
            Template::Verbatim => prompt.to_string(),
            Template::VicunaV1 => crate::data::chat::prompt(prompt),
        }
    }
}

/// A model folder: weights, image processor and tokenizer.
pub struct ModelFolder {
    /// The model.
    pub model: Llava,
    /// `preprocessor_config.json`.
    pub processor: ClipProcessor,
    /// `tokenizer.json`.
    pub tokenizer: Tokenizer,
    /// Where `tokenizer.json` was read.
    pub tokenizer_path: PathBuf,
}

/// Whether each token of `e` lies inside the byte range `span` of its text (by the tokenizer's
/// offsets; special tokens lie outside).
pub fn tokens_within(e: &tokenizers::Encoding, span: &Range<usize>) -> Vec<bool> {
    let special = e.get_special_tokens_mask();
    e.get_offsets()
        .iter()
        .zip(special)
        .map(|(&(a, b), &s)| s == 0 && b > a && a >= span.start && b <= span.end)
        .collect()
}

impl ModelFolder {
    /// Loads `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| ModelError::Tokenizer { path: tokenizer_path.clone(), problem: e.to_string() })?;
        let model = load_llava(dir, device)?;
        let processor_path = dir.join("preprocessor_config.json");
        let processor = ClipProcessor::from_file(&processor_path)?;
        let side = model.config.vision.image_size as u32;
        if processor.output_size() != Some((side, side)) {
            return Err(ModelError::Config(format!(
                "{}: images come out at {:?} (height, width), the vision tower takes {side}x{side}",
                processor_path.display(),
                processor.output_size()
            )));
        }
        Ok(ModelFolder { model, processor, tokenizer, tokenizer_path })
    }

    /// Token ids of `text` (with the tokenizer's special tokens, e.g. BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.encoding(text)?.get_ids().to_vec())
    }

    /// Token ids of `text` and whether each token lies inside the byte range `span` (by the
    /// tokenizer's offsets; special tokens lie outside).
    pub fn encode_marking(
        &self,
        text: &str,
        span: &Range<usize>,
    ) -> Result<(Vec<u32>, Vec<bool>), ModelError> {
        let e = self.encoding(text)?;
        Ok((e.get_ids().to_vec(), tokens_within(&e, span)))
    }

    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding, ModelError> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer { path: self.tokenizer_path.clone(), problem: e.to_string() })
    }

    /// Replaces each image placeholder id by one per image feature; `images` placeholders must
    /// be present.
    pub fn expand_images(&self, ids: &[u32], images: usize) -> Result<Vec<u32>, ModelError> {
        let image_id = self.model.config.image_token_id;
        let found = ids.iter().filter(|&&i| i == image_id).count();
        if found != images {
            return Err(ModelError::Input(format!(
                "the prompt has {found} {IMAGE_PLACEHOLDER} placeholders for {images} images"
            )));
        }
        let n = self.model.config.image_features();
        Ok(ids.iter().flat_map(|&i| std::iter::repeat_n(i, if i == image_id { n } else { 1 })).collect())
    }

    /// Processed pixels of a batch's images (paths relative to `base`; lines without one have
    /// none), [`ImageInput::None`] if there are none.
    fn pixels(&self, base: &Path, images: &[Option<&PathBuf>]) -> Result<ImageInput, ModelError> {
        let processed = images
            .iter()
            .flatten()
            .map(|p| self.processor.process_file(&base.join(p)))
            .collect::<Result<Vec<_>, _>>()?;
        if processed.is_empty() {
            return Ok(ImageInput::None);
        }
        let side = self.model.config.vision.image_size;
        Ok(ImageInput::Pixels(pixel_batch(processed, side, side, &self.model.device())))
    }
}

#[derive(Deserialize)]
struct ScoreLine {
    #[serde(default)]
    image: Option<PathBuf>,
    prompt: String,
    response: String,
}

#[derive(Serialize)]
struct ScoreOut {
    response_logprobs: Vec<f32>,
    sum: f64,
}

#[derive(Deserialize)]
struct GenerateLine {
    #[serde(default)]
    image: Option<PathBuf>,
    prompt: String,
}

#[derive(Serialize)]
struct GenerateOut {
    text: String,
    token_ids: Vec<u32>,
    logprobs: Vec<f32>,
}

/// `factrl score`: per-token log-probs of each line's response given its prompt and image. The
/// response tokens are those of `prompt + " " + response` after the prompt's own tokens.
pub fn score(model_dir: &Path, input: &Path, output: &Path, template: Template) -> Result<(), ModelError> {
    let folder = ModelFolder::load(model_dir, &inference_device())?;
    let base = input.parent().unwrap_or(Path::new("."));
    let lines: Vec<ScoreLine> = crate::io::read_jsonl(input)?;
    let mut rows = Vec::with_capacity(lines.len());
    for chunk in lines.chunks(BATCH) {
        let (mut prompts, mut responses) = (Vec::new(), Vec::new());
        for line in chunk {
            let prompt = template.apply(&line.prompt);
            let prompt_len = folder.encode(&prompt)?.len();
            let mut full = folder.encode(&format!("{prompt} {}", line.response))?;
            let response = full.split_off(prompt_len.min(full.len()));
            prompts.push(folder.expand_images(&full, usize::from(line.image.is_some()))?);
            responses.push(response);
        }
        let images: Vec<_> = chunk.iter().map(|l| l.image.as_ref()).collect();
        let logp = folder.model.response_logprobs(&prompts, &responses, folder.pixels(base, &images)?)?;
        let r = logp.dims()[1];
        let logp = logp
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading log-probs: {e:?}")))?;
        for (row, response) in responses.iter().enumerate() {
            let values = logp[row * r..row * r + response.len()].to_vec();
            let sum = values.iter().map(|&v| f64::from(v)).sum();
            rows.push(ScoreOut { response_logprobs: values, sum });
        }
    }
    Ok(crate::io::write_jsonl(output, &rows)?)
}

/// `factrl generate`: a continuation of each line's prompt.
pub fn generate_file(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    template: Template,
    sampling: &SamplingConfig,
) -> Result<(), ModelError> {
    let folder = ModelFolder::load(model_dir, &inference_device())?;
    let base = input.parent().unwrap_or(Path::new("."));
    let lines: Vec<GenerateLine> = crate::io::read_jsonl(input)?;
    let items: Vec<(Option<PathBuf>, String)> =
        lines.into_iter().map(|l| (l.image.map(|p| base.join(p)), template.apply(&l.prompt))).collect();
    let rows: Vec<GenerateOut> = folder
        .generate_all(&items, sampling, BATCH)?
        .into_iter()
        .map(|(text, g)| GenerateOut { text, token_ids: g.token_ids, logprobs: g.logprobs })
        .collect();
    Ok(crate::io::write_jsonl(output, &rows)?)
}

impl ModelFolder {
    /// Decoded continuations of prompts (text as the tokenizer reads it, each with its image file
    /// if any), `batch` at a time. Batch `i` samples from the stream `seed + i`, so a run is
    /// reproducible from its seed.
    pub fn generate_all(
        &self,
        items: &[(Option<PathBuf>, String)],
        sampling: &SamplingConfig,
        batch: usize,
    ) -> Result<Vec<(String, Generation)>, ModelError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, chunk) in items.chunks(batch.max(1)).enumerate() {
            let images: Vec<Option<&PathBuf>> = chunk.iter().map(|(p, _)| p.as_ref()).collect();
            let prompts = chunk
                .iter()
                .map(|(image, prompt)| {
                    self.expand_images(&self.encode(prompt)?, usize::from(image.is_some()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let sampling = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
            for generation in
                generate(&self.model, &prompts, self.pixels(Path::new(""), &images)?, &sampling)?
            {
                let text = self.tokenizer.decode(&generation.token_ids, true).map_err(|e| {
                    ModelError::Tokenizer { path: self.tokenizer_path.clone(), problem: e.to_string() }
                })?;
                out.push((text, generation));
            }
        }
        Ok(out)
    }
}

/// `factrl export`: the model folder in the llava-hf layout (config, processor, tokenizer,
/// safetensors in `dtype`), adapters merged. The folder is written under `{output}.partial` and
/// renamed when complete; an existing `output` is left alone (an error).
pub fn export(model_dir: &Path, output: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
    if output.exists() {
        return Err(ModelError::io(
            output,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists: remove it or choose another"),
        ));
    }
    let folder = ModelFolder::load(model_dir, &inference_device())?;
    let partial = output.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| ModelError::io(&partial, e))?;
    }
    save_llava(&folder.model, &partial, dtype, MAX_SHARD_BYTES)?;
    folder.processor.save(&partial.join("preprocessor_config.json"))?;
    // The tokenizer, and transformers' tokenizer and generation settings where the folder has them.
    let copies = std::iter::once(("tokenizer.json", folder.tokenizer_path.clone()))
        .chain(COMPANION_FILES.iter().map(|name| (*name, model_dir.join(name))))
        .filter(|(_, from)| from.exists());
    for (name, from) in copies {
        let to = partial.join(name);
        std::fs::copy(&from, &to).map_err(|e| ModelError::io(&to, e))?;
    }
    std::fs::rename(&partial, output).map_err(|e| ModelError::io(output, e))
}
