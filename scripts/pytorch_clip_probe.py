# Diagnostic behind README "Stage 0": in PyTorch / transformers, does a contrastively pretrained
# (then frozen) vision tower make a tiny LLaVA learn to use the image faster in stage 1?
#   python3 scripts/pytorch_clip_probe.py WORLD MODEL CLIP_STEPS STEPS
# WORLD: a `factrl world` folder; MODEL: any factrl model folder of the same config (its
# config.json and preprocessor_config.json are used, its weights are not); CLIP_STEPS = 0 trains
# the tower jointly instead. Prints the held-out caption loss every 50 steps.
import torch, json, random, sys, time
import numpy as np
from PIL import Image
from tokenizers import Tokenizer
from transformers import LlavaForConditionalGeneration, LlavaConfig
torch.manual_seed(0); random.seed(0); torch.set_num_threads(2)
W=sys.argv[1].rstrip('/')+'/'
src=sys.argv[2]
clip_steps=int(sys.argv[3]); steps=int(sys.argv[4])
cfg=LlavaConfig.from_pretrained(src)
m=LlavaForConditionalGeneration(cfg)
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
data=json.load(open(W+'pretrain.json'))
val=json.load(open(W+'pretrain_val.json'))[:200]
tower=m.model.vision_tower if hasattr(m,'model') and hasattr(m.model,'vision_tower') else m.vision_tower
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
    for g in opt.param_groups: g['lr']=2e-3*min(1,(step+1)/30)
    out=m(input_ids=ids, attention_mask=att, pixel_values=pv, labels=lab)
    opt.zero_grad(); out.loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(),1.0); opt.step()
