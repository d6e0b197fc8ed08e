//! `factrl demo`.

use crate::demo::DemoSize;
use clap::Args;
use std::path::PathBuf;

/// Flags of `factrl demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Output folder: one `seed-N` folder per seed, and report.{md,html,json}.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// A tiny version of every stage (minutes; for CI and a first look).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The shipped configs without the default's cuts (the full recipe, about 25 minutes a seed).
    #[arg(long)]
    full: bool,
    /// Run the pipeline for seeds 0..N and report mean and spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Run only seed N's stages (no report), e.g. one process per seed; a later run without it
    /// finds them done and writes the report.
    #[arg(long, value_name = "N")]
    only_seed: Option<u64>,
}

/// Runs `factrl demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let size = match (a.quick, a.full) {
        (true, _) => DemoSize::Quick,
        (_, true) => DemoSize::Full,
        _ => DemoSize::Default,
    };
    let opts = crate::demo::DemoOptions { out: a.out, size, seeds: a.seeds, only_seed: a.only_seed };
    let md = crate::demo::run(&opts)?;
    println!("{md}");
    Ok(())
}
