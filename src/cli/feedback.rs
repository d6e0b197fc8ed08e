//! `factrl collect` and `factrl annotate ...`.

use crate::feedback::auto::{self, AutoOptions};
use crate::feedback::collect::{self, CollectOptions};
use crate::feedback::judge_api::{self, JudgeOptions};
use crate::feedback::server;
use crate::feedback::store::Store;
use crate::model::generate::SamplingConfig;
use anyhow::{Context, ensure};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The annotation web app for people, over a SQLite store.
    Serve(ServeArgs),
    /// Add an annotator to a store and print their sign-in token (shown once, stored hashed).
    AddAnnotator(AddAnnotatorArgs),
    /// Write a store's answers as prefs.json (one record per annotator and pair).
    Export(ExportArgs),
    /// Agreement between annotators on the pairs several answered (JSON).
    Stats(StatsArgs),
}

/// Flags of `factrl annotate serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// candidates.json (from `factrl collect`); loaded into the store on first use.
    #[arg(long)]
    candidates: PathBuf,
    /// The SQLite store (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Address to listen on; the default serves this machine only.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Annotators per pair: a pair is offered until this many have answered it (2 or more gives
    /// overlap for agreement statistics).
    #[arg(long, default_value_t = 1)]
    per_pair: usize,
}

/// Flags of `factrl annotate add-annotator`.
#[derive(Args)]
pub struct AddAnnotatorArgs {
    /// The annotator's name (as it appears in prefs.json).
    name: String,
    /// The SQLite store (created if missing).
    #[arg(long)]
    db: PathBuf,
}

/// Flags of `factrl annotate export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The SQLite store.
    #[arg(long)]
    db: PathBuf,
    /// prefs.json to write.
    #[arg(long)]
    output: PathBuf,
}

/// Flags of `factrl annotate stats`.
#[derive(Args)]
pub struct StatsArgs {
    /// The SQLite store.
    #[arg(long)]
    db: PathBuf,
}

/// Opens an existing store (`serve` and `add-annotator` may create one; reading commands may not).
fn existing(db: &Path) -> anyhow::Result<Store> {
    ensure!(db.is_file(), "{}: no such annotation store", db.display());
    Store::open(db).with_context(|| format!("opening {}", db.display()))
}

/// Flags of `factrl annotate auto`: the simulated annotator (`--world`) or an AI judge (`--judge`).
#[derive(Args)]
pub struct AutoArgs {
    /// World folder (from `factrl world`) whose images the candidates show: judge from its ground truth.
    #[arg(long, required_unless_present = "judge", conflicts_with = "judge")]
    world: Option<PathBuf>,
    /// Instead: an OpenAI-compatible chat-completions API (base URL ending in /v1, or the full
    /// /chat/completions URL) whose model judges each pair from the image; key from OPENAI_API_KEY.
    #[arg(long, requires = "judge_model", conflicts_with = "noise")]
    judge: Option<String>,
    /// The judge's model name.
    #[arg(long, requires = "judge")]
    judge_model: Option<String>,
    /// Longest wait for one judge reply, seconds (at least 1).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    judge_timeout: u64,
    /// Ask the judge about each pair in both orders; keep only verdicts that do not depend on it.
    #[arg(long, requires = "judge")]
    judge_both_orders: bool,
    /// candidates.json (from `factrl collect`).
    #[arg(long)]
    candidates: PathBuf,
    /// prefs.json to write.
    #[arg(long)]
    output: PathBuf,
    /// Share of pairs whose preference is flipped (label noise).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// Seed of the noise and of the injected hallucinations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write this many built pairs per description prompt: the true description against a
    /// copy with one injected hallucination (marked `"injected": true`; reward training never holds
    /// them out).
    #[arg(long, default_value_t = 0, conflicts_with = "judge")]
    inject: usize,
    /// Also write this many copy pairs per short question: two answers of one form, the one the
    /// prompt's answer fact (rewritten to name it) names preferred, whatever the image shows
    /// (marked `"copy": true`; the fact-augmented reward model learns to read its facts from them,
    /// the standard one skips them, and none is held out).
    #[arg(long, default_value_t = 0, conflicts_with = "judge")]
    copy: usize,
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
    super::print(&serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

/// Runs `factrl annotate ...`.
pub fn annotate(cmd: AnnotateCommand) -> anyhow::Result<()> {
    match cmd {
        AnnotateCommand::Auto(a) => {
            let context = || format!("annotating {}", a.candidates.display());
            if let (Some(url), Some(model)) = (a.judge.clone(), a.judge_model.clone()) {
                let opts = JudgeOptions {
                    url,
                    model,
                    timeout: Duration::from_secs(a.judge_timeout),
                    both_orders: a.judge_both_orders,
                };
                let s = judge_api::annotate(&a.candidates, &a.output, &opts).with_context(context)?;
                eprintln!(
                    "{} pairs written; left out: {} unusable, {} order-dependent",
                    s.pairs, s.unusable, s.inconsistent
                );
                super::print(&serde_json::to_string_pretty(&s)?)?;
                return Ok(());
            }
            let world = a.world.as_ref().context("--world or --judge is needed")?;
            let opts = AutoOptions { noise: a.noise, seed: a.seed, inject: a.inject, copy: a.copy };
            let s = auto::annotate(world, &a.candidates, &a.output, &opts).with_context(context)?;
            eprintln!(
                "{} pairs written ({} injected, {} copy), {} exact ties dropped, {} flipped",
                s.pairs, s.injected, s.copies, s.ties_dropped, s.flipped
            );
            super::print(&serde_json::to_string_pretty(&s)?)?;
            Ok(())
        }
        AnnotateCommand::Serve(a) => server::run(&a.candidates, &a.db, a.bind, a.per_pair)
            .with_context(|| format!("serving {} from {}", a.candidates.display(), a.db.display())),
        AnnotateCommand::AddAnnotator(a) => {
            let store = Store::open(&a.db).with_context(|| format!("opening {}", a.db.display()))?;
            let token = store.add_annotator(&a.name).with_context(|| format!("adding {:?}", a.name))?;
            eprintln!("token for {} (shown once; only its hash is stored):", a.name);
            super::print(&token)?;
            Ok(())
        }
        AnnotateCommand::Export(a) => {
            let n = existing(&a.db)?
                .export(&a.output)
                .with_context(|| format!("exporting {}", a.db.display()))?;
            eprintln!("{n} preference records written to {}", a.output.display());
            Ok(())
        }
        AnnotateCommand::Stats(a) => {
            let stats = existing(&a.db)?.agreement()?;
            super::print(&serde_json::to_string_pretty(&stats)?)?;
            Ok(())
        }
    }
}
