//! A small world, a tiny model over its tokenizer and preference pairs with a planted
//! hallucination, shared by the integration tests.

// Each test crate compiles this module and uses a part of it.
#![allow(dead_code)]

use factrl::model::processor::ClipProcessor;
use factrl::model::{LlamaConfig, Llava, LlavaConfig, VisionConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary.
pub fn factrl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_factrl")).args(args).output().unwrap()
}

/// Runs the binary and asserts success.
pub fn factrl_ok(args: &[&str]) -> Output {
    let out = factrl(args);
    assert!(out.status.success(), "factrl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A world of `images` images in `tmp/world`.
pub fn world(tmp: &Path, images: usize) -> PathBuf {
    let world = tmp.join("world");
    let cfg = factrl::world::WorldConfig { images, pope_images: 5, mmhal_per_type: 1, ..Default::default() };
    factrl::world::generate(&cfg, &world, false).unwrap();
    world
}

/// A randomly initialised model far smaller than `LlavaConfig::tiny` (32-pixel images, 16 image
/// tokens, width 32), saved as a model folder `tmp/model`.
pub fn tiny_model(tmp: &Path, world: &Path) -> PathBuf {
    let tok_path = world.join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    let mut c = LlavaConfig::new(
        VisionConfig::new(32, 64, 2, 1, 32, 8),
        LlamaConfig::new(tok.get_vocab_size(true), 32, 64, 2, 2, 1, 16),
        id("<image>"),
    )
    .with_vision_feature_layer(-1);
    c.bos_token_id = Some(id("<s>"));
    c.eos_token_id = Some(id("</s>"));
    c.pad_token_id = Some(id("<pad>"));
    let device = factrl::backend::inference_device();
    device.seed(5);
    let model = Llava::init(&c, &device).unwrap();
    let dir = tmp.join("model");
    factrl::train::common::save_model_folder(&model, &tok_path, &ClipProcessor::square(32), &dir).unwrap();
    dir
}

/// The sentence planted in rejected responses: an object that is not asked about.
pub const PLANTED: &str = "There is also a purple star.";

/// Preference pairs over the world's preference prompts, `tmp/prefs.json`: the reference answer
/// against the same answer with [`PLANTED`] appended (the hallucinating one), in alternating
/// order. Images are relative to the prefs file's folder; captions come from the world's
/// `image_to_caption.json`.
pub fn prefs(tmp: &Path, world: &Path) -> PathBuf {
    let prompts: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(world.join("prefs_prompts.json")).unwrap()).unwrap();
    let records: Vec<Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let good = p["conversations"].as_array().unwrap().last().unwrap()["value"].as_str().unwrap();
            let bad = format!("{good} {PLANTED}");
            let first = i % 2 == 0;
            let (o1, o2) = if first { (good.to_string(), bad) } else { (bad, good.to_string()) };
            json!({
                "id": p["id"], "image": format!("world/{}", p["image"].as_str().unwrap()),
                "conversations": p["conversations"],
                "output_1": {"from": "llava", "value": o1}, "output_2": {"from": "llava", "value": o2},
                "preference": if first { 1 } else { 2 }, "hallucination": true,
                "hallucinated_1": !first, "hallucinated_2": first,
            })
        })
        .collect();
    let path = tmp.join("prefs.json");
    std::fs::write(&path, serde_json::to_string(&records).unwrap()).unwrap();
    path
}

/// Lines of a JSONL file.
pub fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
