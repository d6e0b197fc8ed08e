//! `factrl score`, `factrl generate` and `factrl export`.

use crate::model::generate::SamplingConfig;
use crate::model::jobs::{self, Template};
use crate::model::store::SaveDtype;
use anyhow::{Context, ensure};
use clap::Args;
use std::path::PathBuf;

/// Input and output of `score` and `generate`.
#[derive(Args)]
pub struct JobFiles {
    /// JSONL input (see the subcommand); image paths relative to this file.
    #[arg(long)]
    input: PathBuf,
    /// JSONL output, one line per input line.
    #[arg(long)]
    output: PathBuf,
    /// Prompt template.
    #[arg(long, value_enum, default_value = "verbatim")]
    template: Template,
}

/// Flags of `factrl score`: input lines `{"image", "prompt", "response"}`, output lines
/// `{"response_logprobs", "sum"}`; with `--reward-model`, input lines `{"image", "prompt" |
/// "conversations", "response", "captions"?}`, output lines `{"reward"}`.
#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    scorer: Scorer,
    #[command(flatten)]
    files: JobFiles,
}

/// What scores: a model's log-probs or a reward model's reward.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Scorer {
    /// Model folder (llava-hf layout): per-token log-probs.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Reward model folder (from `factrl train reward`): the reward of each response (`--template`
    /// does not apply: the reward model's input is fixed).
    #[arg(long)]
    reward_model: Option<PathBuf>,
}

/// Flags of `factrl generate`: input lines `{"image", "prompt"}`, output lines
/// `{"text", "token_ids", "logprobs"}`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model folder (llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    files: JobFiles,
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
    let f = args.files;
    match (args.scorer.model, args.scorer.reward_model) {
        (_, Some(rm)) => crate::train::reward::score_file(&rm, &f.input, &f.output)
            .with_context(|| format!("scoring {} with reward model {}", f.input.display(), rm.display())),
        (Some(model), None) => jobs::score(&model, &f.input, &f.output, f.template)
            .with_context(|| format!("scoring {}", f.input.display())),
        (None, None) => anyhow::bail!("give --model or --reward-model"),
    }
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
    let f = args.files;
    jobs::generate_file(&args.model, &f.input, &f.output, f.template, &sampling)
        .with_context(|| format!("generating for {}", f.input.display()))
}

/// Runs `factrl export`.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    jobs::export(&args.model, &args.output, args.dtype)
        .with_context(|| format!("exporting {} to {}", args.model.display(), args.output.display()))
}
