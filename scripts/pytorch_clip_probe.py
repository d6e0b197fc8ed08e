# PyTorch / transformers diagnostics behind README "Stage 0" and "What the vision tower changed".
#   python3 scripts/pytorch_clip_probe.py WORLD MODEL CLIP_STEPS STEPS [--load] [--data TRAIN VAL] [--lr LR]
# WORLD: a `factrl world` folder; MODEL: a factrl model folder (config.json and
# preprocessor_config.json; its weights too with --load, the tower then frozen). CLIP_STEPS > 0
# first trains the tower contrastively (bag of words) and freezes it. Then STEPS steps of
# LLaVA's loss on WORLD/pretrain.json (or --data TRAIN VAL, files in WORLD), printing the held-out
# loss every 50 steps. README figures: `WORLD MODEL 300 300` against `WORLD MODEL 0 300`, and
# `WORLD STAGE1 0 300 --load --lookup --lr 1e-3 --warmup 10`.
import argparse, torch, json, random, sys, time
import numpy as np
from PIL import Image
from tokenizers import Tokenizer
from transformers import LlavaForConditionalGeneration, LlavaConfig
torch.manual_seed(0); random.seed(0); torch.set_num_threads(2)
ap=argparse.ArgumentParser()
ap.add_argument('world'); ap.add_argument('model'); ap.add_argument('clip_steps',type=int); ap.add_argument('steps',type=int)
ap.add_argument('--load',action='store_true'); ap.add_argument('--data',nargs=2,default=['pretrain.json','pretrain_val.json'])
ap.add_argument('--lookup',action='store_true'); ap.add_argument('--lr',type=float,default=2e-3); ap.add_argument('--warmup',type=int,default=30)
a=ap.parse_args()
W=a.world.rstrip('/')+'/'; src=a.model; clip_steps=a.clip_steps; steps=a.steps
cfg=LlavaConfig.from_pretrained(src)
m=LlavaForConditionalGeneration.from_pretrained(src) if a.load else LlavaForConditionalGeneration(cfg)
tok=Tokenizer.from_file(W+'tokenizer.json')
pre=json.load(open(src+'/preprocessor_config.json'))
mean=np.array(pre['image_mean']); std=np.array(pre['image_std']); S=pre['crop_size']['height'] if isinstance(pre.get('crop_size'),dict) else 48
print('size',S,'mean',mean)
cache={}
def px(p):
    if p not in cache:
        im=Image.open(W+p).convert('RGB').resize((S,S), Image.BICUBIC)
        a=(np.asarray(im).astype(np.float32)/255.-mean)/std
        cache[p]=torch.tensor(a,dtype=torch.float32).permute(2,0,1)
    return cache[p]
data=json.load(open(W+a.data[0]))
val=json.load(open(W+a.data[1]))[:200]
if a.lookup:
    # Existence questions with the image's stage-1 caption written into the prompt: the answer is in
    # the text, so only looking up the named object is left to learn.
    caps={r['image']:r['conversations'][1]['value'] for f in ('pretrain.json','pretrain_val.json') for r in json.load(open(W+f))}
    def lookup(f):
        out=[]
        for r in json.load(open(W+f)):
            if r.get('task')=='existence' and r['image'] in caps:
                q=r['conversations'][0]['value'].replace('<image>\n','',1)
                r['conversations'][0]['value']='<image>\nThe image shows: '+caps[r['image']]+'\n'+q
                out.append(r)
        return out
    data=lookup('sft.json'); val=lookup('sft_val.json')[:200]
tower=m.model.vision_tower if hasattr(m,'model') and hasattr(m.model,'vision_tower') else m.vision_tower
if a.load:
    for p in tower.parameters(): p.requires_grad=False
V=tok.get_vocab_size()
if clip_steps>0:
    d=cfg.vision_config.hidden_size
    temb=torch.nn.EmbeddingBag(V,d,mode='mean'); iproj=torch.nn.Linear(d,d); tproj=torch.nn.Linear(d,d)
    scale=torch.nn.Parameter(torch.tensor(2.66))
    ps=list(tower.parameters())+list(temb.parameters())+list(iproj.parameters())+list(tproj.parameters())+[scale]
    opt=torch.optim.AdamW(ps,lr=2e-3,weight_decay=0.0); t0=time.time()
    for step in range(clip_steps):
        b=random.sample(data,128)
        pv=torch.stack([px(r['image']) for r in b])
        h=tower(pv,output_hidden_states=True).hidden_states[-1][:,1:].mean(1)
        ie=torch.nn.functional.normalize(iproj(h),dim=-1)
        ids=[tok.encode(r['conversations'][1]['value'],add_special_tokens=False).ids for r in b]
        flat=torch.tensor(sum(ids,[])); off=torch.tensor([0]+list(np.cumsum([len(x) for x in ids])[:-1]))
        te=torch.nn.functional.normalize(tproj(temb(flat,off)),dim=-1)
        lg=scale.exp()*ie@te.T; y=torch.arange(len(b))
        loss=(torch.nn.functional.cross_entropy(lg,y)+torch.nn.functional.cross_entropy(lg.T,y))/2
        opt.zero_grad(); loss.backward(); opt.step()
        if step%25==0: print('clip',step,round(loss.item(),3),round((lg.argmax(1)==y).float().mean().item(),3),round(time.time()-t0,1),flush=True)
    for p in tower.parameters(): p.requires_grad=False
def enc(r):
    q=r['conversations'][0]['value']; a=r['conversations'][1]['value']
    p=tok.encode(f'USER: {q} ASSISTANT:', add_special_tokens=False).ids
    t=tok.encode(f' {a}</s>', add_special_tokens=False).ids
    p=[1]+p; i=p.index(cfg.image_token_index); n=(S//cfg.vision_config.patch_size)**2
    p=p[:i]+[cfg.image_token_index]*n+p[i+1:]
    return p+t, [-100]*len(p)+t
def batch(rs):
    es=[enc(r) for r in rs]; L=max(len(e[0]) for e in es)
    ids=torch.tensor([e[0]+[0]*(L-len(e[0])) for e in es]); lab=torch.tensor([e[1]+[-100]*(L-len(e[1])) for e in es])
    att=torch.tensor([[1]*len(e[0])+[0]*(L-len(e[0])) for e in es])
    return ids,att,torch.stack([px(r['image']) for r in rs]),lab
opt=torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
t0=time.time()
for step in range(steps+1):
    if step%50==0:
        with torch.no_grad():
            ls=[m(input_ids=i,attention_mask=a,pixel_values=p,labels=l).loss.item() for i,a,p,l in [batch(val[k:k+50]) for k in range(0,200,50)]]
        print('eval',step,round(sum(ls)/len(ls),4),round(time.time()-t0,1),flush=True)
    if step==steps: break
    ids,att,pv,lab=batch(random.sample(data,32))
    for g in opt.param_groups: g['lr']=a.lr*min(1,(step+1)/a.warmup)
    out=m(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab)
    opt.zero_grad(); out.loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(),1.0); opt.step()
