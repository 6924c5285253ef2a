"""`ilf demo`: the whole job offline on an embedded world — train a feedback, generate, measure, report.

1. train a feedback on the world's shipped backbone with trajectory distillation, for the world's schedule
   (or take the shipped feedback with `--pretrained-feedback`);
2. generate held-out prompts (shapes) or all ten classes (digits) with fixed seeds for 20 and 10 plain steps,
   plain at the smallest step count whose block forwards are at least ILF's (its fair rival), the paper cache at
   ~1.5× and ~1.8×, diffusers' TaylorSeer at 1.8× and ILF at its trained schedule, timing every method and
   counting its block forwards;
3. write `report.md` (Table 1's shape, then a verdict: ILF against its fair plain rival and against TaylorSeer,
   paired bootstrap 95% intervals and items won), `results.json`, `grid.png` (rows = methods, same seeds) and
   `pareto.png`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .argtypes import COUNT, INDEX, add_loop_arg, add_threads_arg, check_plan_fits, positive_float
from .choices import T_POST_STRATEGIES
from .demo_corrector import CORRECTOR_FAST, TAYLORSEER_FAST
from .portable import portable_path, portable_tree

# Per world: the loop (paper: 8–19 of 28 blocks, scaled to our 12), the trajectory run that trains the feedback
# for the shipped schedule (10 DPM-Solver++ steps, feedback on the last one: the recipe of the shipped feedbacks),
# and the ILF rows' t_post — chosen by bench/quality_per_block.py (see the README's "Quality per block forward").
WORLD_SETTINGS = {
    "shapes": dict(loop=(3, 8), steps=1000, quick_steps=6, lr=1e-3, batch=32, images=32, quick_images=4,
                   t_post="none", student_steps=10, plan="last:1", rollout_size=256),
    "digits": dict(loop=(3, 8), steps=1000, quick_steps=6, lr=1e-3, batch=32, images=50, quick_images=4,
                   t_post="none", student_steps=10, plan="last:1", rollout_size=256),
    # SD3 (flow matching, FlowMatchEuler): the same recipe, on the image stream only (see the README)
    "shapes-flow": dict(loop=(3, 8), steps=500, quick_steps=6, lr=1e-3, batch=32, images=32, quick_images=4,
                        t_post="none", student_steps=10, plan="last:1", rollout_size=128),
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
    student_steps: int = 10
    plan: str = "last:1"
    rollout_size: int = 128
    mode: str = "corrector"  # "corrector" (the shipped method) or "ilf" (the paper's inner loop)
    cache_interval: int = 2
    cache_warmup: int = 3


TAYLORSEER = "TaylorSeer (diffusers)"  # the display name of the demo's cache rival


def demo_methods(num_blocks: int, ilf_steps: int, plan: str, t_post: str, loop: tuple[int, int]) -> list[str]:
    """plain 20 / 10 / the fair rival, Table 1's paper cache at ~1.5× and ~1.8×, diffusers' TaylorSeer (the
    cache that did best in bench/peer_study.py) and ILF at its trained schedule.

    Cache: c = 2N/3 inner blocks (N=28: 18.7 → the paper's 18); refresh every 2nd step ≈ 1.5×, every 3rd ≈ 1.8×.
    TaylorSeer: a full step every 2nd after 3 warm-up steps, 11 of 20 (1.8×). The rival: plain at the smallest
    step count whose block forwards are at least ILF's.
    """
    from .bench.paired import fair_plain_steps
    from .schedule import predicted_block_forwards

    c = round(2 * num_blocks / 3)
    ilf_blocks = predicted_block_forwards(num_blocks, ilf_steps, loop=loop, feedback_plan=plan)
    plain = sorted({20, 10, fair_plain_steps(num_blocks, ilf_blocks)}, reverse=True)
    return [f"plain:{n}" for n in plain] + [
        f"paper-cache:20,location=inner,blocks={c},refresh=2,label=paper cache ~1.5x",
        f"paper-cache:20,location=inner,blocks={c},refresh=3,label=paper cache ~1.8x",
        f"taylorseer:20,interval=2,warmup=3,label={TAYLORSEER}",
        f"ilf:{ilf_steps},plan={plan},t_post={t_post},label=ILF",
    ]


def train_feedback(plan: DemoPlan) -> tuple[Path, dict]:
    from .train.config import TrainConfig
    from .train.trainer import train

    run = plan.out / "feedback-run"
    cfg = TrainConfig(output_dir=run, world=plan.world, loop=plan.loop, lr=plan.lr, batch_size=plan.batch,
                      max_steps=plan.train_steps, checkpoint_every=0, log_every=max(1, plan.train_steps // 20),
                      inference_t_post=plan.t_post, seed=plan.seed, distill="trajectory",
                      student_steps=plan.student_steps, feedback_steps=plan.plan,
                      rollout_size=plan.rollout_size if plan.train_steps > 20 else 8)
    start = time.perf_counter()
    result = train(cfg)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss_distill" in r]
    info = {"steps": plan.train_steps, "seconds": time.perf_counter() - start, "lr": plan.lr,
            "batch": plan.batch, "loop": list(plan.loop), "first": losses[0], "last": losses[-1]}
    return result.feedback_dir, info


def paired_verdict(out: Path, results: dict, world: str, num_blocks: int) -> list[dict]:
    """ILF against the plain rival with at least its block forwards, and against TaylorSeer (a cache users have
    already), per item: paired bootstrap 95% CIs."""
    import numpy as np

    from .bench.paired import compare, fair_plain_steps
    from .eval.metrics import fidelity_folders, load_images
    from .worlds import load_evaluator

    rows = {r["display"]: r for r in results["rows"]}
    ref = next(r for r in results["rows"] if r.get("reference"))
    quality = "accuracy" if world == "digits" else "alignment"
    key = "class_label" if world == "digits" else "prompt"
    by_name = {f"{it['id']}.png": it for it in results["items"]}  # the image folders hold ITEM_ID.png, sorted
    ev = load_evaluator(world)
    found = []
    for name, row in rows.items():
        if row["family"] not in ("ilf", "corrector") or not row.get("images"):
            continue
        plain = rows.get(f"plain:{fair_plain_steps(num_blocks, row['block_forwards'])}")
        cache = rows.get(TAYLORSEER_FAST if name == CORRECTOR_FAST else TAYLORSEER)  # TaylorSeer within its budget
        for rival, kind in ((plain, "plain"), (cache, "cache")):
            if rival is None or rival is ref or not rival.get("images"):
                continue
            scores = {}
            for r in (row, rival):
                fid = fidelity_folders(out / r["images"], out / ref["images"])
                images = load_images(out / r["images"])  # in the same (sorted file name) order as fid.names
                conds = [by_name[n][key] for n in fid.names]
                scores[r["display"]] = {"psnr": fid.psnr.numpy(), "ssim": fid.ssim.numpy(),
                                        quality: ev.score(images, conds).numpy()}
            seeds = np.arange(len(fid.names))  # one seed per item: wins are counted per item
            found.append({"ilf": name, "rival": rival["display"], "rival_kind": kind,
                          "ilf_blocks": row["block_forwards"], "rival_blocks": rival["block_forwards"],
                          "comparisons": {k: compare(scores[name][k], scores[rival["display"]][k], seeds, k).to_dict()
                                          for k in ("psnr", "ssim", quality)}})
    return found


def verdict(found: list[dict]) -> list[str]:
    """Plain words: ILF wins a metric when its paired 95% interval lies above zero, loses when below, else ties."""
    lines = []
    for f in found:
        parts, wins, losses = [], 0, 0
        for k, c in f["comparisons"].items():
            lo, hi = c["ci95"]
            word = "better" if lo > 0 else ("worse" if hi < 0 else "equal (within noise)")
            wins, losses = wins + (lo > 0), losses + (hi < 0)
            parts.append(f"{word} {k}: {c['mean_a']:.4g} vs {c['mean_b']:.4g}, Δ {c['diff']:+.3g} "
                         f"[{lo:+.3g}, {hi:+.3g}], {c['seed_wins']}/{c['num_seeds']} items better")
        head = "LOSES" if losses else ("wins" if wins else "ties")
        why = ("a training-free cache at about the same budget" if f.get("rival_kind") == "cache"
               else "the fewest plain steps with at least as many")
        lines.append(f"- **{f['ilf']}** ({f['ilf_blocks']:.0f} block forwards) vs **{f['rival']}** "
                     f"({f['rival_blocks']:.0f}, {why}): it {head} — " + "; ".join(parts) + ".")
    return lines


def write_report(plan: DemoPlan, results: dict, train_info: dict | None, feedback: Path) -> Path:
    quality = "accuracy" if plan.world == "digits" else "alignment"
    table = (plan.out / "table.md").read_text()
    lines = [f"# ilf demo — the {plan.world} world", ""]
    src = results.get("source", {})
    lines.append(f"Backbone: the shipped {src.get('transformer_class', 'transformer')} ({src.get('num_blocks', '?')} blocks), "
                 f"{results['settings'].get('num_images', len(results['items']))} held-out images per method, "
                 f"same seeds for every method; s/img is the median of {plan.repeats} interleaved timing rounds "
                 "on this machine.")
    lines.append("")
    if plan.mode == "corrector":
        from .demo_corrector import describe

        lines.append(describe(train_info, portable_path(feedback, plan.out)))
    elif train_info:
        f, l_ = train_info["first"], train_info["last"]
        lines.append(f"Feedback: trained here with trajectory distillation for {plan.student_steps} steps with "
                     f"feedback on `{plan.plan}` — loop {tuple(plan.loop)}, {train_info['steps']} iterations × batch "
                     f"{train_info['batch']}, lr {train_info['lr']:g}, {train_info['seconds']:.0f} s; next-state loss "
                     f"{f['loss_distill']:.3g} (step {f['step']}) → {l_['loss_distill']:.3g} (step {l_['step']}); "
                     f"learned scales {l_['scales']}.")
    else:
        lines.append(f"Feedback: the shipped one ({portable_path(feedback, plan.out)}), at its trained schedule: {plan.student_steps} steps, "
                     f"feedback on `{plan.plan}`.")
    if plan.mode == "ilf":
        lines.append(f"ILF rows: t_post = {plan.t_post} (the post-feedback timestep; `--t-post` changes it).")
    if plan.world != "digits":
        lines.append("The shapes backbones draw single objects reliably but not two-object relations (docs/worlds.md, "
                     "scripts/showcase_prompts.py); the held-out prompts here measure how close each method stays to "
                     "plain 20 steps, not whether the backbone draws them right.")
    lines += ["", table.strip(), "", "## Verdict", ""]
    lines += verdict(results["demo"]["verdict"]) or ["- (no ILF row could be compared)"]
    lines += ["", f"Higher {quality} and PSNR/SSIM (to the 20-step image of the same seed) are better; FD (Fréchet "
              "distance of the evaluator's features to real held-out images) is better lower, but a few dozen "
              "images cannot resolve it, so the verdict leaves it out. Intervals: paired bootstrap (2000 "
              "resamples) of the per-item difference.", "", "![grid](grid.png)", "", "![pareto](pareto.png)", ""]
    path = plan.out / "report.md"
    path.write_text("\n".join(lines))
    return path


def check_loop_fits(model, loop: tuple[int, int]) -> None:
    """Raise `LoopRangeError` naming `--loop` and the allowed range unless `loop` fits `model`."""
    from .adapters import get_adapter
    from .config import ILFConfig
    from .errors import LoopRangeError

    adapter = get_adapter(model)
    try:
        ILFConfig(loop=loop).check_model(len(adapter.blocks(model)))
        adapter.check_loop(model, loop)
    except LoopRangeError as err:
        raise LoopRangeError(f"--loop {loop[0]} {loop[1]}: {err}") from None


def run_demo(plan: DemoPlan) -> Path:
    import torch

    from .bench.cmd_bench import run_bench

    if plan.threads:
        torch.set_num_threads(plan.threads)
    from .worlds.registry import load_transformer

    from .adapters import get_adapter

    backbone = load_transformer(plan.world)
    adapter = get_adapter(backbone)
    num_blocks = len(adapter.blocks(backbone))
    check_loop_fits(backbone, plan.loop)  # a bad --loop stops here, before any folder is made
    plan.out.mkdir(parents=True, exist_ok=True)
    train_info = None
    if plan.mode == "corrector":
        return run_corrector_demo(plan, num_blocks)
    if plan.pretrained:
        from .feedback import read_feedback
        from .worlds import paths

        feedback = paths.paper_feedback(plan.world)
        saved = read_feedback(feedback)[0]["config"]  # run it at the schedule it was trained for
        plan.student_steps = saved.get("num_inference_steps") or 10
        plan.plan = saved["feedback_steps"] if isinstance(saved["feedback_steps"], str) else \
            ",".join(map(str, saved["feedback_steps"]))
    else:
        print(f"ilf demo: 1/2 training a feedback on the {plan.world} world ({plan.train_steps} steps)")
        feedback, train_info = train_feedback(plan)
    print("ilf demo: 2/2 generating and measuring every method")
    methods = demo_methods(num_blocks, plan.student_steps, plan.plan, plan.t_post, plan.loop)
    argv = ["--world", plan.world, "--feedback", str(feedback), "--methods", *methods,
            "--num-images", str(plan.num_images), "--repeats", str(plan.repeats), "--seed", str(plan.seed),
            "--grid-items", str(min(6, plan.num_images)), "--out", str(plan.out)]
    return measure(plan, argv, train_info, feedback, num_blocks)


def measure(plan: DemoPlan, argv: list[str], train_info: dict | None, feedback: Path, num_blocks: int) -> Path:
    """Run the bench on the demo's rows, add the paired verdict, write results.json and report.md."""
    from .bench.cmd_bench import run_bench

    if plan.threads:
        argv += ["--threads", str(plan.threads)]
    results = run_bench(argv)
    results["demo"] = {"train": train_info, "feedback": str(feedback), "world": plan.world, "mode": plan.mode,
                       "verdict": paired_verdict(plan.out, results, plan.world, num_blocks)}
    (plan.out / "results.json").write_text(json.dumps(portable_tree(_jsonable(results), plan.out), indent=2) + "\n")
    report = write_report(plan, results, train_info, feedback)
    print(report.read_text())
    return report


def run_corrector_demo(plan: DemoPlan, num_blocks: int) -> Path:
    from .demo_corrector import corrector_methods, train_corrector
    from .worlds import paths

    train_info = None
    if plan.pretrained:
        feedback = paths.feedback(plan.world)
    else:
        print(f"ilf demo: 1/2 training a corrector of TaylorSeer on the {plan.world} world ({plan.train_steps} steps)")
        feedback, train_info = train_corrector(plan)
    print("ilf demo: 2/2 generating and measuring every method")
    argv = ["--world", plan.world, "--feedback", str(paths.paper_feedback(plan.world)),
            "--methods", *corrector_methods(num_blocks, feedback, plan.world), "--num-images", str(plan.num_images),
            "--repeats", str(plan.repeats), "--seed", str(plan.seed), "--grid-items", str(min(6, plan.num_images)),
            "--out", str(plan.out)]
    return measure(plan, argv, train_info, feedback, num_blocks)


def _jsonable(x):
    from .eval.score import to_jsonable

    return to_jsonable(x)


PAPER_ONLY = ("loop", "t_post", "student_steps", "feedback_steps")  # flags of --mode ilf


def cmd_demo(args) -> int:
    from .errors import ILFError

    s = WORLD_SETTINGS[args.world]
    corrector = args.mode == "corrector"
    if corrector:
        from .demo_corrector import RECIPE

        given = [f"--{k.replace('_', '-')}" for k in PAPER_ONLY if getattr(args, k) is not None]
        if given:
            raise ILFError(f"{', '.join(given)} set the paper's inner loop: add --mode ilf, or leave them out for the "
                           "corrector (its settings: --cache-interval, --cache-warmup)")
        s = {**s, **{k: RECIPE[k] for k in ("steps", "quick_steps", "lr", "batch", "rollout_size")}}
    elif args.cache_interval is not None or args.cache_warmup is not None:
        raise ILFError("--cache-interval and --cache-warmup set the corrector's cache: leave out --mode ilf")
    if args.feedback_steps and not args.pretrained_feedback:  # the plan may name only steps the run has
        check_plan_fits(args.feedback_steps, args.student_steps or s["student_steps"], steps_flag="--student-steps")
    plan = DemoPlan(
        world=args.world, out=Path(args.out), loop=tuple(args.loop or s["loop"]),
        train_steps=args.train_steps or (s["quick_steps"] if args.quick else s["steps"]),
        lr=args.lr or s["lr"], batch=args.batch_size or (8 if args.quick else s["batch"]),
        num_images=args.num_images or (s["quick_images"] if args.quick else s["images"]),
        repeats=args.repeats or (1 if args.quick else 3), pretrained=args.pretrained_feedback, seed=args.seed,
        threads=args.threads, t_post=args.t_post or s["t_post"],
        student_steps=args.student_steps or s["student_steps"], plan=args.feedback_steps or s["plan"],
        rollout_size=s["rollout_size"], mode=args.mode, cache_interval=args.cache_interval or 2,
        cache_warmup=args.cache_warmup or 3,
    )
    start = time.perf_counter()
    run_demo(plan)
    print(f"ilf demo: done in {time.perf_counter() - start:.0f} s — {plan.out / 'report.md'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="train a corrector (or ILF) on an embedded world, then generate, measure and report (offline)",
        description="The whole job offline on a CPU. By default (--mode corrector): train ilf's corrector of "
        "diffusers' TaylorSeer on an embedded world's shipped backbone (or use the shipped one), generate held-out "
        "prompts with fixed seeds for 20 and 10 plain steps, plain at the corrector's block budget, the paper cache "
        "at ~1.5x and ~1.8x, TaylorSeer at the same schedule, the paper's ILF (the shipped paper-mode feedback) and "
        "the corrector, and write report.md (a paired-bootstrap verdict against plain at its budget and against "
        "TaylorSeer), results.json, grid.png and pareto.png. About 90 s with --threads 1 (one CPU thread; 50 s with "
        "--pretrained-feedback). --mode ilf trains the paper's inner loop instead (about 10 minutes).",
    )
    p.add_argument("--world", choices=sorted(WORLD_SETTINGS), default="shapes",
                   help="shapes (text-to-image, PixArt; Table 1 shape), digits (class-to-image, DiT; Table 2) or shapes-flow (SD3 rectified flow)")
    p.add_argument("--out", default="ilf-demo", help="output folder (default: ./ilf-demo)")
    p.add_argument("--mode", choices=["corrector", "ilf"], default="corrector",
                   help="corrector: ilf's trained corrector of TaylorSeer (the shipped method); ilf: the paper's inner "
                   "loop trained by trajectory distillation (default: corrector)")
    p.add_argument("--pretrained-feedback", action="store_true", help="use the shipped feedback instead of training")
    p.add_argument("--cache-interval", type=COUNT, help="corrector: TaylorSeer's full step every N steps (default: 2)")
    p.add_argument("--cache-warmup", type=COUNT, help="corrector: TaylorSeer's warm-up steps (default: 3)")
    p.add_argument("--quick", action="store_true", help="a smoke run in about 2 minutes (few steps and images)")
    p.add_argument("--train-steps", type=COUNT, help="training iterations (default: corrector 600, ilf 1000; 6 with --quick)")
    p.add_argument("--student-steps", type=COUNT, help="ilf: the inference step count the feedback is trained for (default: 10)")
    p.add_argument("--feedback-steps", help="ilf: the steps that get feedback, e.g. last:1, last:2, outer:2 (default: last:1)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: corrector 3e-3, ilf 1e-3)")
    p.add_argument("--batch-size", type=COUNT, help="training batch (default: 32; 8 with --quick)")
    add_loop_arg(p, help="ilf: inner loop blocks, 0 <= B <= E < 12 (default: 3 8)")
    p.add_argument("--t-post", choices=T_POST_STRATEGIES,
                   help="ilf: post-feedback timestep of training and of the ILF row (default: none, the best measured by "
                   "bench/world_study.py)")
    p.add_argument("--num-images", type=COUNT, help="images per method (default: 32 shapes / 50 digits; 4 with --quick)")
    p.add_argument("--repeats", type=COUNT, help="timing rounds, median reported (default: 3; 1 with --quick)")
    p.add_argument("--seed", type=INDEX, default=0, help="seed of training and generation (default: 0)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_demo)
