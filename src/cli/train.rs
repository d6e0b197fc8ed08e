//! `factrl train`: one subcommand per algorithm, each reading a TOML config.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `factrl train` subcommands.
#[derive(Subcommand)]
pub enum TrainCommand {
    /// Stage 0: contrastive (CLIP-style) pretraining of the vision tower on image-caption pairs
    /// (configs/clip.toml); the world has no downloadable CLIP.
    Clip(TrainArgs),
    /// Stage 1: feature-alignment pretraining on captions (configs/pretrain.toml).
    Pretrain(TrainArgs),
    /// Stage 2: supervised fine-tuning on instructions (configs/sft.toml).
    Sft(TrainArgs),
    /// Stage 3: the reward model on preference pairs, fact-augmented unless --no-facts
    /// (configs/reward.toml).
    Reward(RewardArgs),
    /// Stage 4: RL (PPO with a critic, RLOO or GRPO) against a reward model with a KL leash to the
    /// SFT model (configs/ppo.toml).
    Ppo(TrainArgs),
    /// DPO on preference pairs against the frozen SFT model (configs/dpo.toml).
    Dpo(TrainArgs),
}

/// Flags of `factrl train reward`.
#[derive(Args)]
pub struct RewardArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Train the standard reward model: the grading prompt without captions (the ablation).
    #[arg(long)]
    no_facts: bool,
}

/// Flags shared by the trainers.
#[derive(Args)]
pub struct TrainArgs {
    /// TOML config file, or the name of a shipped one (`factrl config list`).
    #[arg(long)]
    config: PathBuf,
    /// Override a config key, e.g. `--set lr=3e-4 --set out=runs/x` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Continue the run in the config's `out` folder from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps (at a checkpoint) and exit; `--resume` continues.
    #[arg(long, value_name = "STEPS")]
    halt_after: Option<usize>,
}

/// Runs `factrl train ...`.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    let a = match cmd {
        TrainCommand::Pretrain(a) | TrainCommand::Sft(a) => a,
        TrainCommand::Clip(a) => return clip(a),
        TrainCommand::Reward(r) => return reward(r),
        TrainCommand::Ppo(a) => return ppo(a),
        TrainCommand::Dpo(a) => return dpo(a),
    };
    let cfg = crate::train::sft::load_config(&a.config, &a.sets)?;
    let s = crate::train::sft::train(&cfg, a.resume, a.halt_after)?;
    super::print(&format!(
        "trained {} steps in {:.0} s: loss {:.4}{}; model in {}",
        s.steps,
        s.seconds,
        s.loss,
        s.eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default(),
        s.model.display()
    ))?;
    Ok(())
}

fn clip(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = crate::train::clip::load_config(&a.config, &a.sets)?;
    let s = crate::train::clip::train(&cfg, a.resume, a.halt_after)?;
    let eval = s.eval_accuracy.map(|e| format!(", held-out retrieval accuracy {e:.3}")).unwrap_or_default();
    super::print(&format!(
        "trained {} steps in {:.0} s: loss {:.4}{eval}; model in {}",
        s.steps,
        s.seconds,
        s.loss,
        s.model.display()
    ))?;
    Ok(())
}

fn reward(r: RewardArgs) -> anyhow::Result<()> {
    let a = r.train;
    let mut cfg = crate::train::reward::load_config(&a.config, &a.sets)?;
    cfg.facts &= !r.no_facts;
    let s = crate::train::reward::train(&cfg, a.resume, a.halt_after)?;
    let eval = s.eval.map(|m| {
        let by_task: Vec<String> = m
            .by_task
            .iter()
            .map(|(t, a)| {
                format!(
                    "{t} {:.3} of {} ({:.3} of {})",
                    a.accuracy, a.pairs, a.hallucination_accuracy, a.hallucination_pairs
                )
            })
            .collect();
        format!(
            ", held-out accuracy {:.3} (on {} hallucination pairs {:.3}){}",
            m.all.accuracy,
            m.all.hallucination_pairs,
            m.all.hallucination_accuracy,
            if by_task.is_empty() { String::new() } else { format!("; by task: {}", by_task.join(", ")) }
        )
    });
    super::print(&format!(
        "trained {} steps in {:.0} s: loss {:.4}{}; reward model in {}",
        s.steps,
        s.seconds,
        s.loss,
        eval.unwrap_or_default(),
        s.model.display()
    ))?;
    Ok(())
}

fn ppo(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = crate::train::ppo::load_config(&a.config, &a.sets)?;
    let s = crate::train::ppo::train(&cfg, a.resume, a.halt_after)?;
    let eval = match (s.eval_rm_score_first, s.eval_rm_score_last) {
        (Some(a), Some(b)) => format!(", held-out RM score {a:.3} -> {b:.3}"),
        _ => String::new(),
    };
    let last = s.last.map(|m| format!(", last KL {:.2}, length {:.1}", m.kl, m.response_length));
    super::print(&format!(
        "trained {} iterations in {:.0} s{eval}{}; policy in {}",
        s.iterations,
        s.seconds,
        last.unwrap_or_default(),
        s.model.display()
    ))?;
    Ok(())
}

fn dpo(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = crate::train::dpo::load_config(&a.config, &a.sets)?;
    let s = crate::train::dpo::train(&cfg, a.resume, a.halt_after)?;
    let eval = s.eval_accuracy.map(|e| format!(", held-out accuracy {e:.3}")).unwrap_or_default();
    super::print(&format!(
        "trained {} steps in {:.0} s: loss {:.4}{eval}; policy in {}",
        s.steps,
        s.seconds,
        s.loss,
        s.model.display()
    ))?;
    Ok(())
}
