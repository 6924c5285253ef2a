"""Probe for issue 26 (exploratory, tune seeds only, nothing shipped): does the fast tier's lever - a longer run
with the same number of full steps, on TaylorSeer's best schedule within the budget, corrected - lift the
corrector at its shipped ~1.8x budget (132 block forwards) on shapes, where tuned cache-dit ties it?

    python bench/budget_mask_probe.py --world shapes --budget 132     # ~15 min of one CPU thread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corrector_study import TRAIN, TUNE_SEEDS  # noqa: E402
from fast_tier_study import SEARCH_SEEDS, Scorer, taylorseer_schedule  # noqa: E402


def schedules(budget: int, steps=(20, 22, 24, 26, 28)) -> list[str]:
    """TaylorSeer settings with the most full steps within `budget` (12 blocks, free forecasts): per step count
    and warm-up 1-3, the shortest interval that fits, with and without computing the last step."""
    from ilf.corrector_config import taylor_compute_steps

    out = []
    for n in steps:
        for w in (1, 2, 3):
            for c in (None, n - 1):
                fits = [i for i in range(1, n) if 12 * len(taylor_compute_steps(n, i, w, c)) <= budget]
                if fits:
                    out.append(f"taylorseer:{n},interval={fits[0]},warmup={w}" + ("" if c is None else f",cooldown={c}"))
    return out


def probe_name(spec: str) -> str:
    """A trained schedule's folder name: its step count and first full steps (`ts-n20-0-2-4`)."""
    n, full, _ = taylorseer_schedule(spec)
    return f"ts-n{n}-" + "-".join(map(str, full[:3]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="shapes", choices=("digits", "shapes", "shapes-flow"))
    p.add_argument("--budget", type=int, default=132)
    p.add_argument("--runs", type=Path, default=Path("runs/budget-probe"))
    p.add_argument("--out", type=Path, default=Path("docs/budget-probe"))
    p.add_argument("--peers", nargs="*", default=[], help="method strings evaluated beside, on the tune seeds")
    p.add_argument("--report", action="store_true", help="after the probe: its pick, paired on the report seeds")
    args = p.parse_args(argv)
    if args.report:
        return report(args)
    import torch

    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train
    from ilf.worlds import paths

    start = time.process_time()
    search = Scorer(args.world, SEARCH_SEEDS)
    ranked = sorted(((search(s), s) for s in schedules(args.budget)), key=lambda r: -r[0][0])
    picks = [s for _, s in ranked[:2]]
    names = {}
    for spec in picks:
        n, full, order = taylorseer_schedule(spec)
        name = probe_name(spec)
        folder = args.runs / args.world / name
        if not (folder / "feedback" / "ilf_config.json").is_file():
            torch.manual_seed(0)
            train(TrainConfig(output_dir=folder, world=args.world, distill="corrector", student_steps=n,
                              cache_full_steps=full, cache_order=order, mix_per_channel=True, progress=False,
                              checkpoint_every=200, resume="latest", log_every=100, **TRAIN))
        names[name] = f"corrector:{n},feedback={folder / 'feedback'}"
    tune = Scorer(args.world, TUNE_SEEDS)
    rows = {"corrector (shipped 1.8x)": tune(f"corrector:20,feedback={paths.feedback(args.world)}")}
    rows |= {name: tune(spec) for name, spec in names.items()}
    rows |= {spec: tune(spec) for spec in picks + list(args.peers)}
    res = {"world": args.world, "budget": args.budget, "seeds": TUNE_SEEDS, "search_seeds": SEARCH_SEEDS,
           "search": [{"spec": s, "psnr": v[0], "blocks": v[1]} for v, s in ranked],
           "tune": {k: {"psnr": v[0], "blocks": v[1]} for k, v in rows.items()},
           "cpu_seconds": round(time.process_time() - start),
           "command": f"python bench/budget_mask_probe.py --world {args.world} --budget {args.budget}"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.world}-{args.budget}.json").write_text(json.dumps(res, indent=2) + "\n")
    for k, v in rows.items():
        print(f"{k}: {v[0]:.2f} dB at {v[1]:.0f} blocks")
    return 0


def report(args) -> int:
    """The probe's best trained schedule on the report seeds, paired against the shipped corrector, tuned
    cache-dit (--peers), TaylorSeer on the same schedule, diffusers' standard TaylorSeer and plain."""
    from corrector_study import REPORT_SEEDS, evaluate, label
    from ilf.bench.paired import compare, fair_plain_steps
    from ilf.worlds import paths

    path = args.out / f"{args.world}-{args.budget}.json"
    res = json.loads(path.read_text())
    trained = {k: v for k, v in res["tune"].items() if k.startswith("ts-n")}
    best = max(trained, key=lambda k: trained[k]["psnr"])  # chosen on the tune seeds
    spec = next(r["spec"] for r in res["search"] if probe_name(r["spec"]) == best)
    n = taylorseer_schedule(spec)[0]
    methods = [f"corrector:{n},feedback={args.runs / args.world / best / 'feedback'},label={best}",
               f"corrector:20,feedback={paths.feedback(args.world)},label=corrector (shipped)",
               f"{spec},label=TaylorSeer same schedule", "taylorseer:20,interval=2,warmup=3,label=TaylorSeer i2"]
    methods += [f"{p},label=cache-dit tuned" for p in args.peers]
    ev = evaluate(args.world, methods, REPORT_SEEDS, (10, 20))
    rows, view = {label(k): v for k, v in ev["rows"].items()}, ev["view"]
    q, fair = ev["quality"], f"plain:{fair_plain_steps(ev['num_blocks'], args.budget)}"
    rivals = [r for r in rows if r != best and (not r.startswith("plain:") or r == fair)]
    out = {"chosen": best, "schedule": spec, "blocks": {k: v["blocks"] for k, v in rows.items()},
           "psnr": {k: float(v["psnr"].mean()) for k, v in rows.items() if "psnr" in v},
           "vs": {r: {m: compare(rows[best][m], rows[r][m], view.seeds, m).to_dict() for m in ("psnr", q)}
                  for r in rivals}}
    res["report"] = {"seeds": REPORT_SEEDS, **out,
                     "command": f"python bench/budget_mask_probe.py --world {args.world} --budget {args.budget} "
                                "--report --peers ..."}
    path.write_text(json.dumps(res, indent=2) + "\n")
    for r, c in out["vs"].items():
        print(f"{best} vs {r}: {c['psnr']['diff']:+.2f} [{c['psnr']['ci95'][0]:+.2f}, {c['psnr']['ci95'][1]:+.2f}] "
              f"({c['psnr']['seed_wins']}/{c['psnr']['num_seeds']}); {q} {c[q]['diff']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
