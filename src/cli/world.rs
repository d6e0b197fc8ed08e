//! `factrl world`.

use clap::Args;
use std::path::PathBuf;

/// Flags of `factrl world`.
#[derive(Args)]
pub struct WorldArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: WorldArgs) -> anyhow::Result<()> {
    anyhow::bail!("world generation into {} is not built yet", args.out.display())
}
