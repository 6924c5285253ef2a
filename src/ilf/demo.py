"""`ilf demo`: the whole job offline on an embedded world — train a feedback, generate, measure, report.

1. train a feedback on the world's shipped backbone with Fast Approximate Distillation (or take the shipped
   feedback with `--pretrained-feedback`);
2. generate the world's held-out prompts (shapes) or all ten classes (digits) with fixed seeds for 20, 12 and
   10 plain steps, the paper cache at ~1.5× and ~1.8×, and ILF at ~1.5× and ~1.8× (Tables 1 and 4 at this
   depth), timing every method and counting its block forwards;
3. write `report.md` (the paper's Table 1 shape, plus a plain-words verdict that says when ILF loses),
   `results.json`, `grid.png` (rows = methods, same seeds, like Fig. 9) and `pareto.png` (like Fig. 8).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

# Per world: the inner loop (paper: 8–19 of 28 blocks, scaled to our 12), the feedback training run, and the
# ILF rows' t_post — chosen by bench/world_study.py on each world (see the README's "Embedded worlds").
WORLD_SETTINGS = {
    "shapes": dict(loop=(3, 8), steps=200, quick_steps=8, lr=1e-3, batch=32, images=32, quick_images=4,
                   t_post="none"),
    "digits": dict(loop=(3, 8), steps=200, quick_steps=8, lr=1e-3, batch=32, images=50, quick_images=4,
                   t_post="none"),
}


@dataclass
class DemoPlan:
    world: str
    out: Path
    loop: tuple[int, int]
    train_steps: int
    lr: float
    batch: int
    num_images: int
    repeats: int
    pretrained: bool
    seed: int
    t_post: str
    threads: int | None


def demo_methods(num_blocks: int, t_post: str = "rescale") -> list[str]:
    """Table 1 and Table 4's rows at this depth: ~1.5× and ~1.8× for the paper cache and for ILF.

    Cache: c = 2N/3 inner blocks (N=28: 18.7 → the paper's 18); refresh every 2nd step ≈ 1.5×, every 3rd ≈ 1.8×.
    ILF: 12 steps skipping the inner 8 (≈ 1.45×) and 10 steps with feedback on the outer 2 + 2 (≈ 1.7×).
    """
    c = round(2 * num_blocks / 3)
    return [
        "plain:20", "plain:12", "plain:10",
        f"paper-cache:20,location=inner,blocks={c},refresh=2,label=paper cache ~1.5x",
        f"paper-cache:20,location=inner,blocks={c},refresh=3,label=paper cache ~1.8x",
        f"ilf:12,plan=skip-inner:8,t_post={t_post},label=ILF ~1.5x",
        f"ilf:10,plan=outer:2,t_post={t_post},label=ILF ~1.8x",
    ]


def train_feedback(plan: DemoPlan) -> tuple[Path, dict]:
    from .train.config import TrainConfig
    from .train.trainer import train

    run = plan.out / "feedback-run"
    cfg = TrainConfig(output_dir=run, world=plan.world, loop=plan.loop, lr=plan.lr, batch_size=plan.batch,
                      max_steps=plan.train_steps, checkpoint_every=0, log_every=max(1, plan.train_steps // 20),
                      inference_t_post=plan.t_post, seed=plan.seed)
    start = time.perf_counter()
    result = train(cfg)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    info = {"steps": plan.train_steps, "seconds": time.perf_counter() - start, "lr": plan.lr,
            "batch": plan.batch, "loop": list(plan.loop), "first": log[0], "last": log[-1]}
    return result.feedback_dir, info


# Differences smaller than these are called ties: a few dozen images cannot resolve them (FD from so few
# samples moves by several per cent between seeds; one image flips accuracy by 1/n).
TIES = {
    "world_fd": lambda ref: 0.05 * abs(ref),
    "psnr": lambda ref: 0.25,
    "alignment": lambda ref: 0.01,
    "accuracy": lambda ref: 0.01,
}


def verdict(rows: list[dict], quality: str) -> list[str]:
    """Plain-words comparisons: ILF against plain steps at about the same block budget, and against the cache
    at the same speedup. Says so when ILF loses."""
    by = {r["display"]: r for r in rows}

    def q(r):
        return r["metrics"].get(quality)

    def cmp(a, b, metric, higher=True):
        va, vb = a["metrics"].get(metric), b["metrics"].get(metric)
        if va is None or vb is None or (isinstance(va, float) and math.isinf(va)):
            return None
        if abs(va - vb) <= TIES.get(metric, lambda v: 0.0)(vb):
            return f"equal {metric} ({va:.4g} vs {vb:.4g}, within noise)"
        better = va > vb if higher else va < vb
        return f"{'better' if better else 'worse'} {metric} ({va:.4g} vs {vb:.4g})"

    lines = []
    pairs = [("ILF ~1.8x", "plain:12", "the same block budget"), ("ILF ~1.8x", "plain:10", "the same step count"),
             ("ILF ~1.8x", "paper cache ~1.8x", "the same speedup"), ("ILF ~1.5x", "paper cache ~1.5x",
                                                                     "the same speedup")]
    for a, b, why in pairs:
        if a not in by or b not in by or q(by[a]) is None:
            continue
        parts = [c for c in (cmp(by[a], by[b], quality), cmp(by[a], by[b], "world_fd", higher=False),
                             cmp(by[a], by[b], "psnr")) if c]
        wins, losses = (sum(p.startswith(w) for p in parts) for w in ("better", "worse"))
        head = "wins" if wins > losses else ("ties" if wins == losses else "LOSES")
        lines.append(f"- **{a}** ({by[a]['block_forwards']:.0f} block forwards) vs **{b}** "
                     f"({by[b]['block_forwards']:.0f}), {why}: ILF {head} — " + "; ".join(parts) + ".")
    return lines


def write_report(plan: DemoPlan, results: dict, train_info: dict | None, feedback: Path) -> Path:
    quality = "alignment" if plan.world == "shapes" else "accuracy"
    table = (plan.out / "table.md").read_text()
    lines = [f"# ilf demo — the {plan.world} world", ""]
    src = results.get("source", {})
    lines.append(f"Backbone: the shipped {src.get('transformer', 'transformer')} ({src.get('num_blocks', '?')} blocks), "
                 f"{results['settings'].get('num_images', len(results['items']))} held-out images per method, "
                 f"same seeds for every method; s/img is the median of {plan.repeats} interleaved timing rounds "
                 "on this machine.")
    lines.append("")
    if train_info:
        f, l_ = train_info["first"], train_info["last"]
        lines.append(f"Feedback: trained here with Fast Approximate Distillation — loop {tuple(plan.loop)}, "
                     f"{train_info['steps']} steps × batch {train_info['batch']}, lr {train_info['lr']:g}, "
                     f"{train_info['seconds']:.0f} s; distillation loss {f['loss_distill']:.4f} (step {f['step']}) → "
                     f"{l_['loss_distill']:.4f} (step {l_['step']}); learned scales {l_['scales']}.")
    else:
        lines.append(f"Feedback: the shipped one ({feedback}).")
    lines.append(f"ILF rows: t_post = {plan.t_post} (the post-feedback timestep; `--t-post` changes it).")
    lines += ["", table.strip(), "", "## Verdict", ""]
    lines += verdict(results["rows"], quality) or ["- (no ILF row could be compared)"]
    lines += ["", f"Higher {quality} and PSNR/SSIM (to the 20-step image of the same seed) are better; FD (Fréchet "
              "distance of the evaluator's features to real held-out images) is better lower.", "",
              "![grid](grid.png)", "", "![pareto](pareto.png)", ""]
    path = plan.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def run_demo(plan: DemoPlan) -> Path:
    import torch

    from .bench.cli import run_bench

    if plan.threads:
        torch.set_num_threads(plan.threads)
    plan.out.mkdir(parents=True, exist_ok=True)
    train_info = None
    if plan.pretrained:
        from .worlds import paths

        feedback = paths.feedback(plan.world)
    else:
        print(f"ilf demo: 1/2 training a feedback on the {plan.world} world ({plan.train_steps} steps)")
        feedback, train_info = train_feedback(plan)
    from .worlds.registry import load_transformer

    num_blocks = len(load_transformer(plan.world).transformer_blocks)
    print("ilf demo: 2/2 generating and measuring every method")
    argv = ["--world", plan.world, "--feedback", str(feedback), "--methods", *demo_methods(num_blocks, plan.t_post),
            "--num-images", str(plan.num_images), "--repeats", str(plan.repeats), "--seed", str(plan.seed),
            "--grid-items", str(min(6, plan.num_images)), "--out", str(plan.out)]
    if plan.threads:
        argv += ["--threads", str(plan.threads)]
    results = run_bench(argv)
    results["demo"] = {"train": train_info, "feedback": str(feedback), "world": plan.world}
    (plan.out / "results.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    report = write_report(plan, results, train_info, feedback)
    print(report.read_text())
    return report


def _jsonable(x):
    from .eval.score import to_jsonable

    return to_jsonable(x)


def cmd_demo(args) -> int:
    s = WORLD_SETTINGS[args.world]
    plan = DemoPlan(
        world=args.world, out=Path(args.out), loop=tuple(args.loop or s["loop"]),
        train_steps=args.train_steps or (s["quick_steps"] if args.quick else s["steps"]),
        lr=args.lr or s["lr"], batch=args.batch_size or (8 if args.quick else s["batch"]),
        num_images=args.num_images or (s["quick_images"] if args.quick else s["images"]),
        repeats=args.repeats or (1 if args.quick else 3), pretrained=args.pretrained_feedback, seed=args.seed,
        threads=args.threads, t_post=args.t_post or s["t_post"],
    )
    start = time.perf_counter()
    run_demo(plan)
    print(f"ilf demo: done in {time.perf_counter() - start:.0f} s — {plan.out / 'report.md'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="train a feedback on an embedded world, then generate, measure and report (offline)",
        description="The whole ILF job offline on a CPU: train a feedback on an embedded world's shipped backbone "
        "(or use the shipped feedback), generate held-out prompts with fixed seeds for 20/12/10 plain steps, the "
        "paper cache and ILF at ~1.5x and ~1.8x, and write report.md, results.json, grid.png and pareto.png.",
    )
    p.add_argument("--world", choices=sorted(WORLD_SETTINGS), default="shapes",
                   help="shapes (text-to-image, PixArt; Table 1 shape) or digits (class-to-image, DiT; Table 2)")
    p.add_argument("--out", default="ilf-demo", help="output folder (default: ./ilf-demo)")
    p.add_argument("--pretrained-feedback", action="store_true", help="use the shipped feedback instead of training")
    p.add_argument("--quick", action="store_true", help="a smoke run in about 2 minutes (few steps and images)")
    p.add_argument("--train-steps", type=int, help="feedback training steps (default: 200; 8 with --quick)")
    p.add_argument("--lr", type=float, help="feedback learning rate (default: 1e-3)")
    p.add_argument("--batch-size", type=int, help="training batch (default: 32; 8 with --quick)")
    p.add_argument("--loop", nargs=2, type=int, metavar=("B", "E"), help="inner loop blocks (default: 3 8)")
    p.add_argument("--t-post", choices=["none", "uniform", "rescale", "anneal"],
                   help="post-feedback timestep of the ILF rows (default: the world's, from bench/world_study.py)")
    p.add_argument("--num-images", type=int, help="images per method (default: 32 shapes / 50 digits; 4 with --quick)")
    p.add_argument("--repeats", type=int, help="timing rounds, median reported (default: 3; 1 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="seed of training and generation (default: 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_demo)
