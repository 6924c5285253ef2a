"""The corrector study's picture: PSNR to plain:20 against block forwards, one curve per family of methods
(plain N steps, TaylorSeer at four intervals, the learned forecast, F on every forecast step), the paper's
methods as single points; labels placed in a column beside the points so that none overlap."""

from __future__ import annotations

import json
from pathlib import Path

GROUPS = [  # (name prefix, curve label, colour, marker)
    ("plain:", "plain N steps", "0.45", "o"),
    ("TaylorSeer", "TaylorSeer (diffusers)", "#2ca02c", "s"),
    ("learned-i", "corrector: learned forecast, no extra block", "#1f77b4", "D"),
    ("F-i", "corrector: + F on every forecast step", "#9467bd", "^"),
    ("paper cache", "paper cache", "#d62728", "x"),
    ("ILF", "ILF (paper mode)", "#ff7f0e", "P"),
]


def group_of(name: str):
    for g in GROUPS:
        if name.startswith(g[0]):
            return g
    return None


def plot(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["psnr"] is not None]
    fig, ax = plt.subplots(figsize=(9.5, 5.2))
    for prefix, name, colour, marker in GROUPS:
        pts = sorted((r for r in rows if r["method"].startswith(prefix) and "-nomix" not in r["method"]
                      and "cosine" not in r["method"] and "freshnoise" not in r["method"]),
                     key=lambda r: r["block_forwards"])
        if not pts:
            continue
        style = "-" if len(pts) > 1 and prefix != "F-i" else ":"
        ax.plot([r["block_forwards"] for r in pts], [r["psnr"] for r in pts], style, marker=marker, color=colour,
                label=name, ms=6, lw=1.4)
    others = [r for r in rows if group_of(r["method"]) is None or "-nomix" in r["method"] or "cosine" in r["method"]
              or "freshnoise" in r["method"]]
    for r in others:
        ax.scatter(r["block_forwards"], r["psnr"], marker="*", s=70, color="k", zorder=4)
    # labels of the non-plain points, stacked without overlap in a column right of the data
    named = sorted((r for r in rows if not r["method"].startswith("plain:")), key=lambda r: r["psnr"])
    x_max = max(r["block_forwards"] for r in rows)
    lo, hi = min(r["psnr"] for r in rows), max(r["psnr"] for r in rows)
    gap = (hi - lo) / max(len(named), 1)
    for i, r in enumerate(named):
        y = lo + i * gap
        ax.annotate(r["method"], (r["block_forwards"], r["psnr"]), xytext=(x_max * 1.04, y), fontsize=7,
                    va="center", arrowprops=dict(arrowstyle="-", color="0.7", lw=0.6))
    if res.get("shipped"):
        s = next((r for r in rows if r["method"] == res["shipped"]), None)
        if s is not None:
            ax.scatter(s["block_forwards"], s["psnr"], s=160, facecolors="none", edgecolors="k", zorder=5,
                       label=f"shipped ({res['shipped']})")
    ax.set_xlim(right=x_max * 1.45)
    ax.set_xlabel("block forwards per image (20-step runs; plain: N steps)")
    ax.set_ylabel("PSNR to plain:20 (dB), higher is closer")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)  # the curves rise to the right: the upper left is empty
    ax.set_title(f"{res['world']}: quality per block forward, report seeds {res['seeds'][0]}-{res['seeds'][-1]}")
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)


def replot(out: Path) -> None:
    plot(out, json.loads((out / "results.json").read_text()))
