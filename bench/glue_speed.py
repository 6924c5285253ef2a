"""Speed of the glue: does ILF's measured speedup reach what its block count predicts?

Runs a real diffusers denoising loop (text embeddings given, latents out, so only the transformer and the
scheduler are timed) on one of
  * `pixart-xl-2`: the real `PixArtAlphaPipeline` on the real-size PixArt-XL-2 architecture (28 blocks,
    16×72 heads, caption width 4096, random weights, 256 px = 32×32 latents, CFG batch of 2, DPM-Solver++);
  * `tiny`: the same pipeline on the test suite's 28-block tiny PixArt;
  * `sd3-medium`: the real `StableDiffusion3Pipeline` on the real-size SD3-medium MMDiT (24 joint blocks,
    24×64 heads, ~2.0 B parameters, random weights), its stock `FlowMatchEulerDiscreteScheduler(shift=3)`, CFG
    batch of 2 (uncond first), text encoders None and prompt embeddings of SD3-medium's real shapes (333 tokens
    = 77 CLIP + 256 T5, width 4096; pooled 2048), by default at 128 px = 16×16 latents (`--sd3-size`);
  * `tiny-sd3`: the same pipeline on a 24-block tiny SD3 (a smoke run of the sd3-medium path);
for: 20 plain steps (the reference), ILF with 10 steps and feedback on the outer 2+2 steps (the paper's loop
8–19 of 28, scaled to the model: 7–16 of 24), and the paper cache (inner 18 of 28 blocks, scaled: 15 of 24,
refresh every 3 steps). After an untimed warm-up call of every method, methods are timed in interleaved rounds
(a drift of the machine hits every method alike), counting block forwards in every timed call; the report gives
median seconds (`--clock process`: `time.process_time`, CPU seconds of this process, robust to other jobs on the
machine; `wall`: `time.perf_counter`), the measured speedup vs 20 plain steps, the speedup the block counts
predict (plain block forwards / block forwards) and their ratio (target ≥ 0.97). Results are written after
every round.

    python bench/glue_speed.py --config both --repeats 3 --threads 1 --out bench/results/glue_speed.json
    python bench/glue_speed.py --config sd3-medium --repeats 2 --threads 1 --warmup-steps 2 \\
        --out bench/results/glue_speed_sd3.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import (
    DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, PixArtAlphaPipeline, StableDiffusion3Pipeline,
)

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.bench.family_ilf import default_loop
from ilf.bench.family_paper_cache import default_cache_blocks
from ilf.tiny import pixart_xl_2, tiny_pixart
from ilf.tiny_mmdit import sd3_medium, tiny_sd3

CONFIGS = ("tiny", "pixart-xl-2", "sd3-medium", "tiny-sd3")
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


def methods(num_blocks: int) -> dict:
    """The three rows, the paper's settings scaled to the model's depth (28 blocks: loop 8-19, cache 18)."""
    b, e = default_loop(num_blocks)
    c = default_cache_blocks(num_blocks)
    return {
        "plain-20": dict(steps=20),
        f"ilf-10 (loop {b}-{e}, outer:2)": dict(steps=10, ilf=ILFConfig(loop=(b, e), feedback_steps="outer:2")),
        f"paper-cache-20 (inner {c}, 1 in 3)": dict(steps=20, cache=CacheConfig("inner", c, 3)),
    }


def _randn(*shape, g):
    return torch.randn(*shape, generator=g)


def build_pixart(config: str):
    if config == "pixart-xl-2":
        transformer, tokens = pixart_xl_2(sample_size=32), 120  # 256 px; PixArt-α's 120 T5 tokens
    else:
        transformer, tokens = tiny_pixart(num_layers=28, sample_size=8), 16
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    width = transformer.config.caption_channels
    g = torch.Generator().manual_seed(0)
    emb = dict(
        prompt_embeds=_randn(1, tokens, width, g=g), prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long),
        negative_prompt_embeds=_randn(1, tokens, width, g=g),
        negative_prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long),
    )
    size = transformer.config.sample_size * 8  # the pipeline's default vae_scale_factor without a VAE
    return pipe, dict(height=size, width=size, guidance_scale=4.5, output_type="latent", negative_prompt=None,
                      use_resolution_binning=False, **emb)


# SD3-medium's conditioning: 77 CLIP-L/G tokens (768 + 1280, zero-padded to 4096) followed by 256 T5-XXL tokens
SD3_TOKENS, SD3_WIDTH, SD3_POOLED = 77 + 256, 4096, 2048


def build_sd3(config: str, size: int = 128):
    if config == "sd3-medium":
        transformer, (tokens, width, pooled) = sd3_medium(sample_size=size // 8), (SD3_TOKENS, SD3_WIDTH, SD3_POOLED)
    else:
        transformer = tiny_sd3(num_layers=24)
        tokens, width, pooled = 16, transformer.config.joint_attention_dim, transformer.config.pooled_projection_dim
        size = 8 * transformer.config.sample_size
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None,
    )
    g = torch.Generator().manual_seed(0)
    emb = dict(prompt_embeds=_randn(1, tokens, width, g=g), negative_prompt_embeds=_randn(1, tokens, width, g=g),
               pooled_prompt_embeds=_randn(1, pooled, g=g), negative_pooled_prompt_embeds=_randn(1, pooled, g=g))
    return pipe, dict(height=size, width=size, guidance_scale=7.0, output_type="latent", **emb)


def build(config: str, sd3_size: int = 128):
    pipe, call = build_sd3(config, sd3_size) if "sd3" in config else build_pixart(config)
    pipe.set_progress_bar_config(disable=True)
    return pipe, call


def attach(pipe, spec):
    if "ilf" in spec:
        apply_ilf(pipe, spec["ilf"])
    if "cache" in spec:
        apply_cache(pipe, spec["cache"])


def detach(pipe):
    remove_ilf(pipe)
    remove_cache(pipe)


def run_once(pipe, call, spec, steps: int, clock) -> tuple[float, int]:
    """(seconds, block forwards) of one pipeline call with `spec` attached."""
    attach(pipe, spec)
    try:
        with count_block_forwards(pipe) as counter, torch.no_grad():
            start = clock()
            pipe(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **call)
            seconds = clock() - start
        return seconds, counter.total
    finally:
        detach(pipe)


def summarise(times: dict, blocks: dict, ref_name: str) -> dict:
    ref = statistics.median(times[ref_name])
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        measured, predicted = ref / med, blocks[ref_name] / blocks[name]
        rows[name] = dict(block_forwards=blocks[name], seconds=ts, median_s=med, measured_speedup=measured,
                          predicted_speedup=predicted, measured_over_predicted=measured / predicted)
    return rows


def bench(config: str, repeats: int, clock: str = "process", warmup_steps: int | None = None, sd3_size: int = 128,
          on_round=None) -> dict:
    """Rows of one config; `on_round(rows)` is called after every round (partial results)."""
    pipe, call = build(config, sd3_size)
    from ilf.adapters import get_adapter

    rows_spec = methods(len(get_adapter(pipe.transformer).blocks(pipe.transformer)))
    tick = CLOCKS[clock]
    for spec in rows_spec.values():  # warm-up: allocator, thread pools, lazily built state of every method
        run_once(pipe, call, spec, warmup_steps or spec["steps"], tick)
    times = {name: [] for name in rows_spec}
    blocks: dict[str, int] = {}
    rows: dict = {}
    for _ in range(repeats):  # interleaved rounds
        for name, spec in rows_spec.items():
            seconds, count = run_once(pipe, call, spec, spec["steps"], tick)
            if blocks.setdefault(name, count) != count:
                raise RuntimeError(f"{name}: {count} block forwards in one round, {blocks[name]} in another")
            times[name].append(seconds)
        rows = summarise(times, blocks, "plain-20")
        if on_round is not None:
            on_round(rows)
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
    p.add_argument("--config", choices=[*CONFIGS, "both"], default="both",
                   help="which architecture to time (both: tiny and pixart-xl-2; default both)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up; median reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="process",
                   help="process: CPU seconds of this process (default); wall: elapsed seconds")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="steps of each method's untimed warm-up call (default: its full step count)")
    p.add_argument("--sd3-size", type=int, default=128, help="image size in pixels for sd3-medium (default 128)")
    p.add_argument("--out", type=Path, default=Path("bench/results/glue_speed.json"), help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = ["tiny", "pixart-xl-2"] if args.config == "both" else [args.config]
    results = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "repeats": args.repeats, "clock": args.clock, "warmup_steps": args.warmup_steps,
               "torch": torch.__version__, "configs": {}}
    if "sd3-medium" in configs:
        results["sd3_size_px"] = args.sd3_size
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(config, rows, done):
        results["configs"][config] = rows
        results["complete"] = done
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(results) + "\n")

    for i, config in enumerate(configs):
        print(f"[glue_speed] {config} …", flush=True)
        rows = bench(config, args.repeats, args.clock, args.warmup_steps, args.sd3_size,
                     on_round=lambda r, c=config: write(c, r, False))
        write(config, rows, i == len(configs) - 1)
    print(markdown(results))


if __name__ == "__main__":
    main()
