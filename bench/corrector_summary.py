"""docs/corrector-study.md from the corrector study's per-world results (bench/corrector_study.py summary)."""

from __future__ import annotations

import json
from pathlib import Path

WORLDS = {"digits": "digits (DiT, class-to-image)", "shapes": "shapes (PixArt, guidance 4.5)",
          "shapes-flow": "shapes-flow (SD3, rectified flow)"}


def ci(c) -> str:
    if not c:
        return "–"
    return f"{c['diff']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] ({c['seed_wins']}/{c['num_seeds']})"


def verdict(c) -> str:
    if not c:
        return "–"
    return "**wins**" if c["ci95"][0] > 0 else ("**loses**" if c["ci95"][1] < 0 else "ties")


def fast_section(root: Path, link: str = "fast-tier") -> list[str]:
    """The fast tier's targets in a few lines (for docs/corrector-study.md): per world and tier, the chosen
    method against each rival, report seeds."""
    lines = []
    for world, title in WORLDS.items():
        path = root / world / "results.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        for tier, v in res["verdicts"].items():
            parts = [f"{kind} ({v['rivals'][kind]}) {verdict(c['psnr'])} {ci(c['psnr'])}" for kind, c in v["vs"].items()]
            lines.append(f"- {title}, {tier} ({v['method']}, {v['blocks']:.0f} blocks, {v['psnr']:.2f} dB): vs "
                         + "; ".join(parts) + f" · ![pareto]({link}/{world}/pareto.png)")
    return lines


def write_summary(root: Path) -> str:
    lines = ["# The corrector study: a trained correction of TaylorSeer against the caches, plain steps and ILF", "",
             "Written by `python bench/corrector_study.py summary` from the per-world results of `train`, `tune` "
             "and `report` (the commands are in each world's results.json). Every method generates the same items "
             "(the world's held-out conditions × report seeds 1000-1009) from the same noises; PSNR is to plain:20's "
             "image of the same item; intervals are paired-bootstrap 95% CIs of the per-item difference, with seed "
             "wins. The shipped variant and the levers were chosen on tune seeds 100-104 only.", ""]
    head = ("| world | shipped (blocks) | PSNR to plain:20 | vs TaylorSeer i2 (same blocks): Δ PSNR dB | Δ {q} | "
            "vs plain at ≥ its blocks: Δ PSNR dB | Δ {q} |")
    lines += ["## The targets", "", head.format(q="score"), "|---|---|---:|---|---|---|---|"]
    budgets = []
    for world, title in WORLDS.items():
        path = root / world / "results.json"
        if not path.is_file():
            lines.append(f"| {title} | not run | | | | | |")
            continue
        res = json.loads(path.read_text())
        q, rows = res["quality"], {r["method"]: r for r in res["rows"]}
        s = rows.get(res["shipped"])
        if s is None:
            continue
        vt, vp = s.get("vs_taylorseer", {}), s.get("vs_fair_plain", {})
        lines.append(f"| {title} | {res['shipped']} ({s['block_forwards']:.0f}) | {s['psnr']:.2f} | "
                     f"{verdict(vt.get('psnr'))} {ci(vt.get('psnr'))} | {q} {ci(vt.get(q))} | "
                     f"{s['fair_plain']}: {verdict(vp.get('psnr'))} {ci(vp.get('psnr'))} | {q} {ci(vp.get(q))} |")
        budgets.append((title, res))
    probe = root.parent / "budget-probe" / "shapes-132.json"
    if probe.is_file() and "report" in json.loads(probe.read_text()):
        r = json.loads(probe.read_text())["report"]
        vs = "; ".join(f"{k} {ci(c['psnr'])}" for k, c in r["vs"].items())
        lines += ["", f"**Shapes ships another schedule since issue 26.** `bench/budget_mask_probe.py` tried the fast "
                  f"tier's lever at this budget (TaylorSeer's best schedule within 132 blocks, corrected; chosen on tune "
                  f"seeds): `{r['schedule']}` ({r['chosen']}, {r['psnr'][r['chosen']]:.2f} dB on the report seeds) vs "
                  f"{vs}. It is the shipped shapes corrector now; the shapes rows below are the study as it ran."]
    fast = fast_section(root.parent / "fast-tier")
    if fast:
        lines += ["", "## Past 2.5×: the fast tier (≤ 85 block forwards) and the stretch (≤ 60)", "",
                  "A searched full-step mask on a shorter run, corrected by the learned forecast "
                  "([docs/fast-tier.md](fast-tier.md): the search, the levers, TaylorSeer tuned within the same "
                  "budget, the same mask untrained as the control). Report seeds, Δ PSNR dB [95% CI] (seed wins):", ""]
        lines += fast
    lines += ["", "## Every row, per budget", ""]
    for title, res in budgets:
        world = res["world"]
        lines += [f"### {title}", "", f"[table]({'corrector-study/' + world + '/table.md'}) · "
                  f"![pareto](corrector-study/{world}/pareto.png)", "",
                  "| method | blocks | PSNR | vs plain at ≥ its blocks | vs TaylorSeer at ≤ its blocks |",
                  "|---|---:|---:|---|---|"]
        for r in sorted((r for r in res["rows"] if not r["method"].startswith("plain:")),
                        key=lambda r: -r["block_forwards"]):
            vp, vt = r.get("vs_fair_plain", {}), r.get("vs_taylorseer", {})
            lines.append(f"| {r['method']} | {r['block_forwards']:.0f} | {r['psnr']:.2f} | {r.get('fair_plain', '')} "
                         f"{ci(vp.get('psnr'))} | {r.get('fair_taylorseer', '')} {ci(vt.get('psnr'))} |")
        tune = json.loads((root / world / "tune.json").read_text())
        lev = {r["method"]: r for r in tune["rows"] if r["method"].startswith("learned-i2")}
        lines += ["", "Levers on the tune seeds (PSNR to plain:20): " + ", ".join(
            f"{k} {v['psnr']:.2f}" for k, v in lev.items()) + f"; chosen: {tune['lever']}.", ""]
        by = {r["method"]: r for r in tune["rows"]}
        for base, pick in tune.get("budget_levers", {}).items():  # the levers at intervals 3 and 4
            tried = [n for n in by if n == base or (n.startswith(base + "-") and "-fresh1" not in n)]
            lines.append(f"- levers at {by[base]['block_forwards']:.0f} blocks: " + ", ".join(
                f"{n} {by[n]['psnr']:.2f}" for n in tried) + f"; chosen: {pick}.")
        for name, r in by.items():  # one fresh block's innovation fed to the learned forecast, vs its twin without
            twin = name.replace("-fresh1", "")
            if name.startswith("learned-") and "-fresh1" in name and twin in by:
                lines.append(f"- one fresh block (tune seeds): {name} {r['psnr']:.2f} at {r['block_forwards']:.0f} "
                             f"blocks vs {twin} {by[twin]['psnr']:.2f} at {by[twin]['block_forwards']:.0f}; not "
                             "carried to the report seeds.")
        lines.append("")
    out = root.parent / "corrector-study.md"
    out.write_text("\n".join(lines) + "\n")
    return out.read_text()
