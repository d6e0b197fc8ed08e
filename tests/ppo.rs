//! `factrl train ppo` as a user runs it, on a tiny model against a fixed reward model.

mod common;

use common::{factrl, factrl_ok, jsonl, prefs, tiny_model, world};
use std::path::{Path, PathBuf};

/// A world, a tiny policy briefly fine-tuned on its instructions with the planted sentence
/// appended to every other answer (so that it hallucinates, and PPO has something to remove), a
/// standard reward model trained on planted-hallucination pairs from it, and a short config from
/// the shipped `configs/{shipped}.toml`.
fn setup(tmp: &Path, shipped: &str) -> PathBuf {
    let w = world(tmp, 500);
    let model = tiny_model(tmp, &w);
    let policy = tmp.join("sft/final");
    let mut records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(w.join("sft.json")).unwrap()).unwrap();
    for r in records.iter_mut().step_by(2) {
        let last = r["conversations"].as_array_mut().unwrap().last_mut().unwrap();
        last["value"] = format!("{} {}", last["value"].as_str().unwrap(), common::PLANTED).into();
    }
    std::fs::write(w.join("sft_planted.json"), serde_json::to_string(&records).unwrap()).unwrap();
    let sft = tmp.join("sft.toml");
    std::fs::write(
        &sft,
        format!(
            "out = \"{t}/sft\"\ntrain = \"{t}/world/sft_planted.json\"\nval_records = 0\ninit = \"{m}\"\n\
             trainable = [\"projector\", \"decoder\"]\nlr = 3e-3\nmin_lr = 1e-3\nwarmup_steps = 5\nweight_decay = 0.0\n\
             grad_clip = 1.0\nbatch_size = 16\ngrad_accum = 1\nepochs = 1\nmax_steps = 60\nseed = 2\nlog_every = 20\n\
             eval_every = 1000\ncheckpoint_every = 1000\n",
            t = tmp.display(),
            m = model.display()
        ),
    )
    .unwrap();
    factrl_ok(&["train", "sft", "--config", sft.to_str().unwrap()]);
    let prefs = prefs(tmp, &w);
    let reward = tmp.join("reward.toml");
    std::fs::write(
        &reward,
        format!(
            "out = \"{t}/rm\"\ntrain = \"{p}\"\nval_fraction = 0.0\ninit = \"{m}\"\nfacts = false\n\
             trainable = [\"projector\", \"decoder\"]\nlr = 3e-3\nmin_lr = 3e-4\nwarmup_steps = 3\nweight_decay = 0.0\n\
             grad_clip = 1.0\nbatch_size = 8\nepochs = 20\nmax_steps = 30\ncenter_coef = 1e-3\nseed = 1\nlog_every = 10\n\
             eval_every = 1000\ncheckpoint_every = 1000\n",
            t = tmp.display(),
            p = prefs.display(),
            m = policy.display()
        ),
    )
    .unwrap();
    factrl_ok(&["train", "reward", "--config", reward.to_str().unwrap()]);
    let rm = tmp.join("rm/final");
    let config = tmp.join("ppo.toml");
    let file = format!("configs/{shipped}.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .lines()
        .filter(|l| {
            ![
                "out =",
                "prompts =",
                "policy =",
                "reward_model =",
                "world =",
                "val_prompts =",
                "max_new_tokens =",
                "rollout_batch =",
                "generation_batch =",
                "minibatch =",
                "iterations =",
                "lr =",
                "min_lr =",
                "warmup_steps =",
                "eval_every =",
                "checkpoint_every =",
                "beta =",
                "reward_scale =",
                "reward_clip =",
                "length_penalty =",
                "correctness_bonus =",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Top-level keys must precede the [shaping] table.
    let (top, shaping) = text.split_once("[shaping]").unwrap();
    std::fs::write(
        &config,
        format!(
            "out = \"{t}/ppo\"\nprompts = \"{w}/ppo_prompts.json\"\npolicy = \"{p}\"\nreward_model = \"{r}\"\nworld = \"{w}\"\n\
             val_prompts = 8\nmax_new_tokens = 24\nrollout_batch = 16\ngeneration_batch = 16\nminibatch = 8\n\
             iterations = 30\nlr = 1e-3\nmin_lr = 1e-3\nwarmup_steps = 0\neval_every = 10\ncheckpoint_every = 2\n\
             {top}[shaping]\nbeta = 0.01\nreward_scale = 1.0\nreward_clip = 0.0\nlength_penalty = 0.0\ncorrectness_bonus = 0.0\n{shaping}\n",
            t = tmp.display(),
            w = w.display(),
            p = policy.display(),
            r = rm.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn ppo_raises_the_held_out_reward_with_bounded_kl_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), "ppo_llava_rlhf");
    let c = config.to_str().unwrap();
    factrl_ok(&["train", "ppo", "--config", c]);
    let lines = jsonl(&tmp.path().join("ppo/metrics.jsonl"));
    let evals: Vec<f64> = lines.iter().filter_map(|l| l["eval_rm_score"].as_f64()).collect();
    assert_eq!(evals.len(), 4, "{lines:?}");
    let rm: Vec<f64> = lines.iter().filter_map(|l| l["rm_score"].as_f64()).collect();
    let kls: Vec<f64> = lines.iter().filter_map(|l| l["kl"].as_f64()).collect();
    eprintln!("held-out RM scores {evals:?}, rollout RM scores {rm:?}, KL {kls:?}");
    // Eight runs here (seeds 0-3, beta 0.01 and 0.1): the first ten rollouts score 4.3-4.6, the last ten 5.5-5.6.
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    assert!(mean(&rm[20..]) > mean(&rm[..10]) + 0.5, "rollout RM score did not rise: {rm:?}");
    assert!(evals[3] > evals[0], "held-out RM score did not rise: {evals:?}");
    let iterations: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("kl").is_some()).collect();
    assert_eq!(iterations.len(), 30);
    for l in &iterations {
        for key in [
            "rm_score",
            "kl_penalty",
            "kl_max",
            "approx_kl",
            "entropy",
            "clip_fraction",
            "value_loss",
            "explained_variance",
            "response_length",
            "no_eos_rate",
            "world/chair_i",
            "world/object_recall",
            "by_task/description/score",
        ] {
            let v = l.pointer(&format!("/{key}"));
            assert!(v.and_then(|v| v.as_f64()).is_some_and(f64::is_finite), "{key} in {l}");
        }
        for key in ["rm_score", "entropy"] {
            assert!(l[key].as_f64().is_some_and(f64::is_finite), "{key} in {l}");
        }
    }
    // One rollout of 16 samples is a noisy KL estimate: a CI machine's run (its floats differ from
    // ours) once spiked to 6.1 nats at a mean of 1.6; those eight runs give means 1.5-2.0, maxima
    // 2.3-4.4. A broken leash or clamp drifts far beyond.
    let max_kl = kls.iter().copied().fold(f64::MIN, f64::max);
    assert!(mean(&kls) < 4.0 && max_kl < 12.0, "KL over 24 tokens is not bounded: {kls:?}");

    // Halted after 2 iterations and resumed: the same policy as the uninterrupted run.
    let parts = format!("out={}/parts", tmp.path().display());
    factrl_ok(&["train", "ppo", "--config", c, "--set", &parts, "--halt-after", "2"]);
    factrl_ok(&["train", "ppo", "--config", c, "--set", &parts, "--resume"]);
    let read = |d: &str| std::fs::read(tmp.path().join(d).join("final/model.safetensors")).unwrap();
    assert!(read("ppo") == read("parts"), "resumed policy differs");

    // Through LoRA adapters on both decoders: the same, from checkpoints that keep them unmerged.
    let lora = ["--set", "lora.rank=4", "--set", "lora.alpha=8", "--set", "iterations=3"];
    let (whole, parts) =
        (format!("out={}/lora", tmp.path().display()), format!("out={}/lora-parts", tmp.path().display()));
    factrl_ok(&[&["train", "ppo", "--config", c, "--set", &whole][..], &lora].concat());
    factrl_ok(&[&["train", "ppo", "--config", c, "--set", &parts, "--halt-after", "2"][..], &lora].concat());
    factrl_ok(&[&["train", "ppo", "--config", c, "--set", &parts, "--resume"][..], &lora].concat());
    assert!(read("lora") == read("lora-parts"), "resumed LoRA policy differs");
    assert!(read("lora") != read("ppo"));
}

#[test]
fn ppo_refuses_a_model_that_is_not_a_reward_model() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), "ppo_llava_rlhf");
    let policy = format!("reward_model={}/sft/final", tmp.path().display());
    let out = factrl(&["train", "ppo", "--config", config.to_str().unwrap(), "--set", &policy]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a reward model folder"), "{err}");
}

#[test]
fn group_baselines_raise_the_reward_and_the_oracle_removes_the_planted_hallucination() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), "ppo");
    let c = config.to_str().unwrap();
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let series = |dir: &str, key: &str| -> Vec<f64> {
        jsonl(&tmp.path().join(dir).join("metrics.jsonl"))
            .iter()
            .filter(|l| l.get("kl").is_some())
            .filter_map(|l| l.pointer(key).and_then(|v| v.as_f64()))
            .collect()
    };
    for estimator in ["grpo", "rloo"] {
        let (out, adv) =
            (format!("out={}/{estimator}", tmp.path().display()), format!("advantage={estimator}"));
        factrl_ok(&["train", "ppo", "--config", c, "--set", &out, "--set", &adv, "--set", "iterations=20"]);
        let rm = series(estimator, "/rm_score");
        eprintln!("{estimator}: rollout RM scores {rm:?}");
        assert_eq!(rm.len(), 20);
        assert!(mean(&rm[12..]) > mean(&rm[..6]) + 0.3, "{estimator}: rollout RM score did not rise: {rm:?}");
        // No critic: no value loss to speak of, no explained variance logged.
        let lines = jsonl(&tmp.path().join(estimator).join("metrics.jsonl"));
        assert!(lines.iter().all(|l| l.get("explained_variance").is_none()), "{lines:?}");
    }
    // The oracle: the world's judge as the reward; the planted purple star is a hallucination
    // wherever the scene has none, and the rollouts' hallucination rate falls.
    let out = format!("out={}/oracle", tmp.path().display());
    factrl_ok(&[
        "train",
        "ppo",
        "--config",
        c,
        "--set",
        &out,
        "--set",
        "reward=\"oracle\"",
        "--set",
        "iterations=20",
    ]);
    let rate = series("oracle", "/world/hallucination_rate");
    eprintln!("oracle: rollout hallucination rate {rate:?}");
    // Runs here: the first five iterations 0.44, the last ten 0.33 (floats, and with them the
    // samples, move with the thread schedule, so the bound leaves room).
    assert!(mean(&rate[10..]) < mean(&rate[..5]) - 0.05, "oracle RL did not remove hallucinations: {rate:?}");
    // Settings that cannot work are refused, naming what is wrong.
    for (set, says) in [("group_size=1", "group_size"), ("reward_model=\"\"", "not a reward model folder")] {
        let bad = format!("out={}/bad", tmp.path().display());
        let o = factrl(&["train", "ppo", "--config", c, "--set", &bad, "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{set}: {err}");
    }
}
