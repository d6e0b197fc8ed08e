# Linear probes on a factrl model's vision-tower patch features (README, "Stage 2"): how well one
# patch's feature tells the colour and the shape of the object under the patch centre, and how much
# a background patch knows about the image's objects (information spread across patches).
#   python3 scripts/patch_probe.py WORLD MODEL [LAYER]
# WORLD: a `factrl world` folder; MODEL: a factrl model folder (loaded with transformers);
# LAYER: the tower's hidden state to probe (default -1, the tiny config's feature layer).
import json, sys
import numpy as np, torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

torch.set_num_threads(2)
W = sys.argv[1].rstrip('/') + '/'; src = sys.argv[2]; layer = int(sys.argv[3]) if len(sys.argv) > 3 else -1
m = LlavaForConditionalGeneration.from_pretrained(src).eval()
tower = m.model.vision_tower if hasattr(m.model, 'vision_tower') else m.vision_tower
pre = json.load(open(src + '/preprocessor_config.json'))
mean, std = np.array(pre['image_mean']), np.array(pre['image_std'])
vc = m.config.vision_config; S, P = vc.image_size, vc.patch_size; G = S // P
scenes = json.load(open(W + 'scenes.json'))[:1500]
X = []
for s in scenes:
    im = Image.open(W + s['image']).convert('RGB')
    side = im.size[0]
    im = im.resize((S, S), Image.BICUBIC)
    X.append(torch.tensor(((np.asarray(im) / 255. - mean) / std).astype(np.float32)).permute(2, 0, 1))
with torch.no_grad():
    H = tower(torch.stack(X), output_hidden_states=True).hidden_states[layer][:, 1:, :].numpy()
cols = sorted({o['colour'] for s in scenes for o in s['objects']})
shapes = sorted({o['shape'] for s in scenes for o in s['objects']})

def under(s, p):
    # The object whose box holds the patch centre, in the image's own pixels.
    r, c = divmod(p, G); y, x = (r + 0.5) * side / G, (c + 0.5) * side / G
    return next((o for o in s['objects'] if o['bbox'][0] <= x <= o['bbox'][2] and o['bbox'][1] <= y <= o['bbox'][3]), None)

def probe(feats, ys, k):
    # Ridge regression onto one-hot labels, 70/30 split; held-out accuracy.
    n = len(ys); tr = np.arange(n) < int(n * 0.7); F = np.c_[feats, np.ones(n)]; Y = np.eye(k)[ys]
    Wt = np.linalg.solve(F[tr].T @ F[tr] + 1e-2 * np.eye(F.shape[1]), F[tr].T @ Y[tr])
    return ((F[~tr] @ Wt).argmax(1) == np.array(ys)[~tr]).mean()

obj, yc, ys, bg, yb = [], [], [], [], []
for i, s in enumerate(scenes):
    for p in range(G * G):
        o = under(s, p)
        if o:
            obj.append(H[i, p]); yc.append(cols.index(o['colour'])); ys.append(shapes.index(o['shape']))
        else:
            bg.append(H[i, p]); yb.append(cols.index(s['objects'][0]['colour']))
chance = lambda y: np.bincount(y).max() / len(y)
print(f'colour of the object under a patch: {probe(np.array(obj), yc, len(cols)):.3f} (majority {chance(yc):.3f})')
print(f'shape of the object under a patch:  {probe(np.array(obj), ys, len(shapes)):.3f} (majority {chance(ys):.3f})')
print(f'background patch -> colour of the first object: {probe(np.array(bg[:20000]), yb[:20000], len(cols)):.3f} (majority {chance(yb):.3f})')

# Object level: the mean feature of the patches whose centre lies on an object, which is what a
# decoder attending to those patches can read; by size, since small objects cover fewest pixels.
of, ofs, osz = [], [], []
for i, s in enumerate(scenes):
    for o in s['objects']:
        ps = [p for p in range(G * G) if under(s, p) is o]
        if ps:
            of.append(H[i, ps].mean(0)); ofs.append(shapes.index(o['shape'])); osz.append(o['size'])
of, ofs, osz = np.array(of), np.array(ofs), np.array(osz)
print(f'shape of an object from its patches: {probe(of, list(ofs), len(shapes)):.3f}')
for size in sorted(set(osz)):
    m = osz == size
    print(f'  {size} objects ({m.sum()}): {probe(of[m], list(ofs[m]), len(shapes)):.3f}')
