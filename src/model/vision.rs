//! CLIP vision tower (`CLIPVisionModel`'s `vision_model`): patch embedding, class token, learned
//! positions, pre-LayerNorm, then pre-norm encoder layers with quick-GELU MLPs.
//!
//! The tower trains only the layers the selected feature layer needs: LLaVA never reads the rest
//! (nor `post_layernorm`), and parameters that no loss can reach would have no gradient. Those
//! tensors are carried as plain data ([`Carried`]) so that saved checkpoints stay complete.

use super::config::VisionConfig;
use super::norm::LayerNorm;
use super::store::{NamedTensor, collect_params};
use super::{ModelError, linear_rows};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor};

/// Patch, class-token and position embeddings.
#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    /// The class token, `[d]`.
    pub class_embedding: Param<Tensor<1>>,
    /// Non-overlapping patches to vectors: kernel = stride = patch size, no bias.
    pub patch_embedding: Conv2d,
    /// Learned positions, `[1 + patches, d]` (class token first).
    pub position_embedding: Embedding,
}

impl ClipEmbeddings {
    /// # Shapes
    /// - `pixels`: `[n, c, h, w]` -> `[n, 1 + patches, d]`
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let patches = self.patch_embedding.forward(pixels); // [n, d, h/p, w/p]
        let [n, d, gh, gw] = patches.dims();
        let patches = patches.reshape([n, d, gh * gw]).swap_dims(1, 2); // [n, patches, d]
        let class = self.class_embedding.val().reshape([1, 1, d]).repeat_dim(0, n); // [n, 1, d]
        let positions = self.position_embedding.weight.val().unsqueeze::<3>(); // [1, 1 + patches, d]
        Tensor::cat(vec![class, patches], 1) + positions
    }
}

/// Bidirectional multi-head self-attention with biases.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl ClipAttention {
    /// # Shapes
    /// - `x`: `[n, t, d]` -> `[n, t, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, t, d] = x.dims();
        let hd = d / self.num_heads;
        let heads = |y: Tensor<3>| y.reshape([n, t, self.num_heads, hd]).swap_dims(1, 2); // [n, h, t, hd]
        let q = heads(linear_rows(&self.q_proj, x.clone())) * (hd as f64).powf(-0.5);
        let k = heads(linear_rows(&self.k_proj, x.clone()));
        let v = heads(linear_rows(&self.v_proj, x));
        let attn = softmax(q.matmul(k.swap_dims(2, 3)), 3); // [n, h, t, t]
        let y = attn.matmul(v).swap_dims(1, 2).reshape([n, t, d]); // [n, t, h * hd]
        linear_rows(&self.out_proj, y)
    }
}

/// `fc2(quick_gelu(fc1(x)))`, with quick_gelu(x) = x * sigmoid(1.702 x).
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// Up projection.
    pub fc1: Linear,
    /// Down projection.
    pub fc2: Linear,
}

impl ClipMlp {
    /// # Shapes
    /// - `x`: `[n, t, d]` -> `[n, t, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = linear_rows(&self.fc1, x);
        linear_rows(&self.fc2, h.clone() * sigmoid(h * 1.702))
    }
}

/// One pre-norm encoder layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// Attention.
    pub self_attn: ClipAttention,
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// # Shapes
    /// - `x`: `[n, t, d]` -> `[n, t, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The encoder's layers.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// Layers, in order.
    pub layers: Vec<ClipEncoderLayer>,
}

/// Checkpoint tensors the tower does not compute with, as (path in the tower, shape, values).
#[derive(Clone, Default)]
pub struct Carried(pub Vec<NamedTensor>);

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Carried({} tensors)", self.0.len())
    }
}

/// The CLIP vision tower, truncated after the layer whose output LLaVA reads.
#[derive(Module, Debug)]
pub struct ClipVisionTower {
    /// Embeddings.
    pub embeddings: ClipEmbeddings,
    /// LayerNorm before the encoder (the checkpoints' spelling).
    pub pre_layrnorm: LayerNorm,
    /// Encoder.
    pub encoder: ClipEncoder,
    /// `post_layernorm` and the layers after the feature layer, not trained.
    #[module(skip)]
    pub carried: Carried,
}

impl ClipVisionTower {
    /// A randomly initialised tower computing with the first `layers` encoder layers of `config`.
    pub fn init(config: &VisionConfig, layers: usize, device: &Device) -> Result<Self, ModelError> {
        let d = config.hidden_size;
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).with_initializer(init.clone()).init(device);
        let norm = || LayerNorm::new(d, config.layer_norm_eps, device);
        let p = config.patch_size;
        let embeddings = ClipEmbeddings {
            class_embedding: init.init([d], device),
            patch_embedding: Conv2dConfig::new([config.num_channels, d], [p, p])
                .with_stride([p, p])
                .with_bias(false)
                .with_initializer(init.clone())
                .init(device),
            position_embedding: EmbeddingConfig::new(config.num_patches() + 1, d)
                .with_initializer(init.clone())
                .init(device),
        };
        let layer = |_| ClipEncoderLayer {
            self_attn: ClipAttention {
                q_proj: linear(d, d),
                k_proj: linear(d, d),
                v_proj: linear(d, d),
                out_proj: linear(d, d),
                num_heads: config.num_attention_heads,
            },
            layer_norm1: norm(),
            mlp: ClipMlp {
                fc1: linear(d, config.intermediate_size),
                fc2: linear(config.intermediate_size, d),
            },
            layer_norm2: norm(),
        };
        let mut all: Vec<ClipEncoderLayer> = (0..config.num_hidden_layers.max(layers)).map(layer).collect();
        let unused = all.split_off(layers);
        let prefixed = |prefix: String, params: Vec<NamedTensor>| {
            params.into_iter().map(move |(p, s, v)| (format!("{prefix}.{p}"), s, v))
        };
        let mut carried: Vec<_> = prefixed("post_layernorm".into(), collect_params(&norm())?).collect();
        for (i, l) in unused.iter().enumerate() {
            carried.extend(prefixed(format!("encoder.layers.{}", layers + i), collect_params(l)?));
        }
        let encoder = ClipEncoder { layers: all };
        Ok(ClipVisionTower { embeddings, pre_layrnorm: norm(), encoder, carried: Carried(carried) })
    }

    /// The hidden state after the last held layer (the embeddings if none), class token first.
    ///
    /// # Shapes
    /// - `pixels`: `[n, c, h, w]` -> `[n, 1 + patches, d]`
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let x = self.pre_layrnorm.forward(self.embeddings.forward(pixels));
        self.encoder.layers.iter().fold(x, |x, layer| layer.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::inference_device;

    #[test]
    fn tower_output_has_one_token_per_patch_plus_class() {
        let device = inference_device();
        let config = VisionConfig::new(32, 64, 4, 2, 16, 4);
        let tower = ClipVisionTower::init(&config, 1, &device).unwrap();
        let out = tower.forward(Tensor::zeros([2, 3, 16, 16], &device));
        assert_eq!(out.dims(), [2, 17, 32]);
        assert_eq!(tower.encoder.layers.len(), 1);
    }
}
