"""Can a reward model the size of the world's tiny decoder learn the caption lookup at all?

A 4-layer, 128-wide causal transformer (PyTorch, text only: no image, no grading template) is
trained with the Bradley-Terry loss on its last token to rank a world scene's true description
above the same description with one claim made false (an object moved, recoloured, reshaped or
resized, an extra object, a wrong count), given complete facts: the count and one sentence per
object, shuffled, after the response (`after`, the reward prompt's order) or before it (`before`).
Every step draws 32 fresh pairs from the train scenes; held-out accuracy is on 256 pairs of eval
scenes.

    python scripts/rm_lookup_probe.py WORLD after 1500 [LR]
"""
import json, random, sys, time, torch, torch.nn as nn, torch.nn.functional as F
from tokenizers import Tokenizer
torch.set_num_threads(1); torch.manual_seed(0)
world, order, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = Tokenizer.from_file(f'{world}/tokenizer.json')
scenes = json.load(open(f'{world}/scenes.json'))
CELLS = ["top left","top middle","top right","middle left","center","middle right","bottom left","bottom middle","bottom right"]
COLS = sorted({o['colour'] for s in scenes for o in s['objects']}); SHAPES = sorted({o['shape'] for s in scenes for o in s['objects']})
NUM = {1:'one',2:'two',3:'three',4:'four',5:'five',6:'six',7:'seven'}
def count(n): return 'There is one object.' if n==1 else f'There are {NUM[n]} objects.'
def sent(o): return f"A {o['size']} {o['colour']} {o['shape']} is in the {o['cell']}."
def describe(obs, n=None):
    obs = sorted(obs, key=lambda o: CELLS.index(o['cell']))
    return ' '.join([count(len(obs) if n is None else n)] + [sent(o) for o in obs])
def corrupt(obs, rng):
    free = [c for c in CELLS if c not in {o['cell'] for o in obs}]
    bad = [dict(o) for o in obs]; i = rng.randrange(len(bad)); n = None
    k = rng.choice(['move','colour','shape','size','count','extra'])
    if k == 'move' and free: bad[i]['cell'] = rng.choice(free)
    elif k == 'colour': bad[i]['colour'] = rng.choice([c for c in COLS if c != bad[i]['colour']])
    elif k == 'shape': bad[i]['shape'] = rng.choice([c for c in SHAPES if c != bad[i]['shape']])
    elif k == 'size': bad[i]['size'] = 'small' if bad[i]['size']=='large' else 'large'
    elif k == 'extra' and free:
        bad.append({'cell': rng.choice(free), 'colour': rng.choice(COLS), 'shape': rng.choice(SHAPES), 'size': 'large'}); n = len(obs)
    else: n = rng.choice([m for m in range(1,7) if m != len(obs)])
    return describe(bad, n)
def text(obs, resp, rng):
    caps = [count(len(obs))] + [sent(o) for o in obs]; rng.shuffle(caps)
    facts = 'Facts: ' + ' '.join(caps)
    return (resp + ' ' + facts if order == 'after' else facts + ' ' + resp) + ' Score:'
def batch(split, b, rng):
    xs = []
    for _ in range(b):
        s = rng.choice(split); obs = s['objects']
        good = describe(obs); bad = corrupt(obs, rng)
        if bad == good: bad = describe(obs, len(obs) + 1)
        xs += [text(obs, good, rng), text(obs, bad, rng)]
    ids = [tok.encode(x).ids for x in xs]; L = max(map(len, ids))
    t = torch.zeros(len(ids), L, dtype=torch.long); last = torch.tensor([len(i)-1 for i in ids])
    for j, i in enumerate(ids): t[j, :len(i)] = torch.tensor(i)
    return t, last
class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__(); s.n1 = nn.LayerNorm(d); s.n2 = nn.LayerNorm(d); s.h = h
        s.qkv = nn.Linear(d, 3*d); s.o = nn.Linear(d, d); s.ff = nn.Sequential(nn.Linear(d, 352), nn.SiLU(), nn.Linear(352, d))
    def forward(s, x):
        B, T, D = x.shape; q, k, v = s.qkv(s.n1(x)).view(B, T, 3, s.h, D//s.h).permute(2,0,3,1,4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1,2).reshape(B,T,D)
        x = x + s.o(a); return x + s.ff(s.n2(x))
class RM(nn.Module):
    def __init__(s, V, d=128, L=4):
        super().__init__(); s.e = nn.Embedding(V, d); s.p = nn.Embedding(512, d)
        s.b = nn.ModuleList([Block(d, 4) for _ in range(L)]); s.n = nn.LayerNorm(d); s.head = nn.Linear(d, 1)
    def forward(s, t, last):
        x = s.e(t) + s.p(torch.arange(t.shape[1]))
        for b in s.b: x = b(x)
        return s.head(s.n(x))[torch.arange(len(t)), last, 0]
train = [s for s in scenes if s['split']=='train']; held = [s for s in scenes if s['split']=='eval']
m = RM(tok.get_vocab_size()); opt = torch.optim.AdamW(m.parameters(), lr=float(sys.argv[4]) if len(sys.argv)>4 else 1e-3)
rng = random.Random(0); vrng = random.Random(1); vt, vl = batch(held, 256, vrng); t0 = time.time()
for step in range(1, steps+1):
    t, l = batch(train, 32, rng); r = m(t, l).view(-1, 2)
    loss = -F.logsigmoid(r[:,0]-r[:,1]).mean(); opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 0:
        with torch.no_grad(): vr = m(vt, vl).view(-1, 2)
        print(step, f'{time.time()-t0:.0f}s', 'loss', round(loss.item(),3), 'held-out acc', round((vr[:,0]>vr[:,1]).float().mean().item(),3), flush=True)
