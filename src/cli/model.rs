//! `factrl score`, `factrl generate` and `factrl export`.

use crate::model::generate::SamplingConfig;
use crate::model::jobs::{self, Template};
use crate::model::store::SaveDtype;
use anyhow::{Context, ensure};
use clap::Args;
use std::path::PathBuf;

/// Flags of `factrl score`.
#[derive(Args)]
pub struct ScoreArgs {
    /// Model folder (llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// JSONL lines `{"image", "prompt", "response"}`; image paths relative to this file.
    #[arg(long)]
    input: PathBuf,
    /// JSONL lines `{"response_logprobs", "sum"}`.
    #[arg(long)]
    output: PathBuf,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "verbatim")]
    template: Template,
}

/// Flags of `factrl generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model folder (llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// JSONL lines `{"image", "prompt"}`; image paths relative to this file.
    #[arg(long)]
    input: PathBuf,
    /// JSONL lines `{"text", "token_ids", "logprobs"}`.
    #[arg(long)]
    output: PathBuf,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "verbatim")]
    template: Template,
    /// Most new tokens per line.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Flags of `factrl export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Model folder to read.
    #[arg(long)]
    model: PathBuf,
    /// Folder to write (llava-hf layout).
    #[arg(long)]
    output: PathBuf,
    /// Storage precision.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: SaveDtype,
}

/// Runs `factrl score`.
pub fn score(args: ScoreArgs) -> anyhow::Result<()> {
    jobs::score(&args.model, &args.input, &args.output, args.template)
        .with_context(|| format!("scoring {}", args.input.display()))
}

/// Runs `factrl generate`.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    ensure!(args.temperature >= 0.0, "--temperature must be >= 0, got {}", args.temperature);
    ensure!(args.top_p > 0.0 && args.top_p <= 1.0, "--top-p must be in (0, 1], got {}", args.top_p);
    let sampling = SamplingConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        suppress_tokens: Vec::new(),
    };
    jobs::generate_file(&args.model, &args.input, &args.output, args.template, &sampling)
        .with_context(|| format!("generating for {}", args.input.display()))
}

/// Runs `factrl export`.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    jobs::export(&args.model, &args.output, args.dtype)
        .with_context(|| format!("exporting {} to {}", args.model.display(), args.output.display()))
}
