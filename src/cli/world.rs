//! `factrl world`: flags onto [`WorldConfig`], then [`factrl::world::generate`].

use crate::world::{self, WorldConfig};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `factrl world`; every knob defaults to the built-in world (see `world.json`).
#[derive(Args)]
pub struct WorldArgs {
    /// Output folder (built under a temporary name, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    /// Number of images [default: 8000].
    #[arg(long)]
    images: Option<usize>,
    /// Image side in pixels [default: 64].
    #[arg(long)]
    size: Option<u32>,
    /// Seed; the same seed gives byte-identical output [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Replace a non-empty output folder.
    #[arg(long)]
    force: bool,
    /// Fewest objects per image [default: 1].
    #[arg(long)]
    min_objects: Option<usize>,
    /// Most objects per image [default: 6].
    #[arg(long)]
    max_objects: Option<usize>,
    /// Probability that an object's usual partner appears with it [default: 0.75].
    #[arg(long)]
    cooccurrence: Option<f64>,
    /// Share of SFT descriptions that mention an absent partner object [default: 0.15].
    #[arg(long)]
    hallucination_rate: Option<f64>,
    /// Share of "yes" answers among SFT existence questions [default: 0.6].
    #[arg(long)]
    yes_ratio: Option<f64>,
    /// Share of "no" existence questions about an absent object sharing a present one's colour or
    /// shape [default: 0.5].
    #[arg(long)]
    hard_negatives: Option<f64>,
    /// Images per POPE file [default: 500].
    #[arg(long)]
    pope_images: Option<usize>,
}

/// Runs `factrl world`.
pub fn run(a: WorldArgs) -> anyhow::Result<()> {
    let mut cfg = WorldConfig::default();
    set(&mut cfg.images, a.images);
    set(&mut cfg.seed, a.seed);
    set(&mut cfg.scene.size, a.size);
    set(&mut cfg.scene.min_objects, a.min_objects);
    set(&mut cfg.scene.max_objects, a.max_objects);
    set(&mut cfg.pope_images, a.pope_images);
    set(&mut cfg.scene.cooccurrence, a.cooccurrence);
    set(&mut cfg.datasets.hallucination_rate, a.hallucination_rate);
    set(&mut cfg.language.existence_yes_ratio, a.yes_ratio);
    set(&mut cfg.language.hard_negative_share, a.hard_negatives);
    let start = Instant::now();
    let stats = world::generate(&cfg, &a.out, a.force)?;
    let splits: Vec<String> = stats.split_images.iter().map(|(s, n)| format!("{} {n}", s.name())).collect();
    super::print(&format!(
        "wrote {} images ({}) to {} in {:.1} s: {} SFT records ({:.1}% of descriptions hallucinate), {} POPE questions per setting, {} MMHal questions",
        cfg.images,
        splits.join(", "),
        a.out.display(),
        start.elapsed().as_secs_f64(),
        stats.sft_records,
        100.0 * stats.hallucinated_share,
        stats.pope_questions,
        stats.mmhal_questions
    ))?;
    Ok(())
}

/// Overrides a default with a flag's value, if given.
fn set<T>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}
