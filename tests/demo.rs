//! `factrl demo --quick` end to end, as CI and a newcomer run it: every stage, the report, and a
//! rerun that skips what is done.

use serde_json::Value;
use std::process::Command;

fn demo(out: &std::path::Path) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["demo", "--quick", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "factrl demo --quick: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn quick_demo_runs_every_stage_writes_the_report_and_skips_finished_stages_on_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    demo(&out);

    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["base", "sft", "rlhf", "fact_rlhf", "oracle_rl"]);
    for r in &rows {
        for setting in ["random", "popular", "adversarial"] {
            for key in ["accuracy", "precision", "recall", "f1", "yes_ratio", "tp", "fp", "tn", "fn"] {
                assert!(r["pope"][setting][key].is_number(), "{setting}.{key} in {r}");
            }
        }
        for key in ["chair_i", "chair_s", "object_recall", "mmhal_score", "mmhal_hallucination_rate"] {
            assert!(r[key].is_number(), "{key} in {r}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| Fact-RLHF | 1 |") && md.contains("## Claims"), "{md}");
    // The oracle arm is a row marked as a bound, and the claims say what it shows.
    assert!(
        md.contains("| Oracle-RL (upper bound) | 1 |")
            && md.contains("Bound: RL against the world's exact judge"),
        "{md}"
    );
    let rm = md.lines().find(|l| l.contains("Seed 0's reward models")).expect("a reward-model note");
    assert!(rm.contains("with facts ") && rm.contains("; standard ") && rm.contains(" of all "), "{rm}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 5, "one plot per curve and the bar chart");
    assert!(html.contains("hallucination and recall by model"), "the bar chart");
    // Every RL arm logs the world judge's view of its rollouts (a diagnostic, never its reward).
    let line = std::fs::read_to_string(out.join("seed-0/fact_rlhf/metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    for key in [
        "/world/chair_i",
        "/world/object_recall",
        "/by_task/description/hallucination_rate",
        "/seconds/update",
    ] {
        assert!(last.pointer(key).is_some_and(Value::is_number), "{key} in {last}");
    }
    for file in [
        "candidates.json",
        "prefs.json",
        "rm-facts/final/scalar_head.safetensors",
        "fact_rlhf/final/model.safetensors",
    ] {
        assert!(out.join("seed-0").join(file).exists(), "{file}");
    }

    // A rerun finds every stage done and only rewrites the report.
    let again = demo(&out);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains("finished in"), "a stage ran again:\n{log}");
    assert!(log.contains("sft: done already"), "{log}");

    // The default size refuses the quick demo's folder instead of taking its stages as its own.
    let other = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["demo", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("seed-0") && err.contains("`quick`") && err.contains("`default`"), "{err}");
}
