//! Parity with Python transformers on the tiny random llava-hf checkpoints of
//! `tests/fixtures/tiny-llava` (see its README for the conventions and tolerances).

use burn::tensor::{Tensor, TensorData};
use factrl::backend::inference_device;
use factrl::model::generate::{SamplingConfig, generate};
use factrl::model::jobs::{self, ModelFolder, Template};
use factrl::model::{ImageInput, PaddingSide, TextBatch};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Log-probs and logits: HF f32 is within 1e-5 of a float64 reference, so 1e-4 leaves 10x.
const LOGPROB_TOL: f32 = 1e-4;
/// Pixels: the resize is Pillow-exact, so only float rounding remains.
const PIXEL_TOL: f32 = 1e-5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava")
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["cases"].as_array().unwrap().clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn pixels(case: &Value) -> ImageInput {
    let shape: Vec<usize> =
        case["pixel_shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let data = TensorData::new(floats(&case["pixel_values"]), shape);
    ImageInput::Pixels(Tensor::from_data(data, &inference_device()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

struct Folders(HashMap<String, ModelFolder>);

impl Folders {
    fn get(&mut self, variant: &str) -> &ModelFolder {
        self.0
            .entry(variant.to_string())
            .or_insert_with(|| ModelFolder::load(&root().join(variant), &inference_device()).unwrap())
    }
}

fn single_cases() -> Vec<Value> {
    cases().into_iter().filter(|c| c["kind"] == "single").collect()
}

#[test]
fn response_logprobs_match_transformers_in_every_variant() {
    let mut folders = Folders(HashMap::new());
    for case in single_cases() {
        let name = case["name"].as_str().unwrap();
        let folder = folders.get(case["variant"].as_str().unwrap());
        let input_ids = ids(&case["input_ids"]);
        let start = case["response_start"].as_u64().unwrap() as usize;
        let batch = TextBatch::pad(std::slice::from_ref(&input_ids), 0, PaddingSide::Right);
        let logp = folder
            .model
            .token_logprobs(&batch, pixels(&case))
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let got = &logp[start - 1..];
        let diff = max_diff(got, &floats(&case["response_logprobs"]));
        eprintln!("{name}: log-prob max |diff| {diff:.1e}");
        assert!(diff <= LOGPROB_TOL, "{name}: max |diff| {diff}");
    }
}

#[test]
fn tokens_and_pixels_match_the_llava_processor() {
    let mut folders = Folders(HashMap::new());
    for case in single_cases() {
        let name = case["name"].as_str().unwrap();
        let folder = folders.get(case["variant"].as_str().unwrap());
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = folder.encode(prompt).unwrap();
        assert_eq!(prompt_ids, ids(&case["prompt_ids"]), "{name}");
        let full = folder.encode(&format!("{prompt} {}", case["response"].as_str().unwrap())).unwrap();
        assert_eq!(full[prompt_ids.len()..], ids(&case["response_ids"]), "{name}");
        assert_eq!(folder.expand_images(&full, 1).unwrap(), ids(&case["input_ids"]), "{name}");
        let image = root().join(case["image"].as_str().unwrap());
        let got = folder.processor.process_file(&image).unwrap();
        let diff = max_diff(&got, &floats(&case["pixel_values"]));
        eprintln!("{name}: pixel max |diff| {diff:.1e}");
        assert!(diff <= PIXEL_TOL, "{name}: pixel max |diff| {diff}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let mut folders = Folders(HashMap::new());
    for case in single_cases() {
        let name = case["name"].as_str().unwrap();
        let folder = folders.get(case["variant"].as_str().unwrap());
        let prompt = folder.expand_images(&ids(&case["prompt_ids"]), 1).unwrap();
        let sampling = SamplingConfig {
            max_new_tokens: 20,
            suppress_tokens: ids(&case["greedy_suppressed_ids"]),
            ..Default::default()
        };
        let out = generate(&folder.model, &[prompt], pixels(&case), &sampling).unwrap();
        assert_eq!(out[0].token_ids, ids(&case["greedy_ids"]), "{name}");
    }
}

#[test]
fn right_padded_batch_matches_transformers() {
    let case = cases().into_iter().find(|c| c["kind"] == "batch_logprobs").unwrap();
    let mut folders = Folders(HashMap::new());
    let folder = folders.get(case["variant"].as_str().unwrap());
    let rows = case["rows"].as_array().unwrap();
    let seqs: Vec<Vec<u32>> = rows.iter().map(|r| ids(&r["input_ids"])).collect();
    let pad = case["pad_id"].as_u64().unwrap() as u32;
    let batch = TextBatch::pad(&seqs, pad, PaddingSide::Right);
    let expected_ids: Vec<u32> = case["input_ids"].as_array().unwrap().iter().flat_map(ids).collect();
    assert_eq!(batch.ids, expected_ids);
    let logp = folder
        .model
        .token_logprobs(&batch, pixels(&case))
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let t = batch.len - 1;
    for (r, row) in rows.iter().enumerate() {
        let start = row["response_start"].as_u64().unwrap() as usize;
        let n = row["response_ids"].as_array().unwrap().len();
        let got = &logp[r * t + start - 1..r * t + start - 1 + n];
        let diff = max_diff(got, &floats(&row["response_logprobs"]));
        assert!(diff <= LOGPROB_TOL, "row {r}: max |diff| {diff}");
    }
}

#[test]
fn score_job_matches_transformers_end_to_end() {
    // Raw images through the processor, tokenizer and model, as `factrl score` runs them.
    let dir = tempfile::tempdir().unwrap();
    let chosen: Vec<Value> = single_cases().into_iter().filter(|c| c["variant"] == "base").collect();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = chosen
        .iter()
        .map(|c| {
            let image = root().join(c["image"].as_str().unwrap());
            serde_json::json!({"image": image, "prompt": c["prompt"], "response": c["response"]}).to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    jobs::score(&root().join("base"), &input, &output, Template::Verbatim).unwrap();
    let out = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), chosen.len());
    for (row, case) in rows.iter().zip(&chosen) {
        let diff = max_diff(&floats(&row["response_logprobs"]), &floats(&case["response_logprobs"]));
        assert!(diff <= LOGPROB_TOL, "{}: max |diff| {diff}", case["name"]);
        let sum = row["sum"].as_f64().unwrap() - case["response_logprob_sum"].as_f64().unwrap();
        assert!(sum.abs() <= 1e-3, "{}: sum off by {sum}", case["name"]);
    }
}
