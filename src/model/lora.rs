//! LoRA on chosen decoder projections, with burn's built-in reparameterisation
//! (`Module::apply_lora`): an adapted weight reads as `W + alpha / rank * A B`, `A` random and `B`
//! zero at the start, and every other parameter is frozen (unfreeze groups afterwards to train,
//! say, the projector too).
//!
//! Merging ([`merge_lora`]) folds the adapters into the weights of a copy, so the adapted model
//! itself is the unmerged form. Saving ([`super::checkpoint::save_llava`]) writes merged weights.

use super::ModelError;
use super::llava::Llava;
use burn::module::{Lora, Module, ParamGroup};
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
    /// Dropout on the adapter's input. burn adapts the weight, not the activation, so only 0 is
    /// accepted.
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
    if config.dropout != 0.0 {
        return Err(ModelError::Config(format!(
            "LoRA dropout {} is not supported: burn's LoRA reparameterises weights, so there is no \
             adapter input to drop; use 0",
            config.dropout
        )));
    }
    let layers = model.language_model.layers.len();
    let paths: Vec<String> =
        (0..layers).flat_map(|l| config.targets.iter().map(move |t| t.path(l))).collect();
    Ok(model.apply_lora(Lora::new(config.rank, config.alpha).set_param_group(ParamGroup::from_paths(paths))))
}

/// A copy of `model` with its adapters folded into the weights; `model` keeps them.
pub fn merge_lora(model: &Llava) -> Llava {
    model.clone().materialize()
}
