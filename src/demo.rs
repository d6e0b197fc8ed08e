//! `factrl demo`: the whole Fact-RLHF pipeline on the built-in world, one folder per seed, ending
//! in the report (Base, SFT, RLHF, Fact-RLHF on the same tests).
//!
//! Every stage writes its own files (the same the stage's command writes) and is skipped on a
//! rerun when its output is complete, so an interrupted demo continues where it stopped; a
//! training stage with a checkpoint resumes from it. The stage settings are the shipped configs
//! (`configs/*.toml`, compiled in) with the demo's paths and the budget of its size: `--full` runs
//! them as shipped, the default cuts the long stages to fit 15 minutes on 2 cores, `--quick` is a
//! tiny version for CI.

use crate::eval::run::{EvalOptions, EvalReport};
use crate::feedback::{self, auto::AutoOptions, collect::CollectOptions};
use crate::io::{self, IoError};
use crate::report::{self, Curve, ModelResult, Report};
use crate::train::config::{self, CLIP, PPO, PRETRAIN, REWARD, SFT, SFT_FOCUS, SFT_RETURN, Shipped};
use crate::train::{clip, ppo, reward, sft};
use crate::world::{self, WorldConfig};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `factrl demo` runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Output folder (one `seed-N` folder per seed, and the report).
    pub out: PathBuf,
    /// The budget.
    pub size: DemoSize,
    /// Seeds, in report order.
    pub seeds: Vec<u64>,
    /// Run only this seed's stages and write no report: several processes or machines can share
    /// the seeds of one `--out`, and a final run without it finds them done and reports.
    pub only_seed: Option<u64>,
}

/// The demo's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoSize {
    /// A tiny version of every stage, for CI and a first look.
    Quick,
    /// The shipped configs with the long stages cut to fit 15 minutes on 2 cores.
    Default,
    /// The shipped configs as they are (the recipe; about 25 minutes a seed).
    Full,
}

impl DemoSize {
    fn name(self) -> &'static str {
        match self {
            DemoSize::Quick => "quick",
            DemoSize::Default => "default",
            DemoSize::Full => "full",
        }
    }
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A stage failed.
    #[error("stage {stage} (seed {seed}): {message}")]
    Stage {
        /// The stage.
        stage: String,
        /// The seed.
        seed: u64,
        /// The stage's error.
        message: String,
    },
    /// The seed folder holds stages of a demo of another size.
    #[error(
        "{folder} holds a `{found}` demo's stages, not `{wanted}`'s: pass another --out, or the same size again"
    )]
    SizeMismatch {
        /// The seed folder.
        folder: String,
        /// The size that made it.
        found: String,
        /// The size asked for.
        wanted: &'static str,
    },
    /// Writing the report or reading a stage's output failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// One seed's folder layout.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn world(&self) -> PathBuf {
        self.root.join("world")
    }
    fn run(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn model(&self, name: &str) -> PathBuf {
        self.root.join(name).join("final")
    }
    fn eval(&self, model: &str) -> PathBuf {
        self.root.join(format!("eval-{model}"))
    }
}

/// Budget of a demo size, as config overrides per stage.
struct Budget {
    world: WorldConfig,
    clip: &'static [&'static str],
    pretrain: &'static [&'static str],
    /// The three runs of stage 2: the instruction mix, the existence focus, the mix again.
    sft: [&'static [&'static str]; 3],
    reward: &'static [&'static str],
    ppo: &'static [&'static str],
    /// Preference prompts sampled (all if `None`) and samples per prompt.
    collect_limit: Option<usize>,
    samples: usize,
    /// Built pairs per description prompt (`annotate auto --inject`).
    inject: usize,
    /// Copy pairs per short question (`annotate auto --copy`).
    copy: usize,
    eval: EvalOptions,
}

fn budget(size: DemoSize, seed: u64) -> Budget {
    let full = Budget {
        world: WorldConfig { seed, ..WorldConfig::default() },
        clip: &[],
        pretrain: &[],
        sft: [&[]; 3],
        reward: &[],
        ppo: &[],
        collect_limit: None,
        samples: 4,
        inject: 5,
        copy: 6,
        eval: EvalOptions { limit: Some(600), batch: 64, max_new_tokens: 96 },
    };
    match size {
        DemoSize::Quick => Budget {
            world: WorldConfig {
                images: 300,
                seed,
                pope_images: 20,
                mmhal_per_type: 2,
                ..WorldConfig::default()
            },
            clip: &["max_steps=6", "batch_size=16", "eval_every=3", "val_records=32"],
            pretrain: &["max_steps=8", "batch_size=16", "eval_every=4", "val_records=16"],
            sft: [&["max_steps=12", "batch_size=16", "eval_every=6", "val_records=16"]; 3],
            reward: &["max_steps=8", "batch_size=8", "eval_every=4", "val_fraction=0.25"],
            ppo: &[
                "iterations=2",
                "rollout_batch=16",
                "minibatch=8",
                "val_prompts=8",
                "eval_every=2",
                "max_new_tokens=32",
            ],
            collect_limit: Some(24),
            samples: 4,
            inject: 1,
            copy: 1,
            eval: EvalOptions { limit: Some(24), batch: 32, max_new_tokens: 48 },
        },
        // Against the full recipe: pretraining 2 epochs of 4, the mix 1.5 of 2, the focus 3 of
        // 4, the return half its epoch, the reward models 60 steps of 349 (README, "Results").
        DemoSize::Default => Budget {
            pretrain: &["epochs=2"],
            sft: [&["max_steps=816"], &["epochs=3"], &["max_steps=272"]],
            reward: &["max_steps=60", "eval_every=30"],
            ..full
        },
        DemoSize::Full => full,
    }
}

/// Marks a seed folder with the demo size that made it; refuses one made by another size, whose
/// finished stages would otherwise be taken as this size's.
fn check_size(root: &Path, size: DemoSize) -> Result<(), DemoError> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Marker {
        size: String,
    }
    let path = root.join("demo.json");
    if !path.exists() {
        return Ok(io::write_json(&path, &Marker { size: size.name().into() })?);
    }
    let found = io::read_json::<Marker>(&path)?.size;
    if found != size.name() {
        return Err(DemoError::SizeMismatch {
            folder: root.display().to_string(),
            found,
            wanted: size.name(),
        });
    }
    Ok(())
}

/// Seconds each finished stage took, in pipeline order, kept in the seed folder so a rerun
/// reports them too.
fn timings(root: &Path) -> Result<Vec<(String, f64)>, IoError> {
    let path = root.join("timings.json");
    if path.exists() { io::read_json(&path) } else { Ok(Vec::new()) }
}

fn record_time(root: &Path, stage: &str, seconds: f64) -> Result<(), IoError> {
    let mut t = timings(root)?;
    t.retain(|(s, _)| s != stage);
    t.push((stage.to_string(), seconds));
    io::write_json(&root.join("timings.json"), &t)
}

/// Runs `body` unless `done` exists; reports progress on stderr.
fn stage(
    root: &Path,
    seed: u64,
    name: &str,
    done: &Path,
    body: impl FnOnce() -> anyhow::Result<()>,
) -> Result<(), DemoError> {
    if done.exists() {
        eprintln!("[demo seed {seed}] {name}: done already ({})", done.display());
        return Ok(());
    }
    eprintln!("[demo seed {seed}] {name} ...");
    let start = Instant::now();
    body().map_err(|e| DemoError::Stage { stage: name.to_string(), seed, message: format!("{e:#}") })?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("[demo seed {seed}] {name}: finished in {secs:.0} s");
    record_time(root, name, secs)?;
    Ok(())
}

/// A training stage's config: the shipped one with this seed's run folder `out`, the stage's
/// `sets` and the budget's overrides; and whether to resume (an interrupted run left a checkpoint).
fn stage_config<T: DeserializeOwned>(
    shipped: &Shipped,
    out: &Path,
    seed: u64,
    sets: Vec<String>,
    budget: &[&str],
) -> anyhow::Result<(T, bool)> {
    let mut all = vec![path_set("out", out), format!("seed={seed}")];
    all.extend(sets);
    all.extend(budget.iter().map(|s| s.to_string()));
    let cfg = config::parse(shipped.text, shipped.file, &all)?;
    Ok((cfg, out.join("checkpoint").exists()))
}

fn path_set(key: &str, path: &Path) -> String {
    // A TOML string literal, so any path survives the override parser.
    format!("{key}={}", toml::Value::String(path.display().to_string()))
}

/// Runs every stage of one seed; returns the evaluations by model.
fn run_seed(opts: &DemoOptions, seed: u64) -> Result<Vec<(String, EvalReport)>, DemoError> {
    let l = Layout { root: opts.out.join(format!("seed-{seed}")) };
    std::fs::create_dir_all(&l.root).map_err(io::at(&l.root))?;
    check_size(&l.root, opts.size)?;
    let b = budget(opts.size, seed);
    let w = l.world();

    stage(&l.root, seed, "world", &w.join("world.json"), || {
        world::generate(&b.world, &w, true)?;
        Ok(())
    })?;
    stage(&l.root, seed, "clip", &l.model("clip"), || {
        let sets = vec![
            path_set("train", &w.join("pretrain.json")),
            path_set("val", &w.join("pretrain_val.json")),
            path_set("tokenizer", &w.join("tokenizer.json")),
        ];
        let (cfg, resume) = stage_config(&CLIP, &l.run("clip"), seed, sets, b.clip)?;
        let s = clip::train(&cfg, resume, None)?;
        if let Some(a) = s.eval_accuracy {
            eprintln!("[demo seed {seed}] clip: held-out retrieval accuracy {a:.3}");
        }
        Ok(())
    })?;
    // Stage 2 in three runs: the instruction mix, existence questions alone, the mix again (README,
    // "Stage 2"); `sft` is the last.
    for (name, shipped, init, data, sets) in [
        ("pretrain", &PRETRAIN, "clip", "pretrain", b.pretrain),
        ("sft-mix", &SFT, "pretrain", "sft", b.sft[0]),
        ("sft-focus", &SFT_FOCUS, "sft-mix", "sft", b.sft[1]),
        ("sft", &SFT_RETURN, "sft-focus", "sft", b.sft[2]),
    ] {
        stage(&l.root, seed, name, &l.model(name), || {
            let paths = vec![
                path_set("init", &l.model(init)),
                path_set("train", &w.join(format!("{data}.json"))),
                path_set("val", &w.join(format!("{data}_val.json"))),
            ];
            let (cfg, resume) = stage_config::<sft::SftConfig>(shipped, &l.run(name), seed, paths, sets)?;
            sft::train(&cfg, resume, None)?;
            Ok(())
        })?;
    }

    let candidates = l.root.join("candidates.json");
    stage(&l.root, seed, "collect", &candidates, || {
        let mut c = CollectOptions::new(l.model("sft"), w.join("prefs_prompts.json"), candidates.clone());
        c.samples = b.samples;
        c.limit = b.collect_limit;
        c.sampling.seed = seed;
        feedback::collect::collect(&c)?;
        Ok(())
    })?;
    let prefs = l.root.join("prefs.json");
    stage(&l.root, seed, "annotate", &prefs, || {
        let opts = AutoOptions { noise: 0.0, seed, inject: b.inject, copy: b.copy };
        let s = feedback::auto::annotate(&w, &candidates, &prefs, &opts)?;
        eprintln!(
            "[demo seed {seed}] {} pairs ({} injected, {} copy), {} ties dropped, {:.0}% of the judged decided on hallucination",
            s.pairs,
            s.injected,
            s.copies,
            s.ties_dropped,
            100.0 * s.decided_on_hallucination
        );
        Ok(())
    })?;

    for (name, facts) in [("rm-facts", true), ("rm-plain", false)] {
        stage(&l.root, seed, name, &l.model(name), || {
            let sets = vec![
                path_set("train", &prefs),
                path_set("init", &l.model("sft")),
                path_set("captions", &w.join("image_to_caption.json")),
                format!("facts={facts}"),
            ];
            let (cfg, resume) =
                stage_config::<reward::RewardConfig>(&REWARD, &l.run(name), seed, sets, b.reward)?;
            let s = reward::train(&cfg, resume, None)?;
            if let Some(m) = s.eval {
                eprintln!(
                    "[demo seed {seed}] {name}: held-out accuracy {:.3}, on hallucination pairs {:.3} ({} pairs)",
                    m.all.accuracy, m.all.hallucination_accuracy, m.all.hallucination_pairs
                );
            }
            Ok(())
        })?;
    }

    // Standard RLHF against the standard reward model, Fact-RLHF against the fact-augmented one,
    // and the same RL against the world's exact judge: the bound on what a reward model could give.
    // The world is every arm's diagnostic (the rollouts' hallucinations); only the oracle's reward.
    for (name, rm) in [("rlhf", Some("rm-plain")), ("fact_rlhf", Some("rm-facts")), ("oracle_rl", None)] {
        stage(&l.root, seed, name, &l.model(name), || {
            let mut sets = vec![
                path_set("prompts", &w.join("ppo_prompts.json")),
                path_set("policy", &l.model("sft")),
                path_set("world", &w),
            ];
            // The symbolic correctness reads the truth: with the facts it is Fact-RLHF's (LLaVA-RLHF
            // gives the ground-truth options to the fact-augmented reward); the oracle has it already.
            match rm {
                Some(rm) => sets.push(path_set("reward_model", &l.model(rm))),
                None => sets.push("reward=\"oracle\"".into()),
            }
            if name != "fact_rlhf" {
                sets.push("shaping.correctness_bonus=0".into());
            }
            let (cfg, resume) = stage_config::<ppo::PpoConfig>(&PPO, &l.run(name), seed, sets, b.ppo)?;
            let s = ppo::train(&cfg, resume, None)?;
            if let (Some(a), Some(z)) = (s.eval_rm_score_first, s.eval_rm_score_last) {
                eprintln!("[demo seed {seed}] {name}: held-out reward-model score {a:.3} -> {z:.3}");
            }
            Ok(())
        })?;
    }

    let models = [
        ("base", l.model("pretrain")),
        ("sft", l.model("sft")),
        ("rlhf", l.model("rlhf")),
        ("fact_rlhf", l.model("fact_rlhf")),
        ("oracle_rl", l.model("oracle_rl")),
    ];
    let mut out = Vec::new();
    for (name, dir) in models {
        let eval_dir = l.eval(name);
        let metrics = eval_dir.join("metrics.json");
        stage(&l.root, seed, &format!("eval {name}"), &metrics, || {
            crate::eval::run::run(&dir, &w, &eval_dir, &b.eval)?;
            Ok(())
        })?;
        out.push((name.to_string(), io::read_json(&metrics)?));
    }
    Ok(out)
}

/// Curves of one seed's runs.
fn curves(root: &Path) -> Result<Vec<Curve>, IoError> {
    let run = |name: &str| root.join(name).join("metrics.jsonl");
    let mut out = vec![Curve {
        title: "vision tower: contrastive loss and held-out retrieval accuracy".into(),
        series: vec![
            ("train loss".into(), report::series(&run("clip"), "loss")?),
            ("held-out accuracy".into(), report::series(&run("clip"), "eval_accuracy")?),
        ],
    }];
    for (title, name) in [
        ("pretraining loss", "pretrain"),
        ("SFT loss, instruction mix", "sft-mix"),
        ("SFT loss, existence questions alone", "sft-focus"),
        ("SFT loss, back to the mix", "sft"),
    ] {
        out.push(Curve {
            title: title.into(),
            series: vec![
                ("train".into(), report::series(&run(name), "loss")?),
                ("eval".into(), report::series(&run(name), "eval_loss")?),
            ],
        });
    }
    out.push(Curve {
        title: "reward model held-out accuracy on hallucination pairs".into(),
        series: vec![
            ("with facts".into(), report::series(&run("rm-facts"), "eval.hallucination_accuracy")?),
            ("standard".into(), report::series(&run("rm-plain"), "eval.hallucination_accuracy")?),
        ],
    });
    for (title, key) in [("PPO mean reward-model score", "rm_score"), ("PPO KL to the reference", "kl")] {
        out.push(Curve {
            title: title.into(),
            series: vec![
                ("RLHF".into(), report::series(&run("rlhf"), key)?),
                ("Fact-RLHF".into(), report::series(&run("fact_rlhf"), key)?),
            ],
        });
    }
    Ok(out)
}

/// The report's line on a seed's reward models: held-out accuracy on hallucination pairs (issue
/// 6's figure) and on all held-out pairs, with facts and without; none when a run held out nothing.
fn reward_note(root: &Path, seed: u64) -> Result<Option<String>, IoError> {
    let mut parts = Vec::new();
    for (label, name) in [("with facts", "rm-facts"), ("standard", "rm-plain")] {
        let path = root.join(name).join("final").join("eval.json");
        if !path.exists() {
            return Ok(None);
        }
        let a: reward::Accuracy = io::read_json(&path)?;
        parts.push(format!(
            "{label} {:.3} of {} ({:.3} of all {})",
            a.hallucination_accuracy, a.hallucination_pairs, a.accuracy, a.pairs
        ));
    }
    Ok(Some(format!(
        "Seed {seed}'s reward models, held-out accuracy on hallucination pairs (on all held-out pairs): {}.",
        parts.join("; ")
    )))
}

/// Runs the demo and writes the report; returns the report's markdown (with `only_seed`, a line
/// saying where that seed's outputs are).
pub fn run(opts: &DemoOptions) -> Result<String, DemoError> {
    if let Some(seed) = opts.only_seed {
        run_seed(opts, seed)?;
        return Ok(format!("seed {seed} done in {}", opts.out.join(format!("seed-{seed}")).display()));
    }
    let seeds: &[u64] = if opts.seeds.is_empty() { &[0] } else { &opts.seeds };
    let mut models: Vec<ModelResult> = Vec::new();
    let mut timings_all: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for (k, &seed) in seeds.iter().enumerate() {
        for (name, r) in run_seed(opts, seed)? {
            match models.iter_mut().find(|m| m.model == name) {
                Some(m) => m.seeds.push(r),
                None => models.push(ModelResult { model: name, seeds: vec![r] }),
            }
        }
        for (stage, secs) in timings(&opts.out.join(format!("seed-{seed}")))? {
            let i = timings_all.iter().position(|(s, _)| *s == stage).unwrap_or_else(|| {
                timings_all.push((stage, vec![None; seeds.len()]));
                timings_all.len() - 1
            });
            timings_all[i].1[k] = Some(secs);
        }
    }
    let names = seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let mut notes =
        vec![format!("{} demo, seed(s) {names}; folders {}/seed-N.", opts.size.name(), opts.out.display())];
    for &seed in seeds {
        notes.extend(reward_note(&opts.out.join(format!("seed-{seed}")), seed)?);
    }
    let first = opts.out.join(format!("seed-{}", seeds[0]));
    let report =
        Report { models, curves: curves(&first)?, timings: timings_all, notes, seeds: seeds.to_vec() };
    Ok(report::write(&opts.out, &report)?)
}
