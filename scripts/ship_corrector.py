"""Install the corrector study's winner as a world's shipped feedback (`ilf/worlds/assets/WORLD/feedback`).

The winner is the variant bench/corrector_study.py chose on its tune seeds (docs/corrector-study/WORLD/tune.json:
the best PSNR to plain:20 at no more block forwards than TaylorSeer's standard setting). It is re-saved through
`save_feedback` (so a corrector whose F never runs is written without F's weights), with its training record and
where it was chosen.

    python scripts/ship_corrector.py --world digits
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, choices=("digits", "shapes", "shapes-flow"))
    p.add_argument("--runs", type=Path, default=Path("runs/corrector-study"))
    p.add_argument("--study", type=Path, default=Path("docs/corrector-study"))
    args = p.parse_args(argv)

    from ilf.feedback import read_feedback
    from ilf.pipeline import apply_ilf, remove_ilf, save_feedback
    from ilf.worlds import paths, registry

    tune = json.loads((args.study / args.world / "tune.json").read_text())
    source = args.runs / args.world / tune["shipped"] / "feedback"
    meta, _ = read_feedback(source)
    pipe = registry.load_pipeline(args.world)
    apply_ilf(pipe, source)
    target = paths.transformer(args.world).parent / "feedback"
    if target.exists():
        shutil.rmtree(target)
    extra = {**meta.get("extra", {}), "study": {"variant": tune["shipped"], "chosen_on_seeds": tune["seeds"],
                                                 "by": "bench/corrector_study.py tune"}}
    save_feedback(pipe, target, extra=extra)
    remove_ilf(pipe)
    size = sum(f.stat().st_size for f in target.iterdir())
    print(f"{args.world}: shipped {tune['shipped']} to {target} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
