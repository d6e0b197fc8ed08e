#!/usr/bin/env python3
"""Preference files whose records carry their own facts, with the right answer among them.

LLaVA-RLHF adds ground-truth multiple-choice options to the reward model's captions. This script
writes a copy of a demo seed's `prefs.json` in which every record has `captions` (which the reward
trainer then reads instead of `image_to_caption.json`): the image's captions, and for a short
question (every task but description) one more, "The correct answer is: {reference answer}".

    python3 scripts/answer_facts.py SEED OUT [--prefs FILE] [--six] [--answer-only] [--inject K]
        [--copy K] [--words TEXT]

SEED is a demo seed folder (`runs/demo9/seed-0`, with `prefs.json`, `candidates.json` and
`world/`); OUT is written beside the preference file (SEED/prefs.json, or `--prefs FILE`, e.g.
pairs collected on other prompts of the same world), whose image paths it keeps. By default only
the dense caption (the true description) comes before the answer; `--six` keeps all six captions.
`--inject K` also appends, for each short prompt of `candidates.json`, K built pairs: the reference
answer against another short prompt's reference answer of the same task and form (yes/no, a
letter, or the same first two words and word count), marked `"injected": true`. `--copy K`
appends K copy pairs per short prompt instead: two answers drawn from that same pool, the first
preferred and named by the answer fact, whatever the image shows (`"copy": true`, not counted as
hallucination pairs). Only reading the response and the fact ranks them, so they teach the
comparison the reward needs. `--answer-only` gives short questions the answer fact alone (no
caption). `--words` replaces "The correct answer is: " before the answer.

Then, for example:

    factrl train reward --config SEED/rm-facts/config.toml --set train=SEED/OUT \\
        --set out=runs/x --set facts_likelihood=0.5 --set facts_lm_coef=1 --set lr=1e-3

Standard library only. "correct" is not a word of the world's tokenizer: it reads as <unk>.
"""

import argparse
import collections
import json
import os
import random


def reference(record):
    return [t for t in record["conversations"] if t["from"] == "gpt"][-1]["value"]


def form(answer):
    if answer in ("Yes.", "No."):
        return "yes/no"
    if len(answer) == 2 and answer.endswith("."):
        return "letter"
    words = answer.split()
    return f"{' '.join(words[:2])}/{len(words)}"


def pair(prompt, tag, first, second, preference, **fields):
    """A built preference record on a candidate prompt; `fields` follow in the order given."""
    return {
        "id": f"{prompt['id']}-{tag}", "image": prompt["image"], "conversations": prompt["conversations"],
        "output_1": {"from": "llava", "value": first}, "output_2": {"from": "llava", "value": second},
        "preference": preference, **fields,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("seed")
    ap.add_argument("out")
    ap.add_argument("--prefs", help="preference file (default SEED/prefs.json)")
    ap.add_argument("--six", action="store_true", help="all six captions, not the dense one only")
    ap.add_argument("--inject", type=int, default=0, help="built pairs per short prompt")
    ap.add_argument("--answer-only", action="store_true", help="short questions: the answer alone")
    ap.add_argument("--copy", type=int, default=0, help="copy pairs per short prompt")
    ap.add_argument("--words", default="The correct answer is: ", help="what precedes the answer")
    a = ap.parse_args()

    source = a.prefs or os.path.join(a.seed, "prefs.json")
    prefs = json.load(open(source))
    captions = json.load(open(os.path.join(a.seed, "world", "image_to_caption.json")))

    def facts(record):
        own = captions["images/" + os.path.basename(record["image"])]
        if record.get("task") == "description":
            return list(own) if a.six else [own[-1]]
        out = [] if a.answer_only else list(own) if a.six else [own[-1]]
        return out + [a.words + reference(record)]

    for r in prefs:
        r["captions"] = facts(r)

    built = []
    rng = random.Random(0)
    short = [c for c in json.load(open(os.path.join(a.seed, "candidates.json"))) if c["task"] != "description"]
    pool = collections.defaultdict(set)
    for c in short:
        pool[(c["task"], form(reference(c)))].add(reference(c))
    if a.inject:
        for c in short:
            truth = reference(c)
            others = sorted(pool[(c["task"], form(truth))] - {truth})
            if not others:
                continue
            for k in range(a.inject):
                wrong = rng.choice(others)
                first, second, preference = truth, wrong, 1
                if rng.random() < 0.5:
                    first, second, preference = wrong, truth, 2
                built.append(pair(
                    c, f"inj{k}", first, second, preference, hallucination=True,
                    hallucinated_1=preference == 2, hallucinated_2=preference == 1, captions=facts(c),
                    task=c["task"], injected=True,
                ))
    for c in short:
        answers = sorted(pool[(c["task"], form(reference(c)))])
        for k in range(a.copy if len(answers) > 1 else 0):
            said, other = rng.sample(answers, 2)
            built.append(pair(
                c, f"copy{k}", said, other, 1, hallucination=False,
                captions=facts(c)[:-1] + [a.words + said], task=c["task"], copy=True,
            ))
    out = os.path.join(os.path.dirname(source), a.out)
    with open(out + ".tmp", "w") as f:  # renamed when complete: no half-written file under OUT
        json.dump(prefs + built, f)
    os.replace(out + ".tmp", out)
    print(f"{len(prefs)} records with facts, {len(built)} built pairs -> {out}")


if __name__ == "__main__":
    main()
