//! The learning-rate schedule: linear warmup, then cosine decay to a floor.

/// Learning rate at optimiser step `step` (0-based) of `total`: rises linearly from `lr / warmup` to
/// `lr` over the first `warmup` steps, then follows half a cosine from `lr` down to `min_lr` at the
/// last step.
pub fn warmup_cosine(step: usize, total: usize, warmup: usize, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        // warmup 4 steps to lr 1.0: 0.25, 0.5, 0.75, 1.0
        let lrs: Vec<f64> = (0..4).map(|s| warmup_cosine(s, 14, 4, 1.0, 0.1)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0]);
        // Decay over 10 steps: halfway (step 9) is the midpoint 0.55, the end is the floor 0.1.
        assert!((warmup_cosine(4, 14, 4, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(9, 14, 4, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert!((warmup_cosine(14, 14, 4, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(99, 14, 4, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn no_warmup_starts_at_full_rate() {
        assert_eq!(warmup_cosine(0, 10, 0, 2.0, 0.0), 2.0);
    }
}
