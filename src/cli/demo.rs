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
    /// Seeds to run, reported as mean and spread: a count N (seeds 0..N) or a list (`5,6,7`).
    #[arg(long, default_value = "1", value_parser = parse_seeds)]
    seeds: Seeds,
    /// Run only seed N's stages (no report), e.g. one process per seed; a later run without it
    /// finds them done and writes the report.
    #[arg(long, value_name = "N")]
    only_seed: Option<u64>,
}

/// The seeds of `--seeds`.
#[derive(Clone, Debug)]
struct Seeds(Vec<u64>);

/// `--seeds`: a count `N` means seeds 0..N; a comma-separated list names the seeds.
fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let bad = |why: &str| format!("`{text}`: {why} (a count such as 3, or a list such as 5,6,7)");
    if !text.contains(',') {
        let n: u64 = text.trim().parse().map_err(|_| bad("not a number"))?;
        return if n == 0 { Err(bad("at least one seed")) } else { Ok(Seeds((0..n).collect())) };
    }
    let seeds: Vec<u64> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad(&format!("`{s}` is not a seed"))))
        .collect::<Result<_, _>>()?;
    let mut unique = seeds.clone();
    unique.sort_unstable();
    unique.dedup();
    match (seeds.is_empty(), unique.len() == seeds.len()) {
        (true, _) => Err(bad("no seed")),
        (_, false) => Err(bad("a seed named twice")),
        _ => Ok(Seeds(seeds)),
    }
}

/// Runs `factrl demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let size = match (a.quick, a.full) {
        (true, _) => DemoSize::Quick,
        (_, true) => DemoSize::Full,
        _ => DemoSize::Default,
    };
    let opts = crate::demo::DemoOptions { out: a.out, size, seeds: a.seeds.0, only_seed: a.only_seed };
    let md = crate::demo::run(&opts)?;
    super::print(&md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seeds_by_count_or_list() {
        assert_eq!(parse_seeds("3").unwrap().0, vec![0, 1, 2]);
        assert_eq!(parse_seeds("5,6,7").unwrap().0, vec![5, 6, 7]);
        assert_eq!(parse_seeds("9,").unwrap().0, vec![9]);
        for bad in ["0", "x", "1,1", ",", "2,b"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }
}
