"""Does ILF beat plain fewer steps on an embedded world, and what decides it?

Trains feedbacks on a world's shipped backbone for several loop placements, training lengths and learning
rates, then benches each with every t_post reading (none, uniform, rescale m/n, rescale n/m, anneal) at the
paper's 1.7x setting (10 steps, feedback on the outer 2+2) against 20 / 12 / 10 plain steps — same prompts, same
seeds. Writes `study.json` and `study.md` (one row per feedback × t_post, with the plain rows for reference).

    python bench/world_study.py --world shapes --out runs/study-shapes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

T_POST = [("none", "m/n"), ("uniform", "m/n"), ("rescale", "m/n"), ("rescale", "n/m"), ("anneal", "m/n")]


def train_one(world, out, loop, steps, lr, batch, seed):
    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    fb = out / "feedback"
    if (fb / "ilf_config.json").is_file():
        return fb, None
    start = time.perf_counter()
    train(TrainConfig(output_dir=out, world=world, loop=loop, lr=lr, batch_size=batch, max_steps=steps,
                      checkpoint_every=0, log_every=max(1, steps // 10), seed=seed, progress=False,
                      distill="fad"))
    return fb, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="shapes", choices=["shapes", "digits"], help="embedded world")
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="output folder")
    p.add_argument("--loops", nargs="+", default=["1-5", "3-8", "6-10"], help="loops B-E to train")
    p.add_argument("--steps", nargs="+", type=int, default=[300], help="training lengths")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3], help="learning rates")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--num-images", type=int, default=32, help="images per method")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed")
    args = p.parse_args(argv)
    import torch

    from ilf.bench.cli import run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    quality = "alignment" if args.world == "shapes" else "accuracy"
    runs = []
    for loop_s in args.loops:
        loop = tuple(int(v) for v in loop_s.split("-"))
        for steps in args.steps:
            for lr in args.lrs:
                name = f"loop{loop[0]}-{loop[1]}_s{steps}_lr{lr:g}"
                fb, secs = train_one(args.world, args.out / name, loop, steps, lr, args.batch, args.seed)
                methods = ["plain:20", "plain:12", "plain:10"] + [
                    f"ilf:10,feedback={fb},plan=outer:2,t_post={tp},ratio={r},label={name} {tp} {r}"
                    for tp, r in T_POST]
                res = run_bench(["--world", args.world, "--methods", *methods, "--num-images",
                                 str(args.num_images), "--repeats", "1", "--out", str(args.out / f"bench-{name}"),
                                 "--seed", str(args.seed), "--no-progress"])
                runs.append({"feedback": name, "train_seconds": secs, "rows": [
                    {"method": r["display"], "blocks": r["block_forwards"], **r["metrics"]} for r in res["rows"]]})
    (args.out / "study.json").write_text(json.dumps(runs, indent=2, default=str) + "\n")
    lines = [f"| method | blocks | {quality} | FD ↓ | PSNR | SSIM |", "|---|---:|---:|---:|---:|---:|"]
    for i, run in enumerate(runs):
        for r in run["rows"]:
            if r["method"].startswith("plain") and i > 0:
                continue  # the plain rows are the same in every run
            lines.append(f"| {r['method']} | {r['blocks']:.0f} | {r.get(quality, float('nan')):.3f} | "
                         f"{r.get('world_fd', float('nan')):.1f} | {r.get('psnr', float('nan')):.2f} | "
                         f"{r.get('ssim', float('nan')):.4f} |")
    (args.out / "study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
