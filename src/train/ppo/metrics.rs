//! What an RL iteration logs (one `metrics.jsonl` line): the reward in its parts, by task; KL to
//! the reference, clipping, approximate KL of the update, entropy, the critic's explained variance,
//! length; and, given the world, the rollouts' hallucinations as its judge finds them (a diagnostic
//! only: it enters the reward only when the oracle is the scorer). Also the loud warnings for
//! reward hacking.

use super::PpoConfig;
use super::advantage::{Advantages, Shaped};
use super::math::explained_variance;
use super::rollout::{Prompt, Rollout};
use super::score::Scenes;
use super::update::UpdateStats;
use crate::eval::chair::chair;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Means over one task's responses of a rollout.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskMetrics {
    /// Responses.
    pub responses: usize,
    /// Score (reward model's or oracle's; the no-EOS replacement included).
    pub score: f64,
    /// Sequence reward (score, length and correctness terms, scaled and clipped).
    pub sequence_reward: f64,
    /// Tokens.
    pub length: f64,
    /// With the world: share of responses with at least one hallucination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hallucination_rate: Option<f64>,
}

/// The world judge's view of a rollout's descriptions.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorldDiagnostics {
    /// Hallucinated object mentions per object mention over all responses (CHAIR_i of the rollout).
    pub chair_i: f64,
    /// Hallucinated object mentions per response.
    pub hallucinated_objects: f64,
    /// Object mentions per response.
    pub objects: f64,
    /// Mean object recall of the description responses.
    pub object_recall: f64,
    /// Share of responses with at least one hallucination of any kind.
    pub hallucination_rate: f64,
}

/// Where an iteration's time went (BENCHMARKS.md reports these).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PartSeconds {
    /// Sampling the responses.
    pub generation: f64,
    /// Log-probs of policy and reference (and the critic's values) on them.
    pub logprobs: f64,
    /// Reward model (or oracle) scores.
    pub scoring: f64,
    /// The optimiser steps.
    pub update: f64,
}

/// Per-iteration metrics (one metrics.jsonl line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct IterationMetrics {
    /// Iteration (1-based).
    pub step: usize,
    /// Mean score (reward model's or oracle's, as scored: the no-EOS replacement not applied).
    pub rm_score: f64,
    /// Mean of the score term after the no-EOS replacement.
    pub score_term: f64,
    /// Mean length term.
    pub length_term: f64,
    /// Mean correctness term (`correctness_bonus * c`).
    pub correctness_term: f64,
    /// Mean sequence reward (score, penalties, bonus; scaled and clipped).
    pub sequence_reward: f64,
    /// Mean KL penalty per response (`beta` times its summed KL estimates).
    pub kl_penalty: f64,
    /// Mean per-response KL to the reference (sum over tokens of `logp - logp_ref`).
    pub kl: f64,
    /// Largest per-response KL of the rollout.
    pub kl_max: f64,
    /// KL coefficient used.
    pub beta: f64,
    /// Mean per-token entropy, estimated by `-logp` of the sampled tokens.
    pub entropy: f64,
    /// Mean correctness `c` over prompts with a check.
    pub correctness: f64,
    /// Share of tokens where the policy's clipped term was taken.
    pub clip_fraction: f64,
    /// Share of tokens where the value's clipped term was taken.
    pub value_clip_fraction: f64,
    /// Mean approximate KL from the rollout's policy to the updated one, over the update's steps.
    pub approx_kl: f64,
    /// Mean policy loss.
    pub policy_loss: f64,
    /// Mean value loss.
    pub value_loss: f64,
    /// Explained variance of the returns by the rollout's values (GAE only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_variance: Option<f64>,
    /// Mean absolute advantage per token (after whitening): how hard the update pushes.
    pub advantage_abs: f64,
    /// Mean response length in tokens.
    pub response_length: f64,
    /// Share of responses without EOS.
    pub no_eos_rate: f64,
    /// Learning rate at the iteration's last step.
    pub lr: f64,
    /// Seconds of the iteration by part.
    pub seconds: PartSeconds,
    /// The same means by task.
    pub by_task: BTreeMap<String, TaskMetrics>,
    /// The world judge's diagnostics (with `world`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world: Option<WorldDiagnostics>,
    /// Held-out: mean score of greedy answers (eval iterations only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_rm_score: Option<f64>,
    /// Held-out: the world judge on the greedy answers (eval iterations with `world` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_world: Option<WorldDiagnostics>,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// The rollout's metrics over the policy's own samples (the update's fields left at 0).
pub fn rollout_metrics(
    rollout: &Rollout,
    prompts: &[Prompt],
    scores: &[f32],
    shaped: &[Shaped],
    adv: &Advantages,
    beta: f64,
) -> IterationMetrics {
    let n = rollout.which.len();
    let lens = rollout.lens();
    let tokens = lens.iter().sum::<usize>().max(1) as f64;
    // KL, entropy and length describe the policy: its samples, not the groups' reference answers.
    let own: Vec<usize> = (0..n).filter(|&i| rollout.sampled[i]).collect();
    let own_tokens = own.iter().map(|&i| lens[i]).sum::<usize>().max(1) as f64;
    let checked: Vec<f64> = own
        .iter()
        .filter(|&&i| prompts[rollout.which[i]].record.caption_type != Default::default())
        .map(|&i| shaped[i].c)
        .collect();
    let over = |f: &dyn Fn(usize) -> f64| mean(own.iter().map(|&i| f(i)));
    let mut m = IterationMetrics {
        beta,
        rm_score: over(&|i| f64::from(scores[i])),
        score_term: over(&|i| shaped[i].parts.score),
        length_term: over(&|i| shaped[i].parts.length),
        correctness_term: over(&|i| shaped[i].parts.correctness),
        sequence_reward: over(&|i| shaped[i].sequence),
        kl_penalty: over(&|i| beta * shaped[i].kl.iter().map(|&k| f64::from(k)).sum::<f64>()),
        kl: over(&|i| shaped[i].kl_sum),
        kl_max: own.iter().map(|&i| shaped[i].kl_sum).fold(0.0, f64::max),
        entropy: -own.iter().flat_map(|&i| &rollout.logp[i]).map(|&l| f64::from(l)).sum::<f64>() / own_tokens,
        correctness: mean(checked.into_iter()),
        advantage_abs: adv.adv.iter().flatten().map(|a| f64::from(a.abs())).sum::<f64>() / tokens,
        response_length: own_tokens / own.len().max(1) as f64,
        no_eos_rate: mean(own.iter().map(|&i| f64::from(u8::from(!rollout.finished[i])))),
        ..Default::default()
    };
    if let (Some(values), Some(returns)) = (&rollout.values, &adv.returns) {
        let v: Vec<f32> = values.iter().flatten().copied().collect();
        let r: Vec<f32> = returns.iter().flatten().copied().collect();
        m.explained_variance = Some(explained_variance(&v, &r));
    }
    for &i in &own {
        let task = prompts[rollout.which[i]].record.task.map_or("general", |t| t.name()).to_string();
        let t = m.by_task.entry(task).or_default();
        t.responses += 1;
        t.score += f64::from(scores[i]);
        t.sequence_reward += shaped[i].sequence;
        t.length += lens[i] as f64;
    }
    for t in m.by_task.values_mut() {
        let k = t.responses.max(1) as f64;
        (t.score, t.sequence_reward, t.length) = (t.score / k, t.sequence_reward / k, t.length / k);
    }
    m
}

/// Copies the update's means into the iteration's metrics.
pub fn add_update(m: &mut IterationMetrics, u: &UpdateStats) {
    (m.policy_loss, m.value_loss, m.clip_fraction, m.value_clip_fraction, m.approx_kl, m.lr) =
        (u.policy_loss, u.value_loss, u.clip_fraction, u.value_clip_fraction, u.approx_kl, u.lr);
}

/// The world judge on responses (prompt index, text): the diagnostics, and each task's share of
/// responses with a hallucination (added to `by_task` when given).
pub fn world_diagnostics(
    scenes: &Scenes,
    prompts: &[Prompt],
    items: &[(usize, &str)],
    mut by_task: Option<&mut BTreeMap<String, TaskMetrics>>,
) -> WorldDiagnostics {
    let (mut mentions, mut hallucinated, mut any, mut recall) = (0usize, 0usize, 0usize, Vec::new());
    let mut per_task: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for &(p, text) in items {
        let prompt = &prompts[p];
        let c = chair(scenes.of(p), text);
        mentions += c.mentions;
        hallucinated += c.hallucinated;
        let bad = scenes.judge(prompts, p, text).hallucinations.total() > 0;
        any += usize::from(bad);
        let task = prompt.record.task.map_or("general", |t| t.name());
        if task == "description" {
            recall.push(c.recall());
        }
        let e = per_task.entry(task.to_string()).or_default();
        (e.0, e.1) = (e.0 + 1, e.1 + usize::from(bad));
    }
    if let Some(tasks) = by_task.as_mut() {
        for (task, (n, bad)) in per_task {
            tasks.entry(task).or_default().hallucination_rate = Some(bad as f64 / n.max(1) as f64);
        }
    }
    let n = items.len().max(1) as f64;
    WorldDiagnostics {
        chair_i: if mentions == 0 { 0.0 } else { hallucinated as f64 / mentions as f64 },
        hallucinated_objects: hallucinated as f64 / n,
        objects: mentions as f64 / n,
        object_recall: mean(recall.into_iter()),
        hallucination_rate: any as f64 / n,
    }
}

/// The first iteration's mean length and object mentions (the latter only with the world), the
/// baseline of [`collapse_warnings`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// Mean response length.
    pub length: f64,
    /// Object mentions per response, with the world.
    pub objects: Option<f64>,
}

/// Loud warnings for reward hacking: responses or object mentions shrinking below
/// `collapse_ratio` of the first iteration's, or KL beyond `kl_warn`.
pub fn collapse_warnings(m: &IterationMetrics, first: Baseline, cfg: &PpoConfig) -> Vec<String> {
    let mut out = Vec::new();
    if m.response_length < cfg.collapse_ratio * first.length {
        out.push(format!(
            "WARNING: iteration {}: mean response length {:.1} fell below {:.0}% of the first iteration's {:.1}: \
             the policy may be hacking the reward by brevity (raise shaping.beta, lower the length penalty)",
            m.step,
            m.response_length,
            100.0 * cfg.collapse_ratio,
            first.length
        ));
    }
    if let (Some(obj0), Some(w)) = (first.objects, m.world)
        && obj0 > 0.0
        && w.objects < cfg.collapse_ratio * obj0
    {
        out.push(format!(
            "WARNING: iteration {}: {:.2} object mentions per response, below {:.0}% of the first iteration's {obj0:.2}: \
             descriptions are collapsing",
            m.step,
            w.objects,
            100.0 * cfg.collapse_ratio
        ));
    }
    if m.kl > cfg.kl_warn {
        out.push(format!(
            "WARNING: iteration {}: KL to the reference {:.2} exceeds {}: the policy is drifting (raise shaping.beta \
             or set shaping.kl_target)",
            m.step, m.kl, cfg.kl_warn
        ));
    }
    out
}
