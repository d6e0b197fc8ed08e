//! `factrl eval`: hallucination benchmarks.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `factrl eval` subcommands.
#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score a POPE answer file against its question file, as POPE's official script does.
    Pope(PopeArgs),
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
    }
}
