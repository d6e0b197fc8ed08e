//! LLaVA: vision tower + projector + decoder, the image-token merge, log-probs and the scalar
//! head of reward and value models.
//!
//! Inputs carry image placeholders already expanded: each image owns
//! [`LlavaConfig::image_features`] consecutive `image_token_id`s, filled in order of appearance
//! (row-major over the batch) with that image's projected features.

use super::batch::{PaddingSide, TextBatch, response_columns};
use super::config::{FeatureStrategy, LlavaConfig};
use super::llama::{KvCache, LlamaModel};
use super::projector::Projector;
use super::vision::ClipVisionTower;
use super::{ModelError, in_rows, linear_rows};
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// The images of a batch, in the order their placeholders appear.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// No images (the ids must hold no image token).
    None,
    /// Processed pixels, `[n, c, h, w]`.
    Pixels(Tensor<4>),
    /// Precomputed [`Llava::image_features`], `[n, features, d_vision]`, so that a frozen tower
    /// runs once per image.
    Features(Tensor<3>),
}

impl ImageInput {
    /// The same images all zeros: as many image tokens, showing nothing.
    pub fn blank(&self) -> ImageInput {
        match self {
            ImageInput::None => ImageInput::None,
            ImageInput::Pixels(p) => ImageInput::Pixels(p.zeros_like()),
            ImageInput::Features(f) => ImageInput::Features(f.zeros_like()),
        }
    }
}

/// The LLaVA model; field names are the llava-hf checkpoint keys.
#[derive(Module, Debug)]
pub struct Llava {
    /// CLIP vision tower.
    pub vision_tower: ClipVisionTower,
    /// Vision-to-text projector.
    pub multi_modal_projector: Projector,
    /// Decoder.
    pub language_model: LlamaModel,
    /// LM head, `None` when tied to the embeddings.
    pub lm_head: Option<Linear>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: LlavaConfig,
}

impl Llava {
    /// A randomly initialised model.
    pub fn init(config: &LlavaConfig, device: &Device) -> Result<Self, ModelError> {
        let (v, t) = (&config.vision, &config.text);
        let lm_head = (!t.tie_word_embeddings).then(|| {
            LinearConfig::new(t.hidden_size, t.vocab_size)
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device)
        });
        Ok(Llava {
            vision_tower: ClipVisionTower::init(v, config.vision_layers_used()?, device)?,
            multi_modal_projector: Projector::init(
                config.projector,
                v.hidden_size,
                t.hidden_size,
                config.projector_bias,
                device,
            ),
            language_model: LlamaModel::init(t, device),
            lm_head,
            config: config.clone(),
        })
    }

    /// Freezes the vision tower (LLaVA's instruction tuning); other parts keep their state.
    pub fn freeze_vision(mut self) -> Self {
        self.vision_tower = self.vision_tower.freeze();
        self
    }

    /// Freezes everything but the projector (LLaVA's feature-alignment pretraining).
    pub fn freeze_all_but_projector(mut self) -> Self {
        self = self.freeze_vision();
        self.language_model = self.language_model.freeze();
        self.lm_head = self.lm_head.map(Module::freeze);
        self
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.language_model.embed_tokens.weight.lazy_device()
    }

    /// Selected vision features (before the projector).
    ///
    /// # Shapes
    /// - `pixels`: `[n, c, h, w]` -> `[n, features, d_vision]`
    pub fn image_features(&self, pixels: Tensor<4>) -> Tensor<3> {
        let hidden = self.vision_tower.forward(pixels); // [n, 1 + patches, d]
        let t = hidden.dims()[1];
        match self.config.vision_feature_select_strategy {
            FeatureStrategy::Default => hidden.narrow(1, 1, t - 1), // [n, patches, d]
            FeatureStrategy::Full => hidden,
        }
    }

    /// Input embeddings with image placeholders replaced by projected image features.
    ///
    /// # Shapes
    /// - `ids`: `b * t` -> `[b, t, d]`
    fn embed(&self, ids: &[u32], b: usize, images: ImageInput) -> Result<Tensor<3>, ModelError> {
        let device = self.device();
        let t = ids.len() / b.max(1);
        let image_id = self.config.image_token_id;
        let per_image = self.config.image_features();
        let vocab = self.config.text.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&i| i != image_id && i as usize >= vocab) {
            return Err(ModelError::Input(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        // Check the placeholders before running the tower.
        let placeholders = ids.iter().filter(|&&i| i == image_id).count();
        let n_images = match &images {
            ImageInput::None => 0,
            ImageInput::Pixels(pixels) => pixels.dims()[0],
            ImageInput::Features(features) => features.dims()[0],
        };
        if placeholders != n_images * per_image {
            return Err(ModelError::Input(format!(
                "the batch holds {placeholders} image tokens but {n_images} images give {} features \
                 ({per_image} per image)",
                n_images * per_image
            )));
        }
        if let Some(row) = ids
            .chunks(t.max(1))
            .position(|row| row.iter().filter(|&&i| i == image_id).count() % per_image != 0)
        {
            return Err(ModelError::Input(format!(
                "row {row} holds a number of image tokens that is not a multiple of {per_image}"
            )));
        }
        // Image placeholders may lie outside the vocabulary; embed them as id 0 and replace.
        let text_ids: Vec<i64> = ids.iter().map(|&i| if i == image_id { 0 } else { i64::from(i) }).collect();
        let text_ids = Tensor::<2, Int>::from_data(TensorData::new(text_ids, [b, t]), &device);
        let text = self.language_model.embed_tokens.forward(text_ids); // [b, t, d]
        let features = match images {
            ImageInput::None => return Ok(text),
            ImageInput::Pixels(pixels) => self.image_features(pixels),
            ImageInput::Features(features) => features,
        };
        if features.dims()[1] != per_image {
            return Err(ModelError::Input(format!(
                "image features have {} tokens per image, the model expects {per_image}",
                features.dims()[1]
            )));
        }
        let projected = self.multi_modal_projector.forward(features); // [n, f, d]
        let d = projected.dims()[2];
        let rows = b * t;
        // Gather from [text rows; image rows]: the k-th placeholder takes image row k.
        let mut k = 0;
        let index: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(p, &i)| {
                if i == image_id {
                    k += 1;
                    (rows + k - 1) as i64
                } else {
                    p as i64
                }
            })
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [rows]), &device);
        let table =
            Tensor::cat(vec![text.reshape([rows, d]), projected.reshape([n_images * per_image, d])], 0);
        Ok(table.select(0, index).reshape([b, t, d]))
    }

    /// Final hidden states of the newest tokens `ids` (`b * t`, row-major), given `key_mask`
    /// over the cached and new tokens (`b * (cached + t)`); extends `cache`.
    ///
    /// # Shapes
    /// - -> `[b, t, d]`
    pub fn decode(
        &self,
        ids: &[u32],
        b: usize,
        images: ImageInput,
        key_mask: &[bool],
        cache: &mut KvCache,
    ) -> Result<Tensor<3>, ModelError> {
        let s = cache.len() + ids.len() / b.max(1);
        if !ids.len().is_multiple_of(b.max(1)) || key_mask.len() != b * s {
            return Err(ModelError::Input(format!(
                "{} ids and a mask of {} do not form {b} rows over {} cached tokens",
                ids.len(),
                key_mask.len(),
                cache.len()
            )));
        }
        let embeds = self.embed(ids, b, images)?;
        Ok(self.language_model.forward(embeds, key_mask, cache))
    }

    /// Final hidden states of a whole batch (no cache).
    ///
    /// # Shapes
    /// - -> `[b, t, d]`
    pub fn hidden_states(&self, batch: &TextBatch, images: ImageInput) -> Result<Tensor<3>, ModelError> {
        self.decode(&batch.ids, batch.batch, images, &batch.mask, &mut KvCache::default())
    }

    /// Next-token logits from hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[b, t, d]` -> `[b, t, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => linear_rows(head, hidden),
            None => {
                let embed = self.language_model.embed_tokens.weight.val(); // [vocab, d]
                in_rows(hidden, embed.dims()[0], |h| h.matmul(embed.transpose()))
            }
        }
    }

    /// Logits of a whole batch.
    ///
    /// # Shapes
    /// - -> `[b, t, vocab]`
    pub fn forward(&self, batch: &TextBatch, images: ImageInput) -> Result<Tensor<3>, ModelError> {
        Ok(self.logits(self.hidden_states(batch, images)?))
    }

    /// `log p(ids[j + 1] | ids[..=j])` for every column `j`; entries at padding are meaningless
    /// and must be masked by the caller (or use [`Llava::response_logprobs`]).
    ///
    /// # Shapes
    /// - -> `[b, t - 1]`
    pub fn token_logprobs(&self, batch: &TextBatch, images: ImageInput) -> Result<Tensor<2>, ModelError> {
        let hidden = self.hidden_states(batch, images)?;
        self.token_logprobs_of(batch, hidden)
    }

    /// [`Llava::token_logprobs`] from the batch's final hidden states (when they serve another
    /// head too).
    ///
    /// # Shapes
    /// - `hidden`: `[b, t, d]` -> `[b, t - 1]`
    pub fn token_logprobs_of(&self, batch: &TextBatch, hidden: Tensor<3>) -> Result<Tensor<2>, ModelError> {
        let (b, t) = (batch.batch, batch.len);
        if t < 2 {
            return Err(ModelError::Input("log-probs need sequences of at least 2 tokens".into()));
        }
        let logits = self.logits(hidden).narrow(1, 0, t - 1); // [b, t - 1, vocab]
        let next: Vec<i64> =
            batch.ids.chunks(t).flat_map(|row| row[1..].iter().map(|&i| i64::from(i))).collect();
        let next = Tensor::<3, Int>::from_data(TensorData::new(next, [b, t - 1, 1]), &self.device());
        Ok(log_softmax(logits, 2).gather(2, next).reshape([b, t - 1]))
    }

    /// Log-probs of each response token given its prompt (ids with expanded image tokens) and
    /// the images: the per-token terms of SFT, DPO and PPO losses. Entries past a row's
    /// response are 0.
    ///
    /// # Shapes
    /// - -> `[b, r]`, `r` the longest response
    pub fn response_logprobs(
        &self,
        prompts: &[Vec<u32>],
        responses: &[Vec<u32>],
        images: ImageInput,
    ) -> Result<Tensor<2>, ModelError> {
        if prompts.len() != responses.len() || prompts.iter().any(Vec::is_empty) {
            return Err(ModelError::Input(format!(
                "{} prompts (each non-empty) for {} responses",
                prompts.len(),
                responses.len()
            )));
        }
        let sequences: Vec<Vec<u32>> =
            prompts.iter().zip(responses).map(|(p, r)| [p.as_slice(), r].concat()).collect();
        let pad = self.config.pad_token_id.unwrap_or(0);
        let batch = TextBatch::pad(&sequences, pad, PaddingSide::Right);
        let logp = self.token_logprobs(&batch, images)?; // [b, t - 1]
        let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let response_lens: Vec<usize> = responses.iter().map(Vec::len).collect();
        Ok(response_entries(logp, &prompt_lens, &response_lens))
    }
}

/// From per-position values of right-padded `prompt + response` rows (column `j` computed at
/// position `j`: a log-prob of token `j + 1`, a value of the state after token `j`), the entries
/// of the states that predict each response token; 0 past a row's response.
///
/// # Shapes
/// - `x`: `[b, t']` -> `[b, r]`, `r` the longest response
pub fn response_entries(x: Tensor<2>, prompt_lens: &[usize], response_lens: &[usize]) -> Tensor<2> {
    let (columns, mask, r) = response_columns(prompt_lens, response_lens);
    let (b, device) = (prompt_lens.len(), x.device());
    let columns = Tensor::<2, Int>::from_data(TensorData::new(columns, [b, r]), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, r]), &device);
    x.gather(1, columns) * mask
}

/// A linear head on the hidden state of each row's last real token: the score of reward models
/// and the value of value models (`score.*`, saved beside the checkpoint).
#[derive(Module, Debug)]
pub struct ScalarHead {
    /// `d -> 1`, with bias.
    pub score: Linear,
}

impl ScalarHead {
    /// A head for width `d`; zero weights when `zero` (PPO's value head starts at 0).
    pub fn init(d: usize, zero: bool, device: &Device) -> Self {
        let initializer = if zero {
            Initializer::Zeros
        } else {
            Initializer::Normal { mean: 0.0, std: 1.0 / (d as f64 + 1.0).sqrt() }
        };
        ScalarHead { score: LinearConfig::new(d, 1).with_initializer(initializer).init(device) }
    }

    /// # Shapes
    /// - `hidden`: `[b, t, d]`, `last`: `b` columns ([`TextBatch::last_real`]) -> `[b]`
    pub fn forward(&self, hidden: Tensor<3>, last: &[usize]) -> Tensor<1> {
        let [b, t, d] = hidden.dims();
        let rows: Vec<i64> = last.iter().enumerate().map(|(r, &c)| (r * t + c) as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &hidden.device());
        let picked = hidden.reshape([b * t, d]).select(0, rows); // [b, d]
        self.score.forward(picked).reshape([b])
    }
}
