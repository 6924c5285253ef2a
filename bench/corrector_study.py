"""The corrector study (issue 17): trained correctors of diffusers' TaylorSeer against TaylorSeer itself, plain
fewer steps, the paper cache and the paper's ILF, at three block budgets, on an embedded world.

Three phases, each resumable (a finished piece is not redone):

    python bench/corrector_study.py train  --world digits   # every variant, --distill corrector (one thread)
    python bench/corrector_study.py tune   --world digits   # tune seeds 100-104: picks per budget, levers
    python bench/corrector_study.py report --world digits   # report seeds 1000-1009: table.md, pareto.png
    python bench/corrector_study.py summary                 # docs/corrector-study.md from the three worlds
    python bench/corrector_study.py report --merge --world digits --variants learned-i3   # add a budget point

Variants (all 20 steps of the world's scheduler, trained on the sampler's own path against plain:20):
* `learned-iK`: TaylorSeer's schedule (a full step every K after the warm-up) with the learned per-step
  forecast alone: no block forward beyond TaylorSeer's;
* `F-iK-freshA`: the same plus the feedback block F on every forecast step, after A fresh leading blocks;
* at interval 4, `learned-i4-order2-channel` (TaylorSeer's second-order base) and `learned-i4-long-channel` (1200
  training iterations, not 600), each against `learned-i4-channel`;
* `learned-iK-fresh1-channel`: the learned forecast fed this step's innovation after one fresh block, without F
  (its control: `learned-iK-channel`, the same without the fresh block);
* controls: `F-i3-fresh0` (no fresh blocks), `F-i3-fresh1-nomix` (F without the learned forecast), and the
  cache alone: TaylorSeer at each schedule (an untrained corrector is exactly it, tests/test_corrector.py);
* levers on `learned-i2`: a cosine-decaying learning rate, fresh noises per rollout, per-channel weights, 1200
  training iterations (with scalar or per-channel weights);
  per-channel weights at intervals 3 and 4 too (`learned-i3-channel`, `learned-i4-channel`), each chosen
  against its scalar twin per world on the tune seeds (`tune.json`'s `budget_levers`).

What is chosen on the tune seeds (the shipped variant: the best PSNR to plain:20 at no more block forwards
than TaylorSeer's standard setting; the lever) is reported on the report seeds, nothing else. Trained
folders go to runs/corrector-study/WORLD (not committed); results to docs/corrector-study/WORLD.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TS_STANDARD = "taylorseer:20,interval=2,warmup=3"  # diffusers' TaylorSeer as the peer study runs it (1.8x)
SCHEDULES = {2: 3, 3: 3, 4: 3, 6: 2}  # interval -> warm-up: ~1.8x, ~2.2x, ~2.5x, ~3.5x fewer block forwards
VARIANTS = {
    "learned-i2": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none"),
    "learned-i3": dict(cache_interval=3, cache_warmup=3, fresh_blocks=0, correct_steps="none"),
    "learned-i4": dict(cache_interval=4, cache_warmup=3, fresh_blocks=0, correct_steps="none"),
    "learned-i6": dict(cache_interval=6, cache_warmup=2, fresh_blocks=0, correct_steps="none"),
    "F-i3-fresh1": dict(cache_interval=3, cache_warmup=3, fresh_blocks=1, correct_steps="all"),
    "F-i3-fresh0": dict(cache_interval=3, cache_warmup=3, fresh_blocks=0, correct_steps="all"),
    "F-i3-fresh1-nomix": dict(cache_interval=3, cache_warmup=3, fresh_blocks=1, correct_steps="all",
                              learned_forecast=False),
    "F-i4-fresh0": dict(cache_interval=4, cache_warmup=3, fresh_blocks=0, correct_steps="all"),
    "F-i6-fresh0": dict(cache_interval=6, cache_warmup=2, fresh_blocks=0, correct_steps="all"),
    "learned-i2-cosine": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                              lr_scheduler="cosine"),
    "learned-i2-freshnoise": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                                  rollout_noise="fresh"),
    "learned-i2-channel": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                               mix_per_channel=True),
    "learned-i3-channel": dict(cache_interval=3, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                               mix_per_channel=True),
    "learned-i4-channel": dict(cache_interval=4, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                               mix_per_channel=True),
    # the learned forecast with this step's innovation after one fresh block (no F): 1 block per forecast step
    "learned-i3-fresh1-channel": dict(cache_interval=3, cache_warmup=3, fresh_blocks=1, correct_steps="none",
                                      mix_per_channel=True),
    "learned-i4-fresh1-channel": dict(cache_interval=4, cache_warmup=3, fresh_blocks=1, correct_steps="none",
                                      mix_per_channel=True),
    # twice the training at the shipped budget (it helped at interval 4 on shapes and shapes-flow)
    "learned-i2-long": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none", max_steps=1200),
    "learned-i2-channel-long": dict(cache_interval=2, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                                    mix_per_channel=True, max_steps=1200),
    # at interval 4 (where shapes still loses to plain): a second-order Taylor base, and twice the training
    "learned-i4-order2-channel": dict(cache_interval=4, cache_warmup=3, cache_order=2, fresh_blocks=0,
                                      correct_steps="none", mix_per_channel=True),
    "learned-i4-long-channel": dict(cache_interval=4, cache_warmup=3, fresh_blocks=0, correct_steps="none",
                                    mix_per_channel=True, max_steps=1200),
}
LEVERS = ("learned-i2", "learned-i2-cosine", "learned-i2-freshnoise", "learned-i2-channel", "learned-i2-long",
          "learned-i2-channel-long")
# levers at the cheaper budgets, each chosen against its base per world on the tune seeds
BUDGET_LEVERS = {"learned-i3": ("learned-i3-channel",),
                 "learned-i4": ("learned-i4-channel", "learned-i4-order2-channel", "learned-i4-long-channel")}
TRAIN = dict(max_steps=600, lr=3e-3, batch_size=32, rollout_size=128, rollout_every=100)
TUNE_SEEDS, REPORT_SEEDS = list(range(100, 105)), list(range(1000, 1010))


def train_variants(world: str, runs: Path, names) -> None:
    import torch

    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    for name in names:
        folder = runs / name
        if (folder / "feedback" / "ilf_config.json").is_file():
            continue
        start = time.process_time()
        cfg = TrainConfig(output_dir=folder, world=world, distill="corrector", checkpoint_every=200,
                          resume="latest", progress=False, log_every=50, **{**TRAIN, **VARIANTS[name]})
        torch.manual_seed(0)
        train(cfg)
        print(f"{world} {name}: trained in {time.process_time() - start:.0f} s CPU", flush=True)


def method(name: str, runs: Path) -> str:
    return f"corrector:20,feedback={runs / name / 'feedback'},label={name}"


def evaluate(world: str, methods: list[str], seeds: list[int], plain: tuple[int, int]) -> dict:
    """Every method (and plain MIN..MAX) on the same items: per-item PSNR to plain:20 and the world's score."""
    import torch

    from peer_study import generate, items_of
    from ilf.bench.errors import MethodRefused
    from ilf.bench.paired import per_item_scores
    from ilf.eval.sources import load_world_source
    from ilf.worlds import paths
    from ilf.worlds.evaluators import load_evaluator

    from ilf.bench.methods import parse_method

    for text in methods:  # a bad method string stops here, not after the plain curve has run
        parse_method(text)
    torch.set_num_threads(1)
    src = load_world_source(world)
    evaluator = load_evaluator(world)
    items, view = items_of(world, seeds, 16)
    calibration = items_of(world, [0], 16)[0][:1]
    batch = len(items) // len(seeds)
    quality = "accuracy" if world == "digits" else "alignment"
    out = {"view": view, "quality": quality, "num_blocks": src.num_blocks, "rows": {}, "refused": {}, "plain": plain}
    plains = [f"plain:{n}" for n in range(plain[1], plain[0] - 1, -1)]
    for text in plains + methods:
        try:
            images, blocks, info = generate(src, text, items, batch, str(paths.paper_feedback(world)), calibration)
        except MethodRefused as err:
            out["refused"][text] = str(err)
            continue
        ref = None if text == "plain:20" else out["rows"]["plain:20"]["images"]
        scores = per_item_scores(world, images, view, ref, evaluator)
        out["rows"][text] = {"images": images, "blocks": blocks, "info": info, **scores}
        print(f"  {text.split(',feedback=')[0]}: {blocks:.0f} blocks", flush=True)
    return out


def label(text: str) -> str:
    for part in text.split(","):
        if part.startswith("label="):
            return part[6:]
    return text


def summarise(ev: dict) -> list[dict]:
    """One row per method: blocks, mean PSNR and score, and paired comparisons against plain at ≥ its blocks
    and against TaylorSeer at the same or the next-cheaper schedule."""
    from ilf.bench.paired import compare, fair_plain_steps

    rows, q, view = ev["rows"], ev["quality"], ev["view"]
    ts_rows = {k: v for k, v in rows.items() if k.startswith("taylorseer")}
    res = []
    for text, r in rows.items():
        row = {"method": label(text), "spec": text.split(",feedback=")[0], "block_forwards": r["blocks"],
               q: float(r[q].mean()), "psnr": None if text == "plain:20" else float(r["psnr"].mean())}
        if not text.startswith("plain:"):
            n = max(min(fair_plain_steps(ev["num_blocks"], r["blocks"]), ev["plain"][1]), ev["plain"][0])
            row["fair_plain"] = f"plain:{n}"
            row["vs_fair_plain"] = {k: compare(r[k], rows[f"plain:{n}"][k], view.seeds, k).to_dict()
                                    for k in ("psnr", q)}
            # TaylorSeer with the most block forwards not above this method's (its strongest fair rival)
            fair_ts = [k for k, v in ts_rows.items() if v["blocks"] <= r["blocks"] + 1e-6 and k != text]
            if fair_ts and not text.startswith("taylorseer"):
                best = max(fair_ts, key=lambda k: ts_rows[k]["blocks"])
                row["fair_taylorseer"] = label(best)
                row["vs_taylorseer"] = {k: compare(r[k], rows[best][k], view.seeds, k).to_dict() for k in ("psnr", q)}
        res.append(row)
    return res


def cell(c) -> str:
    if c is None:
        return "–"
    return f"{c['diff']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] ({c['seed_wins']}/{c['num_seeds']})"


def write_table(path: Path, title: str, rows: list[dict], q: str) -> None:
    lines = [f"# {title}", "", f"| method | block fwd / img | {q} | PSNR to plain:20 | vs plain at ≥ its blocks: Δ PSNR "
             f"dB [95% CI] (seed wins) | Δ {q} | vs TaylorSeer at ≤ its blocks: Δ PSNR dB | Δ {q} |",
             "|---|---:|---:|---:|---|---|---|---|"]
    for r in rows:
        vp, vt = r.get("vs_fair_plain", {}), r.get("vs_taylorseer", {})
        psnr = "–" if r["psnr"] is None else f"{r['psnr']:.2f}"
        lines.append(f"| {r['method']} | {r['block_forwards']:.1f} | {r[q]:.3f} | {psnr} | "
                     f"{r.get('fair_plain', '')} {cell(vp.get('psnr'))} | {cell(vp.get(q))} | "
                     f"{r.get('fair_taylorseer', '')} {cell(vt.get('psnr'))} | {cell(vt.get(q))} |")
    path.write_text("\n".join(lines) + "\n")


def ts_methods() -> list[str]:
    return [f"taylorseer:20,interval={i},warmup={w},label=TaylorSeer i{i}" for i, w in SCHEDULES.items()]


def merge_report(world: str, runs: Path, out: Path, names: list[str]) -> int:
    """`report --merge --variants ...`: only these variants, with the plain curve and TaylorSeer at every schedule
    (their paired rivals), on the report seeds; their rows replace or join the world's results.json.

    Every method is deterministic on the same items and noises (the plain and TaylorSeer rows regenerated here
    equal the stored ones), so the merged table is the one a full report with these variants would write; the
    variants must be predeclared budget points, not chosen here (nothing is picked on the report seeds)."""
    missing = [n for n in names if not (runs / n / "feedback").is_dir()]
    if missing:
        raise SystemExit(f"no trained folder for {', '.join(missing)} under {runs}; run the train phase first")
    res = json.loads((out / "results.json").read_text())
    start = time.time()
    ev = evaluate(world, ts_methods() + [method(n, runs) for n in names], REPORT_SEEDS, (4, 20))
    fresh = {r["method"]: r for r in summarise(ev) if r["method"] in names}
    res["rows"] = [fresh.pop(r["method"], r) for r in res["rows"]] + list(fresh.values())
    tune = json.loads((out / "tune.json").read_text())  # choices made on the tune seeds since the full report
    res["shipped"], res["lever"] = tune["shipped"], tune["lever"]
    res.setdefault("merged", []).append({"variants": names, "seconds": round(time.time() - start), "command":
                                         f"python bench/corrector_study.py report --merge --world {world} "
                                         f"--variants {' '.join(names)}"})
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    write_table(out / "table.md", f"{world}: correctors of TaylorSeer vs TaylorSeer, plain, the paper cache and ILF "
                f"(report seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]}, {res['num_items']} items; shipped: "
                f"{res['shipped']}, chosen on tune seeds)", res["rows"], res["quality"])
    from corrector_plot import plot

    plot(out, res)
    print((out / "table.md").read_text())
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("train", "tune", "report", "summary"))
    p.add_argument("--world", choices=("digits", "shapes", "shapes-flow"), help="every phase but summary")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="train/tune only these")
    p.add_argument("--merge", action="store_true",
                   help="report: evaluate only --variants (with plain and TaylorSeer) and merge into results.json")
    p.add_argument("--runs", type=Path, default=Path("runs/corrector-study"), help="trained folders")
    p.add_argument("--out", type=Path, default=Path("docs/corrector-study"), help="results")
    args = p.parse_args(argv)
    if args.phase == "summary":
        from corrector_summary import write_summary

        print(write_summary(args.out))
        return 0
    runs, out = args.runs / args.world, args.out / args.world
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "train":
        train_variants(args.world, runs, args.variants)
        return 0
    if args.phase == "tune":
        names = [n for n in args.variants if (runs / n / "feedback").is_dir()]
        ev = evaluate(args.world, [TS_STANDARD + ",label=TaylorSeer i2"] + [method(n, runs) for n in names],
                      TUNE_SEEDS, (10, 20))
        rows = summarise(ev)
        ts_blocks = ev["rows"][TS_STANDARD + ",label=TaylorSeer i2"]["blocks"]
        if (out / "tune.json").is_file():  # rows of variants not re-evaluated now (same seeds, deterministic)
            fresh = {r["method"] for r in rows}
            rows += [r for r in json.loads((out / "tune.json").read_text())["rows"] if r["method"] not in fresh]
            names = sorted({*names, *(r["method"] for r in rows if r["method"] in VARIANTS)}, key=list(VARIANTS).index)
        by = {r["method"]: r for r in rows}
        lever = max((n for n in LEVERS if n in by), key=lambda n: by[n]["psnr"])
        fits = [n for n in names if by[n]["block_forwards"] <= ts_blocks + 1e-6]
        pick = max(fits, key=lambda n: by[n]["psnr"]) if fits else None
        budget = {base: max([base, *(a for a in alts if a in by)], key=lambda n: by[n]["psnr"])
                  for base, alts in BUDGET_LEVERS.items() if base in by}
        res = {"world": args.world, "seeds": TUNE_SEEDS, "rows": rows, "taylorseer_blocks": ts_blocks,
               "lever": lever, "shipped": pick, "budget_levers": budget, "train": TRAIN,
               "variants": {n: VARIANTS[n] for n in names}}
        (out / "tune.json").write_text(json.dumps(res, indent=2) + "\n")
        write_table(out / "tune.md", f"{args.world}: tune seeds {TUNE_SEEDS[0]}-{TUNE_SEEDS[-1]} (choices only)",
                    rows, ev["quality"])
        print((out / "tune.md").read_text(), f"\nlever: {lever}; shipped: {pick}; at cheaper budgets: {budget}")
        return 0
    if args.merge:
        return merge_report(args.world, runs, out, args.variants)
    tune = json.loads((out / "tune.json").read_text())
    chosen = tune.get("budget_levers", {})
    names = [n for n in VARIANTS if n not in LEVERS or n in (LEVERS[0], tune["lever"], tune["shipped"])]
    alternatives = {a for alts in BUDGET_LEVERS.values() for a in alts}
    names = [n for n in names if n not in alternatives or n in chosen.values()]
    names = [n for n in names if (runs / n / "feedback").is_dir()]
    methods = ts_methods() + ["paper-cache:20,label=paper cache", "ilf:{steps},label=ILF paper mode"]
    from ilf.worlds import paths

    steps = json.loads((paths.paper_feedback(args.world) / "ilf_config.json").read_text())["config"]["num_inference_steps"]
    methods = [m.format(steps=steps or 10) for m in methods] + [method(n, runs) for n in names]
    start = time.time()
    ev = evaluate(args.world, methods, REPORT_SEEDS, (4, 20))
    rows = summarise(ev)
    res = {"world": args.world, "seeds": REPORT_SEEDS, "num_items": len(ev["view"].seeds), "quality": ev["quality"],
           "num_blocks": ev["num_blocks"], "shipped": tune["shipped"], "lever": tune["lever"], "rows": rows,
           "refused": ev["refused"], "seconds": round(time.time() - start),
           "command": f"python bench/corrector_study.py report --world {args.world}"}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    write_table(out / "table.md", f"{args.world}: correctors of TaylorSeer vs TaylorSeer, plain, the paper cache and "
                f"ILF (report seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]}, {res['num_items']} items; shipped: "
                f"{tune['shipped']}, chosen on tune seeds)", rows, ev["quality"])
    from corrector_plot import plot

    plot(out, res)
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
