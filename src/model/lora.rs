//! LoRA on chosen decoder projections. burn's `Module::apply_lora` attaches the factors (`A`
//! random, `B` zero at the start) and freezes every other parameter (unfreeze groups afterwards to
//! train, say, the projector too); the decoder then runs an adapted projection on the activations,
//! `x W + alpha / rank * (drop(x) A) B` ([`project`]), as PEFT does: that is where LoRA dropout
//! acts, and the frozen `W` never gets a weight-sized gradient.
//!
//! Merging ([`merge_lora`]) folds the adapters into the weights of a copy, so the adapted model
//! itself is the unmerged form. Saving ([`super::checkpoint::save_llava`]) writes merged weights.

use super::llava::Llava;
use super::{ModelError, in_rows, linear_rows};
use burn::module::{Lora, Module, ParamGroup};
use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// A decoder projection LoRA can adapt (PEFT's `target_modules` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[value(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query.
    QProj,
    /// Attention key.
    KProj,
    /// Attention value.
    VProj,
    /// Attention output.
    OProj,
    /// MLP gate.
    GateProj,
    /// MLP up.
    UpProj,
    /// MLP down.
    DownProj,
}

impl LoraTarget {
    /// All seven projections (QLoRA's and LLaVA-RLHF's choice).
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The weight's module path in decoder layer `layer`.
    fn path(self, layer: usize) -> String {
        let (block, name) = match self {
            LoraTarget::QProj => ("self_attn", "q_proj"),
            LoraTarget::KProj => ("self_attn", "k_proj"),
            LoraTarget::VProj => ("self_attn", "v_proj"),
            LoraTarget::OProj => ("self_attn", "o_proj"),
            LoraTarget::GateProj => ("mlp", "gate_proj"),
            LoraTarget::UpProj => ("mlp", "up_proj"),
            LoraTarget::DownProj => ("mlp", "down_proj"),
        };
        format!("language_model.layers.{layer}.{block}.{name}.weight")
    }
}

/// LoRA settings (a trainer config's `[lora]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank of `A B`.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank * A B`.
    pub alpha: f64,
    /// Dropout probability on the adapter branch's input while training (PEFT's `lora_dropout`),
    /// in `[0, 1)`.
    #[serde(default)]
    pub dropout: f64,
    /// Adapted projections, in every decoder layer; default all seven.
    #[serde(default = "all_targets")]
    pub targets: Vec<LoraTarget>,
}

fn all_targets() -> Vec<LoraTarget> {
    LoraTarget::ALL.to_vec()
}

/// Attaches adapters to `config.targets` and freezes every other parameter.
pub fn apply_lora(model: Llava, config: &LoraConfig) -> Result<Llava, ModelError> {
    if config.rank == 0 || config.targets.is_empty() {
        return Err(ModelError::Config("LoRA needs a rank above 0 and at least one target".into()));
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(ModelError::Config(format!("LoRA dropout must be in [0, 1), got {}", config.dropout)));
    }
    let layers = model.language_model.layers.len();
    let paths: Vec<String> =
        (0..layers).flat_map(|l| config.targets.iter().map(move |t| t.path(l))).collect();
    let mut model =
        model.apply_lora(Lora::new(config.rank, config.alpha).set_param_group(ParamGroup::from_paths(paths)));
    model.language_model.lora_dropout = config.dropout;
    Ok(model)
}

/// `linear.forward(x)`, with an attached adapter's branch computed on the activations so that its
/// input can be dropped. Dropout acts only while the adapter trains (not after `valid()`).
pub fn project<const D: usize>(linear: &Linear, x: Tensor<D>, dropout: f64) -> Tensor<D> {
    let Some(adapter) = linear.weight.adapter() else { return linear_rows(linear, x) };
    in_rows(x, linear.weight.dims()[1], |x| {
        let bias = linear.bias.as_ref().map(|b| b.val());
        let base = burn::tensor::module::linear(x.clone(), linear.weight.base(), bias);
        let x = if dropout > 0.0 && adapter.a.is_require_grad() {
            let keep = 1.0 - dropout;
            x.clone() * x.random_like(Distribution::Bernoulli(keep)) / keep
        } else {
            x
        };
        base + x.matmul(adapter.a.val()).matmul(adapter.b.val()).mul_scalar(adapter.scale)
    })
}

/// A copy of `model` with its adapters folded into the weights; `model` keeps them.
pub fn merge_lora(model: &Llava) -> Llava {
    model.clone().materialize()
}
