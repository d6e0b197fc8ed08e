//! `factrl collect` and `factrl annotate ...`.

use crate::feedback::auto::{self, AutoOptions};
use crate::feedback::collect::{self, CollectOptions};
use crate::model::generate::SamplingConfig;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Flags of `factrl collect`.
#[derive(Args)]
pub struct CollectArgs {
    /// Policy model folder.
    #[arg(long)]
    policy: PathBuf,
    /// Prompt file: JSON array of {id, image, conversations, task?, captions?}.
    #[arg(long)]
    prompts: PathBuf,
    /// candidates.json to write.
    #[arg(long)]
    output: PathBuf,
    /// Responses per prompt.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Longest response in tokens.
    #[arg(long, default_value_t = 96)]
    max_new_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences generated together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
}

/// `factrl annotate` subcommands.
#[derive(Subcommand)]
pub enum AnnotateCommand {
    /// Simulated annotator: label every pair of candidate responses from the world's ground truth.
    Auto(AutoArgs),
}

/// Flags of `factrl annotate auto`.
#[derive(Args)]
pub struct AutoArgs {
    /// World folder (from `factrl world`) whose images the candidates show.
    #[arg(long)]
    world: PathBuf,
    /// candidates.json (from `factrl collect`).
    #[arg(long)]
    candidates: PathBuf,
    /// prefs.json to write.
    #[arg(long)]
    output: PathBuf,
    /// Share of pairs whose preference is flipped (label noise).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `factrl collect`.
pub fn collect(a: CollectArgs) -> anyhow::Result<()> {
    let mut opts = CollectOptions::new(a.policy, a.prompts, a.output);
    opts.samples = a.samples;
    opts.sampling = SamplingConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        ..SamplingConfig::default()
    };
    opts.batch = a.batch;
    opts.limit = a.limit;
    let summary =
        collect::collect(&opts).with_context(|| format!("collecting for {}", opts.prompts.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Runs `factrl annotate ...`.
pub fn annotate(cmd: AnnotateCommand) -> anyhow::Result<()> {
    match cmd {
        AnnotateCommand::Auto(a) => {
            let opts = AutoOptions { noise: a.noise, seed: a.seed };
            let s = auto::annotate(&a.world, &a.candidates, &a.output, &opts)
                .with_context(|| format!("annotating {}", a.candidates.display()))?;
            eprintln!(
                "{} pairs written, {} exact ties dropped, {} flipped",
                s.pairs, s.ties_dropped, s.flipped
            );
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
    }
}
