#!/usr/bin/env python3
"""PyTorch / transformers reference benchmark for a LLaVA-style model (to run side by side with
the Rust benchmark on the same machine and the same config).

Measures, on CPU with a fixed thread count (default 2):
  (a) train step: one forward + backward + AdamW step (all parameters trainable, loss = next-token
      cross-entropy on the text positions, image positions ignored) on a batch of
      `--batch` sequences of exactly `--seq` tokens, each with one image expanded to
      (image/patch)^2 image tokens; mean / median / min / std ms over `--iters` steps after
      `--warmup` (on a shared machine, trust median/min; the 1-minute load average at start and
      end is in the output);
  (b) greedy decoding with `model.generate` (KV cache on, do_sample=False, exactly `--gen-tokens`
      new tokens, eos never stops it) at each batch size in `--gen-batches`, from a prompt of one
      image + `--prompt-text` text tokens; reports new tokens/s summed over the batch (prefill
      included; median and best of `--gen-repeats` timed calls after one warmup call) and,
      separately, the prefill time (best of 3 generate calls with 1 new token).
Prints exactly one JSON line on stdout (progress goes to stderr).

The model is either read from `--config` (a llava config.json, or a folder holding one) or built
from the shape flags below (defaults: the "tiny world" config: vision 64 px, patch 8, hidden 128,
2 layers; text hidden 256, 4 layers, 4 heads, 2 kv heads, vocab 512; batch 8 x seq 128).
`--write-config PATH` saves the config actually used, so the Rust benchmark can load the very same
shapes. Weights are random (transformers' default init, seeded): timings only.

Usage (from the repository root):
    /work/venv-ref/bin/python scripts/bench_reference.py                      # defaults
    /work/venv-ref/bin/python scripts/bench_reference.py --write-config /tmp/tiny_world.json
    /work/venv-ref/bin/python scripts/bench_reference.py --config /tmp/tiny_world.json --iters 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="llava config.json (or folder); overrides the shape flags")
    p.add_argument("--write-config", help="write the config used to this path")
    g = p.add_argument_group("shapes (ignored with --config)")
    g.add_argument("--image-size", type=int, default=64)
    g.add_argument("--patch-size", type=int, default=8)
    g.add_argument("--vision-hidden", type=int, default=128)
    g.add_argument("--vision-intermediate", type=int, default=512)
    g.add_argument("--vision-layers", type=int, default=2)
    g.add_argument("--vision-heads", type=int, default=4)
    g.add_argument("--text-hidden", type=int, default=256)
    g.add_argument("--text-intermediate", type=int, default=1024)
    g.add_argument("--text-layers", type=int, default=4)
    g.add_argument("--text-heads", type=int, default=4)
    g.add_argument("--text-kv-heads", type=int, default=2)
    g.add_argument("--vocab", type=int, default=512)
    g.add_argument("--rope-theta", type=float, default=10000.0)
    r = p.add_argument_group("run")
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--seq", type=int, default=128, help="total tokens per training sequence, image tokens included")
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--iters", type=int, default=5)
    r.add_argument("--lr", type=float, default=1e-4)
    r.add_argument("--gen-tokens", type=int, default=64)
    r.add_argument("--gen-batches", default="1,8", help="comma-separated batch sizes for decoding")
    r.add_argument("--gen-repeats", type=int, default=3, help="timed generate calls per batch size (after 1 warmup)")
    r.add_argument("--prompt-text", type=int, default=16, help="text tokens in the decoding prompt besides the image")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--skip-train", action="store_true")
    r.add_argument("--skip-gen", action="store_true")
    return p.parse_args()


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


PAD_ID, BOS_ID, EOS_ID, IMAGE_ID, FIRST_TEXT_ID = 3, 1, 2, 4, 5


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    if args.config:
        path = Path(args.config)
        if path.is_dir():
            path = path / "config.json"
        cfg = LlavaConfig.from_dict(json.loads(path.read_text()))
    else:
        n_img = (args.image_size // args.patch_size) ** 2
        cfg = LlavaConfig(
            vision_config=CLIPVisionConfig(
                image_size=args.image_size, patch_size=args.patch_size, hidden_size=args.vision_hidden,
                intermediate_size=args.vision_intermediate, num_hidden_layers=args.vision_layers,
                num_attention_heads=args.vision_heads, hidden_act="quick_gelu", projection_dim=args.vision_hidden,
            ),
            text_config=LlamaConfig(
                vocab_size=args.vocab, hidden_size=args.text_hidden, intermediate_size=args.text_intermediate,
                num_hidden_layers=args.text_layers, num_attention_heads=args.text_heads,
                num_key_value_heads=args.text_kv_heads, rms_norm_eps=1e-5, rope_theta=args.rope_theta,
                max_position_embeddings=max(2048, args.seq + args.gen_tokens), tie_word_embeddings=False,
                pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
            ),
            image_token_index=IMAGE_ID, vision_feature_layer=-2, vision_feature_select_strategy="default",
            projector_hidden_act="gelu", pad_token_id=PAD_ID, image_seq_length=n_img, tie_word_embeddings=False,
        )
    if args.write_config:
        Path(args.write_config).write_text(cfg.to_json_string())

    vc, tc = cfg.vision_config, cfg.text_config
    img_tokens = (vc.image_size // vc.patch_size) ** 2 + (1 if cfg.vision_feature_select_strategy == "full" else 0)
    image_id = cfg.image_token_index
    vocab = tc.vocab_size
    model = LlavaForConditionalGeneration(cfg).float()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"params {n_params:,}; image tokens {img_tokens}; threads {torch.get_num_threads()}")

    def batch_ids(b: int, total: int) -> torch.Tensor:
        assert total > img_tokens + 1, "sequence too short for the image tokens"
        text = torch.randint(FIRST_TEXT_ID, vocab, (b, total - img_tokens))
        text[:, 0] = BOS_ID
        img = torch.full((b, img_tokens), image_id)
        return torch.cat([text[:, :1], img, text[:, 1:]], 1)  # <s> <image>*n text...

    def pixels(b: int) -> torch.Tensor:
        return torch.randn(b, vc.num_channels, vc.image_size, vc.image_size)

    result = {
        "bench": "llava_reference_pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": "cpu",
        "dtype": "float32",
        "params": n_params,
        "loadavg_1m_start": os.getloadavg()[0],
        "image_tokens": img_tokens,
        "config": {
            "image_size": vc.image_size, "patch_size": vc.patch_size, "vision_hidden": vc.hidden_size,
            "vision_layers": vc.num_hidden_layers, "text_hidden": tc.hidden_size,
            "text_intermediate": tc.intermediate_size, "text_layers": tc.num_hidden_layers,
            "text_heads": tc.num_attention_heads, "text_kv_heads": tc.num_key_value_heads, "vocab": vocab,
        },
    }

    # ---- (a) train step
    if not args.skip_train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        ids = batch_ids(args.batch, args.seq)
        pv = pixels(args.batch)
        labels = ids.clone()
        labels[labels == image_id] = -100
        times, losses = [], []
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(input_ids=ids, pixel_values=pv, labels=labels)
            out.loss.backward()
            opt.step()
            dt = (time.perf_counter() - t0) * 1e3
            losses.append(out.loss.item())
            if i >= args.warmup:
                times.append(dt)
            log(f"train step {i}: {dt:.1f} ms loss {losses[-1]:.4f}")
        result["train"] = {
            "batch": args.batch, "seq": args.seq, "warmup": args.warmup, "iters": args.iters,
            "optimizer": f"AdamW(lr={args.lr})", "trainable": "all",
            "mean_ms": statistics.mean(times), "median_ms": statistics.median(times), "min_ms": min(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
            "tokens_per_s": args.batch * args.seq / (statistics.mean(times) / 1e3),
            "loss_first": losses[0], "loss_last": losses[-1],
        }
        del opt

    # ---- (b) greedy decoding
    if not args.skip_gen:
        model.eval()
        gen = {}
        with torch.inference_mode():
            for b in [int(x) for x in args.gen_batches.split(",") if x]:
                ids = batch_ids(b, img_tokens + 1 + args.prompt_text)
                pv = pixels(b)
                am = torch.ones_like(ids)
                kw = dict(input_ids=ids, pixel_values=pv, attention_mask=am, do_sample=False, use_cache=True,
                          pad_token_id=PAD_ID, eos_token_id=EOS_ID)

                def run(n: int) -> float:
                    t0 = time.perf_counter()
                    out = model.generate(**kw, max_new_tokens=n, min_new_tokens=n)
                    dt = time.perf_counter() - t0
                    assert out.shape[1] == ids.shape[1] + n, out.shape
                    return dt

                run(args.gen_tokens)  # warmup
                prefill = min(run(1) for _ in range(3))
                tot = [run(args.gen_tokens) for _ in range(args.gen_repeats)]
                dt = statistics.median(tot)
                gen[f"batch{b}"] = {
                    "batch": b, "prompt_len": int(ids.shape[1]), "new_tokens": args.gen_tokens,
                    "repeats": args.gen_repeats, "total_ms_median": dt * 1e3, "total_ms_min": min(tot) * 1e3,
                    "prefill_ms": prefill * 1e3,
                    "tokens_per_s": b * args.gen_tokens / dt, "tokens_per_s_best": b * args.gen_tokens / min(tot),
                    "decode_tokens_per_s_excl_prefill": b * (args.gen_tokens - 1) / max(dt - prefill, 1e-9),
                }
                log(f"generate batch {b}: {gen[f'batch{b}']}")
        result["generate"] = gen

    result["loadavg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
