"""Quality per block forward on an embedded world: does a trained feedback beat plain fewer steps?

1. trains each ILF variant (objective × plan × loop × student steps × length, plus the same-size no-loop
   control) on the world's shipped backbone, or takes a given feedback folder;
2. generates the plain curve (N = 4…20 steps) and every variant on two disjoint seed sets — *tune* seeds to
   choose the winner, *report* seeds for every number in the tables;
3. scores each image against plain:20 of the same item (PSNR/SSIM) and with the world's evaluator (digit
   accuracy / prompt alignment); FD is not reported: 100–130 samples per method cannot resolve it;
4. compares every variant with plain at the smallest step count whose block forwards are at least the
   variant's (paired bootstrap 95% CI, seed-level wins), and writes `table.md`, `results.json`, `pareto.png`.

    python bench/quality_per_block.py --world digits --out docs/quality-per-block/digits --runs runs/qpb-digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

_COMMON = [
    "traj-10-outer2:distill=trajectory,steps=10,plan=outer:2",
    "traj-10-last2:distill=trajectory,steps=10,plan=last:2",
    "traj-10-last1:distill=trajectory,steps=10,plan=last:1",
    "traj-5-first1last1:distill=trajectory,steps=5,plan=0,4",
    # the same-size control without an inner loop, same objective and schedule as traj-10-last2
    "control-10-last2:distill=trajectory,steps=10,plan=last:2,mode=once",
    # the paper's objective: the FAD feedback shipped before this study (digits 1500 steps, shapes 400)
    "fad-outer2:feedback=FAD,steps=10,plan=outer:2",
    "fad-last1:feedback=FAD,steps=10,plan=last:1",
]
VARIANTS = {  # NAME:key=value,...; see --variants
    "digits": _COMMON + ["traj-10-last2-loop5-7:distill=trajectory,steps=10,plan=last:2,loop=5-7"],
    "shapes": _COMMON + [  # training length and a deeper loop, for the one plan that came close on shapes
        "traj-10-last1-3000it:distill=trajectory,steps=10,plan=last:1,iters=3000",
        "traj-10-last1-loop1-10-3000it:distill=trajectory,steps=10,plan=last:1,loop=1-10,iters=3000",
    ],
}
# shapes-flow (SD3, flow matching): the recipe that won on shapes, the same with F's text stream fed back too
# (the dual-stream question), and the same-size no-loop control
# (run with --iters 500 --rollout-size 128: what one session's CPU allowed, three variants in parallel)
VARIANTS["shapes-flow"] = [
    "traj-10-last1:distill=trajectory,steps=10,plan=last:1",
    "traj-10-last1-feedtext:distill=trajectory,steps=10,plan=last:1,feed_text=1",
    "control-10-last1:distill=trajectory,steps=10,plan=last:1,mode=once",
]
FAD_FEEDBACK = "docs/quality-per-block/fad-feedback/{world}"  # the pre-study shipped FAD feedbacks, kept


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    opts, key = {}, None
    for part in rest.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            opts[key] = value
        elif key is not None:  # a comma inside an explicit plan: "plan=0,4"
            opts[key] += "," + part
    return name, opts


def train_variant(world: str, run: Path, opts: dict, args) -> Path:
    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    if opts.get("feedback"):
        if opts["feedback"] == "FAD":
            return Path(FAD_FEEDBACK.format(world=world))
        return Path(opts["feedback"])
    fb = run / "feedback"
    if (fb / "ilf_config.json").is_file():
        return fb
    loop = tuple(int(v) for v in opts.get("loop", "3-8").split("-"))
    train(TrainConfig(
        output_dir=run, world=world, loop=loop, lr=float(opts.get("lr", args.lr)), batch_size=args.batch,
        max_steps=int(opts.get("iters", args.iters)), distill=opts.get("distill", "trajectory"),
        student_steps=int(opts.get("steps", 10)), feedback_steps=opts.get("plan", "outer:2"),
        inference_t_post=opts.get("t_post", "none"), rerun_loop=opts.get("mode", "loop") == "loop",
        feed_text=opts.get("feed_text", "0") == "1",
        rollout_every=int(opts.get("rollout_every", args.rollout_every)), rollout_size=args.rollout_size,
        checkpoint_every=0, log_every=50, seed=args.seed, progress=False,
    ))
    return fb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="digits", choices=["digits", "shapes", "shapes-flow"], help="embedded world")
    p.add_argument("--out", type=Path, required=True, help="where table.md, results.json and pareto.png go")
    p.add_argument("--runs", type=Path, default=Path("runs/qpb"), help="training runs (reused when present)")
    p.add_argument("--variants", nargs="*", help="NAME:key=value,... (keys: distill, steps, plan, loop, iters, lr, "
                   "mode=loop|once, feed_text=0|1, t_post, feedback=DIR|FAD); default: the world's list in this file")
    p.add_argument("--plain", nargs=2, type=int, default=(4, 20), metavar=("MIN", "MAX"), help="plain curve range")
    p.add_argument("--tune-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds that choose the winner")
    p.add_argument("--report-seeds", nargs="+", type=int, default=list(range(1000, 1010)),
                   help="seeds of every reported number")
    p.add_argument("--num-prompts", type=int, default=16, help="held-out shapes prompts per seed")
    p.add_argument("--iters", type=int, default=1000, help="training iterations per variant")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--batch", type=int, default=32, help="training batch")
    p.add_argument("--rollout-every", type=int, default=100, help="iterations between student rollouts")
    p.add_argument("--rollout-size", type=int, default=256, help="fixed training noises")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--train-only", action="store_true", help="train the variants (in --runs) and stop: lets "
                   "several processes train disjoint --variants in parallel before one run evaluates them all")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    args = p.parse_args(argv)
    import torch

    from ilf.bench.paired import Method, compare, fair_plain_steps, generate, per_item_scores, world_items
    from ilf.worlds import load_evaluator, load_pipeline

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    world, quality = args.world, ("accuracy" if args.world == "digits" else "alignment")
    variants = [parse_variant(v) for v in (args.variants or VARIANTS[world])]
    methods, trained = [], {}
    for name, opts in variants:
        start = time.process_time()
        fb = train_variant(world, args.runs / name, opts, args)
        trained[name] = {"opts": opts, "feedback": str(fb), "train_cpu_s": time.process_time() - start}
        methods.append(Method(name, int(opts.get("steps", 10)), str(fb), opts.get("plan"), opts.get("t_post")))
        print(f"[{world}] trained {name} ({trained[name]['train_cpu_s']:.0f} s CPU)", flush=True)
    if args.train_only:
        return
    plain = [Method(f"plain:{n}", n) for n in range(args.plain[0], args.plain[1] + 1)]
    pipe, ev = load_pipeline(world), load_evaluator(world)
    num_blocks = len(pipe.transformer.transformer_blocks)
    results = {"world": world, "trained": trained, "seeds": {"tune": args.tune_seeds, "report": args.report_seeds}}
    for split, seeds in (("tune", args.tune_seeds), ("report", args.report_seeds)):
        items = world_items(world, seeds, args.num_prompts)
        ref = generate(pipe, world, Method("plain:20", 20), items).images
        rows = {}
        for m in plain + methods:
            g = generate(pipe, world, m, items)
            rows[m.name] = {"blocks": g.block_forwards, "steps": m.steps,
                            "scores": per_item_scores(world, g.images, items, None if m.name == "plain:20" else ref, ev)}
            print(f"[{world}/{split}] {m.name}: {g.block_forwards} blocks", flush=True)
        comparisons = {}
        controls = {(m.steps, m.plan): m.name for m, (_, o) in zip(methods, variants) if o.get("mode") == "once"}
        for m, (_, opts) in zip(methods, variants):
            r = rows[m.name]
            rival = f"plain:{fair_plain_steps(num_blocks, r['blocks'])}"
            comparisons[m.name] = {"rival": rival, **{
                k: compare(r["scores"][k], rows[rival]["scores"][k], items.seeds, k).to_dict()
                for k in ("psnr", "ssim", quality) if rival != "plain:20" or k == quality}}
            if opts.get("feed_text") == "1":  # does feeding the text stream too help over the image stream alone?
                base = {k: v for k, v in opts.items() if k != "feed_text"}
                image_only = next((mm.name for mm, (_, o) in zip(methods, variants) if o == base), None)
                if image_only:
                    comparisons[m.name]["vs_image_only"] = {"image_only": image_only, **{
                        k: compare(r["scores"][k], rows[image_only]["scores"][k], items.seeds, k).to_dict()
                        for k in ("psnr", quality)}}
            control = controls.get((m.steps, m.plan))
            if control and control != m.name:  # does the inner loop earn its cost over the no-loop control?
                comparisons[m.name]["vs_control"] = {"control": control, **compare(
                    r["scores"]["psnr"], rows[control]["scores"]["psnr"], items.seeds, "psnr").to_dict()}
        results[split] = {"rows": {k: {"blocks": v["blocks"], "steps": v["steps"],
                                       **{s: float(a.mean()) for s, a in v["scores"].items()}}
                                   for k, v in rows.items()}, "comparisons": comparisons, "num_items": len(items)}
    tune = results["tune"]["comparisons"]
    eligible = [n for n in tune if not n.startswith("control") and tune[n][quality]["ci95"][0] > -0.05]
    results["selected_on_tune"] = max(eligible, key=lambda n: tune[n]["psnr"]["diff"]) if eligible else None
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_table(args.out, results, quality)
    plot(args.out, results, quality)
    print((args.out / "table.md").read_text())


def write_table(out: Path, res: dict, quality: str) -> None:
    rep, sel = res["report"], res["selected_on_tune"]
    lines = [f"# Quality per block forward — {res['world']}", "",
             f"Report seeds {res['seeds']['report']} ({rep['num_items']} items); the winner was chosen on tune seeds "
             f"{res['seeds']['tune']}: **{sel}**. PSNR/SSIM are to plain:20 of the same item; each ILF row is "
             "compared with plain at the smallest step count whose block forwards are at least its own "
             "(paired bootstrap 95% CI of the mean difference, seeds won/lost). FD is not reported: "
             f"{rep['num_items']} samples per method cannot resolve it.", "",
             f"| method | blocks | PSNR | SSIM | {quality} |", "|---|---:|---:|---:|---:|"]
    for name, r in rep["rows"].items():
        lines.append(f"| {name} | {r['blocks']} | {r.get('psnr', float('inf')):.2f} | {r.get('ssim', 1.0):.4f} | "
                     f"{r[quality]:.3f} |")
    lines += ["", f"| ILF variant | blocks | rival | ΔPSNR [95% CI] | seeds won/lost | ΔSSIM [95% CI] | Δ{quality} [95% CI] |",
              "|---|---:|---|---|---|---|---|"]
    for name, c in rep["comparisons"].items():
        def cell(k):
            if k not in c:
                return "–"
            v = c[k]
            return f"{v['diff']:+.3g} [{v['ci95'][0]:+.3g}, {v['ci95'][1]:+.3g}]"
        won = f"{c['psnr']['seed_wins']}/{c['psnr']['seed_losses']}" if "psnr" in c else "–"
        mark = " (selected)" if name == sel else ""
        lines.append(f"| {name}{mark} | {rep['rows'][name]['blocks']} | {c['rival']} | {cell('psnr')} | {won} | "
                     f"{cell('ssim')} | {cell(quality)} |")
    for name, c in rep["comparisons"].items():
        if "vs_control" in c:
            v = c["vs_control"]
            lines += ["", f"Inner loop vs the no-loop control ({name}, {rep['rows'][name]['blocks']} blocks, vs "
                      f"{v['control']}, {rep['rows'][v['control']]['blocks']} blocks): ΔPSNR {v['diff']:+.3g} "
                      f"[{v['ci95'][0]:+.3g}, {v['ci95'][1]:+.3g}], seeds won/lost {v['seed_wins']}/{v['seed_losses']}."]
        if "vs_image_only" in c:
            v = c["vs_image_only"]
            lines += ["", f"Text stream fed back too ({name}) vs the image stream only ({v['image_only']}), same "
                      f"blocks: ΔPSNR {v['psnr']['diff']:+.3g} [{v['psnr']['ci95'][0]:+.3g}, {v['psnr']['ci95'][1]:+.3g}], "
                      f"seeds won/lost {v['psnr']['seed_wins']}/{v['psnr']['seed_losses']}; Δ{quality} "
                      f"{v[quality]['diff']:+.3g} [{v[quality]['ci95'][0]:+.3g}, {v[quality]['ci95'][1]:+.3g}]."]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, res: dict, quality: str) -> None:
    """PSNR to plain:20 against block forwards (and `quality` where it varies), plain's curve and every variant,
    each labelled where no other label or marker is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ilf.bench.plots import place_labels

    rows = res["report"]["rows"]
    # the quality panel only where it separates the variants (plain's few-step tail aside)
    quality_values = {r[quality] for n, r in rows.items() if not n.startswith("plain") and r.get(quality) is not None}
    metrics = ["psnr"] + ([quality] if len(quality_values) > 1 else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 4.6), squeeze=False)
    labels = []
    for ax, metric in zip(axes[0], metrics):
        plain = sorted((r["blocks"], r.get(metric)) for n, r in rows.items() if n.startswith("plain") and metric in r)
        ax.plot([b for b, _ in plain], [v for _, v in plain], "o-", color="gray", label="plain N steps")
        where, texts, colors = [], [], []
        for i, (n, r) in enumerate((n, r) for n, r in rows.items() if not n.startswith("plain")):
            if metric in r:
                ax.scatter(r["blocks"], r[metric], marker="s" if n.startswith("control") else "*", s=90, zorder=3,
                           color=f"C{i}")
                where.append((r["blocks"], r[metric]))
                texts.append(n)
                colors.append(f"C{i}")
        ax.set_xlabel("block forwards per image")
        ax.set_ylabel(f"{metric} (to plain:20)" if metric == "psnr" else metric)
        ax.grid(alpha=0.3)
        labels.append((ax, where, texts, colors))
    axes[0][0].legend(loc="lower right")
    note = "" if len(metrics) > 1 else f"\n({quality} {quality_values.pop():.3g} for every variant)" if quality_values else ""
    fig.suptitle(f"{res['world']}: quality against block forwards (report seeds){note}", fontsize=10)
    fig.tight_layout()
    for ax, where, texts, colors in labels:
        place_labels(ax, where, texts, colors)
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
