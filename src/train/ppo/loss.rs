//! PPO's clipped losses on tensors, each token weighted by [`super::math::token_weights`] (the
//! weights sum to 1 over a minibatch, so the loss is a weighted mean).

use burn::tensor::Tensor;

/// `sum(x * w)`.
fn weighted(x: Tensor<2>, w: Tensor<2>) -> Tensor<1> {
    (x * w).sum()
}

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated to a loss:
/// `sum_t w_t max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps))`, `ratio = exp(logp - logp_old)`.
/// Also returns the weighted share of tokens where the clipped term was taken, and the
/// approximate KL from the old policy to the new (k3 of `logp - logp_old`, the weighted mean).
///
/// # Shapes
/// - all inputs `[b, r]` -> `[1]`, `[1]`, `[1]`
pub fn policy_loss(
    logp: Tensor<2>,
    logp_old: Tensor<2>,
    adv: Tensor<2>,
    weights: Tensor<2>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let log_ratio = logp - logp_old;
    let ratio = log_ratio.clone().exp();
    let unclipped = adv.clone().neg() * ratio.clone();
    let clipped = adv.neg() * ratio.clone().clamp(1.0 - eps, 1.0 + eps);
    let frac = weighted(clipped.clone().greater(unclipped.clone()).float(), weights.clone());
    // k3 of old -> new: ratio - 1 - log ratio (non-negative, unbiased).
    let approx_kl = weighted((ratio - 1.0 - log_ratio).detach(), weights.clone());
    (weighted(unclipped.max_pair(clipped), weights), frac, approx_kl)
}

/// The clipped value loss: `0.5 * sum_t w_t max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)`,
/// and the weighted share of tokens where the clipped term was taken.
///
/// # Shapes
/// - all inputs `[b, r]` -> `[1]`, `[1]`
pub fn value_loss(
    values: Tensor<2>,
    values_old: Tensor<2>,
    returns: Tensor<2>,
    weights: Tensor<2>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>) {
    let clipped = values_old.clone() + (values.clone() - values_old).clamp(-eps, eps);
    let a = (values - returns.clone()).powi_scalar(2);
    let b = (clipped - returns).powi_scalar(2);
    let frac = weighted(b.clone().greater(a.clone()).float(), weights.clone());
    (weighted(a.max_pair(b), weights).mul_scalar(0.5), frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::inference_device;
    use crate::train::ppo::rollout::padded;

    fn t(rows: &[&[f32]]) -> Tensor<2> {
        padded(rows, &inference_device())
    }

    fn scalar(x: Tensor<1>) -> f32 {
        x.into_scalar::<f32>()
    }

    #[test]
    fn policy_loss_by_hand() {
        // Ratio 1 (logp = old): clipping is inactive, approximate KL 0, and the loss is -mean(A) =
        // -(1 - 2) / 2 = 0.5.
        let (l, f, k) =
            policy_loss(t(&[&[-1.0, -2.0]]), t(&[&[-1.0, -2.0]]), t(&[&[1.0, -2.0]]), t(&[&[0.5, 0.5]]), 0.2);
        assert!((scalar(l) - 0.5).abs() < 1e-6);
        assert_eq!((scalar(f), scalar(k)), (0.0, 0.0));
        // Ratio e^0.5 = 1.6487 with A = 1: min(1.6487, 1.2) -> loss -1.2, clipped.
        // Ratio e^-0.5 = 0.6065 with A = -1: max(0.6065, 0.8) -> loss 0.8, clipped. Mean -0.2.
        // The padded third token (weight 0) does not count. Approximate KL: (e^0.5 - 1.5 + e^-0.5
        // - 0.5) / 2 = (0.148721 + 0.106531) / 2 = 0.127626.
        let (l, f, k) = policy_loss(
            t(&[&[-0.5, -1.5, 9.0]]),
            t(&[&[-1.0, -1.0, 0.0]]),
            t(&[&[1.0, -1.0, 5.0]]),
            t(&[&[0.5, 0.5, 0.0]]),
            0.2,
        );
        assert!((scalar(l) + 0.2).abs() < 1e-6);
        assert_eq!(scalar(f), 1.0);
        assert!((scalar(k) - 0.127_626).abs() < 1e-5);
        // Ratio e^0.1 = 1.10517 inside the clip range, A = 2: loss -2.21034, unclipped.
        let (l, f, _) = policy_loss(t(&[&[-0.9]]), t(&[&[-1.0]]), t(&[&[2.0]]), t(&[&[1.0]]), 0.2);
        assert!((scalar(l) + 2.210_342).abs() < 1e-5);
        assert_eq!(scalar(f), 0.0);
        // Sequence weights: a one-token answer (A = 1) and a two-token one (A = -2 on both) weigh
        // half each: -(0.5 * 1 + 0.25 * -2 + 0.25 * -2) = 0.5; token weights (1/3 each) give 1.
        let same = t(&[&[-1.0, 0.0], &[-1.0, -1.0]]);
        let adv = t(&[&[1.0, 0.0], &[-2.0, -2.0]]);
        let seq = t(&[&[0.5, 0.0], &[0.25, 0.25]]);
        let tok = t(&[&[1.0 / 3.0, 0.0], &[1.0 / 3.0, 1.0 / 3.0]]);
        assert!(
            (scalar(policy_loss(same.clone(), same.clone(), adv.clone(), seq, 0.2).0) - 0.5).abs() < 1e-6
        );
        assert!((scalar(policy_loss(same.clone(), same, adv, tok, 0.2).0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn value_loss_by_hand() {
        // V 1.0, V_old 0.5, R 2.0, eps 0.2: unclipped (1 - 2)^2 = 1; clipped V = 0.7, (0.7 - 2)^2 = 1.69;
        // max 1.69, times 0.5 = 0.845. Second token: V 0.6 (within 0.2 of 0.5), R 0.6: both 0.
        let (l, f) =
            value_loss(t(&[&[1.0, 0.6]]), t(&[&[0.5, 0.5]]), t(&[&[2.0, 0.6]]), t(&[&[0.5, 0.5]]), 0.2);
        assert!((scalar(l) - 0.845 / 2.0).abs() < 1e-6);
        assert_eq!(scalar(f), 0.5);
    }
}
