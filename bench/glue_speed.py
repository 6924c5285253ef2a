"""Speed of the glue: does ILF's measured speedup reach what its block count predicts?

Runs the real `PixArtAlphaPipeline` denoising loop (text embeddings given, latents out, so only the
transformer and the scheduler are timed) on
  * the real-size PixArt-XL-2 architecture (28 blocks, 16×72 heads, caption width 4096, random weights,
    256 px = 32×32 latents, CFG batch of 2), and
  * a tiny config (the test suite's stand-in),
for: 20 plain steps (the reference), ILF with 10 steps and feedback on the outer 2+2 steps (loop 8–19),
and the paper cache (inner 18 blocks, refresh every 3 steps). Methods are timed in interleaved rounds after a
warm-up; the report gives median seconds, the measured speedup vs 20 plain steps, the speedup the block
counts predict (560 / block forwards) and their ratio (target ≥ 0.97).

    python bench/glue_speed.py --config both --repeats 3 --out bench/results/glue_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.testing import pixart_xl_2, tiny_pixart

METHODS = {
    "plain-20": dict(steps=20),
    "ilf-10 (loop 8-19, outer:2)": dict(steps=10, ilf=ILFConfig(loop=(8, 19), feedback_steps="outer:2")),
    "paper-cache-20 (inner 18, 1 in 3)": dict(steps=20, cache=CacheConfig("inner", 18, 3)),
}


def build(config: str):
    if config == "pixart-xl-2":
        transformer, tokens = pixart_xl_2(sample_size=32), 120  # 256 px; PixArt-α's 120 T5 tokens
    else:
        transformer, tokens = tiny_pixart(num_layers=28, sample_size=8), 16
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    width = transformer.config.caption_channels
    g = torch.Generator().manual_seed(0)
    emb = dict(
        prompt_embeds=torch.randn(1, tokens, width, generator=g),
        prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long),
        negative_prompt_embeds=torch.randn(1, tokens, width, generator=g),
        negative_prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long),
    )
    size = transformer.config.sample_size * 8  # the pipeline's default vae_scale_factor without a VAE
    return pipe, dict(height=size, width=size, guidance_scale=4.5, output_type="latent", negative_prompt=None,
                      use_resolution_binning=False, **emb)


def attach(pipe, spec):
    if "ilf" in spec:
        apply_ilf(pipe, spec["ilf"])
    if "cache" in spec:
        apply_cache(pipe, spec["cache"])


def detach(pipe):
    remove_ilf(pipe)
    remove_cache(pipe)


def run_once(pipe, call, spec) -> float:
    attach(pipe, spec)
    try:
        start = time.perf_counter()
        with torch.no_grad():
            pipe(num_inference_steps=spec["steps"], generator=torch.Generator().manual_seed(0), **call)
        return time.perf_counter() - start
    finally:
        detach(pipe)


def bench(config: str, repeats: int) -> dict:
    pipe, call = build(config)
    blocks = {}
    for name, spec in METHODS.items():
        attach(pipe, spec)
        with count_block_forwards(pipe) as counter, torch.no_grad():
            pipe(num_inference_steps=spec["steps"], generator=torch.Generator().manual_seed(0), **call)
        detach(pipe)
        blocks[name] = counter.total
    times = {name: [] for name in METHODS}
    for _ in range(repeats):  # interleaved rounds: drift in machine load hits every method alike
        for name, spec in METHODS.items():
            times[name].append(run_once(pipe, call, spec))
    ref_name = "plain-20"
    ref = statistics.median(times[ref_name])
    rows = {}
    for name in METHODS:
        med = statistics.median(times[name])
        measured, predicted = ref / med, blocks[ref_name] / blocks[name]
        rows[name] = dict(block_forwards=blocks[name], seconds=times[name], median_s=med,
                          measured_speedup=measured, predicted_speedup=predicted,
                          measured_over_predicted=measured / predicted)
    return rows


def markdown(results: dict) -> str:
    lines = ["| config | method | block forwards | median s/img | measured speedup | predicted | measured ÷ predicted |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for config, rows in results["configs"].items():
        for name, r in rows.items():
            lines.append(f"| {config} | {name} | {r['block_forwards']} | {r['median_s']:.2f} | "
                         f"{r['measured_speedup']:.2f}× | {r['predicted_speedup']:.2f}× | "
                         f"{r['measured_over_predicted']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["tiny", "pixart-xl-2", "both"], default="both",
                   help="which architecture to time (default: both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method after a warm-up; median reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("bench/results/glue_speed.json"), help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = ["tiny", "pixart-xl-2"] if args.config == "both" else [args.config]
    results = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "repeats": args.repeats, "configs": {}}
    for config in configs:
        print(f"[glue_speed] {config} …", flush=True)
        results["configs"][config] = bench(config, args.repeats)
    table = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
