//! Batched generation with a key/value cache: left-padded prompts are prefilled once, then one
//! token per row and step; rows stop at EOS. Sampling (temperature, top-k, top-p) runs on the
//! host from a seeded ChaCha generator, so a seed fixes the output.

use super::ModelError;
use super::batch::{PaddingSide, TextBatch};
use super::llama::KvCache;
use super::llava::{ImageInput, Llava};
use burn::tensor::activation::log_softmax;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How tokens are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Most tokens generated per row.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens whose probabilities sum to at least this.
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Token ids never generated, besides the image placeholder (which never is).
    pub suppress_tokens: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            suppress_tokens: Vec::new(),
        }
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens, EOS included when it was produced.
    pub token_ids: Vec<u32>,
    /// `log p(token)` of each new token under the model (temperature 1, no truncation), as
    /// [`Llava::token_logprobs`] would score it.
    pub logprobs: Vec<f32>,
    /// Whether the row ended with EOS (rather than at `max_new_tokens`).
    pub finished: bool,
}

/// Continues each prompt (token ids with expanded image tokens; its images in `images`, in
/// order). Rows stop at the config's EOS; shorter prompts are left-padded with its pad token
/// (else EOS, else 0). Call it on `model.valid()`: an autodiff model would record a graph.
pub fn generate(
    model: &Llava,
    prompts: &[Vec<u32>],
    images: ImageInput,
    sampling: &SamplingConfig,
) -> Result<Vec<Generation>, ModelError> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Input("generation needs non-empty prompts".into()));
    }
    let eos = model.config.eos_token_id;
    let pad = model.config.pad_token_id.or(eos).unwrap_or(0);
    let batch = TextBatch::pad(prompts, pad, PaddingSide::Left);
    let mut mask = batch.mask.clone();
    let mut cache = KvCache::default();
    let mut rng = ChaCha8Rng::seed_from_u64(sampling.seed);
    let mut out: Vec<Generation> =
        vec![Generation { token_ids: Vec::new(), logprobs: Vec::new(), finished: false }; b];
    let mut hidden = model.decode(&batch.ids, b, images, &mask, &mut cache)?;
    for _ in 0..sampling.max_new_tokens {
        let t = hidden.dims()[1];
        let logits = model.logits(hidden.narrow(1, t - 1, 1)); // [b, 1, vocab]
        let vocab = logits.dims()[2];
        let logp = log_softmax(logits, 2)
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading log-probs: {e:?}")))?;
        let mut next = Vec::with_capacity(b);
        for (row, gen_row) in out.iter_mut().enumerate() {
            if gen_row.finished {
                next.push(pad);
                continue;
            }
            let row_logp = &logp[row * vocab..(row + 1) * vocab];
            let mut allowed = row_logp.to_vec();
            // The image placeholder is never generated: it has no image to stand for.
            let image = model.config.image_token_id;
            for &t in sampling.suppress_tokens.iter().chain([&image]) {
                if let Some(v) = allowed.get_mut(t as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
            let token = sample(&allowed, sampling, &mut rng);
            gen_row.token_ids.push(token as u32);
            gen_row.logprobs.push(row_logp[token]);
            gen_row.finished = eos == Some(token as u32);
            next.push(token as u32);
        }
        if out.iter().all(|g| g.finished) {
            break;
        }
        // Append the new column to the mask: [b, s] -> [b, s + 1].
        let s = mask.len() / b;
        mask = mask.chunks(s).flat_map(|row| row.iter().copied().chain([true])).collect();
        hidden = model.decode(&next, b, ImageInput::None, &mask, &mut cache)?;
    }
    Ok(out)
}

/// Picks a token from log-probabilities: argmax at temperature 0, else a draw from the
/// temperature-scaled distribution restricted to the top-k and then the top-p nucleus.
fn sample(logp: &[f32], sampling: &SamplingConfig, rng: &mut impl Rng) -> usize {
    let argmax = || logp.iter().enumerate().fold(0, |best, (i, &v)| if v > logp[best] { i } else { best });
    if sampling.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logp.len()).collect();
    order.sort_by(|&a, &b| logp[b].total_cmp(&logp[a]));
    if sampling.top_k > 0 {
        order.truncate(sampling.top_k);
    }
    let max = f64::from(logp[order[0]]);
    let weights: Vec<f64> =
        order.iter().map(|&i| ((f64::from(logp[i]) - max) / sampling.temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0.0;
    let mut n = 0;
    while n < weights.len() && (n == 0 || kept < sampling.top_p * total) {
        kept += weights[n];
        n += 1;
    }
    let mut u = rng.random::<f64>() * kept;
    for (&i, &w) in order.iter().zip(&weights).take(n) {
        if u < w {
            return i;
        }
        u -= w;
    }
    order[n - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(temperature: f64, top_p: f64, top_k: usize) -> SamplingConfig {
        SamplingConfig { max_new_tokens: 1, temperature, top_p, top_k, seed: 0, suppress_tokens: Vec::new() }
    }

    #[test]
    fn greedy_top_k_1_and_tiny_top_p_all_pick_the_argmax() {
        let logp = [0.1f32.ln(), 0.6f32.ln(), 0.3f32.ln()];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(sample(&logp, &config(0.0, 1.0, 0), &mut rng), 1);
        for _ in 0..20 {
            assert_eq!(sample(&logp, &config(1.0, 1.0, 1), &mut rng), 1);
            assert_eq!(sample(&logp, &config(1.0, 0.5, 0), &mut rng), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // p = (0.1, 0.6, 0.3): the nucleus for top_p 0.8 is {1, 2}; token 0 never appears.
        let logp = [0.1f32.ln(), 0.6f32.ln(), 0.3f32.ln()];
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let draws: Vec<usize> = (0..400).map(|_| sample(&logp, &config(1.0, 0.8, 0), &mut rng)).collect();
        assert!(!draws.contains(&0));
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 400.0;
        assert!((ones - 2.0 / 3.0).abs() < 0.08, "share of token 1: {ones}");
    }
}
