"""What a training step costs: Fast Approximate Distillation vs 8-step-teacher distillation vs a full fine-tune.

For each architecture (the tiny test config, and the real-size PixArt-XL-2 with random weights), each
method runs in its own process (so the process's peak resident memory is that method's), takes warm-up
steps, then times steps and reports the median, the peak memory, and the trainable parameter count:

  fad        ILF student + one teacher forward at t/2 (only the feedback trains)
  multistep  ILF student + a teacher target from 8 DDIM steps of the backbone (only the feedback trains)
  finetune   the whole backbone trains on the plain diffusion loss (AdamW on every parameter)

Target (issue 3): an FAD step costs ≤ 1/3 of a multistep step.

    python bench/train_cost.py --config both --steps 3 --out bench/results/train_cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

METHODS = ("fad", "multistep", "finetune")


def build(config: str):
    from ilf.tiny import pixart_xl_2, tiny_pixart

    if config == "pixart-xl-2":
        # the real architecture; 128 px latents (64 tokens) keep a CPU step in minutes, not hours
        return pixart_xl_2(sample_size=16), 16, 120, (8, 19)
    return tiny_pixart(num_layers=28, sample_size=8), 8, 16, (8, 19)


def run_one(config: str, method: str, steps: int, warmup: int, batch: int) -> dict:
    from ilf import ILFConfig, apply_ilf
    from ilf.train.objective import ilf_loss

    model, size, tokens, loop = build(config)
    total = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 4, size, size, generator=g)
    cond = dict(encoder_hidden_states=torch.randn(batch, tokens, model.config.caption_channels, generator=g),
                encoder_attention_mask=torch.ones(batch, tokens),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    sched = DDPMScheduler()
    if method == "finetune":
        params = list(model.parameters())
    else:
        model.requires_grad_(False)
        rt = apply_ilf(model, ILFConfig(loop=loop))
        rt.feedback.scales.data.fill_(0.1)
        params = list(rt.feedback.parameters())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-5)
    trainable = sum(p.numel() for p in params)
    times = []
    for i in range(warmup + steps):
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(1, 1000, (batch,), generator=g)
        start = time.perf_counter()
        if method == "finetune":
            x_t = sched.add_noise(x0, noise, t)
            loss = F.mse_loss(model(x_t, timestep=t, **cond).sample[:, :4], noise)
        else:
            loss = ilf_loss(model, cond, x0, noise, t, sched, distill=method, teacher_steps=8).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return dict(config=config, method=method, step_s=statistics.median(times), step_times=times,
                peak_rss_mb=peak_mb, trainable_params=trainable, total_params=total + (0 if method == "finetune" else trainable))


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["tiny", "pixart-xl-2", "both"], default="both", help="architecture(s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--batch", type=int, default=1, help="samples per step")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("bench/results/train_cost.json"), help="JSON output path")
    p.add_argument("--one", nargs=2, metavar=("CONFIG", "METHOD"), help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(*args.one, args.steps, args.warmup, args.batch)))
        return
    configs = ["tiny", "pixart-xl-2"] if args.config == "both" else [args.config]
    rows = []
    for config in configs:
        for method in METHODS:
            print(f"[train_cost] {config} {method} …", flush=True)
            cmd = [sys.executable, __file__, "--one", config, method, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--batch", str(args.batch)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
    lines = ["| config | method | s/step (median) | vs multistep | peak RSS (MB) | trainable params |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ref = next(x for x in rows if x["config"] == r["config"] and x["method"] == "multistep")
        r["vs_multistep"] = r["step_s"] / ref["step_s"]
        lines.append(f"| {r['config']} | {r['method']} | {r['step_s']:.3f} | {r['vs_multistep']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {_count(r['trainable_params'])} of {_count(r['total_params'])} |")
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
