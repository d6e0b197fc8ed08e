//! LLaMA-style decoder (`language_model.*`): RMSNorm, rotary positions, grouped-query attention
//! and SwiGLU MLPs, with a key/value cache for generation.
//!
//! Padding is described by a host-side key mask (`true` = real token) over the whole sequence,
//! cache included; positions count real tokens only, so a left-padded sequence gets the same
//! positions (and logits) as the unpadded one.

use super::config::LlamaConfig;
use super::lora::project;
use super::norm::RmsNorm;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, Device, Tensor, TensorData};

/// Cached keys and values of one layer, `[b, kv_heads, s, head_dim]` each.
pub type LayerCache = Option<(Tensor<4>, Tensor<4>)>;

/// Keys and values of every layer for the tokens seen so far.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One entry per decoder layer.
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    /// Cached sequence length (0 when empty).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dims()[2],
            _ => 0,
        }
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rotary embedding tables for one call, `[b, 1, t, head_dim]` each.
struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// Tables for `positions` (`[b, t]`, row-major) with LLaMA's half-split layout.
    fn new(positions: &[f32], b: usize, t: usize, head_dim: usize, theta: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let pos = Tensor::<3>::from_data(TensorData::new(positions.to_vec(), [b, t, 1]), device);
        let inv = Tensor::<3>::from_data(TensorData::new(inv_freq, [1, 1, half]), device);
        let freqs = pos * inv; // [b, t, half]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1); // [b, 1, t, hd]
        Rope { cos: emb.clone().cos(), sin: emb.sin() }
    }

    /// # Shapes
    /// - `x`: `[b, heads, t, head_dim]` -> same
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let rotated =
            Tensor::cat(vec![x.clone().narrow(3, half, half).neg(), x.clone().narrow(3, 0, half)], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// Causal grouped-query self-attention.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection, `d -> heads * head_dim`.
    pub q_proj: Linear,
    /// Key projection, `d -> kv_heads * head_dim`.
    pub k_proj: Linear,
    /// Value projection, `d -> kv_heads * head_dim`.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: usize,
    /// Key / value heads; query head `i` reads kv head `i / (num_heads / num_kv_heads)`.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl LlamaAttention {
    /// # Shapes
    /// - `x`: `[b, t, d]`, `mask`: `[b, 1, t, s]` (`true` = blocked), cache `[b, kv, s - t, hd]`
    ///   -> `[b, t, d]`
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: &Tensor<4, Bool>,
        cache: &mut LayerCache,
        lora_dropout: f64,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2); // [b, n, t, hd]
        let q = rope.apply(split(project(&self.q_proj, x.clone(), lora_dropout), h));
        let mut k = rope.apply(split(project(&self.k_proj, x.clone(), lora_dropout), kv));
        let mut v = split(project(&self.v_proj, x, lora_dropout), kv);
        if let Some((k_past, v_past)) = cache.take() {
            k = Tensor::cat(vec![k_past, k], 2);
            v = Tensor::cat(vec![v_past, v], 2);
        }
        *cache = Some((k.clone(), v.clone()));
        let s = k.dims()[2];
        // Fold the query heads of one kv group into the time axis so no kv head is copied.
        let q = q.reshape([b, kv, (h / kv) * t, hd]) * (hd as f64).powf(-0.5); // [b, kv, rep * t, hd]
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([b, h, t, s]);
        // A finite fill keeps fully padded query rows finite (uniform) instead of NaN.
        let attn = softmax(scores.mask_fill(mask.clone(), f32::MIN), 3);
        let y = attn.reshape([b, kv, (h / kv) * t, s]).matmul(v); // [b, kv, rep * t, hd]
        let y = y.reshape([b, h, t, hd]).swap_dims(1, 2).reshape([b, t, h * hd]);
        project(&self.o_proj, y, lora_dropout)
    }
}

/// SwiGLU MLP: `down_proj(silu(gate_proj(x)) * up_proj(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

impl LlamaMlp {
    /// # Shapes
    /// - `x`: `[b, t, d]` -> same
    fn forward(&self, x: Tensor<3>, lora_dropout: f64) -> Tensor<3> {
        let gate = silu(project(&self.gate_proj, x.clone(), lora_dropout));
        project(&self.down_proj, gate * project(&self.up_proj, x, lora_dropout), lora_dropout)
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Attention.
    pub self_attn: LlamaAttention,
    /// MLP.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

/// The decoder without its LM head (which [`super::Llava`] holds, as the checkpoints do).
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embeddings, `[vocab, d]`.
    pub embed_tokens: Embedding,
    /// Layers, in order.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Dropout on LoRA adapters' inputs while training (set by [`super::lora::apply_lora`]).
    pub lora_dropout: f64,
}

impl LlamaModel {
    /// A randomly initialised decoder.
    pub fn init(config: &LlamaConfig, device: &Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i: usize, o: usize, bias: bool| {
            LinearConfig::new(i, o).with_bias(bias).with_initializer(init.clone()).init(device)
        };
        let (d, hd) = (config.hidden_size, config.head_dim);
        let (h, kv, ab) = (config.num_attention_heads, config.num_key_value_heads, config.attention_bias);
        let norm = || RmsNorm::new(d, config.rms_norm_eps, device);
        let layers = (0..config.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: linear(d, h * hd, ab),
                    k_proj: linear(d, kv * hd, ab),
                    v_proj: linear(d, kv * hd, ab),
                    o_proj: linear(h * hd, d, ab),
                    num_heads: h,
                    num_kv_heads: kv,
                    head_dim: hd,
                },
                mlp: LlamaMlp {
                    gate_proj: linear(d, config.intermediate_size, config.mlp_bias),
                    up_proj: linear(d, config.intermediate_size, config.mlp_bias),
                    down_proj: linear(config.intermediate_size, d, config.mlp_bias),
                },
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            })
            .collect();
        LlamaModel {
            embed_tokens: EmbeddingConfig::new(config.vocab_size, d).with_initializer(init).init(device),
            layers,
            norm: norm(),
            rope_theta: config.rope_theta,
            lora_dropout: 0.0,
        }
    }

    /// Final hidden states (after the last norm) for `embeds`, the newest `t` tokens of a
    /// sequence of `s` = cached + `t` tokens; appends their keys and values to `cache`.
    ///
    /// # Shapes
    /// - `embeds`: `[b, t, d]`, `key_mask`: `b * s` booleans, row-major -> `[b, t, d]`
    pub fn forward(&self, embeds: Tensor<3>, key_mask: &[bool], cache: &mut KvCache) -> Tensor<3> {
        let [b, t, _] = embeds.dims();
        let s = cache.len() + t;
        assert_eq!(key_mask.len(), b * s, "key mask must cover cached and new tokens");
        let device = embeds.device();
        let head_dim = self.layers.first().map_or(2, |l| l.self_attn.head_dim);
        let rope = Rope::new(&positions(key_mask, b, s, t), b, t, head_dim, self.rope_theta, &device);
        let mask = blocked(key_mask, b, s, t, &device);
        cache.layers.resize(self.layers.len(), None);
        let x = self.layers.iter().zip(cache.layers.iter_mut()).fold(embeds, |x, (layer, c)| {
            let normed = layer.input_layernorm.forward(x.clone());
            let x = x + layer.self_attn.forward(normed, &rope, &mask, c, self.lora_dropout);
            x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x), self.lora_dropout)
        });
        self.norm.forward(x)
    }
}

/// Position of each of the last `t` tokens: the number of real tokens before it (pads get 0).
fn positions(key_mask: &[bool], b: usize, s: usize, t: usize) -> Vec<f32> {
    key_mask
        .chunks(s)
        .take(b)
        .flat_map(|row| {
            let mut seen = 0.0f32;
            let pos: Vec<f32> = row
                .iter()
                .map(|&real| {
                    let p = if real { seen } else { 0.0 };
                    seen += f32::from(u8::from(real));
                    p
                })
                .collect();
            pos[s - t..].to_vec()
        })
        .collect()
}

/// Attention mask `[b, 1, t, s]`: query `i` (at sequence index `s - t + i`) may not see padding
/// or later keys.
fn blocked(key_mask: &[bool], b: usize, s: usize, t: usize, device: &Device) -> Tensor<4, Bool> {
    let mut out = Vec::with_capacity(b * t * s);
    for row in key_mask.chunks(s) {
        for i in 0..t {
            out.extend((0..s).map(|j| !row[j] || j > s - t + i));
        }
    }
    Tensor::from_data(TensorData::new(out, [b, 1, t, s]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_skip_left_padding() {
        let mask = [false, false, true, true, true, true, true, true];
        assert_eq!(positions(&mask, 2, 4, 4), vec![0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(positions(&mask, 2, 4, 1), vec![1.0, 3.0]);
    }
}
