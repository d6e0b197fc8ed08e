//! `factrl eval`: hallucination benchmarks.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `factrl eval` subcommands.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score a POPE answer file against its question file, as POPE's official script does.
    Pope(PopeArgs),
    /// Run a model on the world's held-out benchmarks (POPE, held-out prompts) and score it.
    Run(RunArgs),
}

/// Flags of `factrl eval run`.
#[derive(Args)]
pub struct RunArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// World folder (from `factrl world`).
    #[arg(long)]
    world: PathBuf,
    /// Output folder: answers and metrics.json.
    #[arg(long)]
    output: PathBuf,
    /// At most this many questions per POPE file and held-out prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Prompts generated together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 96)]
    max_new_tokens: usize,
}

/// Flags of `factrl eval pope`.
#[derive(Args)]
pub struct PopeArgs {
    /// POPE question file (JSON Lines: question_id, image, text, label).
    #[arg(long)]
    questions: PathBuf,
    /// Answers: `{"question", "answer"}` lines in question order, or `{"question_id", "text"}` lines.
    #[arg(long)]
    answers: PathBuf,
    /// Write the metrics here (JSON) instead of to standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Runs `factrl eval ...`.
pub fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Pope(a) => {
            let m = crate::eval::pope::evaluate(&a.questions, &a.answers)?;
            match a.output {
                Some(path) => crate::io::write_json(&path, &m)?,
                None => println!("{}", serde_json::to_string_pretty(&m)?),
            }
            Ok(())
        }
        EvalCommand::Run(a) => {
            let opts = crate::eval::run::EvalOptions {
                limit: a.limit,
                batch: a.batch,
                max_new_tokens: a.max_new_tokens,
            };
            let r = crate::eval::run::run(&a.model, &a.world, &a.output, &opts)?;
            super::print(&serde_json::to_string_pretty(&r)?)?;
            Ok(())
        }
    }
}
