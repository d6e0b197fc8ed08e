//! The RL stage's math on plain numbers: KL estimates, the shaped reward, the oracle reward,
//! advantages (GAE with a critic, RLOO and GRPO with a group baseline), whitening, explained
//! variance, per-token loss weights and the adaptive KL coefficient. Each is checked by hand below.

use super::{KlEstimator, Shaping};
use crate::data::formats::CaptionType;
use crate::eval::judge::Judgement;
use crate::train::sft::LossAverage;

/// Per-token KL estimate of `logp` (policy) against `logp_ref`.
///
/// k1 = `max(logp - logp_ref, 0)` (clamped at 0 as LLaVA-RLHF's penalty); k3 =
/// `exp(r) - 1 - r`, `r = clamp(logp_ref - logp, -clamp, clamp)` (Schulman, "Approximating KL").
pub fn kl_estimate(est: KlEstimator, logp: f32, logp_ref: f32, clamp: f64) -> f32 {
    match est {
        KlEstimator::K1 => (logp - logp_ref).max(0.0),
        KlEstimator::K3 => {
            let r = f64::from(logp_ref - logp).clamp(-clamp, clamp);
            (r.exp() - 1.0 - r) as f32
        }
    }
}

/// The symbolic correctness `c` of a response (LLaVA-RLHF's `caption_type` checks), read from its
/// first word: +1 for the right option letter (0 for another), +0.5 / -0.5 for a yes/no answer
/// that matches / contradicts the truth, 0 when the check does not apply or the answer gives
/// neither.
pub fn correctness(kind: CaptionType, response: &str) -> f64 {
    let first = response.split_whitespace().next().unwrap_or("");
    let word = first.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    let yes_no = |truth_yes: bool| match word.as_str() {
        "yes" if truth_yes => 0.5,
        "no" if !truth_yes => 0.5,
        "yes" | "no" => -0.5,
        _ => 0.0,
    };
    match kind {
        CaptionType::General => 0.0,
        CaptionType::Choice(i) => {
            // "C." or a bare "C" is an option letter; "A blue circle." starts with an article.
            let letter = first.trim_end_matches(|c: char| c.is_ascii_punctuation());
            let answer = letter.len() == 1 && (letter != first || response.split_whitespace().count() == 1);
            f64::from(u8::from(answer && letter.as_bytes()[0] == b'A' + i))
        }
        CaptionType::No => yes_no(false),
        CaptionType::Yes => yes_no(true),
    }
}

/// The oracle's score of a judged response, the annotator's guidelines as a number: minus the
/// hallucinations, plus `helpfulness_weight` times the helpfulness (in [0, 1]). With a weight below
/// 1 one hallucination outweighs any difference in helpfulness, so the order is the guidelines'
/// (hallucinations first, helpfulness second).
pub fn oracle_score(j: &Judgement, helpfulness_weight: f64) -> f64 {
    helpfulness_weight * j.helpfulness - j.hallucinations.total() as f64
}

/// The parts of a response's sequence reward before scaling: the score (the reward model's or the
/// oracle's, or `no_eos_reward` without EOS), the length term and the correctness term.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RewardParts {
    /// Score, or the no-EOS replacement.
    pub score: f64,
    /// `-length_penalty * length_bonus * len / max_len`.
    pub length: f64,
    /// `correctness_bonus * c`.
    pub correctness: f64,
}

impl RewardParts {
    /// The parts of one response: `score` of a response of `len` tokens (`finished`: with EOS)
    /// whose prompt has `length_bonus`, and correctness `c`.
    pub fn new(
        score: f64,
        finished: bool,
        len: usize,
        max_len: usize,
        length_bonus: f64,
        c: f64,
        s: &Shaping,
    ) -> Self {
        RewardParts {
            score: if finished { score } else { s.no_eos_reward },
            length: -s.length_penalty * length_bonus * len as f64 / max_len.max(1) as f64,
            correctness: s.correctness_bonus * c,
        }
    }

    /// The sequence reward placed on the last token: `clip(scale * (score + length + correctness))`.
    pub fn total(&self, s: &Shaping) -> f64 {
        let r = s.reward_scale * (self.score + self.length + self.correctness);
        if s.reward_clip > 0.0 { r.clamp(-s.reward_clip, s.reward_clip) } else { r }
    }
}

/// Per-token rewards: `-beta * kl_t`, plus the sequence reward on the last token.
pub fn token_rewards(kl: &[f32], beta: f64, sequence: f64) -> Vec<f32> {
    let mut r: Vec<f32> = kl.iter().map(|&k| (-beta * f64::from(k)) as f32).collect();
    if let Some(last) = r.last_mut() {
        *last += sequence as f32;
    }
    r
}

/// Generalised advantage estimation over one response (Schulman et al. 2016, eq. 16):
/// `delta_t = r_t + gamma V_{t+1} - V_t` (`V_T = 0`), `A_t = delta_t + gamma lam A_{t+1}`;
/// returns `(A, A + V)`.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lam: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next = (0.0f64, 0.0f64); // (A_{t+1}, V_{t+1})
    for t in (0..n).rev() {
        let delta = f64::from(rewards[t]) + gamma * next.1 - f64::from(values[t]);
        let a = delta + gamma * lam * next.0;
        adv[t] = a as f32;
        next = (a, f64::from(values[t]));
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// RLOO (Ahmadian et al. 2024): each response's return minus the mean of the others' in its group,
/// `A_i = R_i - (sum_j R_j - R_i) / (k - 1)`. A group of one has no baseline: advantage 0.
pub fn rloo(group: &[f64]) -> Vec<f64> {
    let k = group.len();
    if k < 2 {
        return vec![0.0; k];
    }
    let sum: f64 = group.iter().sum();
    group.iter().map(|&r| r - (sum - r) / (k - 1) as f64).collect()
}

/// GRPO (Shao et al. 2024): the group-normalised return, `A_i = (R_i - mean) / (std + 1e-4)`, std
/// the sample standard deviation (as TRL's `GRPOTrainer`). A group of one gets 0.
pub fn grpo(group: &[f64]) -> Vec<f64> {
    let k = group.len();
    if k < 2 {
        return vec![0.0; k];
    }
    let mean = group.iter().sum::<f64>() / k as f64;
    let std = (group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
    group.iter().map(|&r| (r - mean) / (std + 1e-4)).collect()
}

/// `(x - mean) / (std + 1e-8)` over all entries (population variance).
pub fn whiten(x: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    for v in x.iter_mut() {
        *v = ((f64::from(*v) - mean) / (var.sqrt() + 1e-8)) as f32;
    }
}

/// `1 - Var(returns - values) / Var(returns)`: how much of the returns the values explain.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |x: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = x.collect();
        let n = v.len().max(1) as f64;
        let m = v.iter().sum::<f64>() / n;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n
    };
    let vr = var(&mut returns.iter().map(|&r| f64::from(r)));
    let vd = var(&mut returns.iter().zip(values).map(|(&r, &v)| f64::from(r - v)));
    if vr > 0.0 { 1.0 - vd / vr } else { 0.0 }
}

/// Weight of each response token in a minibatch's loss, row-major `[b, r]` (`r` the longest
/// response; 0 past a row's end). `Token`: every token weighs the same (PPO's usual mean).
/// `Sequence`: each response weighs the same, spread over its tokens (GRPO's), so a one-word
/// answer counts as much as a description.
pub fn token_weights(lens: &[usize], average: LossAverage) -> Vec<f32> {
    let (b, r) = (lens.len(), lens.iter().copied().max().unwrap_or(0));
    let tokens = lens.iter().sum::<usize>().max(1);
    let mut w = vec![0f32; b * r];
    for (i, &n) in lens.iter().enumerate() {
        let each = match average {
            LossAverage::Token => 1.0 / tokens as f32,
            LossAverage::Sequence => 1.0 / (n.max(1) * b) as f32,
        };
        w[i * r..i * r + n].fill(each);
    }
    w
}

/// Ziegler et al.'s adaptive KL controller: `beta * (1 + clip(kl / target - 1, -0.2, 0.2) * n /
/// horizon)` after `n` responses with mean KL `kl`.
pub fn adapt_beta(beta: f64, kl: f64, target: f64, n: usize, horizon: f64) -> f64 {
    let err = (kl / target - 1.0).clamp(-0.2, 0.2);
    beta * (1.0 + err * n as f64 / horizon)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::eval::claims::Hallucinations;

    pub fn shaping() -> Shaping {
        Shaping {
            kl_estimator: KlEstimator::K1,
            beta: 0.1,
            kl_target: None,
            kl_horizon: 10000.0,
            kl_clamp: 10.0,
            no_eos_reward: -8.0,
            length_penalty: 10.0,
            correctness_bonus: 2.0,
            reward_scale: 1.0,
            reward_clip: 0.0,
        }
    }

    pub fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    fn close64(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn kl_estimators_by_hand() {
        // logp -1, logp_ref -1.5: k1 = 0.5; r = -0.5, k3 = e^-0.5 - 1 + 0.5 = 0.106531.
        assert_eq!(kl_estimate(KlEstimator::K1, -1.0, -1.5, 10.0), 0.5);
        assert!((kl_estimate(KlEstimator::K3, -1.0, -1.5, 10.0) - 0.106_531).abs() < 1e-6);
        // k1 is clamped at 0 where the policy is less likely than the reference.
        assert_eq!(kl_estimate(KlEstimator::K1, -2.0, -1.0, 10.0), 0.0);
        // k3 with r = 1: e - 2 = 0.718282; with r = 50 clamped to 10: e^10 - 11 = 22015.47.
        assert!((kl_estimate(KlEstimator::K3, -2.0, -1.0, 10.0) - 0.718_282).abs() < 1e-5);
        let big = kl_estimate(KlEstimator::K3, -60.0, -10.0, 10.0);
        assert!(big.is_finite() && (big - 22_015.465).abs() < 0.1, "{big}");
        // Equal log-probs: both 0.
        assert_eq!(kl_estimate(KlEstimator::K3, -1.0, -1.0, 10.0), 0.0);
    }

    #[test]
    fn gae_by_hand() {
        // rewards (0, 0, 1), values (0.5, 0.4, 0.3), gamma 1, lam 0.5:
        // delta_2 = 1 - 0.3 = 0.7, A_2 = 0.7
        // delta_1 = 0 + 0.3 - 0.4 = -0.1, A_1 = -0.1 + 0.5 * 0.7 = 0.25
        // delta_0 = 0 + 0.4 - 0.5 = -0.1, A_0 = -0.1 + 0.5 * 0.25 = 0.025
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 0.5);
        close(&adv, &[0.025, 0.25, 0.7]);
        close(&ret, &[0.525, 0.65, 1.0]);
        // gamma 1, lam 1 (LLaVA-RLHF): A_t = sum of future rewards - V_t.
        let (adv, _) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 1.0);
        close(&adv, &[0.5, 0.6, 0.7]);
        // gamma 0.5, lam 1: A_1 = 0 + 0.5 * 1 - 0.4 = 0.1, A_0 = 0 + 0.25 * 1 - 0.5 = -0.25.
        let (adv, _) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 0.5, 1.0);
        close(&adv, &[-0.25, 0.1, 0.7]);
    }

    #[test]
    fn rloo_by_hand() {
        // (1, 2, 6): others' means (2 + 6) / 2 = 4, (1 + 6) / 2 = 3.5, (1 + 2) / 2 = 1.5.
        close64(&rloo(&[1.0, 2.0, 6.0]), &[-3.0, -1.5, 4.5]);
        // Two responses: each against the other.
        close64(&rloo(&[0.5, -0.5]), &[1.0, -1.0]);
        // Equal rewards: nothing to prefer, advantage 0; a group of one has no baseline.
        close64(&rloo(&[2.5, 2.5, 2.5, 2.5]), &[0.0; 4]);
        close64(&rloo(&[7.0]), &[0.0]);
    }

    #[test]
    fn grpo_by_hand() {
        // (1, 2, 3): mean 2, sample std 1 -> (-1, 0, 1) / 1.0001.
        close64(&grpo(&[1.0, 2.0, 3.0]), &[-1.0 / 1.0001, 0.0, 1.0 / 1.0001]);
        // (0, 4): mean 2, sample std sqrt(8) = 2.828427 -> -+2 / 2.828527 = -+0.707082.
        let a = grpo(&[0.0, 4.0]);
        assert!((a[0] + 0.707_082).abs() < 1e-6 && (a[1] - 0.707_082).abs() < 1e-6, "{a:?}");
        // Equal rewards: advantage 0 (std 0, numerator 0), not a division by zero.
        close64(&grpo(&[-1.0, -1.0, -1.0]), &[0.0; 3]);
        close64(&grpo(&[3.0]), &[0.0]);
    }

    #[test]
    fn whitening_by_hand() {
        // (1, 2, 3, 6): mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5, std 1.870829.
        let mut x = [1.0, 2.0, 3.0, 6.0];
        whiten(&mut x);
        let s = 3.5f32.sqrt();
        close(&x, &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s]);
    }

    #[test]
    fn explained_variance_by_hand() {
        assert!((explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        // returns (1, 3): variance 1; residuals (1, 1): variance 0 -> 1. Values 0: residual = returns -> 0.
        assert!((explained_variance(&[0.0, 2.0], &[1.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(explained_variance(&[0.0, 0.0], &[1.0, 3.0]).abs() < 1e-12);
    }

    #[test]
    fn rewards_by_hand() {
        let s = shaping();
        // RM 1.5, EOS, 20 of 100 tokens, length_bonus 1 -> -10 * 0.2 = -2; wrong letter c = 0: -0.5.
        let p = RewardParts::new(1.5, true, 20, 100, 1.0, 0.0, &s);
        assert_eq!(p, RewardParts { score: 1.5, length: -2.0, correctness: 0.0 });
        assert!((p.total(&s) + 0.5).abs() < 1e-12);
        // No EOS: the score is replaced by -8; length_bonus -0.5 rewards length: +5 * 1.0; c = 0.5: +1.
        let p = RewardParts::new(1.5, false, 100, 100, -0.5, 0.5, &s);
        assert!((p.total(&s) - (-8.0 + 5.0 + 1.0)).abs() < 1e-12);
        // Scaled x10 and clipped at 5.
        let clipped = Shaping { reward_scale: 10.0, reward_clip: 5.0, ..s.clone() };
        assert_eq!(RewardParts::new(1.5, true, 0, 100, 1.0, 0.0, &clipped).total(&clipped), 5.0);
        // Per-token: -beta * kl, the sequence reward on the last token only.
        close(&token_rewards(&[0.5, 0.0, 2.0], 0.1, 3.0), &[-0.05, 0.0, 2.8]);
    }

    #[test]
    fn oracle_by_hand() {
        let j = |object, attribute, helpfulness| Judgement {
            hallucinations: Hallucinations { object, attribute, ..Default::default() },
            correct: None,
            helpfulness,
            supported: false,
        };
        // Clean and every object named: 0.9 * 1 - 0 = 0.9.
        assert!((oracle_score(&j(0, 0, 1.0), 0.9) - 0.9).abs() < 1e-12);
        // One absent object and one wrong colour, half the objects named: 0.45 - 2 = -1.55.
        assert!((oracle_score(&j(1, 1, 0.5), 0.9) + 1.55).abs() < 1e-12);
        // Hallucinations first: a clean answer that names nothing beats a complete one with one
        // hallucination (0 > 0.9 - 1).
        assert!(oracle_score(&j(0, 0, 0.0), 0.9) > oracle_score(&j(1, 0, 1.0), 0.9));
    }

    #[test]
    fn oracle_on_a_small_scene() {
        // Large red circle top left, small orange star center, small red circle bottom right.
        let scene = crate::eval::chair::tests::scene();
        let oracle = |q: &str, r: &str| oracle_score(&crate::eval::judge::judge(&scene, q, r), 0.9);
        let absent = "Is there a blue square in the image?";
        // The right "No": helpful (1), nothing false: 0.9. The wrong "Yes" claims an absent
        // object: -1 and no helpfulness.
        assert!((oracle(absent, "No.") - 0.9).abs() < 1e-12);
        assert!((oracle(absent, "Yes.") + 1.0).abs() < 1e-12);
        // A description naming one of the two classes (recall 1/2): 0.45; adding an absent blue
        // square costs one hallucination: 0.45 - 1 = -0.55.
        let describe = "Describe the image in detail.";
        assert!((oracle(describe, "There is a red circle.") - 0.45).abs() < 1e-12);
        assert!((oracle(describe, "There is a red circle and a blue square.") + 0.55).abs() < 1e-12);
    }

    #[test]
    fn correctness_by_hand() {
        assert_eq!(correctness(CaptionType::Choice(2), "C."), 1.0);
        assert_eq!(correctness(CaptionType::Choice(2), "B."), 0.0);
        assert_eq!(correctness(CaptionType::Choice(3), "D"), 1.0);
        assert_eq!(correctness(CaptionType::Choice(0), "A blue circle."), 0.0);
        assert_eq!(correctness(CaptionType::No, "No."), 0.5);
        assert_eq!(correctness(CaptionType::No, "Yes, there is."), -0.5);
        assert_eq!(correctness(CaptionType::Yes, "yes."), 0.5);
        assert_eq!(correctness(CaptionType::Yes, "No."), -0.5);
        assert_eq!(correctness(CaptionType::Yes, "There is a star."), 0.0);
        assert_eq!(correctness(CaptionType::General, "Yes."), 0.0);
    }

    #[test]
    fn token_weights_by_hand() {
        // Lengths 1 and 3: token average 1/4 each; sequence average 1/2 for the one-token answer,
        // 1/6 for each of the other's three; padding 0.
        close(&token_weights(&[1, 3], LossAverage::Token), &[0.25, 0.0, 0.0, 0.25, 0.25, 0.25]);
        let third = 1.0 / 6.0;
        close(&token_weights(&[1, 3], LossAverage::Sequence), &[0.5, 0.0, 0.0, third, third, third]);
    }

    #[test]
    fn adaptive_beta_moves_towards_the_target() {
        // KL twice the target: error clipped to 0.2; 100 of horizon 1000 -> beta * 1.02.
        assert!((adapt_beta(0.1, 12.0, 6.0, 100, 1000.0) - 0.102).abs() < 1e-12);
        // KL at 90% of the target: error -0.1 -> beta * 0.99.
        assert!((adapt_beta(0.1, 5.4, 6.0, 100, 1000.0) - 0.099).abs() < 1e-12);
    }
}
