"""The caches people already use, the paper's cache and ILF against plain fewer steps on an embedded world.

Every method generates the same items (the world's held-out conditions × the report seeds) through the
world's own pipeline, attached through the bench's families exactly as `ilf bench` attaches them. Per item:
the world's score (prompt alignment / digit accuracy) and PSNR to plain:20's image of the same item. Each
method is compared with plain at the smallest step count that spends at least its block forwards (paired
bootstrap 95% CI of the per-item difference, seed-level wins), so a method that wins here buys quality per
block. PAB and FasterCache reuse attention inside blocks that still run: they spend plain:20's block
forwards, so they are compared with plain:20 itself.

Nothing is chosen on these seeds: the caches run at the settings of `@peers` (each library's defaults at 20
steps, or near the paper's 1.7-1.8x), the paper cache at its default, ILF with the world's shipped feedback at
its trained schedule; MagCache calibrates on one item of seed 0, outside the report seeds. A method a family
refuses on this backbone is listed with the reason.

    python bench/peer_study.py --world shapes --out docs/peer-study/shapes    # ~10 min on one CPU thread
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_METHODS = ["paper-cache:20", "ilf:{steps}", "fbc:20,threshold=0.05", "taylorseer:20,interval=2,warmup=3",
                   "magcache:20", "seacache:20", "pab:20,spatial=2,cross=4", "fastercache:20", "cache-dit:20"]


def items_of(world: str, seeds: list[int], num_prompts: int):
    """eval Items for every condition × seed, and the paired-statistics view of the same list."""
    from ilf.bench.paired import world_items
    from ilf.eval.prompts import Item

    view = world_items(world, seeds, num_prompts)
    items = [Item(id=f"c{i % (len(view) // len(seeds)):03d}_s{s}", prompt_id=f"c{i}", seed=s,
                  **({"class_label": c} if world == "digits" else {"prompt": c}))
             for i, (c, s) in enumerate(zip(view.conditions, view.seeds))]
    return items, view


def generate(src, spec_text: str, items, batch: int, feedback: str, calibration):
    """(images [N, 3, H, W], mean block forwards per image, info) of one method; raises MethodRefused.
    `calibration`: the items MagCache calibrates on (not report items). A call holds `batch` items, or fewer where
    the family caps it (`max_batch`); a call's block forwards are every image's (a batch shares them)."""
    import torch

    from ilf.bench.family import MethodContext
    from ilf.bench.methods import get_family, parse_method
    from ilf.runtime.counting import count_block_forwards

    spec = parse_method(spec_text)
    fam = get_family(spec.family)
    reason = fam.unavailable()
    if reason:
        from ilf.bench.errors import MethodRefused

        raise MethodRefused(reason)
    ctx = MethodContext(src.pipe, src.num_blocks, run_once=lambda s: src(calibration, s), feedback=feedback,
                        cfg_batch=src.cfg_batch)
    prepared = fam.prepare(spec, ctx)
    batch = min(batch, fam.max_batch(spec) or batch)  # cache-dit's dynamic skip: decided per image, not per batch
    att = prepared.attach(src.pipe)
    images, blocks = [], []
    try:
        for lo in range(0, len(items), batch):
            att.before_call()
            with count_block_forwards(src.pipe) as counter:
                images.append(src(items[lo:lo + batch], spec.steps))
            blocks.append(counter.total)  # one pipeline call: the batch shares its block forwards
    finally:
        att.detach()
    return torch.cat(images), sum(blocks) / len(blocks), {"spec": spec.name, "steps": spec.steps, **prepared.info}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, choices=("shapes", "digits", "shapes-flow"), help="the embedded world")
    p.add_argument("--out", type=Path, required=True, help="where table.md, results.json and pareto.png go")
    p.add_argument("--methods", nargs="+", help="bench method strings (default: the paper cache, the shipped "
                   "ILF feedback at its trained steps and every @peers cache)")
    p.add_argument("--plain", nargs=2, type=int, default=(4, 20), metavar=("MIN", "MAX"), help="plain curve range")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(1000, 1010)),
                   help="report seeds (default 1000-1009, those of the quality-per-block study)")
    p.add_argument("--num-prompts", type=int, default=16, help="held-out shapes prompts per seed")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="guidance for every method instead of the world's (the shipped feedback was trained at the "
                   "world's: leave ilf out of --methods when changing it)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    from ilf.bench.errors import MethodRefused
    from ilf.bench.paired import compare, fair_plain_steps, per_item_scores
    from ilf.eval.sources import load_world_source
    from ilf.worlds import paths
    from ilf.worlds.evaluators import load_evaluator

    torch.set_num_threads(args.threads)
    src = load_world_source(args.world)
    if args.guidance_scale is not None:
        src.call_kwargs["guidance_scale"] = args.guidance_scale
    evaluator = load_evaluator(args.world)
    items, view = items_of(args.world, args.seeds, args.num_prompts)
    calibration = items_of(args.world, [0], args.num_prompts)[0][:1]  # seed 0: a tuning seed, not reported
    batch = len(items) // len(args.seeds)  # one seed's conditions per pipeline call
    feedback = str(paths.paper_feedback(args.world))  # the paper-mode ILF row
    trained_steps = json.loads((Path(feedback) / "ilf_config.json").read_text())["config"].get("num_inference_steps")
    methods = [m.format(steps=trained_steps or 10) for m in (args.methods or DEFAULT_METHODS)]
    quality = "accuracy" if args.world == "digits" else "alignment"
    args.out.mkdir(parents=True, exist_ok=True)

    rows, per_item, refused = {}, {}, {}
    plain = [f"plain:{n}" for n in range(args.plain[1], args.plain[0] - 1, -1)]  # plain:20 first: the reference
    start = time.time()
    for text in tqdm(plain + methods, desc=args.world, unit="method"):
        try:
            images, blocks, info = generate(src, text, items, batch, feedback, calibration)
        except MethodRefused as err:
            refused[text] = str(err)
            continue
        ref = None if text == plain[0] else per_item["plain:20"]["images"]
        per_item[text] = {"images": images, **per_item_scores(args.world, images, view, ref, evaluator)}
        rows[text] = {"method": info["spec"], "block_forwards": blocks, quality: float(per_item[text][quality].mean()),
                      "psnr": float(per_item[text]["psnr"].mean()) if ref is not None else None}
        if "config" in info:
            rows[text]["config"] = info["config"]
    num_blocks = src.num_blocks
    for text in methods:
        if text not in rows:
            continue
        n = max(min(fair_plain_steps(num_blocks, rows[text]["block_forwards"]), args.plain[1]), args.plain[0])
        rival = f"plain:{n}"
        rows[text]["fair_plain"] = rival
        rows[text]["vs_fair_plain"] = {k: compare(per_item[text][k], per_item[rival][k], view.seeds, k).to_dict()
                                       for k in ("psnr", quality) if k in per_item[rival]}
    res = {"world": args.world, "num_blocks": num_blocks, "guidance_scale": src.guidance_scale, "seeds": args.seeds, "num_items": len(items),
           "quality": quality, "rows": list(rows.values()), "refused": refused,
           "seconds": round(time.time() - start), "command": "python bench/peer_study.py " + " ".join(argv or [])}
    (args.out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    write_table(args.out, res, plain[0])
    plot(args.out, res)
    print((args.out / "table.md").read_text())
    return 0


def write_table(out: Path, res: dict, reference: str) -> None:
    q = res["quality"]
    lines = [f"# {res['world']}: caches and ILF vs plain fewer steps ({res['num_items']} items, seeds "
             f"{res['seeds'][0]}-{res['seeds'][-1]}, {res['num_blocks']} blocks, guidance "
             f"{res.get('guidance_scale')})", "",
             f"| method | block fwd / img | {q} | PSNR to {reference} | vs plain at ≥ its blocks | Δ {q} [95% CI] "
             f"(seed wins) | Δ PSNR dB [95% CI] (seed wins) |", "|---|---:|---:|---:|---|---|---|"]

    def cell(c):
        if c is None:
            return "–"
        return f"{c['diff']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] ({c['seed_wins']}/{c['num_seeds']})"

    for r in res["rows"]:
        vs = r.get("vs_fair_plain", {})
        psnr = "–" if r["psnr"] is None else f"{r['psnr']:.2f}"
        lines.append(f"| {r['method']} | {r['block_forwards']:.1f} | {r[q]:.3f} | {psnr} | {r.get('fair_plain', '')} | "
                     f"{cell(vs.get(q))} | {cell(vs.get('psnr'))} |")
    if res["refused"]:
        lines += ["", "Refused on this backbone:"] + [f"- `{k}`: {v}" for k, v in res["refused"].items()]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, res: dict) -> None:
    """PSNR to plain:20 against block forwards (and the world's quality where it varies over the methods), plain's
    curve and one point per method, each labelled where no other label or marker is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ilf.bench.plots import place_labels

    q = res["quality"]
    plain = [r for r in res["rows"] if r["method"].startswith("plain:")]
    others = [r for r in res["rows"] if not r["method"].startswith("plain:")]
    # the quality panel only where it separates the methods (plain's few-step tail aside)
    quality_values = {r[q] for r in others if r.get(q) is not None}
    keys = ["psnr"] + ([q] if len(quality_values) > 1 else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6.4 * len(keys), 4.6), squeeze=False)
    labels = []
    for ax, key in zip(axes[0], keys):
        pts = [r for r in plain if r[key] is not None]
        ax.plot([r["block_forwards"] for r in pts], [r[key] for r in pts], "o-", color="0.4", label="plain N steps")
        where, texts, colors = [], [], []
        for i, r in enumerate(others):
            if r[key] is None or r[key] == float("inf"):
                continue
            ax.scatter(r["block_forwards"], r[key], s=40, zorder=3, color=f"C{i}", label=r["method"].split(",")[0])
            where.append((r["block_forwards"], r[key]))
            texts.append(r["method"].split(",")[0])
            colors.append(f"C{i}")
        ax.set_xlabel("block forwards per image")
        ax.set_ylabel(q if key == q else "PSNR to plain:20 (dB)")
        ax.grid(alpha=0.3)
        labels.append((ax, where, texts, colors))
    axes[0][0].legend(loc="lower right", fontsize=7, ncol=2)
    note = "" if len(keys) > 1 else f"\n({q} {quality_values.pop():.3g} for every method)" if quality_values else ""
    fig.suptitle(f"{res['world']}: quality per block forward (seeds {res['seeds'][0]}-{res['seeds'][-1]}){note}",
                 fontsize=10)
    fig.tight_layout()
    for ax, where, texts, colors in labels:
        place_labels(ax, where, texts, colors)
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)


def replot(out: Path) -> None:
    """Redraw pareto.png from a finished run's results.json."""
    plot(out, json.loads((out / "results.json").read_text()))


if __name__ == "__main__":
    raise SystemExit(main())
