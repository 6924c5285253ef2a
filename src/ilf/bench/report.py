"""Outputs of a benchmark: results.json, a markdown table in the shape of the paper's Table 1, the plots.

`markdown_table(results)` is a pure function of results.json, so tables can be remade (or several runs'
results merged, `merge_results`) without generating anything again.
"""

from __future__ import annotations

import math
from pathlib import Path

from ilf.eval.score import METRICS
from ilf.io import atomic_write_text, write_json
from ilf.portable import portable_tree

_DECIMALS = {"psnr": 2, "ssim": 4, "alignment": 3, "accuracy": 3, "world_fd": 2, "fid": 2, "clip_score": 2,
             "imagereward": 2}


def _fmt_metric(key: str, v) -> str:
    if v is None:
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"  # PSNR of images identical to the reference's
    return f"{v:.{_DECIMALS.get(key, 2)}f}"


def _fmt_count(v) -> str:
    if v is None:
        return "–"
    return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"


def _speedup(x) -> str:
    return f" ({x:.1f}x)" if x is not None and not math.isclose(x, 1.0, abs_tol=0.05) else ""


def best_rows(results: dict, key: str) -> set[int]:
    """Indices of the best non-reference rows for metric `key` (ties all count)."""
    higher = METRICS[key].higher_is_better
    vals = [(i, r["metrics"].get(key)) for i, r in enumerate(results["rows"]) if not r["reference"]]
    vals = [(i, v) for i, v in vals if v is not None]
    if not vals:
        return set()
    best = (max if higher else min)(v for _, v in vals)
    return {i for i, v in vals if v == best or math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)}


def _peaks(results: dict) -> list[float]:
    return [p for p in ((r.get("peak_memory") or {}).get("peak_mib") for r in results["rows"]) if p is not None]


def show_peak_memory(results: dict) -> bool:
    """Whether the Peak MiB column says anything: it is measured and differs between the methods. On a CPU the
    process's resident-set high-water mark often reads the same on every row (memory freed by one method is
    not returned to the system before the next): where every row is within 1 % of the largest, the column is
    left out and a note says why."""
    peaks = _peaks(results)
    return len(peaks) > 1 and max(peaks) - min(peaks) > 0.01 * max(peaks)  # within 1 %: noise, not a method


def time_ties(results: dict) -> list[list[str]]:
    """Rows whose s/img the run cannot order: chains of rows whose timed calls' ranges (min to max over the
    repeats) overlap. Within such a group the medians' order is run-to-run noise and can flip on the next run."""
    spans = sorted((min(r["times"]), max(r["times"]), r["display"]) for r in results["rows"]
                   if len(r.get("times") or ()) >= 2)
    groups, hi = [], None
    for lo, top, name in spans:
        if hi is not None and lo <= hi:  # overlaps the group so far
            groups[-1].append(name)
            hi = max(hi, top)
        else:
            groups.append([name])
            hi = top
    return [g for g in groups if len(g) > 1]


def time_noise_note(results: dict) -> str | None:
    """What the s/img column (and the pareto plot's s/img panels) can and cannot say about the order of the
    methods, or None where every difference exceeds the spread of the timed calls."""
    timed = [r for r in results["rows"] if r.get("times")]
    if not timed:
        return None
    if any(len(r["times"]) < 2 for r in timed):
        return ("s / img: one timed call per method, so its run-to-run noise is not measured; small differences "
                "may flip between runs.")
    groups = time_ties(results)
    if not groups:
        return None
    return ("s / img within run-to-run noise (their timed calls' ranges overlap, so their order can flip between "
            "runs): " + "; ".join(", ".join(g) for g in groups) + ".")


def markdown_table(results: dict) -> str:
    """Rows = methods; latency (steps, block forwards, s/img with speedups vs the reference row), peak memory,
    then every metric. The best non-reference value of each metric is bold, as in the paper's Table 1."""
    metrics = [k for k in results["metrics"] if k in METRICS]
    peak = show_peak_memory(results)
    head = ["Method", "# Steps", "# Blocks", "s / img"] + (["Peak MiB"] if peak else []) + \
        [METRICS[k].label for k in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    best = {k: best_rows(results, k) for k in metrics}
    for i, r in enumerate(results["rows"]):
        name = r["display"] + (" (reference)" if r["reference"] else "")
        sec = r.get("seconds_per_image")
        cells = [name, str(r["steps"]), _fmt_count(r["block_forwards"]) + _speedup(r.get("block_speedup")),
                 ("–" if sec is None else f"{sec:.3g}") + _speedup(r.get("speedup"))]
        if peak:
            cells.append(_fmt_count((r.get("peak_memory") or {}).get("peak_mib")))
        for k in metrics:
            v = _fmt_metric(k, r["metrics"].get(k))
            cells.append(f"**{v}**" if i in best[k] else v)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"{n}" for n in table_notes(results)) + "\n"


def table_notes(results: dict) -> list[str]:
    s, src = results["settings"], results["source"]
    peak_note = []
    peaks = _peaks(results)
    if peaks and not show_peak_memory(results):
        kind = next(((r.get("peak_memory") or {}).get("kind") for r in results["rows"] if r.get("peak_memory")), None)
        lo, hi = min(peaks), max(peaks)
        value = f"{_fmt_count(lo)} MiB" if _fmt_count(lo) == _fmt_count(hi) else f"{_fmt_count(lo)}–{_fmt_count(hi)} MiB"
        peak_note.append(f"Peak memory left out: every method read the same {(kind or 'peak').replace('_', ' ')} "
                         f"within 1 % ({value}), which does not separate them (on a CPU the process keeps memory it "
                         "freed); a GPU run reports each method's CUDA peak.")
    notes = [
        f"{src['name']} ({src['transformer_class']}, {src['num_blocks']} blocks, {src['dtype']} on {src['device']}); "
        f"{s['num_images']} images, the same seeds for every method; batch {s['batch_size']}.",
        f"Blocks (# Blocks): transformer-block forwards per pipeline call (CFG branches batched), speedup vs the "
        "reference. "
        f"s / img: median of {s['repeats']} timed calls of {s['time_batch']} image(s) after {s['warmup']} warm-up "
        "call(s), methods interleaved. Bold: the best non-reference value of each metric.",
    ]
    notes += peak_note
    noise = time_noise_note(results)
    if noise:
        notes.append(noise)
    if "psnr" in results["metrics"]:
        ref = next((r["display"] for r in results["rows"] if r["reference"]), results["reference"])
        notes.append(f"PSNR / SSIM: against the reference ({ref}) image of the same seed "
                     "(∞: every image identical to the reference's after 8-bit quantisation).")
    if "world_fd" in results["metrics"] and s["num_images"] < 2 * results.get("feature_dim", 128):
        notes.append(f"FD: Fréchet distance of the world evaluator's features to real held-out images; with "
                     f"{s['num_images']} images (fewer than twice the feature width) it is dominated by the "
                     "covariance estimate: compare rows, not absolute values, or use more --num-images.")
    if s.get("untrained_feedback"):
        notes.append("Rows marked feedback=untrained use an UNTRAINED feedback (zero scales, so it adds nothing; "
                     "with t_post=none they are exactly the plain model's output at that step count, with any other "
                     "t_post, the default rescale included, the blocks after the feedback see the shifted timestep, "
                     "so they differ from plain) at the feedback's cost — a smoke run, not ILF's quality.")
    for r in results["rows"]:  # what attention-level peers skip inside blocks that still run (not in # Blocks)
        peer = r.get("peer_stats") or {}
        parts = [f"{kind.replace('_', ' ')} computed {st['computed']}/{st['calls']}"
                 for kind, st in (peer.get("hooked") or {}).items()
                 if kind.endswith("attention") and st.get("computed") is not None]
        if "uncond_skipped_calls" in peer:
            parts.append(f"unconditional branch skipped on {peer['uncond_skipped_calls']}/{peer['transformer_calls']} "
                         "calls")
        if parts:
            notes.append(f"{r['display']}: {', '.join(parts)} (all calls of the generation phase).")
    for r in results["rows"]:  # which schedule each ILF row ran, and where it came from
        if (r.get("info") or {}).get("schedule"):
            notes.append(f"{r['display']}: {r['info']['schedule']}.")
    for sk in results.get("skipped", []):
        notes.append(f"Skipped {sk['method']}: {sk['reason']}.")
    return [f"- {n}" for n in notes]


def write_outputs(bench, results: dict) -> None:
    """results.json, table.md, pareto.png, grid.png (+ diagnostics, + ADM npz files)."""
    from .grids import make_grid
    from .plots import pareto_plot

    out = bench.out
    opts = bench.options
    outputs = {"results": "results.json", "table": "table.md"}
    atomic_write_text(out / "table.md", markdown_table(results))
    if pareto_plot(results, out / "pareto.png", metric=opts.pareto_metric):
        outputs["pareto"] = "pareto.png"
    if opts.grid_items > 0:
        make_grid(results, out, out / "grid.png", num_items=opts.grid_items, crop=opts.crop)
        outputs["grid"] = "grid.png"
    if opts.diagnostics:
        from .diagnostics import run_diagnostics

        outputs.update(run_diagnostics(bench))
    if opts.npz:
        from ilf.eval.adm import write_adm_npz
        from ilf.eval.generate import item_files

        for row in bench.rows:
            path = out / "npz" / f"{row.spec.slug}.npz"
            write_adm_npz(item_files(row.folder, bench.items), path)
            outputs.setdefault("npz", []).append(str(path.relative_to(out)))
    results["outputs"] = outputs
    write_json(out / "results.json", portable_tree(results, out))  # no absolute path of this machine


def merge_results(parts: list[dict], names: list[str] | None = None) -> dict:
    """One table from several runs (recipe parts): the same methods on other prompt sets (ImageReward's prompts,
    MJHQ-30K) add their metrics to the rows (a metric measured twice keeps the first), other methods add rows
    (e.g. Table 2's step counts, each part with its own reference). Latency comes from the part that timed it."""
    if not parts:
        raise ValueError("nothing to merge")
    base = {**parts[0], "rows": [dict(r, metrics=dict(r["metrics"])) for r in parts[0]["rows"]]}
    by_spec = {r["method"]["spec"]: r for r in base["rows"]}
    metrics = list(base["metrics"])
    for part in parts[1:]:
        for r in part["rows"]:
            row = by_spec.get(r["method"]["spec"])
            if row is None:
                row = by_spec[r["method"]["spec"]] = dict(r, metrics=dict(r["metrics"]))
                base["rows"].append(row)
                continue
            for k, v in r["metrics"].items():
                row["metrics"].setdefault(k, v)
            if row.get("seconds_per_image") is None and r.get("seconds_per_image") is not None:
                row.update({k: r[k] for k in ("seconds_per_image", "times", "speedup")})
        metrics += [k for k in part["metrics"] if k not in metrics]
    base["metrics"] = [k for k in METRICS if k in metrics]
    base["merged_from"] = names or []
    return base


def write_merged(parts: list[dict], out: Path, names: list[str] | None = None) -> dict:
    merged = merge_results(parts, names)
    write_json(out / "results.json", portable_tree(merged, out))
    atomic_write_text(out / "table.md", markdown_table(merged))
    return merged
