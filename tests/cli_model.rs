//! `factrl score`, `generate` and `export` run as a user runs them, on the tiny fixtures.

use safetensors::SafeTensors;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llava")
}

fn factrl(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_factrl")).args(args).output().unwrap();
    assert!(out.status.success(), "factrl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `factrl score` on `model`, then its output lines.
fn score(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Vec<Value> {
    let paths = [model, input, output].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["score", "--model", &paths[0], "--input", &paths[1], "--output", &paths[2]];
    args.extend(extra);
    factrl(&args);
    jsonl(output)
}

fn keys(dir: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Two lines with images relative to the input file.
fn write_input(dir: &Path) -> PathBuf {
    std::fs::copy(fixtures().join("images/odd23x19.png"), dir.join("odd.png")).unwrap();
    let input = dir.join("in.jsonl");
    let line = |prompt: &str, response: &str| {
        serde_json::json!({"image": "odd.png", "prompt": prompt, "response": response}).to_string()
    };
    let text =
        [line("USER: <image>\nwhat is here ? ASSISTANT:", "a red square ."), line("<image>\nwhat", "a")];
    std::fs::write(&input, text.join("\n")).unwrap();
    input
}

#[test]
fn export_writes_what_transformers_loads_and_scores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let exported = dir.path().join("exported");
    let base = fixtures().join("legacy");
    factrl(&["export", "--model", base.to_str().unwrap(), "--output", exported.to_str().unwrap()]);
    // A second export to the same folder is refused rather than mixed with the first.
    let again = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["export", "--model", base.to_str().unwrap(), "--output", exported.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // The legacy fixture loads in transformers without missing or unexpected keys.
    assert_eq!(keys(&exported), keys(&base));
    for file in [
        "config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(exported.join(file).exists(), "{file} not exported");
    }
    let mut scores = Vec::new();
    for model in [&base, &exported] {
        let output = dir.path().join("scores.jsonl");
        scores.push(score(model, &input, &output, &[]));
    }
    assert_eq!(scores[0], scores[1]);
    // The vicuna_v1 template changes the prompt, hence the scores.
    let output = dir.path().join("vicuna.jsonl");
    let vicuna = score(&base, &input, &output, &["--template", "vicuna_v1"]);
    assert_ne!(vicuna, scores[0]);
    assert_eq!(scores[0].len(), 2);
    // "a red square ." is four tokens; "a" one.
    assert_eq!(scores[0][0]["response_logprobs"].as_array().unwrap().len(), 4);
    assert_eq!(scores[0][1]["response_logprobs"].as_array().unwrap().len(), 1);
}

#[test]
fn generate_writes_text_ids_and_logprobs_and_honours_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path());
    let model = fixtures().join("base");
    let run = |seed: &str, name: &str| {
        let output = dir.path().join(name);
        factrl(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "--temperature",
            "1.0",
            "--top-p",
            "0.9",
            "--top-k",
            "20",
            "--seed",
            seed,
        ]);
        jsonl(&output)
    };
    let (a, b, c) = (run("1", "a.jsonl"), run("1", "b.jsonl"), run("2", "c.jsonl"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    for row in &a {
        let ids = row["token_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 5);
        assert_eq!(row["logprobs"].as_array().unwrap().len(), ids.len());
        assert!(row["text"].is_string());
        assert!(ids.iter().all(|i| i.as_u64() != Some(4)), "generated the image token");
    }
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": 3}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args([
            "score",
            "--model",
            fixtures().join("base").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            dir.path().join("o.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl, line 2"), "{err}");
    assert!(!dir.path().join("o.jsonl").exists());
}
