//! Stage 4: RL of the SFT policy against the (fact-augmented) reward model, as LLaVA-RLHF runs it,
//! or with a group baseline instead of the critic. Each iteration:
//!
//! 1. **rollout** ([`rollout`]): `rollout_batch` prompts, each sampled `group_size` times; the
//!    log-probs of policy and frozen reference (and, with GAE, the critic's values) on them;
//! 2. **score** ([`score`]): the frozen reward model's score of each response at its last token
//!    (or the oracle's: the world's exact judge, an upper bound), with a no-EOS penalty, a length
//!    term weighted by the prompt's `length_bonus` and a symbolic correctness bonus (`caption_type`);
//! 3. **advantages** ([`advantage`]): GAE against a value model initialised from the reward model
//!    (new zero head), or RLOO / GRPO over each prompt's group; the KL to the reference is the
//!    leash either way;
//! 4. **update** ([`update`]): clipped policy (and value) losses, several epochs over minibatches.
//!
//! The math is in small pure functions ([`math`], [`loss`]); [`metrics`] says what is logged.

pub mod advantage;
pub mod loss;
pub mod math;
pub mod metrics;
pub mod rollout;
pub mod score;
pub mod update;

use super::common::{
    ImageTable, TrainError, progress_bar, resume_checkpoint, save_checkpoint, save_model_folder, say,
    state_step, weights_source,
};
use super::config;
use super::optim::adamw;
use super::reward::{RewardFolder, RewardModel};
use super::run::{MetricsLog, RunDir};
use super::sft::{LossAverage, Part, prepare};
use crate::backend::{inference_device, training_device};
use crate::model::Llava;
use crate::model::checkpoint::{load_llava, load_scalar_head, save_scalar_head};
use crate::model::generate::SamplingConfig;
use crate::model::jobs::ModelFolder;
use crate::model::llava::ScalarHead;
use crate::model::lora::LoraConfig;
use crate::model::processor::ClipProcessor;
use crate::model::store::collect_params;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use metrics::{Baseline, IterationMetrics, WorldDiagnostics};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rollout::{Models, Prompt};
use score::{Scenes, Scorer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use update::{ActorCritic, UpdateContext};

/// Per-token KL estimator between policy and reference (Schulman's k1 / k3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `logp - logp_ref`, clamped at 0 (LLaVA-RLHF's penalty).
    K1,
    /// `exp(r) - 1 - r` with `r = logp_ref - logp` clamped to `[-kl_clamp, kl_clamp]`.
    K3,
}

/// How advantages are estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Advantage {
    /// GAE against a learned value model (PPO with a critic, as LLaVA-RLHF).
    #[default]
    Gae,
    /// Each response against the mean of the other responses to its prompt (RLOO); no critic.
    Rloo,
    /// The group-normalised return (GRPO); no critic.
    Grpo,
}

/// What scores a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardSource {
    /// The reward model of `reward_model`.
    #[default]
    Model,
    /// The world's exact judge (`world` needed): hallucinations first, helpfulness second. An upper
    /// bound on what RL can do with a perfect reward, never a result.
    Oracle,
}

/// How the reward of a response is made (every term configurable; defaults as LLaVA-RLHF in
/// `configs/ppo.toml`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shaping {
    /// Per-token KL estimator.
    pub kl_estimator: KlEstimator,
    /// KL penalty coefficient (the initial one when adaptive).
    pub beta: f64,
    /// Adapt beta towards this per-response KL (Ziegler et al.'s controller); fixed if unset.
    #[serde(default)]
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive controller, in responses.
    pub kl_horizon: f64,
    /// Bound on `|logp_ref - logp|` inside k3 (unclamped k3 overflows to NaN).
    pub kl_clamp: f64,
    /// Replaces the score of a response that hit `max_new_tokens` without EOS.
    pub no_eos_reward: f64,
    /// Length term `-length_penalty * length_bonus * len / max_new_tokens`.
    pub length_penalty: f64,
    /// Weight of the correctness check (+1 right option; +-0.5 yes/no against the truth).
    pub correctness_bonus: f64,
    /// Multiplies the sequence reward (score + length + correctness).
    pub reward_scale: f64,
    /// Clips the scaled sequence reward to `[-reward_clip, reward_clip]` (0: off).
    pub reward_clip: f64,
}

fn one() -> usize {
    1
}

fn default_helpfulness() -> f64 {
    0.9
}

/// `factrl train ppo` configuration (TOML). Paths are relative to the working folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoConfig {
    /// Run folder (config, metrics, checkpoint, `final/` policy).
    pub out: PathBuf,
    /// PPO prompts (LLaVA-RLHF's format); image paths relative to its folder.
    pub prompts: PathBuf,
    /// The last this many prompts are held out: the score of greedy answers to them is logged.
    pub val_prompts: usize,
    /// Policy to start from (the SFT model folder).
    pub policy: PathBuf,
    /// Frozen reference; the policy's folder if unset.
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// What scores responses: `model` (default) or `oracle`.
    #[serde(default)]
    pub reward: RewardSource,
    /// Reward model folder (`factrl train reward`, with or without facts); needed by `model`.
    #[serde(default)]
    pub reward_model: Option<PathBuf>,
    /// The oracle's weight of helpfulness (in [0, 1)) against one hallucination.
    #[serde(default = "default_helpfulness")]
    pub oracle_helpfulness: f64,
    /// The world folder the prompts were made in: the oracle's truth, and the rollouts' diagnostics
    /// (hallucinations and recall as the world's judge finds them). Never part of a reward model's
    /// reward. Unset for real data.
    #[serde(default)]
    pub world: Option<PathBuf>,
    /// Model the value model starts from (a new zero head on top); the reward model if unset (the
    /// policy with the oracle). GAE only.
    #[serde(default)]
    pub value_model: Option<PathBuf>,
    /// Parts of policy and value model that train: "projector", "decoder" (the tower stays frozen).
    pub trainable: Vec<Part>,
    /// Train both decoders through LoRA adapters (`[lora]`: `rank`, `alpha`, optional `targets`)
    /// instead of all their weights; saved models have the adapters merged.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Sampling temperature of rollouts.
    pub temperature: f64,
    /// Nucleus mass of rollouts.
    pub top_p: f64,
    /// Longest response in tokens.
    pub max_new_tokens: usize,
    /// Reward shaping.
    pub shaping: Shaping,
    /// Advantage estimator: `gae` (default, with a critic), `rloo` or `grpo` (group baselines).
    #[serde(default)]
    pub advantage: Advantage,
    /// Responses sampled per prompt (at least 2 for `rloo` and `grpo`).
    #[serde(default = "one")]
    pub group_size: usize,
    /// The last response of each group is the prompt's reference answer (its gpt turn) instead
    /// of a sample (group baselines only): guided exploration for answers the policy almost never
    /// samples. The reward still decides whether it is better than the group's samples.
    #[serde(default)]
    pub reference_in_group: bool,
    /// Loss averaging: `token` (default: every token weighs the same) or `sequence`.
    #[serde(default)]
    pub loss_average: LossAverage,
    /// GAE discount.
    pub gamma: f64,
    /// GAE lambda.
    pub lam: f64,
    /// Whiten advantages over each rollout.
    pub whiten_advantages: bool,
    /// Policy ratio clip.
    pub clip_eps: f64,
    /// Value clip around the rollout's values.
    pub value_clip: f64,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Prompts per rollout (each sampled `group_size` times).
    pub rollout_batch: usize,
    /// Responses generated together.
    pub generation_batch: usize,
    /// Responses per optimiser step.
    pub minibatch: usize,
    /// Passes over each rollout.
    pub ppo_epochs: usize,
    /// Rollout-train iterations.
    pub iterations: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup optimiser steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f64,
    /// Seed of sampling, shuffling and caption order.
    pub seed: u64,
    /// Iterations between held-out evals (0: only after the last).
    pub eval_every: usize,
    /// Iterations between checkpoints (0: only when the run stops).
    pub checkpoint_every: usize,
    /// Warn when mean length or object mentions fall below this share of the first iteration's.
    pub collapse_ratio: f64,
    /// Warn when the mean per-response KL exceeds this.
    pub kl_warn: f64,
}

impl PpoConfig {
    /// Checks the settings, naming the first one out of range.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Setting(m.into()));
        if self.rollout_batch == 0 || self.minibatch == 0 || self.ppo_epochs == 0 || self.max_new_tokens == 0
        {
            return bad("rollout_batch, minibatch, ppo_epochs and max_new_tokens must be non-zero");
        }
        if self.trainable.contains(&Part::Vision) || self.trainable.is_empty() {
            return bad(
                "trainable: PPO trains \"projector\" and/or \"decoder\"; the vision tower stays frozen",
            );
        }
        if self.shaping.kl_target.is_some_and(|t| t <= 0.0) {
            return bad("shaping.kl_target must be positive");
        }
        if self.group_size == 0 || (self.advantage != Advantage::Gae && self.group_size < 2) {
            return bad("group_size must be at least 1, and at least 2 for advantage = \"rloo\" or \"grpo\"");
        }
        if self.reference_in_group && (self.advantage == Advantage::Gae || self.group_size < 3) {
            return bad(
                "reference_in_group needs a group baseline (rloo or grpo) and group_size of at least 3",
            );
        }
        match self.reward {
            RewardSource::Model if self.reward_model.is_none() => {
                bad("reward = \"model\" needs reward_model")
            }
            RewardSource::Oracle if self.world.is_none() => {
                bad("reward = \"oracle\" needs world (its scenes)")
            }
            RewardSource::Oracle if !(0.0..1.0).contains(&self.oracle_helpfulness) => {
                bad("oracle_helpfulness must be in [0, 1): one hallucination outweighs any helpfulness")
            }
            _ => Ok(()),
        }
    }

    /// Responses per rollout.
    pub fn responses(&self) -> usize {
        self.rollout_batch * self.group_size
    }

    /// The folder the value model starts from, with GAE.
    fn value_source(&self) -> Option<&PathBuf> {
        let rm = self.reward_model.as_ref().filter(|_| self.reward == RewardSource::Model);
        (self.advantage == Advantage::Gae).then(|| self.value_model.as_ref().or(rm).unwrap_or(&self.policy))
    }
}

/// One seed's worth of RL state a resumed run continues from, beside the iteration count.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Progress {
    beta: f64,
    /// The first iteration's length and object mentions (the collapse baseline).
    first: Option<Baseline>,
    eval_first: Option<f64>,
}

/// What a finished RL run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Iterations in all.
    pub iterations: usize,
    /// Held-out mean score before training (of this run's first eval).
    pub eval_rm_score_first: Option<f64>,
    /// Held-out mean score at the end.
    pub eval_rm_score_last: Option<f64>,
    /// Last iteration's metrics.
    pub last: Option<IterationMetrics>,
    /// Seconds this invocation trained.
    pub seconds: f64,
    /// The policy folder.
    pub model: PathBuf,
}

/// Reads the config file with overrides and checks it.
pub fn load_config(path: &Path, sets: &[String]) -> Result<PpoConfig, TrainError> {
    let cfg: PpoConfig = config::load(path, sets)?;
    cfg.validate()?;
    Ok(cfg)
}

/// Everything frozen that a rollout reads.
struct Frozen {
    reference: Llava,
    reference_table: Option<ImageTable>,
    scorer: Scorer,
    scenes: Option<Scenes>,
    policy_table: ImageTable,
    value: Option<ValueFolder>,
}

impl Frozen {
    /// Scores of responses (prompt index, text) by the run's scorer.
    fn score(
        &self,
        prompts: &[Prompt],
        items: &[(usize, String)],
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f32>, TrainError> {
        score::scores(&self.scorer, self.scenes.as_ref(), &self.policy_table, prompts, items, rng)
    }
}

/// Where the value model came from, to save it like its source.
struct ValueFolder {
    source: PathBuf,
    processor: ClipProcessor,
    table: Option<ImageTable>,
}

/// The run's fixed parts: folder, device, the policy's folder (tokenizer, processor), prompts.
struct Run {
    dir: RunDir,
    device: Device,
    folder: ModelFolder,
    prompts: Vec<Prompt>,
    n_train: usize,
    val: Vec<usize>,
}

/// Whether two models have the same vision tower and processor, so image features can be shared.
fn same_tower(a: (&Llava, &ClipProcessor), b: (&Llava, &ClipProcessor)) -> Result<bool, TrainError> {
    Ok(a.0.config.vision == b.0.config.vision
        && format!("{:?}", a.1) == format!("{:?}", b.1)
        && collect_params(&a.0.vision_tower)? == collect_params(&b.0.vision_tower)?)
}

/// The trainable modules: policy and (GAE) value model, from the checkpoint of a full run.
fn trainable(
    cfg: &PpoConfig,
    checkpoint: Option<&Path>,
    device: &Device,
) -> Result<(ModelFolder, ActorCritic), TrainError> {
    let lora = cfg.lora.as_ref();
    let folder = ModelFolder::load(&weights_source(checkpoint, &cfg.policy, lora.is_some()), device)?;
    let value = match (cfg.value_source(), checkpoint.filter(|_| lora.is_none())) {
        (None, _) => None,
        (Some(_), Some(ck)) => {
            let dir = ck.join("value");
            Some(RewardModel { llava: load_llava(&dir, device)?, head: load_scalar_head(&dir, device)? })
        }
        (Some(src), None) => {
            let llava = load_llava(src, device)?;
            let d = llava.config.text.hidden_size;
            Some(RewardModel { llava, head: ScalarHead::init(d, true, device) })
        }
    };
    let value = value
        .map(|v| {
            Ok::<_, TrainError>(RewardModel { llava: prepare(v.llava, &cfg.trainable, lora)?, head: v.head })
        })
        .transpose()?;
    let policy = prepare(folder.model.clone(), &cfg.trainable, lora)?;
    Ok((folder, ActorCritic { policy, value }))
}

/// Loads the prompts, the frozen models and the image tables (one per distinct frozen tower).
fn frozen(
    cfg: &PpoConfig,
    folder: &ModelFolder,
    ac: &ActorCritic,
) -> Result<(Vec<Prompt>, Frozen), TrainError> {
    let device = inference_device();
    let mut index = BTreeMap::new();
    let prompts = rollout::load_prompts(&cfg.prompts, folder, &mut index)?;
    if prompts.len() <= cfg.val_prompts {
        let message =
            format!("{} prompts, {} held out: none left to train on", prompts.len(), cfg.val_prompts);
        return Err(TrainError::Data { file: cfg.prompts.clone(), message });
    }
    let policy_table = ImageTable::build(&ac.policy, &folder.processor, &index, true)?;
    let own_table = |model: &Llava, processor: &ClipProcessor| -> Result<Option<ImageTable>, TrainError> {
        if same_tower((&folder.model, &folder.processor), (model, processor))? {
            Ok(None)
        } else {
            ImageTable::build(model, processor, &index, true).map(Some)
        }
    };
    let reference = ModelFolder::load(cfg.reference.as_ref().unwrap_or(&cfg.policy), &device)?;
    let reference_table = own_table(&reference.model, &reference.processor)?;
    let scorer = match (cfg.reward, &cfg.reward_model) {
        (RewardSource::Model, Some(dir)) => {
            let rm = RewardFolder::load(dir, &device)?;
            let table = own_table(&rm.folder.model, &rm.folder.processor)?;
            Scorer::Model(Box::new(rm), table)
        }
        _ => Scorer::Oracle(cfg.oracle_helpfulness),
    };
    let value = match (cfg.value_source(), &ac.value) {
        (Some(source), Some(v)) => {
            let processor = ClipProcessor::from_file(&source.join("preprocessor_config.json"))?;
            let table = own_table(&v.llava, &processor)?;
            Some(ValueFolder { source: source.clone(), processor, table })
        }
        _ => None,
    };
    let scenes = cfg.world.as_deref().map(|w| Scenes::load(w, &prompts)).transpose()?;
    let reference = reference.model;
    Ok((prompts, Frozen { reference, reference_table, scorer, scenes, policy_table, value }))
}

/// Mean score of greedy answers to the held-out prompts, and the world judge's view of them.
fn evaluate(
    policy: &Llava,
    frozen: &Frozen,
    run: &Run,
    cfg: &PpoConfig,
) -> Result<(f64, Option<WorldDiagnostics>), TrainError> {
    let greedy = SamplingConfig { max_new_tokens: cfg.max_new_tokens, ..Default::default() };
    let gens =
        rollout::sample(policy, &frozen.policy_table, &run.prompts, &run.val, &greedy, cfg.generation_batch)?;
    let items = run
        .val
        .iter()
        .zip(&gens)
        .map(|(&p, g)| Ok((p, rollout::decode(&run.folder, &g.token_ids)?)))
        .collect::<Result<Vec<_>, TrainError>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(0xE7A1));
    let s = frozen.score(&run.prompts, &items, &mut rng)?;
    let world = match &frozen.scenes {
        Some(scenes) => {
            let texts: Vec<(usize, &str)> = items.iter().map(|(p, t)| (*p, t.as_str())).collect();
            Some(metrics::world_diagnostics(scenes, &run.prompts, &texts, None))
        }
        None => None,
    };
    Ok((s.iter().map(|&s| f64::from(s)).sum::<f64>() / s.len().max(1) as f64, world))
}

/// One iteration: rollout, score, advantages, update. Returns the trained modules and the
/// iteration's metrics (eval fields unset).
fn iteration(
    ac: ActorCritic,
    optim: &mut ModuleOptimizer,
    it: usize,
    progress: &Progress,
    frozen: &Frozen,
    run: &Run,
    cfg: &PpoConfig,
) -> Result<(ActorCritic, IterationMetrics), TrainError> {
    let seed = cfg.seed ^ (it as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // 1. Rollout.
    let which = rollout::iteration_prompts(it, cfg.rollout_batch, cfg.group_size, run.n_train, cfg.seed);
    let (policy, value) = (ac.policy.valid(), ac.value.as_ref().map(|v| v.valid()));
    let value_table = frozen.value.as_ref().and_then(|v| v.table.as_ref()).unwrap_or(&frozen.policy_table);
    let models = Models {
        policy: &policy,
        policy_table: &frozen.policy_table,
        reference: &frozen.reference,
        reference_table: frozen.reference_table.as_ref().unwrap_or(&frozen.policy_table),
        value: value.as_ref().map(|v| (v, value_table)),
        tokenizer: &run.folder,
    };
    let sampling = SamplingConfig {
        max_new_tokens: cfg.max_new_tokens,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        seed,
        ..Default::default()
    };
    let ro = rollout::roll_out(&models, &run.prompts, which, &sampling, cfg)?;
    // 2. Score.
    let start = Instant::now();
    let items: Vec<(usize, String)> = ro.which.iter().copied().zip(ro.texts.iter().cloned()).collect();
    let scores = frozen.score(&run.prompts, &items, &mut rng)?;
    let scoring = start.elapsed().as_secs_f64();
    // 3. Advantages.
    let shaped = advantage::shape(&ro, &run.prompts, &scores, cfg);
    let adv = advantage::advantages(&ro, &shaped, cfg, progress.beta);
    let mut m = metrics::rollout_metrics(&ro, &run.prompts, &scores, &shaped, &adv, progress.beta);
    m.step = it + 1;
    if let Some(scenes) = &frozen.scenes {
        let own = items.iter().zip(&ro.sampled).filter(|(_, s)| **s);
        let texts: Vec<(usize, &str)> = own.map(|((p, t), _)| (*p, t.as_str())).collect();
        m.world = Some(metrics::world_diagnostics(scenes, &run.prompts, &texts, Some(&mut m.by_task)));
    }
    // 4. Update.
    let per_iter = cfg.ppo_epochs * cfg.responses().div_ceil(cfg.minibatch);
    let cx = UpdateContext {
        run: &run.dir,
        device: &run.device,
        policy_table: &frozen.policy_table,
        value_table: frozen.value.as_ref().and_then(|v| v.table.as_ref()),
        first_step: it * per_iter,
        total_steps: (cfg.iterations * per_iter).max(1),
        seed,
    };
    let start = Instant::now();
    let (ac, stats) = update::update(ac, optim, &ro, &adv, &run.prompts, cfg, &cx)?;
    metrics::add_update(&mut m, &stats);
    let (generation, logprobs) = ro.seconds;
    m.seconds = metrics::PartSeconds { generation, logprobs, scoring, update: start.elapsed().as_secs_f64() };
    Ok((ac, m))
}

/// Writes a checkpoint: the policy folder, the value model's beside it, the optimiser and state.
fn checkpoint(
    run: &Run,
    frozen: &Frozen,
    ac: &ActorCritic,
    optim: &ModuleOptimizer,
    it: usize,
    progress: &Progress,
    lora: bool,
) -> Result<(), TrainError> {
    let state = serde_json::json!({"step": it, "progress": progress});
    save_checkpoint(&run.dir, ac, optim, &state, lora, |dir| {
        save_model_folder(&ac.policy, &run.folder.tokenizer_path, &run.folder.processor, dir)?;
        if let (Some(value), Some(vf)) = (&ac.value, &frozen.value) {
            let v = dir.join("value");
            save_model_folder(&value.llava, &vf.source.join("tokenizer.json"), &vf.processor, &v)?;
            save_scalar_head(&value.head, &v)?;
        }
        Ok(())
    })
}

/// Logs an iteration's held-out eval when one is due; returns its score.
fn eval_if_due(
    m: &mut IterationMetrics,
    ac: &ActorCritic,
    frozen: &Frozen,
    run: &Run,
    cfg: &PpoConfig,
) -> Result<Option<f64>, TrainError> {
    let due = m.step == cfg.iterations || (cfg.eval_every > 0 && m.step.is_multiple_of(cfg.eval_every));
    if run.val.is_empty() || !due {
        return Ok(None);
    }
    let (e, world) = evaluate(&ac.policy.valid(), frozen, run, cfg)?;
    (m.eval_rm_score, m.eval_world) = (Some(e), world);
    Ok(Some(e))
}

/// Runs RL, resuming from the run folder's checkpoint with `resume`; `halt_after` stops after that
/// many iterations of this invocation (at a checkpoint).
pub fn train(cfg: &PpoConfig, resume: bool, halt_after: Option<usize>) -> Result<Summary, TrainError> {
    cfg.validate()?;
    let start = Instant::now();
    let toml = toml::to_string(cfg).map_err(|e| TrainError::Setting(e.to_string()))?;
    let dir = RunDir::open(&cfg.out, resume, &toml)?;
    let device: Device = training_device();
    device.seed(cfg.seed);
    // A LoRA run starts from the initial models again and its checkpoint gives back the adapters.
    let ck = if resume { dir.checkpoint() } else { None };
    let (folder, mut ac) = trainable(cfg, ck.as_deref(), &device)?;
    let (prompts, frozen) = frozen(cfg, &folder, &ac)?;
    let n_train = prompts.len() - cfg.val_prompts;
    let run = Run { dir, device, folder, val: (n_train..prompts.len()).collect(), prompts, n_train };
    let mut optim = adamw(cfg.weight_decay).init();
    let (mut it, mut progress) = (0, Progress { beta: cfg.shaping.beta, ..Default::default() });
    if let Some(ck) = &ck {
        let state;
        (ac, optim, state) = resume_checkpoint(ck, ac, optim, cfg.lora.is_some())?;
        it = state_step(&state);
        progress = serde_json::from_value(state["progress"].clone())
            .map_err(|e| TrainError::Setting(format!("checkpoint state: {e}")))?;
    }
    if frozen.scenes.is_none() {
        eprintln!(
            "no `world`: the rollouts' hallucination diagnostics (and the object-collapse warning) are off"
        );
    }
    let mut log: MetricsLog = run.dir.metrics(ck.as_ref().map(|_| it))?;
    let bar = progress_bar(cfg.iterations, it, &cfg.out);
    if progress.eval_first.is_none() && !run.val.is_empty() {
        let (e, world) = evaluate(&ac.policy.valid(), &frozen, &run, cfg)?;
        progress.eval_first = Some(e);
        log.log(&serde_json::json!({"step": 0, "eval_rm_score": e, "eval_world": world}))?;
    }
    let (mut last, mut eval_last) = (None, progress.eval_first);
    let stop = halt_after.map_or(cfg.iterations, |n| (it + n).min(cfg.iterations));
    while it < stop {
        let mut m;
        (ac, m) = iteration(ac, &mut optim, it, &progress, &frozen, &run, cfg)?;
        if let Some(target) = cfg.shaping.kl_target {
            progress.beta = adapt_beta_after(&progress, &m, target, cfg);
        }
        let first = *progress
            .first
            .get_or_insert(Baseline { length: m.response_length, objects: m.world.map(|w| w.objects) });
        for warning in metrics::collapse_warnings(&m, first, cfg) {
            say(&bar, warning);
        }
        it += 1;
        if let Some(e) = eval_if_due(&mut m, &ac, &frozen, &run, cfg)? {
            eval_last = Some(e);
            let before = progress.eval_first.unwrap_or(f64::NAN);
            say(
                &bar,
                format!("iteration {it}/{}: held-out score {e:.3} (before RL {before:.3})", cfg.iterations),
            );
        }
        log.log(&m)?;
        bar.set_position(it as u64);
        bar.set_message(progress_line(&m));
        if (cfg.checkpoint_every > 0 && it.is_multiple_of(cfg.checkpoint_every)) || it == stop {
            checkpoint(&run, &frozen, &ac, &optim, it, &progress, cfg.lora.is_some())?;
        }
        last = Some(m);
    }
    bar.finish();
    let model = if it == cfg.iterations {
        let dir = run.dir.dir.join("final");
        save_model_folder(&ac.policy, &run.folder.tokenizer_path, &run.folder.processor, &dir)?;
        dir
    } else {
        run.dir.dir.join("checkpoint")
    };
    let (first, seconds) = (progress.eval_first, start.elapsed().as_secs_f64());
    Ok(Summary {
        iterations: it,
        eval_rm_score_first: first,
        eval_rm_score_last: eval_last,
        last,
        seconds,
        model,
    })
}

fn adapt_beta_after(progress: &Progress, m: &IterationMetrics, target: f64, cfg: &PpoConfig) -> f64 {
    let n = m.by_task.values().map(|t| t.responses).sum();
    math::adapt_beta(progress.beta, m.kl, target, n, cfg.shaping.kl_horizon)
}

/// The progress bar's message: reward, KL, length, and the world judge's CHAIR_i when known.
fn progress_line(m: &IterationMetrics) -> String {
    let mut s = format!("score {:.3} | kl {:.2} | len {:.1}", m.rm_score, m.kl, m.response_length);
    if let Some(w) = m.world {
        s.push_str(&format!(" | rollout CHAIR_i {:.3} recall {:.2}", w.chair_i, w.object_recall));
    }
    s
}
