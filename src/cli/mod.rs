//! Command-line parsing only: each subcommand validates its flags and calls one library function.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod config;
mod demo;
mod eval;
mod feedback;
mod model;
mod train;
mod world;

/// factrl: factually augmented RLHF for vision-language models.
#[derive(Parser)]
#[command(name = "factrl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole Fact-RLHF pipeline on the built-in world, ending in a report (Base, SFT, RLHF,
    /// Fact-RLHF).
    Demo(demo::DemoArgs),
    /// The shipped stage configs: list them, or print one to start from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Generate the synthetic visual world: images, ground truth, datasets, benchmarks, tokenizer.
    World(world::WorldArgs),
    /// Evaluate hallucination (POPE scoring).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Train a model (pretraining, SFT).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Per-token log-probs of responses under a model: input lines {"image", "prompt",
    /// "response"}, output lines {"response_logprobs", "sum"}.
    Score(model::ScoreArgs),
    /// Batched generation with a KV cache: input lines {"image", "prompt"}, output lines
    /// {"text", "token_ids", "logprobs"}.
    Generate(model::GenerateArgs),
    /// Write a model folder in the llava-hf layout, LoRA merged.
    Export(model::ExportArgs),
    /// Sample K candidate responses per prompt from a policy (candidates.json).
    Collect(feedback::CollectArgs),
    /// Judge pairs of candidate responses: simulated, AI or human annotators (prefs.json).
    #[command(subcommand)]
    Annotate(feedback::AnnotateCommand),
}

/// Writes `text` and a newline to standard output. A reader that has gone (`factrl ... | head`)
/// is not an error: there is nobody left to tell.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Parses the command line, runs the subcommand, and turns an error into a one-line message and a
/// non-zero exit.
pub fn main() -> ExitCode {
    crate::backend::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Config(cmd) => config::run(cmd),
        Command::World(args) => world::run(args),
        Command::Eval(cmd) => eval::run(cmd),
        Command::Train(cmd) => train::run(cmd),
        Command::Score(args) => model::score(args),
        Command::Generate(args) => model::generate(args),
        Command::Export(args) => model::export(args),
        Command::Collect(args) => feedback::collect(args),
        Command::Annotate(cmd) => feedback::annotate(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
