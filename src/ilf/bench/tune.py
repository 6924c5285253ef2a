"""Schedule auto-tune: the inference setting of a trained feedback that scores best within a cost budget.

What the paper tuned by hand (Fig. 10, 15, 16): which steps use the feedback (skip plans), the post-feedback
timestep strategy (t_post, k = m/n or n/m), the number of steps, and — given feedbacks trained for several
loops — the loop. Every combination whose predicted block forwards (`ilf.predicted_block_forwards`) fit the
budget is generated on a calibration set and scored by one metric (default: PSNR to the reference method's
images, or the world evaluator's alignment/accuracy); the best is returned as a method string for
`ilf bench --methods`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ilf.schedule import feedback_steps, predicted_block_forwards
from ilf.choices import T_POST_WITH_RATIO
from ilf.eval.score import METRICS
from ilf.io import write_json

from .errors import BenchError
from .family_ilf import default_loop, feedback_loop
from .grammar import UNTRAINED, MethodSpec
from .methods import parse_method

PLAN_KINDS = ("outer", "first", "last", "skip-inner", "skip-outer", "alternating", "all")


@dataclass
class TuneSpace:
    feedbacks: list[str]
    steps: list[int]
    plans: list[str]  # plan kinds (PLAN_KINDS); "outer" expands to outer:1 .. outer:N/2, etc.
    t_posts: list[str]
    ratios: list[str]


def _plans(kind: str, n: int) -> list[str]:
    if kind in ("alternating", "all", "none"):
        return [kind]
    if kind not in PLAN_KINDS:
        raise BenchError(f"unknown plan kind {kind!r}; choose from {', '.join(PLAN_KINDS)}")
    top = n // 2 if kind in ("outer", "skip-outer") else n - 1
    return [f"{kind}:{k}" for k in range(1, top + 1)]


def candidates(space: TuneSpace, num_blocks: int, budget: float, max_configs: int | None = None) -> list[MethodSpec]:
    """Every distinct ILF setting whose predicted block forwards are <= `budget`.

    Plans that switch the feedback on for the same steps are one candidate (e.g. outer:2 = skip-inner:6 at
    10 steps); the ratio only matters for rescale/anneal. With `max_configs`, the candidates that use the
    budget best (most block forwards) are kept.
    """
    out: list[tuple[int, MethodSpec]] = []
    for fb in space.feedbacks:
        loop = default_loop(num_blocks) if fb == UNTRAINED else feedback_loop(fb)
        if loop[1] >= num_blocks:
            raise BenchError(f"feedback {fb} has loop {loop}, outside this {num_blocks}-block model")
        for n in space.steps:
            seen: set[frozenset] = set()
            for kind in space.plans:
                for plan in _plans(kind, n):
                    on = feedback_steps(plan, n)
                    if on in seen or not on:
                        continue
                    seen.add(on)
                    cost = predicted_block_forwards(num_blocks, n, loop=loop, feedback_plan=plan)
                    if cost > budget:
                        continue
                    for t_post in space.t_posts:
                        for ratio in (space.ratios if t_post in T_POST_WITH_RATIO else [None]):
                            text = f"ilf:{n},feedback={fb},plan={plan},t_post={t_post}"
                            if ratio is not None:
                                text += f",ratio={ratio}"
                            if fb == UNTRAINED:
                                text += f",loop={loop[0]}-{loop[1]}"
                            out.append((cost, parse_method(text)))
    if not out:
        raise BenchError(f"no ILF setting fits a budget of {budget:g} block forwards; raise --budget (or lower "
                         "--speedup), or allow fewer --steps")
    if max_configs is not None and len(out) > max_configs:
        out = sorted(out, key=lambda cs: -cs[0])[:max_configs]  # stable: ties keep their enumeration order
    return [spec for _, spec in out]


def pick_best(results: dict, metric: str) -> dict:
    """The best non-reference row of `results` by `metric` (its direction from METRICS)."""
    higher = METRICS[metric].higher_is_better
    rows = [r for r in results["rows"] if not r["reference"] and r["metrics"].get(metric) is not None]
    if not rows:
        raise BenchError(f"no candidate has a {metric!r} score")
    return (max if higher else min)(rows, key=lambda r: r["metrics"][metric])


def rank_tried(rows: list[dict], metric: str) -> list[dict]:
    """Candidates best first by `metric` (its direction from METRICS); a candidate without a score goes last."""
    higher = METRICS[metric].higher_is_better

    def key(r):
        v = r["metrics"].get(metric)
        return (1, 0.0) if v is None else (0, -v if higher else v)

    return sorted((r for r in rows if not r["reference"]), key=key)


def autotune(source, items, scorer, space: TuneSpace, *, budget: float, metric: str, reference: str,
             out_dir: Path, batch_size: int = 4, max_configs: int | None = None, progress: bool = True) -> dict:
    """Generate the reference and every candidate on `items`, score them, write tune.json; return the summary."""
    from .runner import Bench, BenchOptions

    ref = parse_method(reference)
    specs = [ref] + candidates(space, source.num_blocks, budget, max_configs)
    if metric not in scorer.metric_keys:
        raise BenchError(f"--metric {metric!r} is not measured by this scorer ({', '.join(scorer.metric_keys)})")
    options = BenchOptions(out_dir=out_dir, batch_size=batch_size, repeats=0, warmup=0, grid_items=0,
                           progress=progress, feedback=None)
    bench = Bench(source, items, specs, scorer, options)
    results = bench.run()
    best = pick_best(results, metric)
    tried = rank_tried(results["rows"], metric)
    summary = {
        "metric": metric, "higher_is_better": METRICS[metric].higher_is_better, "budget_block_forwards": budget,
        "reference": ref.name, "num_candidates": len(specs) - 1, "calibration_items": [it.to_dict() for it in items],
        "best": {"method": best["method"]["spec"], "score": best["metrics"][metric],
                 "block_forwards": best["block_forwards"], "metrics": best["metrics"]},
        "tried": [{"method": r["method"]["spec"], "score": r["metrics"].get(metric),
                   "predicted_block_forwards": r["predicted_block_forwards"], "block_forwards": r["block_forwards"],
                   "metrics": r["metrics"]} for r in tried],
    }
    write_json(Path(out_dir) / "tune.json", summary)
    return summary
