//! `factrl train dpo` as a user runs it, on a tiny model and planted-hallucination pairs.

mod common;

use common::{factrl_ok, jsonl, prefs, tiny_model, world};

#[test]
fn dpo_learns_the_planted_hallucination_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let w = world(t, 500);
    let model = tiny_model(t, &w);
    let prefs = prefs(t, &w);
    let config = t.join("dpo.toml");
    std::fs::write(
        &config,
        format!(
            "out = \"{o}/dpo\"\ntrain = \"{p}\"\nval_fraction = 0.2\npolicy = \"{m}\"\n\
             trainable = [\"projector\", \"decoder\"]\nbeta = 0.5\nlr = 3e-3\nmin_lr = 3e-4\nwarmup_steps = 3\n\
             weight_decay = 0.0\ngrad_clip = 1.0\nbatch_size = 8\nepochs = 20\nmax_steps = 30\nseed = 1\n\
             log_every = 5\neval_every = 10\ncheckpoint_every = 10\n",
            o = t.display(),
            p = prefs.display(),
            m = model.display()
        ),
    )
    .unwrap();
    factrl_ok(&["train", "dpo", "--config", config.to_str().unwrap()]);
    assert!(t.join("dpo/final/model.safetensors").exists());
    let evals: Vec<f64> = jsonl(&t.join("dpo/metrics.jsonl"))
        .iter()
        .filter_map(|l| l.get("eval").map(|e| e["accuracy"].as_f64().unwrap()))
        .collect();
    assert_eq!(evals.len(), 3);
    assert!(*evals.last().unwrap() >= 0.8, "held-out accuracy {evals:?}");

    // Through LoRA adapters: a stopped and resumed run ends where an uninterrupted one does.
    let run = |out: &str, extra: &[&str]| {
        let out = format!("out={}/{out}", t.display());
        let c = config.to_str().unwrap();
        let sets = ["--set", "max_steps=4", "--set", "checkpoint_every=2", "--set", "lora.rank=4"];
        let mut args = vec!["train", "dpo", "--config", c, "--set", &out, "--set", "lora.alpha=8"];
        args.extend(sets);
        args.extend(extra);
        factrl_ok(&args);
    };
    run("whole", &[]);
    run("parts", &["--halt-after", "2"]);
    run("parts", &["--resume"]);
    let read = |d: &str| std::fs::read(t.join(d).join("final/model.safetensors")).unwrap();
    assert!(read("whole") == read("parts"), "LoRA DPO weights differ after resume");
    assert!(read("whole") != std::fs::read(model.join("model.safetensors")).unwrap());
}
