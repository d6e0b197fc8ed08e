//! From scores to advantages: each response's shaped reward (score, length, correctness, KL), then
//! GAE against the critic's values, or a group baseline (RLOO, GRPO) over the responses to the
//! same prompt, and optional whitening over the rollout.

use super::math::{RewardParts, correctness, gae, grpo, kl_estimate, rloo, token_rewards, whiten};
use super::rollout::{Prompt, Rollout};
use super::{Advantage, PpoConfig};

/// One response's reward, in parts.
#[derive(Clone, Debug)]
pub struct Shaped {
    /// Score, length and correctness terms.
    pub parts: RewardParts,
    /// Symbolic correctness `c` (0 where no check applies).
    pub c: f64,
    /// The sequence reward (parts scaled and clipped).
    pub sequence: f64,
    /// Per-token KL estimates (the penalty is `beta` times these).
    pub kl: Vec<f32>,
    /// `sum_t logp - logp_ref`: the sampled estimate of the response's KL to the reference.
    pub kl_sum: f64,
}

/// The shaped reward of every response of the rollout, given its scores.
pub fn shape(rollout: &Rollout, prompts: &[Prompt], scores: &[f32], cfg: &PpoConfig) -> Vec<Shaped> {
    let s = &cfg.shaping;
    (0..rollout.which.len())
        .map(|i| {
            let rec = &prompts[rollout.which[i]].record;
            let c = correctness(rec.caption_type, &rollout.texts[i]);
            let parts = RewardParts::new(
                f64::from(scores[i]),
                rollout.finished[i],
                rollout.responses[i].len(),
                cfg.max_new_tokens,
                rec.length_bonus,
                c,
                s,
            );
            let (logp, logp_ref) = (&rollout.logp[i], &rollout.logp_ref[i]);
            let kl = logp
                .iter()
                .zip(logp_ref)
                .map(|(&a, &b)| kl_estimate(s.kl_estimator, a, b, s.kl_clamp))
                .collect();
            let kl_sum = logp.iter().zip(logp_ref).map(|(&a, &b)| f64::from(a - b)).sum();
            Shaped { parts, c, sequence: parts.total(s), kl, kl_sum }
        })
        .collect()
}

/// Per-token advantages of every response, and with GAE the returns the critic learns.
pub struct Advantages {
    /// One row per response.
    pub adv: Vec<Vec<f32>>,
    /// GAE's `A + V` per token; `None` for the group baselines (no critic).
    pub returns: Option<Vec<Vec<f32>>>,
}

/// Advantages by the configured estimator. GAE spreads the KL penalty over the tokens and the
/// sequence reward onto the last; RLOO and GRPO take each response's return (sequence reward minus
/// `beta` times its summed KL) against its group's and give every token of it that advantage.
pub fn advantages(rollout: &Rollout, shaped: &[Shaped], cfg: &PpoConfig, beta: f64) -> Advantages {
    let mut out = match (cfg.advantage, &rollout.values) {
        (Advantage::Gae, Some(values)) => {
            let (adv, returns) = shaped
                .iter()
                .zip(values)
                .map(|(s, v)| gae(&token_rewards(&s.kl, beta, s.sequence), v, cfg.gamma, cfg.lam))
                .unzip();
            Advantages { adv, returns: Some(returns) }
        }
        (estimator, _) => {
            let returns: Vec<f64> = shaped
                .iter()
                .map(|s| s.sequence - beta * s.kl.iter().map(|&k| f64::from(k)).sum::<f64>())
                .collect();
            let mut per = vec![0.0; returns.len()];
            for group in groups(&rollout.group) {
                let r: Vec<f64> = group.iter().map(|&i| returns[i]).collect();
                let a = if estimator == Advantage::Grpo { grpo(&r) } else { rloo(&r) };
                for (&i, a) in group.iter().zip(a) {
                    per[i] = a;
                }
            }
            let adv = per.iter().zip(shaped).map(|(&a, s)| vec![a as f32; s.kl.len()]).collect();
            Advantages { adv, returns: None }
        }
    };
    if cfg.whiten_advantages {
        let mut flat: Vec<f32> = out.adv.iter().flatten().copied().collect();
        whiten(&mut flat);
        let mut k = 0;
        for row in &mut out.adv {
            let n = row.len();
            row.copy_from_slice(&flat[k..k + n]);
            k += n;
        }
    }
    out
}

/// Indices of the responses of each group, in order of first appearance.
fn groups(ids: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, &g) in ids.iter().enumerate() {
        match out.iter_mut().find(|(id, _)| *id == g) {
            Some((_, members)) => members.push(i),
            None => out.push((g, vec![i])),
        }
    }
    out.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(groups: Vec<usize>) -> Rollout {
        let n = groups.len();
        Rollout {
            which: groups.clone(),
            group: groups,
            responses: vec![Vec::new(); n],
            finished: vec![true; n],
            sampled: vec![true; n],
            texts: vec![String::new(); n],
            logp: vec![Vec::new(); n],
            logp_ref: vec![Vec::new(); n],
            values: None,
            seconds: (0.0, 0.0),
        }
    }

    fn shaped(sequence: f64, kl: &[f32]) -> Shaped {
        let kl_sum = kl.iter().map(|&k| f64::from(k)).sum();
        Shaped { parts: Default::default(), c: 0.0, sequence, kl: kl.to_vec(), kl_sum }
    }

    #[test]
    fn group_advantages_by_hand() {
        let cfg = |estimator: &str| -> PpoConfig {
            let sets = [format!("advantage={estimator}"), "whiten_advantages=false".into()];
            crate::train::config::parse(crate::train::config::PPO.text, "ppo", &sets).unwrap()
        };
        // Group 0: sequence rewards 1 and 0, the second with KL estimates (0.4, 0.6) on its two
        // tokens; beta 0.5 makes the returns 1 and 0 - 0.5 * 1 = -0.5. Group 1: equal returns.
        let ro = rollout(vec![0, 0, 1, 1]);
        let s = [shaped(1.0, &[0.0]), shaped(0.0, &[0.4, 0.6]), shaped(2.0, &[0.0]), shaped(2.0, &[0.0])];
        // RLOO: 1 - (-0.5) = 1.5 and -1.5, on every token of each response; equal returns give 0.
        let a = advantages(&ro, &s, &cfg("rloo"), 0.5);
        assert_eq!(a.adv, vec![vec![1.5], vec![-1.5, -1.5], vec![0.0], vec![0.0]]);
        assert!(a.returns.is_none());
        // GRPO: mean 0.25, sample std sqrt(2 * 0.75^2) = 1.060660 -> +-0.75 / 1.060760 = +-0.707040.
        let a = advantages(&ro, &s, &cfg("grpo"), 0.5);
        assert!(
            (a.adv[0][0] - 0.707_040).abs() < 1e-5 && (a.adv[1][1] + 0.707_040).abs() < 1e-5,
            "{:?}",
            a.adv
        );
        assert_eq!((a.adv[2][0], a.adv[3][0]), (0.0, 0.0));
    }

    #[test]
    fn groups_by_id() {
        assert_eq!(groups(&[0, 0, 1, 1, 1, 3]), vec![vec![0, 1], vec![2, 3, 4], vec![5]]);
        assert!(groups(&[]).is_empty());
    }
}
