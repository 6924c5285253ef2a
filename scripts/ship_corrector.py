"""Install a study's winner as a world's shipped corrector (`ilf/worlds/assets/WORLD/feedback`, or
`feedback-fast` with `--tier fast`).

The winner is the variant the study chose on its tune seeds: bench/corrector_study.py's (docs/corrector-study/
WORLD/tune.json: the best PSNR to plain:20 at no more block forwards than TaylorSeer's standard setting), or with
`--tier fast` bench/fast_tier_study.py's (docs/fast-tier/WORLD/tune.json: the best within 85 block forwards per
image). It is re-saved through
`save_feedback` (so a corrector whose F never runs is written without F's weights), with its training record and
where it was chosen.

    python scripts/ship_corrector.py --world digits
    python scripts/ship_corrector.py --world digits --tier fast
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # the studies' seeds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, choices=("digits", "shapes", "shapes-flow"))
    p.add_argument("--tier", choices=("default", "fast"), default="default", help="which shipped corrector")
    p.add_argument("--runs", type=Path, help="trained folders (default: runs/corrector-study, or runs/fast-tier)")
    p.add_argument("--study", type=Path, help="the study's results (default: docs/corrector-study, or docs/fast-tier)")
    p.add_argument("--folder", type=Path, help="ship this trained corrector folder instead (with --variant and --by: "
                   "the study that chose it on its tune seeds)")
    p.add_argument("--variant", help="with --folder: its name in the study")
    p.add_argument("--by", help="with --folder: the study's command that chose it")
    args = p.parse_args(argv)
    fast = args.tier == "fast"
    runs = args.runs or Path("runs/fast-tier" if fast else "runs/corrector-study")
    study = args.study or Path("docs/fast-tier" if fast else "docs/corrector-study")

    from ilf.feedback import read_feedback
    from ilf.pipeline import apply_ilf, remove_ilf, save_feedback
    from ilf.worlds import paths, registry

    if args.folder is not None:
        from corrector_study import TUNE_SEEDS

        tune, variant, source = {"seeds": TUNE_SEEDS}, args.variant, args.folder
    else:
        tune = json.loads((study / args.world / "tune.json").read_text())
        variant = tune["chosen"]["fast"] if fast else tune["shipped"]
        source = runs / args.world / variant / "feedback"
    meta, _ = read_feedback(source)
    pipe = registry.load_pipeline(args.world)
    apply_ilf(pipe, source)
    target = paths.transformer(args.world).parent / paths.TIERS[args.tier][0]
    if target.exists():
        shutil.rmtree(target)
    by = args.by or ("bench/fast_tier_study.py tune" if fast else "bench/corrector_study.py tune")
    extra = {**meta.get("extra", {}), "study": {"variant": variant, "chosen_on_seeds": tune["seeds"], "by": by}}
    save_feedback(pipe, target, extra=extra)
    remove_ilf(pipe)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"{args.world}: shipped {variant} to {target} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
