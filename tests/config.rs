//! `factrl config`: the shipped configs an installed binary carries, and output into a closed pipe.

mod common;

use common::{factrl, factrl_ok};
use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn shipped_configs_are_listed_shown_and_taken_by_name() {
    let list = String::from_utf8(factrl_ok(&["config", "list"]).stdout).unwrap();
    for name in
        ["clip", "pretrain", "sft", "sft_focus", "sft_return", "reward", "ppo", "ppo_llava_rlhf", "dpo"]
    {
        assert!(list.lines().any(|l| l.starts_with(name)), "{name} in {list}");
    }
    // `show` prints the file itself; a shown config is one `train ppo --config FILE` accepts:
    // the run gets past the config and stops at the first input that is not there.
    let shown = factrl_ok(&["config", "show", "ppo"]).stdout;
    let repo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/ppo.toml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&shown).trim_end(), String::from_utf8_lossy(&repo).trim_end());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("mine.toml");
    std::fs::write(&file, &shown).unwrap();
    let out = format!("out={}/run", tmp.path().display());
    let policy = format!("policy={}/no-sft", tmp.path().display());
    for config in [file.to_str().unwrap(), "ppo"] {
        let r = factrl(&["train", "ppo", "--config", config, "--set", &out, "--set", &policy]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains("no-sft") && !err.contains("invalid"), "{config}: {err}");
        let _ = std::fs::remove_dir_all(tmp.path().join("run"));
    }
    let r = factrl(&["config", "show", "nope"]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("no shipped config `nope`") && err.contains("ppo"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `factrl config show ppo | head -0`: the reader is gone before the first write.
    let mut child = Command::new(env!("CARGO_BIN_EXE_factrl"))
        .args(["config", "show", "ppo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success() && !err.contains("panicked"), "{status}: {err}");
}
