#!/usr/bin/env python3
"""Can the decoder learn to read facts from its prompt? (README: "Why the reward models stay at
chance", the reading item.)

`build SEED OUT [--dense] [--init DIR] [--source prefs|sft] [--epochs N]` turns a demo seed
folder's preferences into an SFT run that predicts each pair's chosen response from the image's
captions and the question, the image replaced by a flat grey one (so the captions are the only
source): OUT/train.json (the pairs of nine images in ten), OUT/val.json, OUT/sft.toml (N epochs,
5 unless given, at lr 2e-3, from SEED/sft/final unless --init), and two `factrl score` inputs over the held-out images' pairs in which exactly one
response hallucinates: OUT/held.jsonl (captions, grey image: score it with the trained model) and
OUT/held_image.jsonl (the image, no captions: score it with the SFT model, the baseline).
`--dense` keeps only the last caption (the dense one, the true description); otherwise all of
them, shuffled once per record. `--source sft` trains on the world's SFT records instead (true
answers to every task, on images the preferences do not use), with the same held-out pairs.

`rank OUT SCORES.jsonl` prints how often the clean response's summed log-prob is the higher, by
task, for judged pairs and (apart) for injected ones.

  python3 scripts/reading_probe.py build runs/demo9/seed-0 /tmp/read --dense
  factrl train sft --config /tmp/read/sft.toml
  factrl score --model /tmp/read/model/final --template vicuna_v1 \\
      --input /tmp/read/held.jsonl --output /tmp/read/scores.jsonl
  python3 scripts/reading_probe.py rank /tmp/read /tmp/read/scores.jsonl
Standard library only.
"""
import argparse
import collections
import json
import os
import random
import struct
import zlib


def grey_png(path, size):
    # CLIP's mean colour: what the processor maps to about zero.
    raw = b''.join(b'\x00' + bytes([122, 116, 104]) * size for _ in range(size))

    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))

    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', size, size, 8, 2, 0, 0, 0))
                + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    return struct.unpack('>I', head[16:20])[0]


def build(a):
    seed = os.path.abspath(a.seed)
    prefs = json.load(open(os.path.join(seed, 'prefs.json')))
    caps = json.load(open(os.path.join(seed, 'world', 'image_to_caption.json')))
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    rng = random.Random(0)

    def image(p):
        return os.path.join(seed, p['image'])

    def prompt(p):
        listed = list(caps['images/' + os.path.basename(p['image'])])
        if a.dense:
            listed = listed[-1:]
        else:
            rng.shuffle(listed)
        question = p['conversations'][0]['value'].replace('<image>\n', '', 1)
        return '<image>\nCaptions: ' + ' '.join(listed) + '\n' + question

    def held(p):
        return int(os.path.basename(p['image'])[:6]) % 10 == 0

    train, rows, meta = [], [], []
    if a.source == 'sft':
        # The world's SFT records (other images than the preferences'), every turn kept.
        for r in json.load(open(os.path.join(seed, 'world', 'sft.json'))):
            turns = [dict(t) for t in r['conversations']]
            turns[0]['value'] = prompt({'image': r['image'], 'conversations': turns})
            train.append({'id': r['id'], 'image': 'grey.png', 'task': r.get('task'), 'conversations': turns})
    for p in prefs:
        if a.source == 'prefs' and not held(p):
            chosen = p['output_1'] if p['preference'] == 1 else p['output_2']
            train.append({'id': p['id'], 'image': 'grey.png', 'task': p.get('task'), 'conversations': [
                {'from': 'human', 'value': prompt(p)}, {'from': 'gpt', 'value': chosen['value']}]})
        elif held(p) and p.get('hallucination') and p['hallucinated_1'] != p['hallucinated_2']:
            clean, bad = (p['output_1'], p['output_2']) if p['hallucinated_2'] else (p['output_2'], p['output_1'])
            text = prompt(p)
            for r in (clean, bad):
                rows.append(({'image': os.path.join(out, 'grey.png'), 'prompt': text, 'response': r['value']},
                             {'image': image(p), 'prompt': p['conversations'][0]['value'], 'response': r['value']}))
            meta.append({'task': p.get('task'), 'injected': bool(p.get('injected'))})
    grey_png(os.path.join(out, 'grey.png'), png_size(image(prefs[0])))
    json.dump(train, open(os.path.join(out, 'train.json'), 'w'))
    json.dump(train[:200], open(os.path.join(out, 'val.json'), 'w'))
    json.dump(meta, open(os.path.join(out, 'pairs.json'), 'w'))
    for i, name in enumerate(['held.jsonl', 'held_image.jsonl']):
        with open(os.path.join(out, name), 'w') as f:
            f.writelines(json.dumps(r[i]) + '\n' for r in rows)
    init = os.path.abspath(a.init or os.path.join(seed, 'sft', 'final'))
    with open(os.path.join(out, 'sft.toml'), 'w') as f:
        f.write(f'''out = "{out}/model"
train = "{out}/train.json"
val = "{out}/val.json"
val_records = 200
init = "{init}"
trainable = ["projector", "decoder"]
lr = 0.002
min_lr = 0.0001
warmup_steps = 20
weight_decay = 0.0
grad_clip = 1.0
loss_average = "token"
batch_size = 16
grad_accum = 1
epochs = {a.epochs}
seed = 0
log_every = 10
eval_every = 200
checkpoint_every = 200
''')
    print(f'{len(train)} training records, {len(meta)} held-out pairs; config {out}/sft.toml')


def rank(a):
    meta = json.load(open(os.path.join(a.out, 'pairs.json')))
    scores = [json.loads(line)['sum'] for line in open(a.scores)]
    if len(scores) != 2 * len(meta):
        raise SystemExit(f'{a.scores}: {len(scores)} lines, but {a.out}/pairs.json has {len(meta)} pairs '
                         f'({2 * len(meta)} responses): score the held.jsonl (or held_image.jsonl) of that folder')
    for injected in (False, True):
        right, seen = collections.Counter(), collections.Counter()
        for i, m in enumerate(meta):
            if m['injected'] == injected:
                seen[m['task']] += 1
                right[m['task']] += scores[2 * i] > scores[2 * i + 1]
        if seen:
            tasks = ' '.join(f'{t} {right[t]}/{seen[t]}' for t in sorted(seen))
            total = sum(seen.values())
            print(f"{'injected' if injected else 'judged'}: {sum(right.values()) / total:.3f} of {total} ({tasks})")


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
sub = ap.add_subparsers(dest='cmd', required=True)
b = sub.add_parser('build')
b.add_argument('seed'); b.add_argument('out')
b.add_argument('--dense', action='store_true'); b.add_argument('--init')
b.add_argument('--source', choices=['prefs', 'sft'], default='prefs')
b.add_argument('--epochs', type=int, default=5)
r = sub.add_parser('rank')
r.add_argument('out'); r.add_argument('scores')
args = ap.parse_args()
build(args) if args.cmd == 'build' else rank(args)
