//! Model configuration: the internal configs every component is built from, and presets. The
//! Hugging Face `config.json` format lives in [`super::hf_config`], converted in one place.

use super::ModelError;
use burn::config::Config;

/// CLIP vision tower.
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Attention heads (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// Encoder layers in the checkpoint (the tower runs only those the feature layer needs).
    pub num_hidden_layers: usize,
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Image channels.
    #[config(default = 3)]
    pub num_channels: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per image: `(image_size / patch_size)^2`.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// LLaMA-style decoder.
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding and of the LM head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key / value heads (grouped-query attention; divides `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Whether the q/k/v/o projections have biases.
    #[config(default = false)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[config(default = false)]
    pub mlp_bias: bool,
    /// Whether the LM head shares the embedding matrix.
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    /// Longest sequence the checkpoint was trained for (kept for `config.json`).
    #[config(default = 4096)]
    pub max_position_embeddings: usize,
}

/// Vision-to-text projector architecture.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ProjectorKind {
    /// One linear layer (LLaVA-1).
    Linear,
    /// Linear, GELU, linear (LLaVA-1.5, llava-hf's only kind).
    Mlp2xGelu,
}

/// Which vision tokens reach the projector.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum FeatureStrategy {
    /// Patch tokens only: the class token is dropped.
    Default,
    /// Class token and patch tokens.
    Full,
}

/// The whole LLaVA model.
#[derive(Config, Debug, PartialEq)]
pub struct LlavaConfig {
    /// Vision tower.
    pub vision: VisionConfig,
    /// Decoder.
    pub text: LlamaConfig,
    /// Projector architecture.
    #[config(default = "ProjectorKind::Mlp2xGelu")]
    pub projector: ProjectorKind,
    /// Whether the projector's linear layers have biases.
    #[config(default = true)]
    pub projector_bias: bool,
    /// Vision hidden state fed to the projector: index into the tower's hidden states (the
    /// embeddings then one per layer); negative counts from the end.
    #[config(default = -2)]
    pub vision_feature_layer: i64,
    /// Which vision tokens are kept.
    #[config(default = "FeatureStrategy::Default")]
    pub vision_feature_select_strategy: FeatureStrategy,
    /// Token id of the image placeholder, repeated once per image feature in the input ids.
    pub image_token_id: u32,
    /// Beginning-of-sequence token, if any.
    #[config(default = "None")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token, if any (generation stops there).
    #[config(default = "None")]
    pub eos_token_id: Option<u32>,
    /// Padding token, if any.
    #[config(default = "None")]
    pub pad_token_id: Option<u32>,
}

impl LlavaConfig {
    /// The built-in world's model (~1M parameters at a vocabulary of a few hundred): 48 px images
    /// in 8 px patches (36 image tokens; 2x2 patches per cell of the world's grid, small enough
    /// that an object fills some of them, so its colour reads the same wherever it sits; cell-sized
    /// patches trained measurably slower), a 2-layer 64-wide tower and a 4-layer 128-wide decoder
    /// with 4 query and 2 key/value heads. The image token is the last id of the vocabulary.
    pub fn tiny(vocab_size: usize) -> Self {
        let vision = VisionConfig::new(64, 256, 4, 2, 48, 8);
        let text = LlamaConfig::new(vocab_size, 128, 352, 4, 4, 2, 32);
        let image_token_id = vocab_size.saturating_sub(1) as u32;
        LlavaConfig::new(vision, text, image_token_id).with_vision_feature_layer(-1)
    }

    /// Number of encoder layers the tower must run to produce the selected hidden state.
    pub fn vision_layers_used(&self) -> Result<usize, ModelError> {
        let total = self.vision.num_hidden_layers as i64;
        let index = if self.vision_feature_layer < 0 {
            total + 1 + self.vision_feature_layer
        } else {
            self.vision_feature_layer
        };
        if !(0..=total).contains(&index) {
            return Err(ModelError::Config(format!(
                "vision_feature_layer {} is out of range for {} vision layers",
                self.vision_feature_layer, total
            )));
        }
        Ok(index as usize)
    }

    /// Image features (placeholder tokens) per image.
    pub fn image_features(&self) -> usize {
        match self.vision_feature_select_strategy {
            FeatureStrategy::Default => self.vision.num_patches(),
            FeatureStrategy::Full => self.vision.num_patches() + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_is_about_a_million_parameters_and_uses_every_vision_layer() {
        let config = LlavaConfig::tiny(300);
        assert_eq!(config.vision_layers_used().unwrap(), 2);
        assert_eq!(config.image_features(), 36);
        let model = crate::model::Llava::init(&config, &crate::backend::inference_device()).unwrap();
        let params = burn::module::Module::num_params(&model);
        assert!((800_000..1_200_000).contains(&params), "{params} parameters");
    }

    #[test]
    fn feature_layer_counts_from_the_end() {
        let mut config = LlavaConfig::tiny(10);
        config.vision.num_hidden_layers = 24;
        config.vision_feature_layer = -2;
        assert_eq!(config.vision_layers_used().unwrap(), 23);
        config.vision_feature_layer = 5;
        assert_eq!(config.vision_layers_used().unwrap(), 5);
        config.vision_feature_layer = -26;
        assert!(config.vision_layers_used().is_err());
    }
}
