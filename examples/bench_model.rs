//! The Rust side of `scripts/bench_reference.py`: the same model shapes (read from the
//! `config.json` that script writes with `--write-config`), the same train step (forward +
//! backward + AdamW on a batch of 8 x 128 tokens with one image each, loss on text positions) and
//! the same greedy decoding (64 new tokens after one image and 16 text tokens, batch 1 and 8).
//! Prints one JSON line.
//!
//! ```sh
//! python3 scripts/bench_reference.py --write-config /tmp/tiny_world.json
//! cargo run --example bench_model -- /tmp/tiny_world.json
//! ```

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use factrl::backend::{inference_device, training_device};
use factrl::model::generate::{SamplingConfig, generate};
use factrl::model::{ImageInput, Llava, LlavaConfig, PaddingSide, TextBatch};
use std::time::Instant;

const BATCH: usize = 8;
const SEQ: usize = 128;
const WARMUP: usize = 2;
const ITERS: usize = 5;
const GEN_TOKENS: usize = 64;
const PROMPT_TEXT: usize = 16;

/// `<s> <image> x n text...` with text ids drawn from a fixed-seed LCG (ids 5 and up).
fn sequences(config: &LlavaConfig, b: usize, total: usize) -> Vec<Vec<u32>> {
    let n = config.image_features();
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        5 + ((state >> 33) % (config.text.vocab_size as u64 - 5)) as u32
    };
    (0..b)
        .map(|_| {
            let mut seq = vec![1];
            seq.extend(std::iter::repeat_n(config.image_token_id, n));
            seq.extend((0..total - n - 1).map(|_| next()));
            seq
        })
        .collect()
}

fn pixels(config: &LlavaConfig, b: usize, device: &Device) -> Tensor<4> {
    let s = config.vision.image_size;
    Tensor::random([b, 3, s, s], Distribution::Normal(0.0, 1.0), device)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: bench_model CONFIG.json")?;
    let mut config = LlavaConfig::from_hf_file(std::path::Path::new(&path))?;
    config.eos_token_id = None; // decode exactly GEN_TOKENS

    // (a) train step
    let device = training_device();
    let mut model = Llava::init(&config, &device)?;
    let params = model.num_params();
    let seqs = sequences(&config, BATCH, SEQ);
    let batch = TextBatch::pad(&seqs, 0, PaddingSide::Right);
    let images = pixels(&config, BATCH, &device);
    // Loss on positions whose target is text: [b, t - 1] weights.
    let weights: Vec<f32> = seqs
        .iter()
        .flat_map(|s| s[1..].iter().map(|&i| f32::from(u8::from(i != config.image_token_id))))
        .collect();
    let count: f32 = weights.iter().sum();
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [BATCH, SEQ - 1]), &device);
    let mut optim = AdamWConfig::new().init();
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for i in 0..WARMUP + ITERS {
        let start = Instant::now();
        let logp = model.token_logprobs(&batch, ImageInput::Pixels(images.clone()))?;
        let loss = (logp * weights.clone()).sum().neg() / count;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
        losses.push(loss.into_scalar::<f32>());
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i >= WARMUP {
            times.push(ms);
        }
        eprintln!("train step {i}: {ms:.1} ms loss {:.4}", losses[i]);
    }
    let train_median = median(times.clone());
    let train_min = times.iter().copied().fold(f64::INFINITY, f64::min);

    // (b) greedy decoding
    let device = inference_device();
    let model = Llava::init(&config, &device)?;
    let mut decoding = serde_json::Map::new();
    for b in [1, BATCH] {
        let prompts = sequences(&config, b, config.image_features() + 1 + PROMPT_TEXT);
        let images = pixels(&config, b, &device);
        let run = |n: usize| -> Result<f64, Box<dyn std::error::Error>> {
            let sampling = SamplingConfig { max_new_tokens: n, ..Default::default() };
            let start = Instant::now();
            let out = generate(&model, &prompts, ImageInput::Pixels(images.clone()), &sampling)?;
            assert!(out.iter().all(|g| g.token_ids.len() == n));
            Ok(start.elapsed().as_secs_f64())
        };
        run(GEN_TOKENS)?;
        let prefill =
            (0..3).map(|_| run(1)).collect::<Result<Vec<_>, _>>()?.into_iter().fold(f64::INFINITY, f64::min);
        let total = median((0..3).map(|_| run(GEN_TOKENS)).collect::<Result<Vec<_>, _>>()?);
        decoding.insert(
            format!("batch{b}"),
            serde_json::json!({
                "batch": b, "new_tokens": GEN_TOKENS, "total_ms_median": total * 1e3, "prefill_ms": prefill * 1e3,
                "tokens_per_s": (b * GEN_TOKENS) as f64 / total,
                "decode_ms_per_step": (total - prefill) * 1e3 / (GEN_TOKENS - 1) as f64,
            }),
        );
    }
    let result = serde_json::json!({
        "bench": "llava_factrl_burn", "device": "flex cpu", "params": params,
        "train": {"batch": BATCH, "seq": SEQ, "iters": ITERS, "median_ms": train_median, "min_ms": train_min,
                  "loss_first": losses[0], "loss_last": losses[losses.len() - 1]},
        "generate": decoding,
    });
    println!("{result}");
    Ok(())
}
