//! Training runs as a user drives them: a resumed run reaches the same weights as an uninterrupted
//! one, and a diverging run stops with a clear message.

mod common;

use common::{factrl, jsonl};
use std::path::{Path, PathBuf};

/// The values of `key` in a run folder's metrics, in order, from the lines that have it.
fn metric(run: &Path, key: &str) -> Vec<f64> {
    jsonl(&run.join("metrics.jsonl")).iter().filter_map(|l| l[key].as_f64()).collect()
}

/// `factrl train sft --config CONFIG`, each of `sets` as `--set`, then `extra`.
fn train_sft(config: &str, sets: &[String], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "sft", "--config", config];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(extra);
    factrl(&args)
}

/// A small world and a pretraining config over it that trains every part for 6 steps.
fn setup(tmp: &Path) -> PathBuf {
    let world = tmp.join("world");
    let cfg =
        factrl::world::WorldConfig { images: 120, pope_images: 5, mmhal_per_type: 1, ..Default::default() };
    factrl::world::generate(&cfg, &world, false).unwrap();
    let config = tmp.join("pretrain.toml");
    let w = world.display();
    std::fs::write(
        &config,
        format!(
            "out = \"{}/run\"\ntrain = \"{w}/pretrain.json\"\nval = \"{w}/pretrain_val.json\"\nval_records = 8\n\
             tokenizer = \"{w}/tokenizer.json\"\nimage_size = 48\npatch_size = 8\ntrainable = [\"vision\", \"projector\", \"decoder\"]\n\
             lr = 2e-3\nmin_lr = 1e-4\nwarmup_steps = 2\nweight_decay = 0.01\ngrad_clip = 1.0\nbatch_size = 8\n\
             grad_accum = 2\nepochs = 2\nmax_steps = 6\nseed = 3\nlog_every = 1\neval_every = 3\ncheckpoint_every = 3\n",
            tmp.display()
        ),
    )
    .unwrap();
    config
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn resumed_run_reaches_the_weights_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let c = config.to_str().unwrap();
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    let out = |d: &Path| format!("out={}", d.display());
    let r = factrl(&["train", "pretrain", "--config", c, "--set", &out(&whole)]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Stopped after 3 of 6 steps, then resumed.
    let r = factrl(&["train", "pretrain", "--config", c, "--set", &out(&parts), "--halt-after", "3"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!parts.join("final").exists());
    let r = factrl(&["train", "pretrain", "--config", c, "--set", &out(&parts)]);
    assert!(!r.status.success(), "a second run into the same folder needs --resume");
    let r = factrl(&["train", "pretrain", "--config", c, "--set", &out(&parts), "--resume"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(weights(&whole.join("final")) == weights(&parts.join("final")), "resumed weights differ");
    // The metrics read as one run: the same steps, once each.
    let steps = |d: &Path| -> Vec<(u64, bool)> {
        jsonl(&d.join("metrics.jsonl"))
            .iter()
            .map(|v| (v["step"].as_u64().unwrap(), v.get("eval_loss").is_some()))
            .collect()
    };
    assert_eq!(steps(&whole), steps(&parts));
    // The loss fell.
    let losses = metric(&whole, "loss");
    assert!(losses.last() < losses.first(), "{losses:?}");
}

#[test]
fn a_lora_run_trains_adapters_only_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let c = config.to_str().unwrap();
    // A base to adapt: the 6-step run of `setup`.
    let base = tmp.path().join("base");
    let r = factrl(&["train", "pretrain", "--config", c, "--set", &format!("out={}", base.display())]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let run = |out: &Path, extra: &[&str]| {
        let sets = [
            format!("out={}", out.display()),
            format!("init={}", base.join("final").display()),
            "trainable=[\"projector\", \"decoder\"]".into(),
            "lora.rank=4".into(),
            "lora.alpha=8".into(),
            "lora.targets=[\"q_proj\", \"v_proj\"]".into(),
        ];
        train_sft(c, &sets, extra)
    };
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    let r = run(&whole, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run(&parts, &["--halt-after", "3"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = run(&parts, &["--resume"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(weights(&whole.join("final")) == weights(&parts.join("final")), "resumed weights differ");

    // Adapted projections and the projector changed; the rest of the decoder did not.
    let load = |d: &Path| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(k, v)| (k, v.data().to_vec()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (before, after) = (load(&base.join("final")), load(&whole.join("final")));
    let changed = |key: &str| {
        let k = before.keys().find(|k| k.ends_with(key)).unwrap_or_else(|| panic!("no {key}"));
        before[k] != after[k]
    };
    assert!(changed("layers.0.self_attn.q_proj.weight"));
    assert!(changed("layers.0.self_attn.v_proj.weight"));
    assert!(changed("multi_modal_projector.linear_1.weight"));
    assert!(!changed("layers.0.self_attn.k_proj.weight"));
    assert!(!changed("layers.0.mlp.up_proj.weight"));
    assert!(!changed("embed_tokens.weight"));
    assert!(!changed("layers.0.input_layernorm.weight"));
}

#[test]
fn a_diverging_run_stops_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let r = factrl(&[
        "train",
        "pretrain",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "lr=1e30",
        "--set",
        "grad_clip=0",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("loss became"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let r = factrl(&["train", "sft", "--config", config.to_str().unwrap(), "--set", "learning_rate=1"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("learning_rate"), "{err}");
}

#[test]
fn a_focus_run_trains_on_the_named_tasks_only() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let c = config.to_str().unwrap();
    let sft = tmp.path().join("world/sft.json");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&sft).unwrap()).unwrap();
    let existence = records.iter().filter(|r| r["task"] == "existence").count();
    assert!(existence > 8 && existence < records.len());
    let out = tmp.path().join("focus");
    let sets = [
        format!("train={}", sft.display()),
        format!("val={}", sft.display()),
        format!("out={}", out.display()),
        "tasks=[\"existence\"]".to_string(),
        "max_steps=1000".into(),
        "epochs=1".into(),
        "grad_accum=1".into(),
    ];
    let r = train_sft(c, &sets, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // One epoch of 8-record batches over the existence records alone.
    let last = jsonl(&out.join("metrics.jsonl")).pop().unwrap();
    assert_eq!(last["step"].as_u64().unwrap() as usize, existence.div_ceil(8));
    // The captions have no existence questions: a clear error, no run.
    let r = factrl(&["train", "sft", "--config", c, "--set", "tasks=[\"existence\"]"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("pretrain.json") && err.contains("no records of tasks"), "{err}");
}

#[test]
fn clip_stage_learns_to_match_images_and_captions_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    let cfg =
        factrl::world::WorldConfig { images: 300, pope_images: 5, mmhal_per_type: 1, ..Default::default() };
    factrl::world::generate(&cfg, &world, false).unwrap();
    // Held out: another world's captions (the world's own val split is small at this size).
    let other = tmp.path().join("other");
    factrl::world::generate(&factrl::world::WorldConfig { images: 120, seed: 1, ..cfg }, &other, false)
        .unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/clip.toml");
    let w = world.display();
    let run = |out: &Path, extra: &[&str]| {
        let sets = [
            format!("out={}", out.display()),
            format!("train={w}/pretrain.json"),
            format!("val={}/pretrain.json", other.display()),
            format!("tokenizer={w}/tokenizer.json"),
            "batch_size=16".into(),
            "max_steps=60".into(),
            "warmup_steps=5".into(),
            "eval_every=30".into(),
            "checkpoint_every=10".into(),
            "val_records=64".into(),
        ];
        let mut args = vec!["train", "clip", "--config", shipped.to_str().unwrap()];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        args.extend(extra);
        let r = factrl(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    };
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    run(&whole, &[]);
    run(&parts, &["--halt-after", "25"]);
    run(&parts, &["--resume"]);
    assert!(weights(&whole.join("final")) == weights(&parts.join("final")), "resumed weights differ");
    // Held-out image -> caption accuracy within batches of 16: chance is 1/16; measured 0.38.
    let accuracy = metric(&whole, "eval_accuracy");
    eprintln!("held-out retrieval accuracy {accuracy:?}");
    assert!(*accuracy.last().unwrap() > 2.0 / 16.0, "{accuracy:?}");
    // The shipped config's hard negatives (shape words swapped): every held-out caption names a
    // shape, so each eval scores the caption against its copy; a share in [0, 1] each time.
    let negative = metric(&whole, "eval_negative_accuracy");
    eprintln!("held-out accuracy against the hard negative {negative:?}");
    assert_eq!(negative.len(), accuracy.len());
    assert!(negative.iter().all(|a| (0.0..=1.0).contains(a)), "{negative:?}");
}
