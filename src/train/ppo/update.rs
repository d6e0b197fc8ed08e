//! The update: `ppo_epochs` passes over the rollout in shuffled minibatches, each step the clipped
//! policy loss (and, with a critic, the clipped value loss) under one optimiser.

use super::PpoConfig;
use super::advantage::Advantages;
use super::loss::{policy_loss, value_loss};
use super::math::token_weights;
use super::rollout::{Prompt, Rollout, padded, token_values};
use crate::model::Llava;
use crate::train::common::{ImageTable, TrainError};
use crate::train::optim::clip_global_norm;
use crate::train::reward::RewardModel;
use crate::train::run::RunDir;
use crate::train::schedule::warmup_cosine;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Policy and, with GAE, the value model: the modules RL trains, under one optimiser.
#[derive(Module, Debug)]
pub struct ActorCritic {
    /// The policy.
    pub policy: Llava,
    /// The value model (scalar head per token); none for the group baselines.
    pub value: Option<RewardModel>,
}

/// Means over the update's optimiser steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateStats {
    /// Policy loss.
    pub policy_loss: f64,
    /// Value loss (0 without a critic).
    pub value_loss: f64,
    /// Share of tokens where the policy's clipped term was taken.
    pub clip_fraction: f64,
    /// Share of tokens where the value's clipped term was taken.
    pub value_clip_fraction: f64,
    /// Approximate KL from the rollout's policy to the updated one.
    pub approx_kl: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Optimiser steps taken.
    pub steps: usize,
}

/// Where the update runs and what it reads.
pub struct UpdateContext<'a> {
    /// The run folder (for the non-finite loss error).
    pub run: &'a RunDir,
    /// Training device.
    pub device: &'a Device,
    /// The policy's image table.
    pub policy_table: &'a ImageTable,
    /// The value model's, when its tower differs.
    pub value_table: Option<&'a ImageTable>,
    /// Optimiser steps before this update, and in the whole run.
    pub first_step: usize,
    /// Optimiser steps in the whole run (the schedule's length).
    pub total_steps: usize,
    /// Seed of the minibatch order.
    pub seed: u64,
}

/// Runs the PPO epochs of one rollout; returns the trained modules and the update's means.
pub fn update(
    mut ac: ActorCritic,
    optim: &mut ModuleOptimizer,
    rollout: &Rollout,
    adv: &Advantages,
    prompts: &[Prompt],
    cfg: &PpoConfig,
    cx: &UpdateContext,
) -> Result<(ActorCritic, UpdateStats), TrainError> {
    let side = ac.policy.config.vision.image_size;
    let mut st = UpdateStats::default();
    let mut sums = [0.0f64; 5];
    for epoch in 0..cfg.ppo_epochs {
        let mut order: Vec<usize> = (0..rollout.which.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(cx.seed ^ (epoch as u64 + 1)));
        for mb in order.chunks(cfg.minibatch) {
            let p_ids: Vec<Vec<u32>> = mb.iter().map(|&i| prompts[rollout.which[i]].ids.clone()).collect();
            let r_ids: Vec<Vec<u32>> = mb.iter().map(|&i| rollout.responses[i].clone()).collect();
            let img: Vec<usize> = mb.iter().map(|&i| prompts[rollout.which[i]].image).collect();
            let lens: Vec<usize> = r_ids.iter().map(Vec::len).collect();
            let tensor = |rows: &[Vec<f32>]| {
                padded(&mb.iter().map(|&i| rows[i].as_slice()).collect::<Vec<_>>(), cx.device)
            };
            let r = lens.iter().copied().max().unwrap_or(0);
            let weights = Tensor::<2>::from_data(
                TensorData::new(token_weights(&lens, cfg.loss_average), [mb.len(), r]),
                cx.device,
            );
            let new_logp =
                ac.policy.response_logprobs(&p_ids, &r_ids, cx.policy_table.input(&img, side, cx.device))?;
            let (pl, cf, kl) =
                policy_loss(new_logp, tensor(&rollout.logp), tensor(&adv.adv), weights.clone(), cfg.clip_eps);
            let mut loss = pl.clone();
            let mut parts = vec![pl, cf, kl];
            if let (Some(value), Some(values), Some(returns)) = (&ac.value, &rollout.values, &adv.returns) {
                let table = cx.value_table.unwrap_or(cx.policy_table);
                let new_values = token_values(value, &p_ids, &r_ids, table.input(&img, side, cx.device))?;
                let (vl, vcf) =
                    value_loss(new_values, tensor(values), tensor(returns), weights, cfg.value_clip);
                loss = loss + vl.clone().mul_scalar(cfg.vf_coef);
                parts.extend([vl, vcf]);
            }
            let step = cx.first_step + st.steps;
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step, value, checkpoint: cx.run.dir.join("checkpoint") });
            }
            for (sum, t) in sums.iter_mut().zip(parts) {
                *sum += f64::from(t.into_scalar::<f32>());
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &ac);
            clip_global_norm(&ac, &mut grads, cfg.grad_clip);
            st.lr = warmup_cosine(step, cx.total_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr);
            ac = optim.step(st.lr, ac, grads);
            st.steps += 1;
        }
    }
    let k = st.steps.max(1) as f64;
    [st.policy_loss, st.clip_fraction, st.approx_kl, st.value_loss, st.value_clip_fraction] =
        sums.map(|s| s / k);
    Ok((ac, st))
}
