//! `factrl train reward` and `factrl score --reward-model` as a user runs them, on a tiny model.

mod common;

use common::{PLANTED, factrl, factrl_ok, jsonl, prefs, tiny_model, world};
use serde_json::json;
use std::path::{Path, PathBuf};

/// A world, a tiny model, planted-hallucination pairs and a reward config over them.
fn setup(tmp: &Path) -> PathBuf {
    let w = world(tmp, 500);
    let model = tiny_model(tmp, &w);
    let prefs = prefs(tmp, &w);
    let config = tmp.join("reward.toml");
    std::fs::write(
        &config,
        format!(
            "out = \"{t}/rm\"\ntrain = \"{p}\"\nval_fraction = 0.2\ninit = \"{m}\"\n\
             captions = \"{w}/image_to_caption.json\"\nfacts = true\ntrainable = [\"projector\", \"decoder\"]\n\
             lr = 3e-3\nmin_lr = 3e-4\nwarmup_steps = 3\nweight_decay = 0.0\ngrad_clip = 1.0\nbatch_size = 8\n\
             epochs = 20\nmax_steps = 40\ncenter_coef = 1e-3\nseed = 1\nlog_every = 5\neval_every = 10\n\
             checkpoint_every = 10\n",
            t = tmp.display(),
            p = prefs.display(),
            m = model.display(),
            w = w.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn reward_model_learns_a_planted_hallucination_and_scores_files() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    factrl_ok(&["train", "reward", "--config", config.to_str().unwrap()]);
    let rm = tmp.path().join("rm/final");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("reward.json")).unwrap()).unwrap();
    assert_eq!(info["facts"], true);
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("eval.json")).unwrap()).unwrap();
    assert!(eval["accuracy"].as_f64().unwrap() >= 0.8, "{eval}");
    assert_eq!(eval["hallucination_pairs"], eval["pairs"]);
    let evals =
        jsonl(&tmp.path().join("rm/metrics.jsonl")).into_iter().filter(|l| l.get("eval").is_some()).count();
    assert!(evals >= 4);

    // Scoring a file: the planted sentence lowers the reward; captions are required.
    let image = format!("{}/world/images/000000.png", tmp.path().display());
    let line = |response: &str, captions: bool| {
        let mut l = json!({"image": image, "prompt": "<image>\nIs there a red circle in the image?", "response": response});
        if captions {
            l["captions"] = json!(["A red circle.", "There is one object."]);
        }
        l.to_string()
    };
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, [line("Yes.", true), line(&format!("Yes. {PLANTED}"), true)].join("\n")).unwrap();
    let output = tmp.path().join("out.jsonl");
    let (rm_s, in_s, out_s) = (rm.to_str().unwrap(), input.to_str().unwrap(), output.to_str().unwrap());
    factrl_ok(&["score", "--reward-model", rm_s, "--input", in_s, "--output", out_s]);
    let r: Vec<f64> = jsonl(&output).iter().map(|l| l["reward"].as_f64().unwrap()).collect();
    assert!(r[0] > r[1], "{r:?}");
    std::fs::write(&input, line("Yes.", false)).unwrap();
    let out = factrl(&["score", "--reward-model", rm_s, "--input", in_s, "--output", out_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 1") && err.contains("captions"), "{err}");
}

#[test]
fn resumed_reward_run_reaches_the_same_model_in_full_and_with_lora_and_no_facts_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let c = config.to_str().unwrap();
    let out = |d: &str| format!("out={}/{d}", tmp.path().display());
    let short = ["--set", "max_steps=6", "--set", "eval_every=3", "--set", "checkpoint_every=2"];
    let run = |extra: &[&str], lora: &[&str]| {
        let mut args = vec!["train", "reward", "--config", c];
        args.extend(short);
        args.extend(extra);
        args.extend(lora);
        factrl_ok(&args);
    };
    // In full and through LoRA adapters (whose checkpoint keeps the unmerged model).
    for (tag, extra) in [("", vec![]), ("-lora", vec!["--set", "lora.rank=4", "--set", "lora.alpha=8"])] {
        let (whole, parts) = (format!("whole{tag}"), format!("parts{tag}"));
        run(&["--set", &out(&whole), "--no-facts"], &extra);
        run(&["--set", &out(&parts), "--no-facts", "--halt-after", "3"], &extra);
        assert!(!tmp.path().join(&parts).join("final").exists());
        run(&["--set", &out(&parts), "--no-facts", "--resume"], &extra);
        for file in ["model.safetensors", "scalar_head.safetensors"] {
            let read = |d: &str| std::fs::read(tmp.path().join(d).join("final").join(file)).unwrap();
            assert!(read(&whole) == read(&parts), "{file} differs after resume ({tag})");
        }
    }
    let info = std::fs::read_to_string(tmp.path().join("whole/final/reward.json")).unwrap();
    assert!(info.contains("false"), "{info}");
}

#[test]
fn a_bad_preference_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let path = tmp.path().join("prefs.json");
    let mut records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    records[3]["preference"] = json!(3);
    let id = records[3]["id"].as_str().unwrap().to_string();
    std::fs::write(&path, serde_json::to_string(&records).unwrap()).unwrap();
    let out = factrl(&["train", "reward", "--config", config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&id) && err.contains("preference is 3"), "{err}");
}

#[test]
fn the_facts_next_token_loss_is_logged_and_falls() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let c = config.to_str().unwrap();
    let run = |dir: &str, extra: &[&str]| {
        let out = format!("out={}/{dir}", tmp.path().display());
        let mut args = vec!["train", "reward", "--config", c, "--set", &out, "--set", "facts_lm_coef=1.0"];
        args.extend(["--set", "max_steps=40", "--set", "log_every=4", "--set", "eval_every=40"]);
        args.extend(extra);
        factrl_ok(&args);
        jsonl(&tmp.path().join(dir).join("metrics.jsonl"))
    };
    // With the short grading prompt, which the saved model records for PPO and scoring.
    let nll: Vec<f64> = run("lm", &["--set", "prompt=short", "--set", "facts_likelihood=0.5"])
        .iter()
        .filter_map(|l| l.get("facts_nll")?.as_f64())
        .collect();
    assert_eq!(nll.len(), 10, "{nll:?}");
    let (first, last) = (nll[..3].iter().sum::<f64>(), nll[7..].iter().sum::<f64>());
    assert!(last < 0.8 * first, "the captions' next-token loss should fall: {nll:?}");
    let info = std::fs::read_to_string(tmp.path().join("lm/final/reward.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(info["prompt"] == "short" && info["facts_likelihood"] == 0.5, "{info}");
    // Scoring reads the weight from reward.json: at weights 0, 0.5 and 1 the rewards step evenly.
    let image = format!("{}/world/images/000000.png", tmp.path().display());
    let line = json!({"image": image, "prompt": "<image>\nIs there a red circle in the image?",
        "response": "Yes.", "captions": ["A red circle.", "There is one object."]});
    let input = tmp.path().join("lm-in.jsonl");
    std::fs::write(&input, line.to_string()).unwrap();
    let score = |weight: f64| {
        let dir = tmp.path().join(format!("lm-{weight}"));
        std::fs::create_dir(&dir).unwrap();
        for f in std::fs::read_dir(tmp.path().join("lm/final")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let info = json!({"facts": true, "prompt": "short", "facts_likelihood": weight});
        std::fs::write(dir.join("reward.json"), info.to_string()).unwrap();
        let output = dir.join("out.jsonl");
        factrl_ok(&[
            "score",
            "--reward-model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        jsonl(&output)[0]["reward"].as_f64().unwrap()
    };
    let (r0, r5, r1) = (score(0.0), score(0.5), score(1.0));
    assert!(r1 < r5 && ((r1 - r0) - 2.0 * (r5 - r0)).abs() < 1e-3, "{r0} {r5} {r1}");
    // The standard reward model reads no captions: nothing to predict, no likelihood in its reward.
    let plain = run("plain", &["--no-facts", "--set", "facts_likelihood=0.5"]);
    assert!(plain.iter().all(|l| l.get("facts_nll").is_none()));
    let info = std::fs::read_to_string(tmp.path().join("plain/final/reward.json")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(info["facts"] == false && info["facts_likelihood"] == 0.0, "{info}");
    for bad in ["facts_lm_coef", "facts_likelihood"] {
        let out = factrl(&["train", "reward", "--config", c, "--set", &format!("{bad}=-1.0")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&format!("{bad} -1")), "{err}");
    }
    let out = factrl(&["train", "reward", "--config", c, "--set", "prompt=long"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("long") && err.contains("short"), "{err}");
}

#[test]
fn injected_pairs_train_but_are_never_held_out() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let path = tmp.path().join("prefs.json");
    let mut records: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for r in records.iter_mut().step_by(3) {
        r["injected"] = json!(true);
    }
    let judged = records.iter().filter(|r| r.get("injected").is_none()).count();
    let val = tmp.path().join("val.json");
    std::fs::write(&val, serde_json::to_string(&records).unwrap()).unwrap();
    let c = config.to_str().unwrap();
    factrl_ok(&[
        "train",
        "reward",
        "--config",
        c,
        "--set",
        "max_steps=2",
        "--set",
        &format!("val={}", val.display()),
    ]);
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("rm/final/eval.json")).unwrap())
            .unwrap();
    assert_eq!(eval["pairs"], json!(judged), "{eval}");
}
