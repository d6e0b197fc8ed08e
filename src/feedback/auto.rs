//! `factrl annotate auto`: a simulated annotator that follows the guidelines from the world's exact
//! ground truth. Each response is judged by [`judge::judge`] (hallucinated objects, attributes,
//! counts and relations; then helpfulness) and each pair decided by [`judge::prefer`]; exact ties
//! are dropped, and a share of the decided pairs can be flipped to model label noise.
//!
//! With `inject`, the annotator also writes, for each description prompt, that many built pairs:
//! the true description against a copy with one injected hallucination
//! ([`language::describe_with_error`], as POVID builds dispreferred answers). Sampled pairs mostly
//! differ in several claims at once, or both hallucinate; a pair that differs in one claim shows
//! the reward model which claim decides.

use super::FeedbackError;
use super::records::{Candidate, Flag, Preference, Verdict, folder_of, read_candidates, relative_to};
use crate::data::formats::Task;
use crate::eval::judge::{self, Judgement};
use crate::io;
use crate::world::language;
use crate::world::scene::Scene;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The annotator's name in `prefs.json`.
pub const SIMULATED: &str = "simulated";

/// Settings of the simulated annotator.
#[derive(Clone, Debug, Default)]
pub struct AutoOptions {
    /// Share of decided pairs whose preference is flipped (label noise), in [0, 1].
    pub noise: f64,
    /// Seed of the choice of flipped pairs and of the injected hallucinations.
    pub seed: u64,
    /// Built pairs per description prompt: the true description against one with an injected
    /// hallucination.
    pub inject: usize,
}

/// What [`annotate`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AutoSummary {
    /// Candidates read.
    pub candidates: usize,
    /// Pairs written.
    pub pairs: usize,
    /// Pairs dropped as exact ties (same hallucination count and helpfulness).
    pub ties_dropped: usize,
    /// Pairs whose preference was flipped by the noise.
    pub flipped: usize,
    /// Share of judged pairs decided on hallucinations (Q1) rather than helpfulness (Q2).
    pub decided_on_hallucination: f64,
    /// Injected pairs written (after the judged ones).
    pub injected: usize,
}

/// The verdict on a pair from the two responses' judgements; `None` for an exact tie.
pub fn verdict(a: &Judgement, b: &Judgement) -> Option<Verdict> {
    let preference = match judge::prefer(a, b) {
        Ordering::Greater => 1,
        Ordering::Less => 2,
        Ordering::Equal => return None,
    };
    Some(Verdict {
        preference,
        hallucination: a.hallucinations.total() != b.hallucinations.total(),
        flags_1: Flag::found(&a.hallucinations),
        flags_2: Flag::found(&b.hallucinations),
    })
}

/// Labels every pair of responses of `candidates` against the ground truth of the world in
/// `world_dir` and writes `output` (`prefs.json`) atomically. A flipped pair keeps
/// `hallucination` (the choice was still made on Q1, wrongly, as a careless person's would be).
pub fn annotate(
    world_dir: &Path,
    candidates: &Path,
    output: &Path,
    opts: &AutoOptions,
) -> Result<AutoSummary, FeedbackError> {
    if !(0.0..=1.0).contains(&opts.noise) {
        return Err(FeedbackError::Setting(format!("--noise must be in [0, 1], got {}", opts.noise)));
    }
    // 1. Ground truth by canonical image path, so any relative spelling of a path finds it.
    let world_abs = world_dir.canonicalize().map_err(io::at(world_dir))?;
    let scenes: HashMap<PathBuf, Scene> = crate::world::load_scenes(world_dir)?
        .into_iter()
        .map(|r| (world_abs.join(&r.image), r.scene))
        .collect();
    let records = read_candidates(candidates, 2)?;
    let (source, out_dir) = (folder_of(candidates), folder_of(output));
    std::fs::create_dir_all(out_dir).map_err(io::at(out_dir))?;

    // 2. Judge each response once, then each pair.
    let mut prefs = Vec::new();
    let mut built = Vec::new();
    let mut ties = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ INJECT_STREAM);
    for (n, c) in records.iter().enumerate() {
        let file = source.join(&c.image);
        let path = file.canonicalize().map_err(io::at(&file))?;
        let scene = scenes.get(&path).ok_or_else(|| FeedbackError::Record {
            path: candidates.to_path_buf(),
            problem: format!(
                "record [{n}] (id {:?}): field `image`: {} is not an image of the world {}",
                c.id,
                c.image,
                world_dir.display()
            ),
        })?;
        let judged: Vec<Judgement> =
            c.responses.iter().map(|r| judge::judge(scene, c.question(), r)).collect();
        let image = relative_to(&file, out_dir)?;
        for (i, j) in c.pairs() {
            match verdict(&judged[i], &judged[j]) {
                Some(v) => prefs.push(Preference::new(c, image.clone(), (i, j), v, SIMULATED)),
                None => ties += 1,
            }
        }
        if c.task == Some(Task::Description) && opts.inject > 0 {
            let truth = language::describe(scene, None);
            // The true text must be clean for "truth over error" to be the guidelines' label.
            if judge::judge(scene, c.question(), &truth).hallucinations.total() == 0 {
                built.extend((0..opts.inject).filter_map(|_| injected(c, &image, scene, &truth, &mut rng)));
            }
        }
    }

    // 3. Label noise: flip a seeded random share of the decided pairs.
    let flipped = (opts.noise * prefs.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..prefs.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    for &k in &order[..flipped] {
        prefs[k].preference = 3 - prefs[k].preference;
    }
    let on_hallucination = prefs.iter().filter(|p| p.hallucination).count();
    let judged = prefs.len();
    let injected = built.len();
    prefs.extend(built);
    io::write_json(output, &prefs)?;
    Ok(AutoSummary {
        candidates: records.len(),
        pairs: prefs.len(),
        ties_dropped: ties,
        flipped,
        decided_on_hallucination: on_hallucination as f64 / judged.max(1) as f64,
        injected,
    })
}

/// Seeds the injections apart from the label noise, so adding them leaves the flipped pairs as
/// they were.
const INJECT_STREAM: u64 = 0x1b7e_c7ed;

/// A built pair for description prompt `c`: the true description `truth` and a copy with one
/// injected hallucination, in random order. `None` when the judge does not find the injected claim
/// false, so every written label is one the guidelines would give.
fn injected(
    c: &Candidate,
    image: &str,
    scene: &Scene,
    truth: &str,
    rng: &mut ChaCha8Rng,
) -> Option<Preference> {
    let wrong = language::describe_with_error(scene, rng);
    let flags = Flag::found(&judge::judge(scene, c.question(), &wrong).hallucinations);
    if flags.is_empty() {
        return None;
    }
    let first = rng.random_bool(0.5);
    let (outputs, preference, flags_1, flags_2) =
        if first { ([truth, &wrong], 1, vec![], flags) } else { ([&wrong, truth], 2, flags, vec![]) };
    let v = Verdict { preference, hallucination: true, flags_1, flags_2 };
    Some(Preference::with_outputs(c, image.to_string(), outputs, None, v, SIMULATED))
}
