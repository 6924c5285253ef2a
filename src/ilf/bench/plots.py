"""Plots (matplotlib, Agg backend): the quality-vs-latency Pareto plot (Fig. 8) and the heatmaps of Fig. 3-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ilf.eval.score import METRICS

# One colour per family, shared by every plot.
FAMILY_COLORS = {
    "plain": "#4d4d4d", "paper-cache": "#d62728", "ilf": "#1f77b4", "fbc": "#ff7f0e", "taylorseer": "#2ca02c",
    "magcache": "#9467bd", "pab": "#8c564b", "fastercache": "#e377c2", "cache-dit": "#17becf",
}
# Preferred y metric: the paper's headline (ImageReward), then the worlds', then what any run has.
PARETO_PREFERENCE = ("imagereward", "alignment", "accuracy", "clip_score", "fid", "world_fd", "psnr", "ssim")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pick_metric(results: dict, metric: str | None = None) -> str | None:
    if metric:
        if metric not in results["metrics"]:
            from .errors import BenchError

            raise BenchError(f"--pareto-metric {metric!r} was not measured; measured: {', '.join(results['metrics'])}")
        return metric
    return next((k for k in PARETO_PREFERENCE if k in results["metrics"]), None)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both cost (x, lower is better) and quality (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and (y2 >= y if higher_is_better else y2 <= y)) and (x2 < x or y2 != y)
            for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_plot(results: dict, path: Path, metric: str | None = None) -> bool:
    """Quality vs s/img (left) and vs block forwards (right), one curve per family; False if nothing to plot."""
    metric = pick_metric(results, metric)
    if metric is None:
        return False
    info = METRICS[metric]
    rows = [r for r in results["rows"] if r["metrics"].get(metric) is not None]
    if not rows:
        return False
    axes_spec = [("seconds_per_image", "s / img (median)"), ("block_forwards", "block forwards per image")]
    axes_spec = [a for a in axes_spec if all(r.get(a[0]) is not None for r in rows)]
    plt = _plt()
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.2 * len(axes_spec), 4.6), squeeze=False)
    values = {id(r): r["metrics"][metric] for r in rows}
    finite = [v for v in values.values() if np.isfinite(v)]
    if len(finite) < len(values):  # PSNR = inf (identical to the reference): drawn just above the others
        top = max(finite) if finite else 0.0
        span = (top - min(finite)) if len(finite) > 1 else 1.0
        cap = top + 0.08 * span
        values = {k: (v if np.isfinite(v) else cap) for k, v in values.items()}
    for ax, (xkey, xlabel) in zip(axes[0], axes_spec):
        pts = [(r[xkey], values[id(r)]) for r in rows]
        front = set(pareto_front(pts, info.higher_is_better))
        for fam in dict.fromkeys(r["family"] for r in rows):
            members = sorted((r for r in rows if r["family"] == fam), key=lambda r: r[xkey])
            xs = [r[xkey] for r in members]
            ys = [values[id(r)] for r in members]
            color = FAMILY_COLORS.get(fam, None)
            ax.plot(xs, ys, "-o", color=color, label=fam, lw=1.5, ms=6)
            for r, x, y in zip(members, xs, ys):
                tag = f"{r['steps']}" + ("" if np.isfinite(r["metrics"][metric]) else " (=ref, ∞)")
                ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        fx = [pts[i] for i in sorted(front, key=lambda i: pts[i][0])]
        ax.plot([p[0] for p in fx], [p[1] for p in fx], ":", color="black", lw=1, alpha=0.6, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(info.label + ("" if info.higher_is_better else " (lower is better)"))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    ref = results.get("reference", "")
    fig.suptitle(f"{results['source']['name']}: {info.label} vs latency (numbers: steps; reference {ref})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def heatmaps(panels: list[tuple[str, np.ndarray]], path: Path, title: str, ylabel: str = "block") -> None:
    """One heatmap per panel (matrix [blocks, steps]), one shared colour scale (the matrices are already
    normalised by the maximum over all panels, as the paper's Fig. 3-4)."""
    plt = _plt()
    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    im = None
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")  # NaN: the block was not run at that step
    for ax, (name, mat) in zip(axes.flat, panels):
        im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", origin="lower", cmap=cmap, vmin=0.0, vmax=1.0,
                       interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step (0 = t≈1000)")
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="normalised difference")
    fig.savefig(path, dpi=110)
    plt.close(fig)
