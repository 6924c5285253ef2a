"""The pipeline-native trainer against the one it replaced, on the three worlds (issue 23).

For each world, the corrector the study ships (`learned-i2`: TaylorSeer interval 2, warm-up 3, per-step forecast
weights, per channel on digits; trained by the retired trainer, which rebuilt each family's sampler by hand) against the same recipe
trained through `ilf train --world W --distill corrector`, which now records the world's own pipeline (600
iterations of 32, lr 3e-3, 128 train prompts). Both are scored on the report seeds (1000-1009, 16 prompts each):
PSNR to plain:20 of the same item and the world's alignment / accuracy, paired per item, with a bootstrap 95%
interval and seed-level wins. The same recipe from 8 and 32 prompts answers how many prompts are enough; three
training seeds of each trainer (`seeds`, `report-seeds`) show the spread one run hides.

    python bench/native_equivalence.py train --world shapes        # ~1-3 min per size on one CPU thread
    python bench/native_equivalence.py report --world shapes
    python bench/native_equivalence.py table                        # docs/native-equivalence/table.md

Trained folders go to runs/native-equivalence/WORLD/pN (not committed); results to docs/native-equivalence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corrector_study import REPORT_SEEDS, TRAIN, VARIANTS, evaluate  # noqa: E402

SIZES = (8, 32, 128)  # train prompts
SEEDS = (0, 1, 2)  # training seeds of each trainer (the run-to-run spread a single run hides)
OUT = Path("docs/native-equivalence")


def recipe(world: str) -> dict:
    """The study's recipe of the world's shipped corrector (`learned-i2`, per-channel weights where it ships them:
    digits)."""
    from ilf.feedback import read_feedback_config
    from ilf.worlds import paths

    shipped = read_feedback_config(paths.feedback(world))["config"]
    return {**TRAIN, **VARIANTS["learned-i2"], "mix_per_channel": bool(shipped.get("mix_per_channel"))}


def train_sizes(world: str, runs: Path) -> None:
    import torch

    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    torch.set_num_threads(1)
    for n in SIZES:
        folder = runs / world / f"p{n}"
        if (folder / "feedback" / "ilf_config.json").is_file():
            continue
        start = time.process_time()
        cfg = TrainConfig(output_dir=folder, world=world, distill="corrector", checkpoint_every=200,
                          resume="latest", progress=False, log_every=50,
                          **{**recipe(world), "rollout_size": n})
        torch.manual_seed(0)
        train(cfg)
        seconds = time.process_time() - start
        (folder / "cpu_seconds.txt").write_text(f"{seconds:.1f}\n")
        print(f"{world} p{n}: trained in {seconds:.0f} s CPU", flush=True)


OLD_TRAIN = """
import sys, torch
from pathlib import Path
from ilf.train.config import TrainConfig
from ilf.train.trainer import train
torch.set_num_threads(1)
torch.manual_seed(0)
train(TrainConfig(output_dir=Path(sys.argv[1]), world=sys.argv[2], distill="corrector", checkpoint_every=0,
                  progress=False, log_every=50, seed=int(sys.argv[3]), **eval(sys.argv[4])))
"""


def train_seeds(world: str, runs: Path, old_src: Path) -> None:
    """The recipe at 128 prompts with seeds 0, 1, 2 through both trainers (the retired one's seed 0 is the shipped);
    the retired trainer runs from `old_src`, the `src` folder of a checkout of commit 9b90374."""
    import os
    import subprocess

    import torch

    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    torch.set_num_threads(1)
    settings = recipe(world)
    for seed in SEEDS:
        new, old = runs / world / (f"p128-seed{seed}" if seed else "p128"), runs / world / f"retired-seed{seed}"
        if not (new / "feedback" / "ilf_config.json").is_file():
            torch.manual_seed(0)
            train(TrainConfig(output_dir=new, world=world, distill="corrector", checkpoint_every=0, progress=False,
                              log_every=50, seed=seed, **settings))
        if seed and not (old / "feedback" / "ilf_config.json").is_file():  # seed 0: the shipped corrector
            env = {**os.environ, "PYTHONPATH": str(Path(old_src).resolve())}
            subprocess.run([sys.executable, "-c", OLD_TRAIN, str(old), world, str(seed), repr(settings)], env=env,
                           check=True)
        print(f"{world} seed {seed}: both trained", flush=True)


def report_seeds(world: str, runs: Path) -> None:
    """Both trainers over three training seeds on the report seeds: per item, each trainer's PSNR averaged over
    its seeds, then paired (native − retired) with a bootstrap interval over items."""
    import numpy as np

    from ilf.bench.paired import compare
    from ilf.worlds import paths

    folders = {("retired", 0): paths.feedback(world), ("native", 0): runs / world / "p128" / "feedback"}
    for seed in SEEDS[1:]:
        folders[("retired", seed)] = runs / world / f"retired-seed{seed}" / "feedback"
        folders[("native", seed)] = runs / world / f"p128-seed{seed}" / "feedback"
    texts = {key: f"corrector:20,feedback={f},label={key[0]}-seed{key[1]}" for key, f in folders.items()}
    ev = evaluate(world, list(texts.values()), REPORT_SEEDS, (20, 20))
    view, q = ev["view"], ev["quality"]
    per = {key: ev["rows"][t] for key, t in texts.items()}
    mean = {who: {m: np.mean([per[(who, s)][m] for s in SEEDS], 0) for m in ("psnr", q)}
            for who in ("retired", "native")}
    dp = compare(mean["native"]["psnr"], mean["retired"]["psnr"], view.seeds, "psnr")
    dq = compare(mean["native"][q], mean["retired"][q], view.seeds, q)
    res = {"world": world, "quality": q, "seeds": REPORT_SEEDS, "training_seeds": list(SEEDS),
           "runs": {f"{k[0]}-seed{k[1]}": {"psnr": float(np.mean(r["psnr"])), q: float(np.mean(r[q]))}
                    for k, r in per.items()},
           "native_minus_retired_seed_mean": {"psnr": dp.to_dict(), q: dq.to_dict()},
           "command": f"python bench/native_equivalence.py seeds --world {world} --old-src OLD/src && "
                      f"python bench/native_equivalence.py report-seeds --world {world}"}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{world}-seeds.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


def report(world: str, runs: Path) -> None:
    import numpy as np

    from ilf.bench.paired import compare
    from ilf.worlds import paths

    shipped = f"corrector:20,feedback={paths.feedback(world)},label=retired-trainer-shipped"
    natives = {n: f"corrector:20,feedback={runs / world / f'p{n}' / 'feedback'},label=pipeline-native-{n}-prompts"
               for n in SIZES}
    start = time.time()
    ev = evaluate(world, [shipped, *natives.values()], REPORT_SEEDS, (20, 20))
    view, q = ev["view"], ev["quality"]
    seeds = view.seeds
    base = ev["rows"][shipped]
    rows = [{"method": "retired trainer (shipped learned-i2)", "prompts": 128, "blocks": base["blocks"],
             "psnr": float(np.mean(base["psnr"])), q: float(np.mean(base[q]))}]
    for n, text in natives.items():
        r = ev["rows"][text]
        dp, dq = compare(r["psnr"], base["psnr"], seeds, "psnr"), compare(r[q], base[q], seeds, q)
        cpu = runs / world / f"p{n}" / "cpu_seconds.txt"
        rows.append({"method": f"pipeline-native, {n} prompts", "prompts": n, "blocks": r["blocks"],
                     "psnr": float(np.mean(r["psnr"])), q: float(np.mean(r[q])),
                     "d_psnr": [dp.diff, *dp.ci], "psnr_wins": [dp.seed_wins, dp.num_seeds],
                     "d_quality": [dq.diff, *dq.ci], "quality_wins": [dq.seed_wins, dq.num_seeds],
                     "train_cpu_seconds": float(cpu.read_text()) if cpu.is_file() else None})
    OUT.mkdir(parents=True, exist_ok=True)
    res = {"world": world, "quality": q, "seeds": REPORT_SEEDS, "items": len(view.seeds), "rows": rows,
           "seconds": round(time.time() - start),
           "command": f"python bench/native_equivalence.py train --world {world} && "
                      f"python bench/native_equivalence.py report --world {world}"}
    (OUT / f"{world}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


def trajectory(world: str, runs: Path) -> None:
    """The paper's ILF: the world's shipped paper-mode feedback (trained by the retired trajectory trainer) against
    its recipe trained on recordings of the world's pipeline (`--distill trajectory`, 1000 iterations of 32, lr
    1e-3, 256 train prompts, 10 steps, the shipped loop / plan / t_post), both on the report seeds, with plain:10
    (what an untrained feedback gives) beside them."""
    import numpy as np
    import torch

    from ilf.bench.paired import compare
    from ilf.feedback import read_feedback_config
    from ilf.train.config import WORLD_TRAJECTORY, TrainConfig
    from ilf.train.trainer import train
    from ilf.worlds import paths

    torch.set_num_threads(1)
    shipped = read_feedback_config(paths.paper_feedback(world))["config"]
    folder = runs / world / "trajectory"
    if not (folder / "feedback" / "ilf_config.json").is_file():
        start = time.process_time()
        torch.manual_seed(0)
        train(TrainConfig(output_dir=folder, world=world, distill="trajectory", checkpoint_every=0, progress=False,
                          log_every=50, loop=tuple(shipped["loop"]), feedback_steps=shipped["feedback_steps"],
                          inference_t_post=shipped["t_post"], student_steps=shipped["num_inference_steps"],
                          **WORLD_TRAJECTORY))
        (folder / "cpu_seconds.txt").write_text(f"{time.process_time() - start:.1f}\n")
    how = f"plan={shipped['feedback_steps']},t_post={shipped['t_post']}"
    old = f"ilf:10,feedback={paths.paper_feedback(world)},{how},label=retired-trainer-shipped"
    new = f"ilf:10,feedback={folder / 'feedback'},{how},label=pipeline-native"
    ev = evaluate(world, ["plain:10", old, new], REPORT_SEEDS, (20, 20))
    q, seeds = ev["quality"], ev["view"].seeds
    rows = {name: ev["rows"][text] for name, text in (("retired", old), ("native", new), ("plain:10", "plain:10"))}
    res = {"world": world, "quality": q, "seeds": REPORT_SEEDS,
           "runs": {k: {"blocks": r["blocks"], "psnr": float(np.mean(r["psnr"])), q: float(np.mean(r[q]))}
                    for k, r in rows.items()},
           "native_minus_retired": {m: compare(rows["native"][m], rows["retired"][m], seeds, m).to_dict()
                                    for m in ("psnr", q)},
           "native_minus_plain10": {m: compare(rows["native"][m], rows["plain:10"][m], seeds, m).to_dict()
                                    for m in ("psnr", q)},
           "train_cpu_seconds": float((folder / "cpu_seconds.txt").read_text()),
           "command": f"python bench/native_equivalence.py trajectory --world {world}"}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{world}-trajectory.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


def _ci(c: dict, digits: int = 2) -> str:
    f = f"{{:+.{digits}f}}"
    return (f"{f.format(c['diff'])} [{f.format(c['ci95'][0])}, {f.format(c['ci95'][1])}] "
            f"({c['seed_wins']}/{c['num_seeds']})")


def table() -> None:
    """docs/native-equivalence/table.md from the worlds' JSON results (sizes, training seeds, trajectory)."""
    worlds = ("digits", "shapes", "shapes-flow")
    lines = ["# The recorded trainer vs the retired one (report seeds 1000-1009, 160 items per world)", "",
             "Δ: recorded − retired, paired per item, bootstrap 95% interval, (seeds where the recorded one is "
             "ahead / seeds). Quality: accuracy (digits) or alignment (shapes, shapes-flow). Script: "
             "`bench/native_equivalence.py`; the retired trainer ran from commit 9b90374.", "",
             "## The corrector, by number of train prompts (training seed 0)", "",
             "| world | trainer | train prompts | block fwd / img | PSNR to plain:20 | Δ PSNR dB [95% CI] (wins) | "
             "quality | Δ quality | train CPU s |", "|---|---|---:|---:|---:|---|---:|---|---:|"]
    for world in worlds:
        path = OUT / f"{world}.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        q = res["quality"]
        for r in res["rows"]:
            d = (f"{r['d_psnr'][0]:+.2f} [{r['d_psnr'][1]:+.2f}, {r['d_psnr'][2]:+.2f}] ({r['psnr_wins'][0]}/"
                 f"{r['psnr_wins'][1]})") if "d_psnr" in r else "–"
            dq = (f"{r['d_quality'][0]:+.3f} [{r['d_quality'][1]:+.3f}, {r['d_quality'][2]:+.3f}]"
                  if "d_quality" in r else "–")
            cpu = f"{r['train_cpu_seconds']:.0f}" if r.get("train_cpu_seconds") else "–"
            lines.append(f"| {world} | {r['method']} | {r['prompts']} | {r['blocks']:.0f} | {r['psnr']:.2f} | {d} | "
                         f"{r[q]:.3f} | {dq} | {cpu} |")
    lines += ["", "## The corrector over three training seeds (128 prompts)", "",
              "Each trainer's PSNR per item averaged over its seeds 0, 1, 2 (the retired trainer's seed 0 is the "
              "shipped corrector), then paired.", "",
              "| world | retired: seeds 0 / 1 / 2 | recorded: seeds 0 / 1 / 2 | Δ of the seed means, dB | Δ quality |",
              "|---|---|---|---|---|"]
    for world in worlds:
        path = OUT / f"{world}-seeds.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        runs, q = res["runs"], res["quality"]
        old = " / ".join(f"{runs[f'retired-seed{s}']['psnr']:.2f}" for s in SEEDS)
        new = " / ".join(f"{runs[f'native-seed{s}']['psnr']:.2f}" for s in SEEDS)
        d = res["native_minus_retired_seed_mean"]
        lines.append(f"| {world} | {old} | {new} | {_ci(d['psnr'])} | {_ci(d[q], 3)} |")
    rows = [json.loads((OUT / f"{w}-trajectory.json").read_text()) for w in worlds
            if (OUT / f"{w}-trajectory.json").is_file()]
    if rows:
        lines += ["", "## ILF's trajectory objective (10 steps, the shipped paper-mode feedbacks' recipe)", "",
                  "| world | plain:10 PSNR | retired ILF PSNR | recorded ILF PSNR | recorded − retired, dB | "
                  "recorded − plain:10, dB | train CPU s |", "|---|---:|---:|---:|---|---|---:|"]
        for res in rows:
            r = res["runs"]
            lines.append(f"| {res['world']} | {r['plain:10']['psnr']:.2f} | {r['retired']['psnr']:.2f} | "
                         f"{r['native']['psnr']:.2f} | {_ci(res['native_minus_retired']['psnr'])} | "
                         f"{_ci(res['native_minus_plain10']['psnr'])} | {res['train_cpu_seconds']:.0f} |")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("train", "report", "seeds", "report-seeds", "trajectory", "table"))
    p.add_argument("--old-src", type=Path, help="seeds: the src folder of a checkout of commit 9b90374 (the retired "
                   "trainer)")
    p.add_argument("--world", choices=("digits", "shapes", "shapes-flow"))
    p.add_argument("--runs", type=Path, default=Path("runs/native-equivalence"))
    a = p.parse_args(argv)
    if a.phase == "table":
        table()
    elif a.phase == "train":
        train_sizes(a.world, a.runs)
    elif a.phase == "seeds":
        train_seeds(a.world, a.runs, a.old_src)
    elif a.phase == "report-seeds":
        report_seeds(a.world, a.runs)
    elif a.phase == "trajectory":
        trajectory(a.world, a.runs)
    else:
        report(a.world, a.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
