//! The Hugging Face `config.json` of `LlavaForConditionalGeneration`, converted to and from
//! [`LlavaConfig`] in one place ([`HfLlavaConfig::into_config`], [`HfLlavaConfig::from_config`]).
//! Defaults are transformers' own, so partial configs (as llava-hf ships them) read correctly.

use super::ModelError;
use super::config::{FeatureStrategy, LlamaConfig, LlavaConfig, ProjectorKind, VisionConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

impl LlavaConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let hf: HfLlavaConfig = serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))?;
        hf.into_config().map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    /// Writes a Hugging Face `config.json` for `LlavaForConditionalGeneration`.
    pub fn save_hf_file(&self, path: &Path) -> Result<(), ModelError> {
        let json = serde_json::to_string_pretty(&HfLlavaConfig::from_config(self))
            .map_err(|e| ModelError::json(path, e))?;
        std::fs::write(path, json).map_err(|e| ModelError::io(path, e))
    }
}

/// `config.json` of `LlavaForConditionalGeneration`.
#[derive(Serialize, Deserialize, Debug)]
pub struct HfLlavaConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default = "llava")]
    model_type: String,
    #[serde(default)]
    text_config: HfTextConfig,
    #[serde(default)]
    vision_config: HfVisionConfig,
    #[serde(default = "image_token", alias = "image_token_id")]
    image_token_index: u32,
    #[serde(default = "gelu")]
    projector_hidden_act: String,
    /// factrl's extension; transformers knows only the MLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    projector_type: Option<String>,
    #[serde(default = "yes")]
    multimodal_projector_bias: bool,
    #[serde(default = "minus_two")]
    vision_feature_layer: i64,
    #[serde(default = "default_strategy")]
    vision_feature_select_strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tie_word_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_seq_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug)]
struct HfTextConfig {
    #[serde(default = "llama")]
    model_type: String,
    #[serde(default = "d32000")]
    vocab_size: usize,
    #[serde(default = "d4096")]
    hidden_size: usize,
    #[serde(default = "d11008")]
    intermediate_size: usize,
    #[serde(default = "d32")]
    num_hidden_layers: usize,
    #[serde(default = "d32")]
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "eps6")]
    rms_norm_eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rope_theta: Option<f64>,
    /// transformers >= 4.56 nests the RoPE settings here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rope_parameters: Option<HfRopeParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "d4096")]
    max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug)]
struct HfRopeParameters {
    rope_theta: f64,
    #[serde(default = "default_rope")]
    rope_type: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct HfVisionConfig {
    #[serde(default = "clip_vision")]
    model_type: String,
    #[serde(default = "d768")]
    hidden_size: usize,
    #[serde(default = "d3072")]
    intermediate_size: usize,
    #[serde(default = "d12")]
    num_attention_heads: usize,
    #[serde(default = "d12")]
    num_hidden_layers: usize,
    #[serde(default = "d224")]
    image_size: usize,
    #[serde(default = "d32")]
    patch_size: usize,
    #[serde(default = "d3")]
    num_channels: usize,
    #[serde(default = "eps5")]
    layer_norm_eps: f64,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl Default for HfVisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl HfLlavaConfig {
    /// Converts to the internal config, rejecting what factrl does not implement.
    pub fn into_config(self) -> Result<LlavaConfig, String> {
        let t = self.text_config;
        let v = self.vision_config;
        let unsupported = |what: &str, value: &str| Err(format!("unsupported {what} {value:?}"));
        if t.hidden_act != "silu" {
            return unsupported("text_config.hidden_act", &t.hidden_act);
        }
        if v.hidden_act != "quick_gelu" {
            return unsupported("vision_config.hidden_act", &v.hidden_act);
        }
        if self.projector_hidden_act != "gelu" {
            return unsupported("projector_hidden_act", &self.projector_hidden_act);
        }
        if let Some(scaling) = t.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return unsupported("text_config.rope_scaling", &scaling.to_string());
        }
        let rope_theta = match (&t.rope_parameters, t.rope_theta) {
            (Some(p), _) if p.rope_type != "default" => {
                return unsupported("rope_parameters.rope_type", &p.rope_type);
            }
            (Some(p), _) => p.rope_theta,
            (None, Some(theta)) => theta,
            (None, None) => 10000.0,
        };
        let projector = match self.projector_type.as_deref() {
            None | Some("mlp2x_gelu") => ProjectorKind::Mlp2xGelu,
            Some("linear") => ProjectorKind::Linear,
            Some(other) => return unsupported("projector_type", other),
        };
        let strategy = match self.vision_feature_select_strategy.as_str() {
            "default" => FeatureStrategy::Default,
            "full" => FeatureStrategy::Full,
            other => return unsupported("vision_feature_select_strategy", other),
        };
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err("text_config.num_attention_heads must divide hidden_size".into());
        }
        let kv_heads = t.num_key_value_heads.unwrap_or(t.num_attention_heads);
        if kv_heads == 0 || !t.num_attention_heads.is_multiple_of(kv_heads) {
            return Err("num_key_value_heads must divide num_attention_heads".into());
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err("vision_config.num_attention_heads must divide hidden_size".into());
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err("vision_config.patch_size must divide image_size".into());
        }
        let head_dim = t.head_dim.unwrap_or(t.hidden_size / t.num_attention_heads);
        let text = LlamaConfig {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: t.rms_norm_eps,
            rope_theta,
            attention_bias: t.attention_bias,
            mlp_bias: t.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(t.tie_word_embeddings),
            max_position_embeddings: t.max_position_embeddings,
        };
        let vision = VisionConfig {
            hidden_size: v.hidden_size,
            intermediate_size: v.intermediate_size,
            num_attention_heads: v.num_attention_heads,
            num_hidden_layers: v.num_hidden_layers,
            image_size: v.image_size,
            patch_size: v.patch_size,
            num_channels: v.num_channels,
            layer_norm_eps: v.layer_norm_eps,
        };
        let config = LlavaConfig {
            vision,
            text,
            projector,
            projector_bias: self.multimodal_projector_bias,
            vision_feature_layer: self.vision_feature_layer,
            vision_feature_select_strategy: strategy,
            image_token_id: self.image_token_index,
            bos_token_id: t.bos_token_id,
            eos_token_id: t.eos_token_id,
            pad_token_id: t.pad_token_id.or(self.pad_token_id),
        };
        config.vision_layers_used().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The `config.json` transformers reads back as `config`.
    pub fn from_config(config: &LlavaConfig) -> Self {
        let (t, v) = (&config.text, &config.vision);
        HfLlavaConfig {
            architectures: vec!["LlavaForConditionalGeneration".into()],
            model_type: llava(),
            text_config: HfTextConfig {
                model_type: llama(),
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                intermediate_size: t.intermediate_size,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                num_key_value_heads: Some(t.num_key_value_heads),
                head_dim: Some(t.head_dim),
                rms_norm_eps: t.rms_norm_eps,
                rope_theta: Some(t.rope_theta),
                rope_parameters: None,
                rope_scaling: None,
                hidden_act: silu(),
                attention_bias: t.attention_bias,
                mlp_bias: t.mlp_bias,
                tie_word_embeddings: t.tie_word_embeddings,
                max_position_embeddings: t.max_position_embeddings,
                bos_token_id: config.bos_token_id,
                eos_token_id: config.eos_token_id,
                pad_token_id: config.pad_token_id,
            },
            vision_config: HfVisionConfig {
                model_type: clip_vision(),
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                num_attention_heads: v.num_attention_heads,
                num_hidden_layers: v.num_hidden_layers,
                image_size: v.image_size,
                patch_size: v.patch_size,
                num_channels: v.num_channels,
                layer_norm_eps: v.layer_norm_eps,
                hidden_act: quick_gelu(),
            },
            image_token_index: config.image_token_id,
            projector_hidden_act: gelu(),
            projector_type: match config.projector {
                ProjectorKind::Linear => Some("linear".into()),
                ProjectorKind::Mlp2xGelu => None,
            },
            multimodal_projector_bias: config.projector_bias,
            vision_feature_layer: config.vision_feature_layer,
            vision_feature_select_strategy: match config.vision_feature_select_strategy {
                FeatureStrategy::Default => "default".into(),
                FeatureStrategy::Full => "full".into(),
            },
            tie_word_embeddings: Some(t.tie_word_embeddings),
            image_seq_length: Some(config.image_features()),
            pad_token_id: config.pad_token_id,
        }
    }
}

/// serde takes defaults from functions: one per value.
macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => { $(fn $name() -> $ty { $value })* };
}

defaults! {
    llava: String = "llava".into();
    llama: String = "llama".into();
    clip_vision: String = "clip_vision_model".into();
    gelu: String = "gelu".into();
    silu: String = "silu".into();
    quick_gelu: String = "quick_gelu".into();
    default_strategy: String = "default".into();
    default_rope: String = "default".into();
    image_token: u32 = 32000;
    yes: bool = true;
    minus_two: i64 = -2;
    eps5: f64 = 1e-5;
    eps6: f64 = 1e-6;
    d3: usize = 3;
    d12: usize = 12;
    d32: usize = 32;
    d224: usize = 224;
    d768: usize = 768;
    d3072: usize = 3072;
    d4096: usize = 4096;
    d11008: usize = 11008;
    d32000: usize = 32000;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<LlavaConfig, String> {
        serde_json::from_str::<HfLlavaConfig>(json).map_err(|e| e.to_string())?.into_config()
    }

    #[test]
    fn llava_1_5_7b_config_uses_transformers_defaults() {
        // The text_config of llava-hf/llava-1.5-7b-hf names only what differs from LlamaConfig.
        let config = parse(
            r#"{"text_config": {"model_type": "llama", "rms_norm_eps": 1e-05, "vocab_size": 32064},
                "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                  "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14}}"#,
        )
        .unwrap();
        assert_eq!(config.text.hidden_size, 4096);
        assert_eq!(config.text.num_key_value_heads, 32);
        assert_eq!(config.text.head_dim, 128);
        assert_eq!(config.text.rope_theta, 10000.0);
        assert_eq!(config.image_token_id, 32000);
        assert_eq!(config.image_features(), 576);
        assert_eq!(config.vision_layers_used().unwrap(), 23);
    }

    #[test]
    fn both_rope_forms_give_the_same_theta() {
        let old = parse(r#"{"text_config": {"rope_theta": 500000.0}}"#).unwrap();
        let new = parse(
            r#"{"text_config": {"rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}}}"#,
        )
        .unwrap();
        assert_eq!(old.text.rope_theta, 500000.0);
        assert_eq!(new.text.rope_theta, 500000.0);
        assert!(
            parse(r#"{"text_config": {"rope_parameters": {"rope_theta": 1.0, "rope_type": "yarn"}}}"#)
                .is_err()
        );
    }

    #[test]
    fn hf_round_trip_keeps_the_config() {
        let config = LlavaConfig::tiny(300);
        let json = serde_json::to_string(&HfLlavaConfig::from_config(&config)).unwrap();
        assert_eq!(parse(&json).unwrap(), config);
    }

    #[test]
    fn out_of_range_feature_layer_is_rejected() {
        assert!(parse(r#"{"vision_feature_layer": -14}"#).is_err());
        assert!(parse(r#"{"vision_feature_select_strategy": "mean"}"#).is_err());
    }
}
