"""Can a reward model the size of the world's tiny decoder learn the caption lookup at all?

A causal transformer (PyTorch, text only: no image, no grading template; by default 4 layers,
128 wide, learned positions) is trained with the Bradley-Terry loss on its last token to rank a
world scene's true description above the same description with one claim made false (an object
moved, recoloured, reshaped or resized, an extra object, a wrong count), given complete facts.
ORDER says where and how the facts are written:
  after   the count and one sentence per object, shuffled, after the response (the reward prompt's order)
  before  the same, before the response, so that each claim can be checked against facts already read
  canon   the true description itself after the response: the check is a comparison of two strings
Every step draws 32 fresh pairs from the train scenes; held-out accuracy is on 256 pairs of eval
scenes, printed every 250 steps, overall and by kind of corruption. `--aux` (with `before`) adds
denser supervision: a second head at the last token of every response sentence learns whether
that sentence is one of the facts (binary cross-entropy, added to the loss); its held-out accuracy
is printed too. `--kinds` limits the false claims to some kinds (train and held-out alike).
`--lm N` first trains N steps of next-token prediction on the facts that follow the true
description (the same layout): predicting a fact's cell or colour means finding its object in the
description, the lookup the reward needs; its held-out next-token accuracy is printed, and how
often the facts' mean log-likelihood alone (no reward head) ranks the held-out true description
above the false one.
`--lm-coef C` instead adds C times that loss, on the facts after both responses, to the reward loss.

    python scripts/rm_lookup_probe.py WORLD after 1500 [--lr 1e-3] [--width 128 --depth 4 --ffn 352] [--rope] [--aux] [--kinds colour ...] [--lm 3000 | --lm-coef 1]
"""
import argparse, json, random, time, torch, torch.nn as nn, torch.nn.functional as F
from tokenizers import Tokenizer
ap = argparse.ArgumentParser()
ap.add_argument('world'); ap.add_argument('order', choices=['after', 'before', 'canon']); ap.add_argument('steps', type=int)
ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--width', type=int, default=128)
ap.add_argument('--depth', type=int, default=4); ap.add_argument('--ffn', type=int, default=352)
ap.add_argument('--rope', action='store_true', help='rotary positions (as the decoder has) instead of learned ones')
ap.add_argument('--aux', action='store_true')
ap.add_argument('--lm', type=int, default=0, metavar='STEPS',
                help='first train this many steps of next-token prediction on the facts after the true description')
ap.add_argument('--lm-coef', type=float, default=0.0, metavar='C',
                help='add C times next-token prediction of the facts (after both responses) to the reward loss')
KINDS = ['move','colour','shape','size','count','extra']
ap.add_argument('--kinds', nargs='+', choices=KINDS, default=KINDS, help='the kinds of false claim to draw from')
args = ap.parse_args(); order = args.order
if args.aux and order != 'before': ap.error('--aux needs the facts before the response')
if (args.lm or args.lm_coef) and order == 'before': ap.error('--lm and --lm-coef need the facts after the response')
torch.set_num_threads(1); torch.manual_seed(0)
tok = Tokenizer.from_file(f'{args.world}/tokenizer.json')
scenes = json.load(open(f'{args.world}/scenes.json'))
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
    k = rng.choice(args.kinds)
    if k == 'move' and free: bad[i]['cell'] = rng.choice(free)
    elif k == 'colour': bad[i]['colour'] = rng.choice([c for c in COLS if c != bad[i]['colour']])
    elif k == 'shape': bad[i]['shape'] = rng.choice([c for c in SHAPES if c != bad[i]['shape']])
    elif k == 'size': bad[i]['size'] = 'small' if bad[i]['size']=='large' else 'large'
    elif k == 'extra' and free:
        bad.append({'cell': rng.choice(free), 'colour': rng.choice(COLS), 'shape': rng.choice(SHAPES), 'size': 'large'}); n = len(obs)
    else: k = 'count'; n = rng.choice([m for m in range(1,7) if m != len(obs)])
    return describe(bad, n), k
def text(obs, resp, rng):
    """The probe's input and the character offset where the response starts."""
    caps = [count(len(obs))] + [sent(o) for o in obs]; rng.shuffle(caps)
    facts = 'Facts: ' + (describe(obs) if order == 'canon' else ' '.join(caps))
    if order == 'before': return facts + ' ' + resp + ' Score:', len(facts) + 1
    return resp + ' ' + facts + ' Score:', 0
def batch(split, b, rng):
    """Token ids, each row's last position, the per-sentence labels (-1 where there is none) and
    each pair's kind of corruption."""
    xs = []; kinds = []
    for _ in range(b):
        s = rng.choice(split); obs = s['objects']
        good = describe(obs); bad, k = corrupt(obs, rng)
        if bad == good: bad, k = describe(obs, len(obs) + 1), 'count'
        kinds.append(k)
        facts = {count(len(obs))} | {sent(o) for o in obs}
        for resp in (good, bad):
            x, at = text(obs, resp, rng)
            # each sentence ends in '.'; its label sits on the token holding that '.'
            ends = [at + i for i, ch in enumerate(resp) if ch == '.']
            starts = [at] + [e + 2 for e in ends[:-1]]
            xs.append((x, [(e, x[a:e + 1] in facts) for a, e in zip(starts, ends)]))
    encs = [tok.encode(x) for x, _ in xs]; L = max(len(e.ids) for e in encs)
    t = torch.zeros(len(encs), L, dtype=torch.long); last = torch.tensor([len(e.ids)-1 for e in encs])
    aux = torch.full((len(encs), L), -1.0)
    for j, (e, (_, labels)) in enumerate(zip(encs, xs)):
        t[j, :len(e.ids)] = torch.tensor(e.ids)
        for c, ok in labels:
            if (pos := e.char_to_token(c)) is not None: aux[j, pos] = float(ok)
    return t, last, aux, kinds, facts_mask(encs, [x for x, _ in xs], L)
def facts_mask(encs, texts, L):
    """Positions whose next token belongs to the facts (the texts put them after the response)."""
    mask = torch.zeros(len(encs), L, dtype=torch.bool)
    for j, (e, x) in enumerate(zip(encs, texts)):
        mask[j, e.char_to_token(x.index('Facts:')):len(e.ids) - 1] = True
    return mask
def lm_batch(split, b, rng):
    """Token ids of true descriptions followed by their facts (ORDER's layout) and a mask of the
    positions whose next token is one of the facts'."""
    texts = []
    for _ in range(b):
        obs = rng.choice(split)['objects']; texts.append(text(obs, describe(obs), rng)[0])
    encs = [tok.encode(x) for x in texts]; L = max(len(e.ids) for e in encs)
    t = torch.zeros(b, L, dtype=torch.long)
    for j, e in enumerate(encs): t[j, :len(e.ids)] = torch.tensor(e.ids)
    return t, facts_mask(encs, texts, L)
def rotate(x):
    """Rotary position embedding over the last dimension of [B, H, T, Dh] (LLaMA's half split)."""
    T, Dh = x.shape[-2], x.shape[-1]
    f = torch.outer(torch.arange(T, dtype=torch.float), 10000.0 ** (-torch.arange(0, Dh, 2).float() / Dh))
    cos, sin = torch.cat([f.cos(), f.cos()], -1), torch.cat([f.sin(), f.sin()], -1)
    x1, x2 = x[..., :Dh//2], x[..., Dh//2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin
class Block(nn.Module):
    def __init__(s, d, h, ffn):
        super().__init__(); s.n1 = nn.LayerNorm(d); s.n2 = nn.LayerNorm(d); s.h = h
        s.qkv = nn.Linear(d, 3*d); s.o = nn.Linear(d, d); s.ff = nn.Sequential(nn.Linear(d, ffn), nn.SiLU(), nn.Linear(ffn, d))
    def forward(s, x):
        B, T, D = x.shape; q, k, v = s.qkv(s.n1(x)).view(B, T, 3, s.h, D//s.h).permute(2,0,3,1,4)
        if args.rope: q, k = rotate(q), rotate(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1,2).reshape(B,T,D)
        x = x + s.o(a); return x + s.ff(s.n2(x))
class RM(nn.Module):
    def __init__(s, V, d, L, ffn):
        # the learned positions and the aux head exist in every run (unused with --rope / without
        # --aux) so that every run starts from the same initial weights
        super().__init__(); s.e = nn.Embedding(V, d); s.p = nn.Embedding(512, d)
        s.b = nn.ModuleList([Block(d, d//32, ffn) for _ in range(L)]); s.n = nn.LayerNorm(d)
        s.head = nn.Linear(d, 1); s.aux = nn.Linear(d, 1); s.lm = nn.Linear(d, V)
    def hidden(s, t):
        x = s.e(t) + (0 if args.rope else s.p(torch.arange(t.shape[1])))
        for b in s.b: x = b(x)
        return s.n(x)
    def heads(s, h, last):
        return s.head(h)[torch.arange(len(h)), last, 0], s.aux(h)[..., 0]
    def forward(s, t, last):
        return s.heads(s.hidden(t), last)
train = [s for s in scenes if s['split']=='train']; held = [s for s in scenes if s['split']=='eval']
m = RM(tok.get_vocab_size(), args.width, args.depth, args.ffn); opt = torch.optim.AdamW(m.parameters(), lr=args.lr)
rng = random.Random(0); vrng = random.Random(1); vt, vl, va, vk, vfm = batch(held, 256, vrng); t0 = time.time()
if args.lm:
    lrng = random.Random(2); lt, lmask = lm_batch(held, 256, random.Random(3))
    for step in range(1, args.lm + 1):
        t, mask = lm_batch(train, 32, lrng); logits = m.lm(m.hidden(t))
        loss = F.cross_entropy(logits[:, :-1][mask[:, :-1]], t[:, 1:][mask[:, :-1]])
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 250 == 0:
            with torch.no_grad(): p = m.lm(m.hidden(lt))[:, :-1].argmax(-1)
            acc = (p[lmask[:, :-1]] == lt[:, 1:][lmask[:, :-1]]).float().mean().item()
            with torch.no_grad(): lp = m.lm(m.hidden(vt))[:, :-1].log_softmax(-1).gather(-1, vt[:, 1:, None])[..., 0]
            fm = vfm[:, :-1]; ll = ((lp * fm).sum(1) / fm.sum(1)).view(-1, 2); right = (ll[:, 0] > ll[:, 1]).tolist()
            print('lm', step, f'{time.time()-t0:.0f}s', 'loss', round(loss.item(), 3), f'held-out next-token acc {acc:.3f},',
                  f'facts log-likelihood ranks {sum(right)/len(right):.3f} of the reward pairs (' + ', '.join(
                  f'{k} {sum(r for r, q in zip(right, vk) if q == k)/vk.count(k):.2f}' for k in sorted(set(vk))) + ')', flush=True)
    opt = torch.optim.AdamW(m.parameters(), lr=args.lr)
for step in range(1, args.steps+1):
    t, l, a, _, fm = batch(train, 32, rng)
    h = m.hidden(t); r, per = m.heads(h, l); r = r.view(-1, 2)
    loss = -F.logsigmoid(r[:,0]-r[:,1]).mean()
    if args.lm_coef: loss = loss + args.lm_coef * F.cross_entropy(m.lm(h)[:, :-1][fm[:, :-1]], t[:, 1:][fm[:, :-1]])
    if args.aux: loss = loss + F.binary_cross_entropy_with_logits(per[a >= 0], a[a >= 0])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 0:
        with torch.no_grad(): vr, vper = m(vt, vl)
        vr = vr.view(-1, 2); right = (vr[:,0]>vr[:,1]).tolist()
        msg = f'held-out acc {sum(right)/len(right):.3f} (' + ', '.join(
            f'{k} {sum(r for r, q in zip(right, vk) if q == k)/vk.count(k):.2f}' for k in sorted(set(vk))) + ')'
        if args.aux: msg += f' per-sentence acc {((vper[va >= 0] > 0).float() == va[va >= 0]).float().mean().item():.3f}'
        print(step, f'{time.time()-t0:.0f}s', 'loss', round(loss.item(),3), msg, flush=True)
