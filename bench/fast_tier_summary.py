"""docs/fast-tier.md from the per-world results of bench/fast_tier_study.py (search, tune, report).

    python bench/fast_tier_summary.py        # after `report` on the three worlds
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from corrector_summary import WORLDS, ci, verdict


def mask_of(res_tune: dict, name: str) -> str:
    v = res_tune["variants"][name]
    tail = "" if v.get("corrector_tail") is None else f", tail {v['corrector_tail']}"
    return f"{v['student_steps']} steps, full {v['cache_full_steps']}{tail}"


def write_summary(root: Path) -> str:
    lines = ["# The fast tier: the corrector at ≤ 85 block forwards per image (≥ 2.8×)", "",
             "Written by `python bench/fast_tier_summary.py` from `bench/fast_tier_study.py` (search → train → tune → "
             "report; the commands are in each world's JSON). Every method generates the same items (the world's "
             "held-out conditions × report seeds 1000-1009) from the same noises; PSNR is to plain:20's image of the "
             "same item; intervals are paired-bootstrap 95% CIs of the per-item difference, with seed wins. Masks, "
             "TaylorSeer's setting and the tier were chosen on tune seeds 100-104 (the greedy search on 100-102) only.",
             ""]
    for tier, budget in (("fast", 85), ("stretch", 60)):
        lines += [f"## The {tier} tier (≤ {budget} block forwards)", "",
                  "| world | method (chosen on tune seeds) | blocks | PSNR | rival | Δ PSNR dB | Δ score | verdict |",
                  "|---|---|---:|---:|---|---|---|---|"]
        for world, title in WORLDS.items():
            path = root / world / "results.json"
            if not path.is_file():
                lines.append(f"| {title} | not run | | | | | | |")
                continue
            res = json.loads(path.read_text())
            tune = json.loads((root / world / "tune.json").read_text())
            v = res["verdicts"].get(tier)
            if v is None:
                lines.append(f"| {title} | nothing trained fits | | | | | | |")
                continue
            q = res["quality"]
            for kind, c in v["vs"].items():
                lines.append(f"| {title} | {v['method']}: {mask_of(tune, v['method'])} | {v['blocks']:.0f} | "
                             f"{v['psnr']:.2f} | {kind}: {v['rivals'][kind]} | {ci(c['psnr'])} | "
                             f"{q} {ci(c[q])} | {verdict(c['psnr'])} |")
        lines.append("")
    lines += ["## Per world", ""]
    for world, title in WORLDS.items():
        if not (root / world / "results.json").is_file():
            continue
        search = json.loads((root / world / "search.json").read_text())
        tune = json.loads((root / world / "tune.json").read_text())
        lines += [f"### {title}", "", f"[table]({root.name}/{world}/table.md) · ![pareto]({root.name}/{world}/pareto.png)",
                  "", "Tune seeds (choices only), PSNR to plain:20:", ""]
        for r in sorted(tune["rows"], key=lambda r: (r["block_forwards"], -(r["psnr"] or 0))):
            if r["psnr"] is not None and not r["method"].startswith("plain:"):
                lines.append(f"- {r['method']}: {r['psnr']:.2f} dB at {r['block_forwards']:.0f} blocks")
        best_ts = sorted(search["taylorseer"], key=lambda r: -r["psnr"])[:3]
        lines += ["", "Greedy search, untrained (TaylorSeer's forecast on the mask) at 7 and 5 full steps: " + "; ".join(
            f"N={g['steps']} {g['full']} {g['psnr']:.2f} dB" for g in search["greedy"]
            if len(g["full"]) in (5, 7) and g["tail"] == (0 if world == "shapes-flow" else None)),
            "", "TaylorSeer's best settings within 85 blocks: " + "; ".join(
            f"`{r['spec']}` {r['psnr']:.2f} dB" for r in best_ts), ""]
    text = "\n".join(lines) + "\n"
    (root.parent / f"{root.name}.md").write_text(text)
    return text


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/fast-tier")
    print(write_summary(root))
