"""The fast-tier study's table and picture (bench/fast_tier_study.py report): PSNR to plain:20 against block
forwards per image, the plain curve as a line, every other method as a labelled point, the budgets as lines."""

from __future__ import annotations

from pathlib import Path

from corrector_summary import ci


def write_table(out: Path, res: dict) -> None:
    q = res["quality"]
    lines = [f"# {res['world']}: the fast tier (≤ {res['budget']} block forwards) and the stretch (≤ {res['stretch']}) "
             f"on report seeds {res['seeds'][0]}-{res['seeds'][-1]} ({res['num_items']} items)", "",
             "Chosen on tune seeds; paired-bootstrap 95% CI of the per-item difference, seed wins.", "",
             f"| tier | method | blocks | PSNR | rival | Δ PSNR dB | Δ {q} |", "|---|---|---:|---:|---|---|---|"]
    for tier, v in res["verdicts"].items():
        for kind, c in v["vs"].items():
            lines.append(f"| {tier} | {v['method']} | {v['blocks']:.1f} | {v['psnr']:.2f} | {kind}: {v['rivals'][kind]} | "
                         f"{ci(c['psnr'])} | {ci(c[q])} |")
    lines += ["", "## Every row", "", f"| method | blocks | PSNR | {q} | vs plain at ≥ its blocks: Δ PSNR dB |",
              "|---|---:|---:|---:|---|"]
    for r in sorted(res["rows"], key=lambda r: -r["block_forwards"]):
        psnr = "–" if r["psnr"] is None else f"{r['psnr']:.2f}"
        vp = r.get("vs_fair_plain", {}).get("psnr")
        lines.append(f"| {r['method']} | {r['block_forwards']:.1f} | {psnr} | {r[q]:.3f} | "
                     f"{r.get('fair_plain', '')} {ci(vp)} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["psnr"] is not None]
    plain = sorted((r for r in rows if r["method"].startswith("plain:")), key=lambda r: r["block_forwards"])
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot([r["block_forwards"] for r in plain], [r["psnr"] for r in plain], "-o", color="0.5", ms=4,
            label="plain N steps")
    chosen = set(res["chosen"].values())
    styles = [(lambda m: m in chosen, "corrector, trained mask (chosen)", "#1f77b4", "D", 90),
              (lambda m: m.endswith(" untrained"), "same mask, untrained (TaylorSeer forecast)", "#aec7e8", "d", 60),
              (lambda m: m.startswith("TaylorSeer"), "TaylorSeer, best in budget", "#2ca02c", "s", 60),
              (lambda m: m.startswith("corrector (shipped"), "corrector, shipped 1.8×", "#9467bd", "^", 60)]
    for test, name, colour, marker, size in styles:
        pts = [r for r in rows if test(r["method"])]
        if pts:
            ax.scatter([r["block_forwards"] for r in pts], [r["psnr"] for r in pts], color=colour, marker=marker,
                       s=size, label=name, zorder=4)
    rest = [r for r in rows if not r["method"].startswith("plain:") and not any(t(r["method"]) for t, *_ in styles)]
    if rest:
        ax.scatter([r["block_forwards"] for r in rest], [r["psnr"] for r in rest], color="#d62728", marker="x",
                   s=60, label="peers", zorder=4)
    for r in rows:
        if not r["method"].startswith("plain:"):
            ax.annotate(r["method"], (r["block_forwards"], r["psnr"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    for b in (res["budget"], res["stretch"]):
        ax.axvline(b, color="k", ls=":", lw=0.8)
    ax.set_xlabel("block forwards per image")
    ax.set_ylabel("PSNR to plain:20 (dB)")
    ax.set_title(f"{res['world']}: quality per block forward, report seeds")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)
