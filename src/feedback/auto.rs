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
//!
//! With `copy`, it writes for each short question (every task but description) that many copy
//! pairs: two reference answers of other prompts of the same task and form (yes/no, a letter, or
//! the same first two words and length), the preferred one named by the answer fact
//! ([`language::answer_fact`]) that replaces the prompt's own, whatever the image shows. Only a
//! reward model that compares the response with its facts ranks them, so they teach that
//! comparison (README, "Copy pairs").

use super::FeedbackError;
use super::records::{Candidate, Flag, Preference, Verdict, folder_of, read_candidates, relative_to};
use crate::data::formats::Task;
use crate::eval::judge::{self, Judgement};
use crate::io;
use crate::world::language;
use crate::world::scene::Scene;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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
    /// Copy pairs per short question (see the [module docs](self)).
    pub copy: usize,
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
    /// Copy pairs written (after the judged ones).
    pub copies: usize,
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
    let scenes = crate::world::scenes_by_path(world_dir)?;
    let records = read_candidates(candidates, 2)?;
    let pool = answer_pool(&records);
    let (source, out_dir) = (folder_of(candidates), folder_of(output));
    std::fs::create_dir_all(out_dir).map_err(io::at(out_dir))?;

    // 2. Judge each response once, then each pair.
    let mut prefs = Vec::new();
    let mut built = Vec::new();
    let mut ties = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ INJECT_STREAM);
    let mut copy_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ COPY_STREAM);
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
        if c.task != Some(Task::Description) && opts.copy > 0 {
            let copies = copy_pairs(c, &image, &pool, opts.copy, &mut copy_rng).map_err(|problem| {
                FeedbackError::Record {
                    path: candidates.to_path_buf(),
                    problem: format!("record [{n}] (id {:?}): {problem}", c.id),
                }
            })?;
            built.extend(copies);
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
    let injected = built.iter().filter(|p| p.injected).count();
    let copies = built.len() - injected;
    prefs.extend(built);
    io::write_json(output, &prefs)?;
    Ok(AutoSummary {
        candidates: records.len(),
        pairs: prefs.len(),
        ties_dropped: ties,
        flipped,
        decided_on_hallucination: on_hallucination as f64 / judged.max(1) as f64,
        injected,
        copies,
    })
}

/// Seeds the injections apart from the label noise, so adding them leaves the flipped pairs as
/// they were.
const INJECT_STREAM: u64 = 0x1b7e_c7ed;
/// Seeds the copy pairs apart from both.
const COPY_STREAM: u64 = 0xc0b1_e5ed;

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

/// The short prompts' reference answers by task and [`form`]: what copy pairs draw from.
type AnswerPool = BTreeMap<(Option<&'static str>, String), BTreeSet<String>>;

fn answer_pool(records: &[Candidate]) -> AnswerPool {
    let mut pool = AnswerPool::new();
    for c in records.iter().filter(|c| c.task != Some(Task::Description)) {
        if let Some(a) = c.reference() {
            pool.entry((c.task.map(Task::name), form(a))).or_default().insert(a.to_string());
        }
    }
    pool
}

/// An answer's form: yes/no, a letter, or its first two words and its length in words ("It
/// is/3"), so that the two answers of a copy pair differ in what they say, not in how.
fn form(answer: &str) -> String {
    let words: Vec<&str> = answer.split_whitespace().collect();
    match answer {
        "Yes." | "No." => "yes/no".into(),
        _ if answer.len() == 2 && answer.ends_with('.') => "letter".into(),
        _ => format!("{}/{}", words[..words.len().min(2)].join(" "), words.len()),
    }
}

/// `k` copy pairs for short prompt `c`: two answers of its task and form from `pool`, in random
/// order, the one its captions' answer fact now names preferred. None when the pool has no two
/// such answers; an error when the prompt's captions lack its answer fact (a prompt file not
/// written by `factrl world`).
fn copy_pairs(
    c: &Candidate,
    image: &str,
    pool: &AnswerPool,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Preference>, String> {
    let Some(truth) = c.reference() else { return Ok(Vec::new()) };
    let answers: Vec<&String> = pool[&(c.task.map(Task::name), form(truth))].iter().collect();
    if answers.len() < 2 {
        return Ok(Vec::new());
    }
    let fact = language::answer_fact(truth);
    let captions = c.captions.clone().unwrap_or_default();
    let at = captions.iter().position(|x| *x == fact).ok_or_else(|| {
        format!("field `captions` lacks the answer fact {fact:?} that --copy replaces: {captions:?}")
    })?;
    let pair = |rng: &mut ChaCha8Rng| {
        let two: Vec<&&String> = answers.choose_multiple(rng, 2).collect();
        let (said, other) = (two[0].as_str(), two[1].as_str());
        let mut facts = captions.clone();
        facts[at] = language::answer_fact(said);
        let (outputs, preference) =
            if rng.random_bool(0.5) { ([said, other], 1) } else { ([other, said], 2) };
        let v = Verdict { preference, hallucination: false, flags_1: vec![], flags_2: vec![] };
        let p = Preference::with_outputs(c, image.to_string(), outputs, None, v, SIMULATED);
        Preference { injected: false, copy: true, captions: Some(facts), ..p }
    };
    Ok((0..k).map(|_| pair(rng)).collect())
}
