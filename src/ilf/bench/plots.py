"""Plots (matplotlib, Agg backend): the quality-vs-latency Pareto plot (Fig. 8) and the heatmaps of Fig. 3-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ilf.eval.score import METRICS

# One colour and one marker per family, shared by every plot: no two families look alike.
FAMILY_COLORS = {
    "plain": "#4d4d4d", "paper-cache": "#d62728", "ilf": "#1f77b4", "fbc": "#ff7f0e", "taylorseer": "#2ca02c",
    "magcache": "#9467bd", "pab": "#8c564b", "fastercache": "#e377c2", "cache-dit": "#17becf",
    "corrector": "#b8860b",
}
FAMILY_MARKERS = {
    "plain": "o", "paper-cache": "s", "ilf": "D", "fbc": "v", "taylorseer": "^", "magcache": "P", "pab": "X",
    "fastercache": "h", "cache-dit": "<", "corrector": "*",
}
# Families without an entry take these, in order of appearance: never a colour or marker another family has.
_SPARE_COLORS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
_SPARE_MARKERS = (">", "p", "d", "H", "8", "1")


def family_styles(families) -> dict[str, tuple[str, str]]:
    """(colour, marker) of each family: its own, or a spare one no other family uses."""
    out, spare = {}, 0
    for fam in dict.fromkeys(families):
        if fam in FAMILY_COLORS:
            out[fam] = (FAMILY_COLORS[fam], FAMILY_MARKERS.get(fam, "o"))
        else:
            out[fam] = (_SPARE_COLORS[spare % len(_SPARE_COLORS)], _SPARE_MARKERS[spare % len(_SPARE_MARKERS)])
            spare += 1
    return out


def method_line(row: dict) -> str:
    """Rows of one method at several step counts share a line (plain:10, plain:11, plain:20); rows of different
    methods, or of one family at different settings (the paper cache at ~1.5x and ~1.8x), never do."""
    spec = str((row.get("method") or {}).get("spec", row.get("display", "")))
    head, _, opts = spec.partition(",")
    return row["family"] + "|" + head.split(":")[0] + "|" + opts
# Preferred y metric: the paper's headline (ImageReward), then the worlds', then what any run has.
PARETO_PREFERENCE = ("imagereward", "alignment", "accuracy", "clip_score", "fid", "world_fd", "psnr", "ssim")
# The axis that separates methods at a fixed budget: closeness to the reference image (plotted first when measured).
FIDELITY_METRIC = "psnr"
# The second axis, where it varies: the paper's headline, then the worlds' judges (the worlds' FD, from a few dozen
# images, is left to the table: it cannot resolve the methods).
QUALITY_AXES = ("imagereward", "alignment", "accuracy", "clip_score", "fid")


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


def varies(results: dict, metric: str) -> bool:
    """Whether `metric` takes more than one value over the rows (an accuracy of 0.98 everywhere separates nothing)."""
    vals = [r["metrics"].get(metric) for r in results["rows"]]
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return len(vals) > 1 and max(vals) - min(vals) > 1e-6 * max(1.0, abs(max(vals)))


def pareto_metrics(results: dict, metric: str | None = None) -> list[str]:
    """The y axes of the Pareto plot: `metric` if given; else PSNR to the reference (when measured) and the
    preferred quality metric (ImageReward, alignment, accuracy, ...) only where it varies over the methods."""
    if metric:
        return [pick_metric(results, metric)]
    out = [FIDELITY_METRIC] if FIDELITY_METRIC in results["metrics"] else []
    quality = next((k for k in QUALITY_AXES if k in results["metrics"] and varies(results, k)), None)
    if quality:
        out.append(quality)
    return out or [m for m in [pick_metric(results)] if m]


# Offsets (points) and alignments tried in turn for a label: beside the marker first, then further out.
_LABEL_SPOTS = [((5, 4), "left", "bottom"), ((5, -4), "left", "top"), ((-5, 4), "right", "bottom"),
                ((-5, -4), "right", "top"), ((0, 8), "center", "bottom"), ((0, -8), "center", "top"),
                ((8, 0), "left", "center"), ((-8, 0), "right", "center")]
_LABEL_SCALES = (1.0, 2.5, 4.0, 6.0)


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], colors: list, fontsize: float = 7) -> list:
    """Annotate each point with its text where it overlaps no label placed before it, no other marker and stays
    inside the axes, trying spots beside the marker and then further out (with a leader line); where none is free,
    the spot with the least overlap. Call after the layout is final (tight_layout), since it measures in pixels."""
    from matplotlib.text import Text

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0
    markers = [ax.transData.transform(p) for p in points]
    marker_r = 4 * px
    placed, out = [], []

    def overlap(a, b) -> float:
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return w * h if w > 0 and h > 0 else 0.0

    def cost(box, own: int) -> float:
        c = sum(overlap(box, other) for other in placed)
        for j, (mx, my) in enumerate(markers):
            if j != own and box.x0 - marker_r < mx < box.x1 + marker_r and box.y0 - marker_r < my < box.y1 + marker_r:
                c += (2 * marker_r) ** 2
        outside = box.width * box.height - overlap(box, frame)
        return c + outside

    for i, (xy, text, color) in enumerate(zip(points, texts, colors)):
        best = None
        for scale in _LABEL_SCALES:
            for (dx, dy), ha, va in _LABEL_SPOTS:
                ann = ax.annotate(text, xy, textcoords="offset points", xytext=(dx * scale, dy * scale), ha=ha,
                                  va=va, fontsize=fontsize, color=color,
                                  arrowprops=dict(arrowstyle="-", color=color, lw=0.6, alpha=0.7, shrinkA=0,
                                                  shrinkB=3))  # anchored: a leader to its point
                ann.update_positions(renderer)  # else the text's extent is measured at the offset alone
                box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
                c = cost(box, i)
                if best is None or c < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (c, ann, box)
                else:
                    ann.remove()
                if c == 0:
                    break
            if best[0] == 0:
                break
        placed.append(best[2])
        out.append(best[1])
    return out


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
    """Quality vs s/img (left) and vs block forwards (right), one curve per family; one row of panels per y axis
    (`pareto_metrics`: PSNR to the reference, and alignment/accuracy where it varies). False if nothing to plot."""
    metrics = [m for m in pareto_metrics(results, metric)
               if any(r["metrics"].get(m) is not None for r in results["rows"])]
    if not metrics:
        return False
    axes_spec = [("seconds_per_image", "s / img (median)"), ("block_forwards", "block forwards per image")]
    rows_any = [r for r in results["rows"] if any(r["metrics"].get(m) is not None for m in metrics)]
    axes_spec = [a for a in axes_spec if all(r.get(a[0]) is not None for r in rows_any)]
    plt = _plt()
    fig, axes = plt.subplots(len(metrics), len(axes_spec), figsize=(6.4 * len(axes_spec), 4.4 * len(metrics)),
                             squeeze=False)
    labels = []  # (ax, points, texts, colors), placed once the layout is final
    for row_axes, m in zip(axes, metrics):
        info = METRICS[m]
        rows = [r for r in results["rows"] if r["metrics"].get(m) is not None]
        values = {id(r): r["metrics"][m] for r in rows}
        finite = [v for v in values.values() if np.isfinite(v)]
        if len(finite) < len(values):  # PSNR = inf (identical to the reference): drawn just above the others
            top = max(finite) if finite else 0.0
            span = (top - min(finite)) if len(finite) > 1 else 1.0
            values = {k: (v if np.isfinite(v) else top + 0.08 * span) for k, v in values.items()}
        for ax, (xkey, xlabel) in zip(row_axes, axes_spec):
            pts = [(r[xkey], values[id(r)]) for r in rows]
            front = sorted(pareto_front(pts, info.higher_is_better), key=lambda i: pts[i][0])
            texts, colors, where = [], [], []
            styles = family_styles(r["family"] for r in rows)
            labelled = set()
            for key in dict.fromkeys(method_line(r) for r in rows):
                members = sorted((r for r in rows if method_line(r) == key), key=lambda r: r[xkey])
                fam = members[0]["family"]
                color, marker = styles[fam]
                ax.plot([r[xkey] for r in members], [values[id(r)] for r in members], "-", color=color, lw=1.5,
                        marker=marker, ms=9 if marker == "*" else 6, label=None if fam in labelled else fam)
                labelled.add(fam)
                for r in members:
                    where.append((r[xkey], values[id(r)]))
                    texts.append(r["display"] + ("" if np.isfinite(r["metrics"][m]) else " (=ref, ∞)"))
                    colors.append(color)
            # the front is marked by rings only: a line through it would join different methods
            fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
            ax.plot(fx, fy, "o", ms=13, mfc="none", mec="black", mew=1.0, ls="none",
                    label="Pareto front (nothing both cheaper and better)")
            ax.set_xlabel(xlabel)
            ylabel = info.label + (f" to {results.get('reference', 'the reference')}" if m == FIDELITY_METRIC else "")
            ax.set_ylabel(ylabel + ("" if info.higher_is_better else " (lower is better)"), fontsize=9)
            ax.grid(alpha=0.3)
            labels.append((ax, where, texts, colors))
    axes[0][0].legend(fontsize=7, loc="best")
    if "seconds_per_image" in [a[0] for a in axes_spec]:
        from .report import time_ties

        ties = time_ties(results)
        if ties:  # say so on the panel: the medians' order there is noise and can flip between runs
            col = [a[0] for a in axes_spec].index("seconds_per_image")
            text = "within run-to-run noise (timed calls overlap):\n" + "\n".join(", ".join(g) for g in ties)
            axes[-1][col].text(0.01, 0.01, text, transform=axes[-1][col].transAxes, fontsize=6, va="bottom",
                               ha="left", color="0.35", bbox=dict(facecolor="white", alpha=0.7, lw=0))
    names = " and ".join(METRICS[m].label for m in metrics)
    fig.suptitle(f"{results['source']['name']}: {names} vs cost (each point labelled with its method)", fontsize=10)
    for ax, *_ in labels:
        ax.margins(x=0.06, y=0.1)  # room for the labels of the outermost points inside the frame
    fig.tight_layout()
    for ax, where, texts, colors in labels:
        place_labels(ax, where, texts, colors)
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
