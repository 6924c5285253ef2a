"""Compiled ILF against compiled stock: does `torch.compile` keep ILF's speedup at its block-count prediction?

Runs the real `PixArtAlphaPipeline` denoising loop (text embeddings given, latents out) with the transformer
compiled by `torch.compile` (inductor, whole model: `--mode full`) or by diffusers' regional compilation
(`compile_repeated_blocks`: `--mode regional`), on the tiny test config (28 blocks of width 16: the blocks
cost microseconds, so per-step work outside them weighs), a small one (28 blocks of width 256 on 8×8 tokens:
the blocks dominate, as on real checkpoints) or the real-size PixArt-XL-2 architecture (random weights), for
  * compiled stock, 20 plain steps (the reference), and 10 plain steps;
  * compiled ILF, 10 steps, feedback on the outer 2+2 steps, loop 8–19 of 28 (a random, non-zero feedback:
    the loop really runs and changes the output).
Each method has its own copy of the transformer (so attaching ILF never invalidates another's compiled
graphs), is warmed up (compiled) first, then timed in interleaved rounds; the report gives medians of CPU
time (`time.process_time`, one thread: robust to other jobs on shared cores; wall time is recorded too, and
is what to read on a GPU), the measured speedup vs compiled stock-20, the block-predicted speedup (560 /
block forwards) and their ratio (target ≥ 0.95). It also records, for the ILF transformer called as the
pipeline calls it, the graph breaks `torch._dynamo.explain` finds on a plain and on a feedback step, the
graphs compiled over the whole run, and each method's largest difference between compiled and eager latents
(stock's is the scale of inductor's rounding).

    python bench/compile_speed.py --config tiny small --repeats 5 --threads 1 --out bench/results/compile_speed.json
    python bench/compile_speed.py --config pixart-xl-2 --device cuda --dtype fp16 --mode both   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

from ilf import ILFConfig, apply_ilf, count_block_forwards
from ilf.tiny import pixart_xl_2, tiny_pixart

ILF = ILFConfig(loop=(8, 19), feedback_steps="outer:2")
METHODS = {"stock-20": (20, False), "stock-10": (10, False), "ilf-10 (loop 8-19, outer:2)": (10, True)}
REFERENCE = "stock-20"
SAME_STEPS = "stock-10"  # ILF against stock at its own step count isolates ILF's glue from per-step overhead


def build(config: str, device: str, dtype):
    if config == "pixart-xl-2":
        transformer, tokens = pixart_xl_2(sample_size=32, dtype=dtype), 120  # 256 px, 120 T5 tokens
    elif config == "small":  # 28 blocks of width 256 on 8×8 tokens: blocks dominate, as on real checkpoints
        transformer, tokens = tiny_pixart(num_layers=28, heads=8, head_dim=32, sample_size=16, caption_channels=64), 16
    else:
        transformer, tokens = tiny_pixart(num_layers=28, sample_size=8), 16
    if dtype != torch.float32:
        transformer = transformer.to(dtype=dtype)
    transformer = transformer.to(device)
    width = transformer.config.caption_channels
    g = torch.Generator().manual_seed(0)
    emb = dict(
        prompt_embeds=torch.randn(1, tokens, width, generator=g).to(device, dtype),
        prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long, device=device),
        negative_prompt_embeds=torch.randn(1, tokens, width, generator=g).to(device, dtype),
        negative_prompt_attention_mask=torch.ones(1, tokens, dtype=torch.long, device=device),
    )
    size = transformer.config.sample_size * 8  # the pipeline's default vae_scale_factor without a VAE
    call = dict(height=size, width=size, guidance_scale=4.5, output_type="latent", negative_prompt=None,
                use_resolution_binning=False, **emb)
    return transformer, call


def make_pipe(transformer, with_ilf: bool):
    pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    if with_ilf:
        rt = apply_ilf(pipe, ILF)
        torch.manual_seed(1)
        with torch.no_grad():
            rt.feedback.scales.copy_(torch.randn_like(rt.feedback.scales) * 0.3)
    return pipe


def generate(pipe, call, steps, device):
    with torch.no_grad():
        out = pipe(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **call).images
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out


class GraphCounter:
    """A dynamo backend wrapper: counts the graphs compiled, then hands them to inductor."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        from torch._inductor import compile_fx

        self.graphs += 1
        return compile_fx.compile_fx(gm, example_inputs)


def compile_transformer(pipe, mode, backend):
    if mode == "full":
        pipe.transformer = torch.compile(pipe.transformer, backend=backend)
    else:  # PixArt declares no repeated blocks; its blocks are diffusers' BasicTransformerBlock
        pipe.transformer._repeated_blocks = ["BasicTransformerBlock"]
        pipe.transformer.compile_repeated_blocks(backend=backend)


def graph_breaks(transformer, call_pipe, call, device) -> dict:
    """Breaks `torch._dynamo.explain` finds on a feedback step (the first) and a plain one (the third)."""
    calls = []
    hook = transformer.register_forward_pre_hook(lambda m, a, k: calls.append((a, dict(k))), with_kwargs=True)
    generate(call_pipe, call, 10, device)
    hook.remove()
    out = {}
    for name, index in (("feedback_step", 0), ("plain_step", 2)):
        call_pipe.scheduler._step_index = index  # the scheduler as it stands when the pipeline makes that call
        args, kwargs = calls[index]
        out[name] = torch._dynamo.explain(transformer)(*args, **kwargs).graph_break_count
    torch._dynamo.reset()
    return out


def bench(config: str, mode: str, repeats: int, device: str, dtype) -> dict:
    base, call = build(config, device, dtype)
    pipes, counters, blocks, eager = {}, {}, {}, {}
    for name, (steps, with_ilf) in METHODS.items():
        pipes[name] = make_pipe(copy.deepcopy(base), with_ilf)
        with count_block_forwards(pipes[name]) as counter:
            eager[name] = generate(pipes[name], call, steps, device)
        blocks[name] = counter.total
        if with_ilf:
            ilf_name = name
            breaks = graph_breaks(pipes[name].transformer, pipes[name], call, device)
    compile_s, max_diff = {}, {}
    for name, (steps, _) in METHODS.items():
        counters[name] = GraphCounter()
        compile_transformer(pipes[name], mode, counters[name])
        start = time.perf_counter()
        out = generate(pipes[name], call, steps, device)  # warm-up: compiles every graph the run needs
        compile_s[name] = time.perf_counter() - start
        max_diff[name] = float((out.float() - eager[name].float()).abs().max())  # stock's: the rounding scale
    cpu, wall = {n: [] for n in METHODS}, {n: [] for n in METHODS}
    for _ in range(repeats):  # interleaved rounds: drift in machine load hits every method alike
        for name, (steps, _) in METHODS.items():
            c0, w0 = time.process_time(), time.perf_counter()
            generate(pipes[name], call, steps, device)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    timer = wall if device.startswith("cuda") else cpu
    ref = statistics.median(timer[REFERENCE])
    rows = {}
    for name in METHODS:
        med = statistics.median(timer[name])
        measured, predicted = ref / med, blocks[REFERENCE] / blocks[name]
        rows[name] = dict(block_forwards=blocks[name], cpu_s=cpu[name], wall_s=wall[name], median_s=med,
                          measured_speedup=measured, predicted_speedup=predicted,
                          measured_over_predicted=measured / predicted, graphs_compiled=counters[name].graphs,
                          first_run_s=compile_s[name], max_abs_diff_vs_eager=max_diff[name])
    same = statistics.median(timer[SAME_STEPS]) / statistics.median(timer[ilf_name])
    same_pred = blocks[SAME_STEPS] / blocks[ilf_name]
    rows[ilf_name]["vs_stock_same_steps"] = dict(measured=same, predicted=same_pred, ratio=same / same_pred)
    return dict(rows=rows, ilf_graph_breaks=breaks,
                timer="wall (perf_counter)" if device.startswith("cuda") else "CPU (process_time)")


def markdown(results: dict) -> str:
    lines = ["| config | compile | method | block forwards | median s | measured speedup | predicted | "
             "measured ÷ predicted | graphs | max \\|compiled − eager\\| |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, res in results["runs"].items():
        config, mode = key.split("/")
        for name, r in res["rows"].items():
            lines.append(f"| {config} | {mode} | {name} | {r['block_forwards']} | {r['median_s']:.3f} | "
                         f"{r['measured_speedup']:.2f}× | {r['predicted_speedup']:.2f}× | "
                         f"{r['measured_over_predicted']:.3f} | {r['graphs_compiled']} | "
                         f"{r['max_abs_diff_vs_eager']:.1e} |")
    for key, res in results["runs"].items():
        b = res["ilf_graph_breaks"]
        same = next(r["vs_stock_same_steps"] for r in res["rows"].values() if "vs_stock_same_steps" in r)
        lines.append(f"\n{key}: ILF-10 vs stock-10 measured {same['measured']:.3f}, predicted {same['predicted']:.3f}, "
                     f"ratio {same['ratio']:.3f}.")
        lines.append(f"{key}: ILF graph breaks plain step {b['plain_step']}, feedback step {b['feedback_step']}; "
                     f"timer: {res['timer']}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["tiny", "small", "pixart-xl-2"], nargs="+", default=["tiny", "small"],
                   help="architectures (default: tiny and small)")
    p.add_argument("--mode", choices=["full", "regional", "both"], default="full",
                   help="torch.compile of the whole transformer, compile_repeated_blocks, or both")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per method after the warm-up; median")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--out", type=Path, default=Path("bench/results/compile_speed.json"), help="JSON output path")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    modes = ["full", "regional"] if args.mode == "both" else [args.mode]
    results = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
               (platform.processor() or platform.machine()), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "dtype": args.dtype, "repeats": args.repeats, "runs": {}}
    for config in args.config:
        for mode in modes:
            print(f"[compile_speed] {config} / {mode} …", flush=True)
            torch._dynamo.reset()
            results["runs"][f"{config}/{mode}"] = bench(config, mode, args.repeats, args.device, dtype)
    table = markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
