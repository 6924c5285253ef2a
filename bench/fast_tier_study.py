"""The fast tier: the corrector at ≤ 85 block forwards per image (≥ 2.8× fewer than plain:20), against plain
steps and diffusers' TaylorSeer tuned as carefully, on the embedded worlds (issue 24).

Levers searched (all on tune seeds 100-104; nothing is chosen on the report seeds 1000-1009):

* **which steps run full, jointly with the step count.** For N-step runs (N = 9 … 20), a greedy removal
  (L2C-style): from every step full, drop the full step whose loss of PSNR to plain:20 is smallest, down to
  K full steps, with the untrained corrector (= TaylorSeer's forecast on that step mask) as the cheap proxy.
  K is the most full steps within the budget: 7 on 12 blocks (84 block forwards), forecast steps cost
  `tail` block forwards each (SD3's textless last block runs fresh unless tail=0).
* **TaylorSeer, tuned within the same budget**: every step count N, warm-up 1-4, order 1 and 2 (second order is
  the FoCa-style richer forecast diffusers ships), the shortest interval that fits.
* **training levers** on the masks the proxy ranks best: the learned per-channel forecast, twice the training,
  and the teacher (plain N's path, or plain:20's where the grids align).

    python bench/fast_tier_study.py search --world shapes       # ~10 min of one CPU thread per world
    python bench/fast_tier_study.py train --world shapes        # ~2 min per variant
    python bench/fast_tier_study.py tune --world shapes
    python bench/fast_tier_study.py report --world shapes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corrector_study import REPORT_SEEDS, TRAIN, TUNE_SEEDS  # noqa: E402

BUDGET = 85  # block forwards per image: ≥ 2.8× fewer than plain:20's 240 on the 12-block worlds
STRETCH = 60  # 4×
GREEDY_STEPS = (9, 10, 12, 14)  # step counts searched greedily (cost grows with N²)
TS_STEPS = (8, 9, 10, 11, 12, 14, 16, 20)
SEARCH_SEEDS = TUNE_SEEDS[:3]  # the greedy search's proxy scores (a subset of the tune seeds: ~200 runs a world)


class Scorer:
    """PSNR to plain:20 of one method on a world's items (the search needs nothing else)."""

    def __init__(self, world: str, seeds: list[int]):
        import torch

        from ilf.eval.sources import load_world_source
        from ilf.worlds import paths
        from peer_study import generate, items_of

        torch.set_num_threads(1)
        self.world, self.generate = world, generate
        self.src = load_world_source(world)
        self.items, self.view = items_of(world, seeds, 16)
        self.batch = len(self.items) // len(seeds)
        self.feedback = str(paths.paper_feedback(world))
        self.ref = self.run("plain:20")[0]
        self.memo: dict[str, tuple[float, float]] = {}

    def run(self, spec: str):
        return self.generate(self.src, spec, self.items, self.batch, self.feedback, self.items[:1])

    def __call__(self, spec: str) -> tuple[float, float]:
        """(mean PSNR, mean block forwards per image)."""
        from ilf.eval.metrics import psnr

        if spec not in self.memo:
            images, blocks, _ = self.run(spec)
            self.memo[spec] = (float(psnr(images, self.ref).mean()), float(blocks))
            release_heap()
        return self.memo[spec]


def release_heap() -> None:
    """Hand freed heap back to the OS (glibc): hundreds of runs of varying shapes otherwise grow the process."""
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


def mask_spec(n: int, mask, tail: int | None = None, feedback: str = "untrained") -> str:
    extra = "" if tail is None else f",tail={tail}"
    return f"corrector:{n},feedback={feedback},full=[{','.join(map(str, sorted(mask)))}]{extra}"


def rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, Linux: KiB


def greedy(score: Scorer, n: int, k_min: int, tail: int | None, log) -> list[dict]:
    """Drop full steps one at a time (never step 0), each time the one whose loss is smallest; every round's
    best mask, down to k_min full steps."""
    mask, rounds = set(range(n)), []
    while len(mask) > k_min:
        cands = [mask - {s} for s in sorted(mask) if s != 0]
        scored = [(score(mask_spec(n, c, tail)), c) for c in cands]
        (psnr, blocks), mask = max(scored, key=lambda r: r[0][0])
        rounds.append({"steps": n, "full": sorted(mask), "psnr": psnr, "blocks": blocks, "tail": tail})
        log(f"  N={n} K={len(mask)} tail={tail}: {sorted(mask)} {psnr:.2f} dB at {blocks:.0f} blocks "
            f"({rss_mib():.0f} MiB)")
    return rounds


def taylorseer_grid(score: Scorer, tail_cost: int, log) -> list[dict]:
    """diffusers' TaylorSeer within the budget: per step count, warm-up and cool-down (the last step computed or
    not), the shortest interval that fits, at order 1; then order 2 on the five best of those."""
    from ilf.corrector_config import taylor_compute_steps

    def fits(n, i, w, c):
        k = len(taylor_compute_steps(n, i, w, c))
        return k < n and k * 12 + (n - k) * tail_cost <= BUDGET

    rows = []
    for n in TS_STEPS:
        for warmup in (1, 2, 3, 4):
            for cooldown in (None, n - 1):
                intervals = [i for i in range(1, n + 1) if fits(n, i, warmup, cooldown)]
                if not intervals:
                    continue
                spec = f"taylorseer:{n},interval={intervals[0]},warmup={warmup}" + \
                    ("" if cooldown is None else f",cooldown={cooldown}")
                rows.append(dict(zip(("psnr", "blocks"), score(spec)), spec=spec))
                log(f"  {spec}: {rows[-1]['psnr']:.2f} dB at {rows[-1]['blocks']:.0f} blocks")
    for r in sorted(rows, key=lambda r: -r["psnr"])[:5]:
        spec = r["spec"] + ",order=2"
        rows.append(dict(zip(("psnr", "blocks"), score(spec)), spec=spec))
        log(f"  {spec}: {rows[-1]['psnr']:.2f} dB at {rows[-1]['blocks']:.0f} blocks")
    return rows


def search(world: str, out: Path) -> dict:
    log = lambda s: print(s, flush=True)  # noqa: E731
    start = time.process_time()
    score = Scorer(world, SEARCH_SEEDS)
    sd3 = world == "shapes-flow"
    res = {"world": world, "seeds": SEARCH_SEEDS, "budget": BUDGET, "plain": {}, "greedy": [], "taylorseer": []}
    for n in range(5, 9):
        res["plain"][n] = score(f"plain:{n}")[0]
    # the greedy runs with free forecast steps (tail=0: on SD3 its textless last block is forecast too); on SD3
    # each round's mask is also scored with that block run fresh (its default tail: 1 block per forecast step)
    for n in GREEDY_STEPS:
        rounds = greedy(score, n, 5, 0 if sd3 else None, log)
        default_tail = [dict(zip(("psnr", "blocks"), score(mask_spec(n, r["full"]))), steps=n, full=r["full"], tail=None)
                        for r in (rounds if sd3 else [])]
        res["greedy"] += rounds + default_tail
        (out / "search.json").write_text(json.dumps(res, indent=2) + "\n")
    res["taylorseer"] = taylorseer_grid(score, 1 if sd3 else 0, log)
    res["cpu_seconds"] = round(time.process_time() - start)
    res["command"] = f"python bench/fast_tier_study.py search --world {world}"
    (out / "search.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def spread(n: int, k: int) -> list[int]:
    """k full steps spread evenly over an n-step run (the control for a searched mask)."""
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def variants(world: str, search_res: dict) -> dict:
    """The trained candidates, from the search (tune seeds): per step count, the greedy mask at the budget's
    most full steps (K=7 with free forecast steps; on SD3 also its default tail at K=6) and at the stretch
    budget (K=5); the evenly spread mask of the best N as the control; twice the training on the best."""
    sd3 = world == "shapes-flow"
    tail = 0 if sd3 else None
    rounds = [r for r in search_res["greedy"] if r["tail"] == tail]
    out = {}
    for k, tag in ((7, "fast"), (5, "stretch")):
        at_k = sorted((r for r in rounds if len(r["full"]) == k), key=lambda r: -r["psnr"])
        for r in at_k[:len(GREEDY_STEPS) if tag == "fast" else 2]:  # every step count at the budget
            out[f"{tag}-n{r['steps']}"] = dict(student_steps=r["steps"], cache_full_steps=r["full"], corrector_tail=tail)
        if tag == "fast" and at_k:
            best = at_k[0]
            out[f"{tag}-n{best['steps']}-spread"] = dict(student_steps=best["steps"], corrector_tail=tail,
                                                        cache_full_steps=spread(best["steps"], k))
            out[f"{tag}-n{best['steps']}-long"] = dict(out[f"{tag}-n{best['steps']}"], max_steps=1200)
            if not sd3 and 20 % best["steps"] == 0:  # land the forecast steps on plain:20's path (the reference)
                out[f"{tag}-n{best['steps']}-teacher20"] = dict(out[f"{tag}-n{best['steps']}"], teacher_steps=20)
            if sd3:  # its last block run fresh: one full step fewer within the budget
                k6 = max((r for r in search_res["greedy"] if r["tail"] is None and len(r["full"]) == 6),
                         key=lambda r: r["psnr"])
                out[f"{tag}-n{k6['steps']}-tail1"] = dict(student_steps=k6["steps"], cache_full_steps=k6["full"])
    for tag, budget in (("fast", BUDGET), ("stretch", STRETCH)):  # TaylorSeer's own best schedule, corrected
        n, steps, order = taylorseer_schedule(taylorseer_best(search_res, budget))
        out[f"{tag}-ts-n{n}"] = dict(student_steps=n, cache_full_steps=steps, cache_order=order, corrector_tail=tail)
    return out


def taylorseer_schedule(spec: str) -> tuple[int, list[int], int]:
    """(steps, full steps, order) of a `taylorseer:N,interval=..,warmup=..[,cooldown=..][,order=..]` spec."""
    from ilf.bench.methods import parse_method
    from ilf.corrector_config import taylor_compute_steps

    m = parse_method(spec)
    steps = taylor_compute_steps(m.steps, m.get("interval", 2), m.get("warmup", 3), m.get("cooldown"))
    return m.steps, steps, m.get("order", 1)


def train_all(world: str, runs: Path, out: Path, names=None) -> None:
    import torch

    from ilf.train.config import TrainConfig
    from ilf.train.trainer import train

    todo = variants(world, json.loads((out / "search.json").read_text()))
    (out / "variants.json").write_text(json.dumps(todo, indent=2) + "\n")
    for name, v in todo.items():
        if names and name not in names or (runs / name / "feedback" / "ilf_config.json").is_file():
            continue
        start = time.process_time()
        cfg = TrainConfig(output_dir=runs / name, world=world, distill="corrector", checkpoint_every=200,
                          resume="latest", progress=False, log_every=100, mix_per_channel=True, **{**TRAIN, **v})
        torch.manual_seed(0)
        train(cfg)
        print(f"{world} {name}: trained in {time.process_time() - start:.0f} s CPU", flush=True)


def corrector_spec(runs: Path, name: str, v: dict) -> str:
    return f"corrector:{v['student_steps']},feedback={runs / name / 'feedback'},label={name}"


def control_spec(name: str, v: dict) -> str:
    """The same mask, untrained: TaylorSeer's forecast on the variant's own full steps."""
    tail = "" if v.get("corrector_tail") is None else f",tail={v['corrector_tail']}"
    return (f"corrector:{v['student_steps']},feedback=untrained,full=[{','.join(map(str, v['cache_full_steps']))}]"
            f"{tail},label={name} untrained")


def taylorseer_best(search_res: dict, budget: int) -> str:
    """diffusers' TaylorSeer at its best setting within `budget` on the search's seeds."""
    rows = [r for r in search_res["taylorseer"] if r["blocks"] <= budget + 1e-6]
    return max(rows, key=lambda r: r["psnr"])["spec"]


def trained(runs: Path, world_out: Path) -> dict:
    todo = json.loads((world_out / "variants.json").read_text())
    return {n: v for n, v in todo.items() if (runs / n / "feedback" / "ilf_config.json").is_file()}


def tune(world: str, runs: Path, out: Path) -> dict:
    """Every trained variant and TaylorSeer's best within each budget on the tune seeds; the tiers are chosen
    here: the best PSNR to plain:20 within 85 (fast) and 60 (stretch) block forwards."""
    from corrector_study import evaluate, summarise

    search_res = json.loads((out / "search.json").read_text())
    done = trained(runs, out)
    ts = {f"{taylorseer_best(search_res, b)},label=TaylorSeer best <={b}" for b in (BUDGET, STRETCH)}
    ev = evaluate(world, sorted(ts) + [corrector_spec(runs, n, v) for n, v in done.items()], TUNE_SEEDS, (4, 20))
    rows = summarise(ev)
    by = {r["method"]: r for r in rows}
    pick = {tier: max((n for n in done if n.startswith(tier) and by[n]["block_forwards"] <= b + 1e-6),
                      key=lambda n: by[n]["psnr"], default=None)
            for tier, b in (("fast", BUDGET), ("stretch", STRETCH))}
    res = {"world": world, "seeds": TUNE_SEEDS, "rows": rows, "chosen": pick, "variants": done,
           "taylorseer": sorted(ts), "command": f"python bench/fast_tier_study.py tune --world {world}"}
    (out / "tune.json").write_text(json.dumps(res, indent=2) + "\n")
    for r in sorted(rows, key=lambda r: r["block_forwards"]):
        if r["psnr"] is not None:
            print(f"  {r['method']}: {r['psnr']:.2f} dB at {r['block_forwards']:.0f}")
    print("chosen:", pick)
    return res


def report(world: str, runs: Path, out: Path, peers=()) -> dict:
    """On the report seeds: each chosen tier against plain at ≥ its blocks, TaylorSeer's best within its
    budget (chosen on the search's seeds), the same mask untrained (the cheap control: is it the mask or the
    training?), and `peers` (e.g. cache-dit's best within the budget, chosen on tune seeds)."""
    from corrector_study import evaluate, label, summarise
    from ilf.bench.paired import compare
    from ilf.worlds import paths

    tune_res = json.loads((out / "tune.json").read_text())
    chosen = {t: n for t, n in tune_res["chosen"].items() if n}
    done = tune_res["variants"]
    methods = list(tune_res["taylorseer"]) + list(peers) + [
        f"corrector:20,feedback={paths.feedback(world)},label=corrector (shipped 1.8x)"]
    for tier, name in chosen.items():
        methods += [corrector_spec(runs, name, done[name]), control_spec(name, done[name])]
    start = time.time()
    ev = evaluate(world, methods, REPORT_SEEDS, (4, 20))
    rows = summarise(ev)
    q, view, per = ev["quality"], ev["view"], {label(k): v for k, v in ev["rows"].items()}
    verdicts = {}
    for tier, name in chosen.items():
        b = BUDGET if tier == "fast" else STRETCH
        rivals = {"TaylorSeer": f"TaylorSeer best <={b}", "untrained": f"{name} untrained",
                  "plain": next(r["fair_plain"] for r in rows if r["method"] == name)}
        rivals |= {label(p): label(p) for p in peers if per.get(label(p), {}).get("blocks", 1e9) <= b + 1e-6}
        verdicts[tier] = {"method": name, "blocks": per[name]["blocks"], "psnr": float(per[name]["psnr"].mean()),
                          "vs": {k: {m: compare(per[name][m], per[r][m], view.seeds, m).to_dict() for m in ("psnr", q)}
                                 for k, r in rivals.items() if r in per}, "rivals": rivals}
    res = {"world": world, "seeds": REPORT_SEEDS, "num_items": len(view.seeds), "quality": q, "budget": BUDGET,
           "stretch": STRETCH, "chosen": chosen, "verdicts": verdicts, "rows": rows, "refused": ev["refused"],
           "seconds": round(time.time() - start), "command": f"python bench/fast_tier_study.py report --world {world}"}
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    from fast_tier_plot import plot, write_table

    write_table(out, res)
    plot(out, res)
    print((out / "table.md").read_text())
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("search", "train", "tune", "report"))
    p.add_argument("--world", required=True, choices=("digits", "shapes", "shapes-flow"))
    p.add_argument("--variants", nargs="+", help="train only these")
    p.add_argument("--peers", nargs="*", default=[], help="report: peer method strings chosen on tune seeds elsewhere "
                   "(e.g. cache-dit's best within the budget, from bench/cachedit_study.py)")
    p.add_argument("--runs", type=Path, default=Path("runs/fast-tier"), help="trained folders")
    p.add_argument("--out", type=Path, default=Path("docs/fast-tier"), help="results")
    args = p.parse_args(argv)
    out, runs = args.out / args.world, args.runs / args.world
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "search":
        search(args.world, out)
    elif args.phase == "train":
        train_all(args.world, runs, out, args.variants)
    elif args.phase == "tune":
        tune(args.world, runs, out)
    else:
        report(args.world, runs, out, args.peers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
