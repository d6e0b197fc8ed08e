#!/usr/bin/env bash
# The RL probe of docs/experiments/2026-12-04-rl-effect.md: RL from a seed folder's SFT model with
# a shipped config and overrides, then the held-out evaluation, and one line of results.
# usage (from the repository root, after `cargo build --release`):
#   CFG=ppo RM=rm-facts docs/experiments/2026-12-04-rl-probe.sh NAME SEED_DIR WORLD [--set k=v ...]
# SEED_DIR is a demo seed folder (sft/final, rm-facts/final, rm-plain/final); WORLD the world its
# PPO prompts come from. Writes runs/exp/NAME (the run and its evaluation) and runs/exp/NAME.log.
set -euo pipefail
name=$1; sd=$2; w=$3; shift 3
bin=${BIN:-target/release/factrl}
out=runs/exp/$name
rm -rf "$out"; mkdir -p runs/exp
start=$(date +%s)
"$bin" train ppo --config "configs/${CFG:-ppo}.toml" --set out="$out/rl" \
  --set prompts="$w/ppo_prompts.json" --set policy="$sd/sft/final" --set world="$w" \
  --set reward_model="$sd/${RM:-rm-facts}/final" "$@" > "$out.log" 2>&1
mid=$(date +%s)
"$bin" eval run --model "$out/rl/final" --world "$w" --output "$out/eval" --limit 600 --batch 64 >> "$out.log" 2>&1
end=$(date +%s)
python3 - "$out" $((mid-start)) $((end-mid)) <<'PY'
import json, sys
out, rl, ev = sys.argv[1:4]
m = json.load(open(out + "/eval/metrics.json"))
a = m["pope"]["adversarial"]
fp = a["fp"] / (a["fp"] + a["tn"])
print(f"{out}: rl {rl} s, eval {ev} s | adv. FP {fp:.3f} F1 {a['f1']:.3f} | CHAIR_i {m['chair_i']:.3f} "
      f"recall {m['object_recall']:.3f} | FP by kind {m['false_positive_rate_by_kind']}")
PY
