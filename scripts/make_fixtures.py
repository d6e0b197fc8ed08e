#!/usr/bin/env python3
"""Build tiny random llava-hf checkpoints and reference outputs for factrl parity tests.

What it makes (everything under tests/fixtures/tiny-llava/, see the README.md there):
  * a tiny WordLevel tokenizer (tokenizer.json + tokenizer_config.json + special_tokens_map.json),
  * tiny random LlavaForConditionalGeneration checkpoints (CLIP vision tower + Llama text model)
    in several on-disk variants: base, legacy, modern, sharded, bf16, f16, rope_parameters,
    full_strategy (each a complete model folder: config.json, safetensors, tokenizer,
    preprocessor_config.json, processor_config.json, generation_config.json),
  * a few small PNG images (square, odd-sized landscape, RGBA, grayscale portrait),
  * cases.json: token ids, pixel values, response log-probs, last-position logits and greedy
    decodes computed with Hugging Face transformers in float32,
  * resize_reference.json: PIL bicubic resize outputs plus an exact re-implementation check,
    so the Rust side can justify its image tolerance.

Every saved folder is loaded back with LlavaForConditionalGeneration.from_pretrained and must
give exactly the logits of the in-memory reference model; all references are additionally
cross-checked against an independent plain-torch re-implementation of the forward pass
(`manual_forward` below, which doubles as an executable spec of the conventions) in float64.

Deterministic (fixed seeds). Rerun from the repository root with:

    /work/venv-ref/bin/python scripts/make_fixtures.py

(venv: python3 -m venv /work/venv-ref && /work/venv-ref/bin/pip install torch transformers
safetensors tokenizers pillow numpy). Output is rewritten in place, except the hand-written
tests/fixtures/tiny-llava/README.md (update it when conventions change).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import safetensors
import tokenizers
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tiny-llava"

SEED = 20240611
PAD_ID, BOS_ID, EOS_ID, UNK_ID, IMAGE_ID = 3, 1, 2, 0, 4
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
WORDS = (
    "USER ASSISTANT what is here there a an the this that it its cat dog bird fish tree house "
    "red green blue yellow black white grey small big tiny picture image photo shows of in on "
    "and with no yes color colors shape square circle line lines pattern noise one two three "
    "four many describe see do you i can are left right top bottom corner bright dark"
).split()
PUNCT = [":", "?", ".", ",", "!", "'", "-", "(", ")"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

IMAGE_SIZE, PATCH = 16, 4
GREEDY_NEW = 20
# greedy decoding never picks a special token (the random model would otherwise emit <image>/<pad>/</s>)
SUPPRESS = [UNK_ID, BOS_ID, EOS_ID, PAD_ID, IMAGE_ID]


# --------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer() -> Tokenizer:
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in WORDS + PUNCT:
        assert w not in vocab, w
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", BOS_ID)]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path) -> None:
    tok.save(str(folder / "tokenizer.json"))
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIALS)
    }
    # The transformers 4.x PreTrainedTokenizerFast layout (transformers 5 loads it too; it
    # would itself write tokenizer_class "TokenizersBackend" and no special_tokens_map.json).
    cfg = {
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<image>"],
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "extra_special_tokens": {},
        "model_max_length": 1024,
        "pad_token": "<pad>",
        "padding_side": "right",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
    }
    write_json(folder / "tokenizer_config.json", cfg)
    stm = {
        "additional_special_tokens": ["<image>"],
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
    }
    write_json(folder / "special_tokens_map.json", stm)


# --------------------------------------------------------------------------------------------
# images and preprocessing


def preprocessor_config() -> dict:
    return {
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": IMAGE_SIZE},
    }


def processor_config(strategy: str) -> dict:
    return {
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "patch_size": PATCH,
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": strategy,
    }


def make_images(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    def pattern(w: int, h: int) -> np.ndarray:
        # smooth gradients + blocks + noise: large pixel-to-pixel jumps stress the resampler
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 255 * (xx / max(w - 1, 1))
        g = 255 * (yy / max(h - 1, 1))
        b = 127.5 + 127.5 * np.sin(xx * 0.9 + yy * 0.5)
        img = np.stack([r, g, b], -1)
        img[(xx.astype(int) // 3 + yy.astype(int) // 5) % 2 == 0] *= 0.5
        img += rng.normal(0, 25, img.shape)
        return np.clip(np.round(img), 0, 255).astype(np.uint8)

    out = {}
    Image.fromarray(pattern(16, 16), "RGB").save(folder / "square16.png")
    out["square16"] = "images/square16.png"
    Image.fromarray(pattern(23, 19), "RGB").save(folder / "odd23x19.png")
    out["odd23x19"] = "images/odd23x19.png"
    rgb = pattern(16, 16)
    alpha = np.full((16, 16), 255, np.uint8)
    alpha[:, 0:4] = 0  # fully transparent stripe -> white after compositing
    alpha[:, 4:8] = 128
    alpha[:, 8:12] = rng.integers(1, 255, (16, 4)).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba16.png")
    out["rgba16"] = "images/rgba16.png"
    gray = pattern(18, 25)[..., 0]
    Image.fromarray(gray, "L").save(folder / "gray18x25.png")
    out["gray18x25"] = "images/gray18x25.png"
    return out


# PIL's bicubic resampling (libImaging/Resample.c) re-implemented exactly, to document the
# algorithm for the Rust side and to measure what a float implementation would differ by.
def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _coeffs(in_size: int, out_size: int):
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        w = np.array([_bicubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax - xmin)])
        w = w / w.sum()
        rows.append((xmin, w))
    return rows


def resize_bicubic_reference(img: np.ndarray, out_w: int, out_h: int, mode: str) -> np.ndarray:
    """img: HxWxC uint8; horizontal pass first, then vertical (as PIL). mode:
    "pil": 22-bit fixed-point coefficients, uint8 round+clip after each pass (bit-exact PIL);
    "float_u8_each_pass": float64 coefficients, round-half-up + clip to 0..255 after each pass;
    "float_once": float64 throughout, one round+clip at the very end (no intermediate clipping)."""
    prec = 22
    h, w, _ = img.shape

    def pass_(src: np.ndarray, rows, axis: int) -> np.ndarray:
        src = np.moveaxis(src, axis, 0)
        out = []
        for xmin, wts in rows:
            seg = src[xmin : xmin + len(wts)]
            if mode == "pil":
                k = np.where(wts < 0, -0.5 + wts * (1 << prec), 0.5 + wts * (1 << prec)).astype(np.int64)
                acc = (1 << (prec - 1)) + np.tensordot(k, seg.astype(np.int64), axes=(0, 0))
                out.append(np.clip(acc >> prec, 0, 255))
            elif mode == "float_u8_each_pass":
                out.append(np.clip(np.floor(np.tensordot(wts, seg.astype(np.float64), axes=(0, 0)) + 0.5), 0, 255))
            else:
                out.append(np.tensordot(wts, seg.astype(np.float64), axes=(0, 0)))
        return np.moveaxis(np.stack(out), 0, axis)

    x = img
    if out_w != w:
        x = pass_(x, _coeffs(w, out_w), 1)
    if out_h != h:
        x = pass_(x, _coeffs(h, out_h), 0)
    return np.clip(np.floor(np.asarray(x, np.float64) + 0.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# model


def make_config(theta: float = 10000.0, strategy: str = "default", layer: int = -2, vocab: int = 0) -> LlavaConfig:
    vc = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=32,
    )
    tc = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=theta,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    n_img = (IMAGE_SIZE // PATCH) ** 2 + (1 if strategy == "full" else 0)
    return LlavaConfig(
        vision_config=vc,
        text_config=tc,
        image_token_index=IMAGE_ID,
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        pad_token_id=PAD_ID,
        image_seq_length=n_img,
        tie_word_embeddings=False,
    )


def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial random weights: N(0, 0.2) matrices/embeddings, N(0, 0.1) biases, 1 + N(0, 0.2)
    norm weights, so that a missed bias / norm weight / transposition shows up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def legacy_key(k: str) -> str:
    """in-memory transformers-5 key -> original llava-hf (transformers <4.52) key."""
    if k == "lm_head.weight":
        return "language_model.lm_head.weight"
    if k.startswith("model.language_model."):
        return "language_model.model." + k[len("model.language_model.") :]
    if k.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + k[len("model.vision_tower.") :]
    if k.startswith("model.multi_modal_projector."):
        return k[len("model.") :]
    raise KeyError(k)


def modern_key(k: str) -> str:
    """in-memory transformers-5 key -> transformers 4.52..4.57 save_pretrained key."""
    if k.startswith("model.vision_tower."):
        return "model.vision_tower.vision_model." + k[len("model.vision_tower.") :]
    return k


def plain_rope_form(cfg: dict, legacy_dtype: bool = False) -> dict:
    """Rewrite text_config.rope_parameters {rope_type: default, rope_theta} -> rope_theta."""
    tc = cfg["text_config"]
    if "rope_parameters" in tc:
        rp = tc.pop("rope_parameters")
        assert rp.get("rope_type", "default") == "default", rp
        tc["rope_theta"] = rp["rope_theta"]
    if legacy_dtype and "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    return cfg


# --------------------------------------------------------------------------------------------
# independent plain-torch forward (executable spec of the conventions; float64 capable)


def manual_forward(sd: dict, cfg: LlavaConfig, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, dtype=torch.float64):
    sd = {k: v.to(dtype) for k, v in sd.items()}
    vc, tc = cfg.vision_config, cfg.text_config
    B = pixel_values.shape[0]
    # ---- CLIP vision tower
    x = F.conv2d(pixel_values.to(dtype), sd["model.vision_tower.embeddings.patch_embedding.weight"], stride=vc.patch_size)
    x = x.flatten(2).transpose(1, 2)  # [B, (H/p)*(W/p), D], patches in row-major order
    cls = sd["model.vision_tower.embeddings.class_embedding"].expand(B, 1, -1)
    x = torch.cat([cls, x], 1) + sd["model.vision_tower.embeddings.position_embedding.weight"][None]
    pre = "model.vision_tower."
    x = F.layer_norm(x, (vc.hidden_size,), sd[pre + "pre_layrnorm.weight"], sd[pre + "pre_layrnorm.bias"], vc.layer_norm_eps)
    hidden = [x]  # hidden[0] = embeddings AFTER pre_layrnorm; hidden[i] = output of layer i
    nh, hd = vc.num_attention_heads, vc.hidden_size // vc.num_attention_heads
    for i in range(vc.num_hidden_layers):
        p = f"{pre}encoder.layers.{i}."
        lin = lambda t, n: F.linear(t, sd[p + n + ".weight"], sd[p + n + ".bias"])
        h = F.layer_norm(x, (vc.hidden_size,), sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"], vc.layer_norm_eps)
        q, k, v = (lin(h, f"self_attn.{n}_proj").view(B, -1, nh, hd).transpose(1, 2) for n in "qkv")
        a = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5, -1) @ v  # no mask in the vision tower
        x = x + lin(a.transpose(1, 2).reshape(B, -1, vc.hidden_size), "self_attn.out_proj")
        h = F.layer_norm(x, (vc.hidden_size,), sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"], vc.layer_norm_eps)
        h = lin(h, "mlp.fc1")
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + lin(h, "mlp.fc2")
        hidden.append(x)
    # post_layernorm is NOT applied to the selected features
    feat = hidden[cfg.vision_feature_layer]
    if cfg.vision_feature_select_strategy == "default":
        feat = feat[:, 1:]  # drop CLS
    pp = "model.multi_modal_projector."
    feat = F.linear(feat, sd[pp + "linear_1.weight"], sd[pp + "linear_1.bias"])
    feat = F.gelu(feat)  # exact (erf) gelu
    feat = F.linear(feat, sd[pp + "linear_2.weight"], sd[pp + "linear_2.bias"])  # [B, n_img, Dt]
    # ---- merge: image-token positions get the image features in order (image b -> row b)
    emb = sd["model.language_model.embed_tokens.weight"][input_ids]
    for b in range(B):
        pos = (input_ids[b] == cfg.image_token_index).nonzero().flatten()
        assert len(pos) == feat.shape[1]
        emb[b, pos] = feat[b]
    # ---- Llama
    x = emb
    T = x.shape[1]
    H, KV = tc.num_attention_heads, tc.num_key_value_heads
    hd = tc.hidden_size // H
    theta = tc.rope_parameters["rope_theta"]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None]  # position = index 0..T-1
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos().to(dtype), ang.sin().to(dtype)
    rot = lambda t: torch.cat([-t[..., hd // 2 :], t[..., : hd // 2]], -1)  # rotate_half (NeoX-style halves)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]

    def rms(t, w):
        return w * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + tc.rms_norm_eps))

    for i in range(tc.num_hidden_layers):
        p = f"model.language_model.layers.{i}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = F.linear(h, sd[p + "self_attn.q_proj.weight"]).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(h, sd[p + "self_attn.k_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        v = F.linear(h, sd[p + "self_attn.v_proj.weight"]).view(B, T, KV, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k = k.repeat_interleave(H // KV, 1)  # query head j uses kv head j // (H/KV)
        v = v.repeat_interleave(H // KV, 1)
        s = (q @ k.transpose(-1, -2)) * hd**-0.5
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, -1) @ v
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), sd[p + "self_attn.o_proj.weight"])
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        h = F.linear(F.silu(F.linear(h, sd[p + "mlp.gate_proj.weight"])) * F.linear(h, sd[p + "mlp.up_proj.weight"]),
                     sd[p + "mlp.down_proj.weight"])
        x = x + h
    x = rms(x, sd["model.language_model.norm.weight"])
    return F.linear(x, sd["lm_head.weight"]), feat


# --------------------------------------------------------------------------------------------
# helpers


def write_json(path: Path, obj, indent=2) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().to(torch.float64).flatten().tolist()]


def expand_image_token(ids: list[int], n: int) -> list[int]:
    assert ids.count(IMAGE_ID) == 1, ids
    i = ids.index(IMAGE_ID)
    return ids[:i] + [IMAGE_ID] * n + ids[i + 1 :]


def save_folder_common(folder: Path, tok: Tokenizer, strategy: str) -> None:
    save_tokenizer(tok, folder)
    write_json(folder / "preprocessor_config.json", preprocessor_config())
    write_json(folder / "processor_config.json", processor_config(strategy))


# --------------------------------------------------------------------------------------------


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.iterdir():  # everything but the hand-written README.md is regenerated
        if p.name != "README.md":
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    tok = build_tokenizer()
    vocab_size = tok.get_vocab_size()
    save_tokenizer(tok, OUT)  # top-level copy, also used below through AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(str(OUT))
    images = make_images(OUT / "images")
    write_json(OUT / "preprocessor_config.json", preprocessor_config())
    image_proc = AutoImageProcessor.from_pretrained(str(OUT))
    print("tokenizer:", type(hf_tok).__name__, "vocab", vocab_size, "| image processor:", type(image_proc).__name__)

    # ---- reference models (all variants share the same weights, except bf16/f16 rounding)
    base_cfg = make_config(vocab=vocab_size)
    base = LlavaForConditionalGeneration(base_cfg)
    reinit_(base, SEED)
    base.eval()
    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}

    def with_cfg(cfg: LlavaConfig, sd: dict) -> LlavaForConditionalGeneration:
        m = LlavaForConditionalGeneration(cfg)
        m.load_state_dict(sd, strict=True)
        return m.eval()

    rounded = {dt: {k: v.to(dt).to(torch.float32) for k, v in base_sd.items()} for dt in (torch.bfloat16, torch.float16)}
    refs = {
        "base": (base_cfg, base_sd),
        "legacy": (base_cfg, base_sd),
        "modern": (base_cfg, base_sd),
        "sharded": (base_cfg, base_sd),
        "bf16": (base_cfg, rounded[torch.bfloat16]),
        "f16": (base_cfg, rounded[torch.float16]),
        "rope_parameters": (make_config(theta=500.0, vocab=vocab_size), base_sd),
        "full_strategy": (make_config(strategy="full", layer=-1, vocab=vocab_size), base_sd),
    }
    ref_models = {name: with_cfg(cfg, sd) for name, (cfg, sd) in refs.items()}

    # ---- write the variant folders
    for name, model in ref_models.items():
        d = OUT / name
        d.mkdir()
        strategy = model.config.vision_feature_select_strategy
        if name in ("base", "full_strategy"):
            model.save_pretrained(d)
            c = json.loads((d / "config.json").read_text())
            assert "rope_parameters" in c["text_config"], "transformers no longer writes rope_parameters?"
            write_json(d / "config.json", plain_rope_form(c))
        elif name == "sharded":
            model.save_pretrained(d, max_shard_size="150KB")
            write_json(d / "config.json", plain_rope_form(json.loads((d / "config.json").read_text())))
            assert (d / "model.safetensors.index.json").exists()
        elif name == "rope_parameters":
            model.save_pretrained(d)
            c = json.loads((d / "config.json").read_text())
            assert c["text_config"]["rope_parameters"] == {"rope_theta": 500.0, "rope_type": "default"}, c
        elif name in ("bf16", "f16"):
            dt = torch.bfloat16 if name == "bf16" else torch.float16
            m16 = copy.deepcopy(model).to(dt)
            m16.save_pretrained(d)
            c = json.loads((d / "config.json").read_text())
            assert c["dtype"] == ("bfloat16" if name == "bf16" else "float16"), c.get("dtype")
            write_json(d / "config.json", plain_rope_form(c))
        elif name in ("legacy", "modern"):
            model.save_pretrained(d)  # for config.json / generation_config.json
            (d / "model.safetensors").unlink()
            rename = legacy_key if name == "legacy" else modern_key
            sd = {rename(k): v.contiguous() for k, v in model.state_dict().items()}
            save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
            c = json.loads((d / "config.json").read_text())
            c.pop("transformers_version", None)
            if name == "legacy":
                c["transformers_version"] = "4.36.0.dev0"
            write_json(d / "config.json", plain_rope_form(c, legacy_dtype=(name == "legacy")))
        save_folder_common(d, tok, strategy)

    # ---- cases
    n_feat = {name: m.config.image_seq_length for name, m in ref_models.items()}
    PROMPTS = [
        ("USER: <image>\nwhat is here ? ASSISTANT:", "a small red square with lines ."),
        ("USER: describe the <image> picture , what do you see ? ASSISTANT:", "i can see a cat and two dog ."),
        ("<image>\nUSER: what color is the top left corner ? ASSISTANT:", "it is dark blue , no yellow ."),
    ]
    plan = [(v, "square16", 0) for v in ref_models]
    plan += [("base", "odd23x19", 1), ("legacy", "odd23x19", 1), ("base", "rgba16", 2), ("base", "gray18x25", 2)]
    plan += [("full_strategy", "odd23x19", 2), ("rope_parameters", "odd23x19", 1)]

    def pixels(image_key: str) -> torch.Tensor:
        img = Image.open(OUT / images[image_key])
        pv = image_proc(images=[img], return_tensors="pt")["pixel_values"]
        assert pv.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and pv.dtype == torch.float32
        return pv

    def tokenize(prompt: str, response: str):
        prompt_ids = hf_tok(prompt).input_ids
        assert prompt_ids == tok.encode(prompt).ids
        assert UNK_ID not in prompt_ids and prompt_ids.count(IMAGE_ID) == 1, (prompt, prompt_ids)
        full = hf_tok(prompt + " " + response).input_ids
        assert full[: len(prompt_ids)] == prompt_ids and UNK_ID not in full
        return prompt_ids, full[len(prompt_ids) :]

    max_diff_f64 = {"response_logprobs": 0.0, "logits": 0.0}
    cases = []
    with torch.no_grad():
        for variant, image_key, pi in plan:
            model = ref_models[variant]
            cfg, sd = refs[variant]
            prompt, response = PROMPTS[pi]
            prompt_ids, response_ids = tokenize(prompt, response)
            n = n_feat[variant]
            input_ids = expand_image_token(prompt_ids + response_ids, n)
            img_start = input_ids.index(IMAGE_ID)
            resp_start = len(input_ids) - len(response_ids)
            pv = pixels(image_key)
            ids = torch.tensor([input_ids])
            out = model(input_ids=ids, pixel_values=pv)
            logits = out.logits[0]
            lp = torch.log_softmax(logits, -1)
            resp_lp = torch.stack([lp[resp_start + i - 1, t] for i, t in enumerate(response_ids)])
            # independent float64 check
            l64, feat64 = manual_forward(sd, cfg, ids, pv)
            lp64 = torch.log_softmax(l64[0], -1)
            resp_lp64 = torch.stack([lp64[resp_start + i - 1, t] for i, t in enumerate(response_ids)])
            d_lp = (resp_lp.double() - resp_lp64).abs().max().item()
            d_lg = (logits.double() - l64[0]).abs().max().item()
            assert d_lp < 1e-4 and d_lg < 1e-4, (variant, d_lp, d_lg)
            max_diff_f64["response_logprobs"] = max(max_diff_f64["response_logprobs"], d_lp)
            max_diff_f64["logits"] = max(max_diff_f64["logits"], d_lg)
            img_feat = model.model.get_image_features(pixel_values=pv).pooler_output[0]
            assert (img_feat.double() - feat64[0]).abs().max().item() < 1e-4
            # the saved folder must load back and agree exactly
            loaded, info = LlavaForConditionalGeneration.from_pretrained(
                str(OUT / variant), dtype=torch.float32, output_loading_info=True
            )
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), (variant, info)
            assert loaded.config.text_config.rope_parameters["rope_theta"] == cfg.text_config.rope_parameters["rope_theta"]
            assert loaded.config.vision_feature_select_strategy == cfg.vision_feature_select_strategy
            assert loaded.config.vision_feature_layer == cfg.vision_feature_layer
            assert loaded.config.image_token_id == IMAGE_ID
            d_load = (loaded.eval()(input_ids=ids, pixel_values=pv).logits[0] - logits).abs().max().item()
            assert d_load == 0.0, (variant, d_load)
            # processor cross-check: LlavaProcessor from the folder expands the image token the same way
            proc = transformers.AutoProcessor.from_pretrained(str(OUT / variant))
            penc = proc(images=[Image.open(OUT / images[image_key])], text=[prompt + " " + response], return_tensors="pt")
            assert penc["input_ids"][0].tolist() == input_ids, (variant, penc["input_ids"][0].tolist(), input_ids)
            assert torch.equal(penc["pixel_values"], pv)
            # greedy: generate (KV cache) vs argmax over full recomputation
            p_ids = expand_image_token(prompt_ids, n)
            gen = model.generate(
                input_ids=torch.tensor([p_ids]), attention_mask=torch.ones(1, len(p_ids), dtype=torch.long),
                pixel_values=pv, do_sample=False, max_new_tokens=GREEDY_NEW, min_new_tokens=GREEDY_NEW,
                pad_token_id=PAD_ID, eos_token_id=EOS_ID, suppress_tokens=SUPPRESS,
            )[0, len(p_ids) :].tolist()
            seq, margins, special_won = list(p_ids), [], False
            for _ in range(GREEDY_NEW):
                row = model(input_ids=torch.tensor([seq]), pixel_values=pv).logits[0, -1].clone()
                special_won |= int(row.argmax()) in SUPPRESS
                row[SUPPRESS] = float("-inf")
                top = torch.topk(row, 2)
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(int(top.indices[0]))
            manual = seq[len(p_ids) :]
            assert manual == gen, (variant, manual, gen)
            cases.append({
                "name": f"{variant}_{image_key}",
                "kind": "single",
                "variant": variant,
                "image": images[image_key],
                "prompt": prompt,
                "response": response,
                "prompt_ids": prompt_ids,
                "response_ids": response_ids,
                "num_image_tokens": n,
                "image_token_start": img_start,
                "response_start": resp_start,
                "input_ids": input_ids,
                "pixel_shape": list(pv.shape),
                "pixel_values": floats(pv),
                "image_features_row0": floats(img_feat[0]),
                "response_logprobs": floats(resp_lp),
                "response_logprob_sum": float(resp_lp.double().sum()),
                "logits_last": floats(logits[-1]),
                "greedy_ids": gen,
                "greedy_suppressed_ids": SUPPRESS,
                "greedy_min_margin": min(margins),
                "greedy_special_would_have_won": special_won,
            })
            print(f"{variant:16s} {image_key:10s} n_img={n} T={len(input_ids)} lp_sum={resp_lp.sum():.4f} "
                  f"d64={d_lp:.2e} greedy={gen[:8]}.. margin={min(margins):.3g}")

        # ---- batch case: right padding must not change the log-probs
        model = ref_models["base"]
        rows, pvs = [], []
        for image_key, pi in (("square16", 1), ("odd23x19", 0)):
            prompt, response = PROMPTS[pi]
            prompt_ids, response_ids = tokenize(prompt, response)
            input_ids = expand_image_token(prompt_ids + response_ids, n_feat["base"])
            rows.append({"image": images[image_key], "prompt": prompt, "response": response, "prompt_ids": prompt_ids,
                         "response_ids": response_ids, "input_ids": input_ids,
                         "response_start": len(input_ids) - len(response_ids)})
            pvs.append(pixels(image_key))
        T = max(len(r["input_ids"]) for r in rows)
        assert len({len(r["input_ids"]) for r in rows}) == 2
        ids = torch.full((2, T), PAD_ID, dtype=torch.long)
        am = torch.zeros(2, T, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            am[b, : len(r["input_ids"])] = 1
        pv = torch.cat(pvs)
        lp = torch.log_softmax(model(input_ids=ids, pixel_values=pv, attention_mask=am).logits, -1)
        l64, _ = manual_forward(base_sd, base_cfg, ids, pv, attention_mask=am)
        lp64 = torch.log_softmax(l64, -1)
        worst_pad = 0.0
        for b, r in enumerate(rows):
            s = r["response_start"]
            got = torch.stack([lp[b, s + i - 1, t] for i, t in enumerate(r["response_ids"])])
            single = torch.log_softmax(model(input_ids=torch.tensor([r["input_ids"]]), pixel_values=pvs[b]).logits[0], -1)
            alone = torch.stack([single[s + i - 1, t] for i, t in enumerate(r["response_ids"])])
            ref64 = torch.stack([lp64[b, s + i - 1, t] for i, t in enumerate(r["response_ids"])])
            worst_pad = max(worst_pad, (got - alone).abs().max().item())
            assert (got.double() - ref64).abs().max().item() < 1e-4
            r["response_logprobs"] = floats(got)
        assert worst_pad < 1e-5, worst_pad
        cases.append({
            "name": "base_batch_right_padded",
            "kind": "batch_logprobs",
            "variant": "base",
            "rows": rows,
            "pad_id": PAD_ID,
            "input_ids": ids.tolist(),
            "attention_mask": am.tolist(),
            "pixel_shape": list(pv.shape),
            "pixel_values": floats(pv),
            "max_abs_diff_padded_vs_unpadded": worst_pad,
        })
        print(f"batch: padded vs unpadded max |d logprob| = {worst_pad:.2e}")

    # one case per line (diff-friendly, compact)
    with open(OUT / "cases.json", "w") as f:
        f.write('{"generator": "scripts/make_fixtures.py",\n "versions": ' + json.dumps(versions()))
        f.write(',\n "max_abs_diff_hf_f32_vs_float64": ' + json.dumps(max_diff_f64) + ',\n "cases": [\n')
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")
    json.loads((OUT / "cases.json").read_text())

    # ---- resize reference / tolerance data
    resize = {}
    for key in ("odd23x19", "gray18x25"):
        img = Image.open(OUT / images[key]).convert("RGB")
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_long = int(IMAGE_SIZE * long / short)
        nw, nh = (new_long, IMAGE_SIZE) if w >= h else (IMAGE_SIZE, new_long)
        pil = np.array(img.resize((nw, nh), resample=Image.BICUBIC)).astype(int)
        diffs = {}
        for mode in ("pil", "float_u8_each_pass", "float_once"):
            r = resize_bicubic_reference(np.array(img), nw, nh, mode).astype(int)
            diffs[mode] = (int(np.abs(r - pil).max()), float((r != pil).mean()),
                           float(np.abs(r - pil).max() / 255 / min(CLIP_STD)))
        assert diffs["pil"][0] == 0, diffs
        top, left = (nh - IMAGE_SIZE) // 2, (nw - IMAGE_SIZE) // 2
        resize[key] = {
            "image": images[key], "in_size_wh": [w, h], "resized_wh": [nw, nh], "crop_top_left": [top, left],
            "pil_resized_rgb_u8": pil.tolist(),
            "reimplementation_vs_pil": {m: {"max_abs_diff_u8": d[0], "frac_differing": d[1],
                                            "max_abs_diff_normalized": d[2]} for m, d in diffs.items()},
        }
    # RGBA compositing onto white (transformers 5 convert_to_rgb)
    rgba = np.array(Image.open(OUT / images["rgba16"])).astype(np.int64)
    bg = Image.new("RGBA", (16, 16), (255, 255, 255, 255))
    pil_comp = np.array(Image.alpha_composite(bg, Image.open(OUT / images["rgba16"])).convert("RGB")).astype(np.int64)
    a = rgba[..., 3:4] / 255.0
    float_comp = np.clip(np.round(rgba[..., :3] * a + 255 * (1 - a)), 0, 255)
    resize["rgba16_composite"] = {
        "image": images["rgba16"],
        "rule": "out = round(c*a/255 + 255*(1-a/255)) (composited on opaque white), per channel",
        "pil_composited_rgb_u8": pil_comp.tolist(),
        "max_abs_diff_u8_float_formula": int(np.abs(pil_comp - float_comp).max()),
    }
    write_json(OUT / "resize_reference.json", resize, indent=None)
    print("resize:", json.dumps({k: v.get("reimplementation_vs_pil", v.get("max_abs_diff_u8_float_formula")) for k, v in resize.items()}))
    print("max |HF f32 - float64|:", max_diff_f64)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"total fixture size: {total / 1e6:.2f} MB")


def versions() -> dict:
    import PIL

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


if __name__ == "__main__":
    main()
