"""Which prompts does the shapes world draw correctly? Plain 20 steps (the reference every method is measured against),
a few seeds per prompt, scored by the world's evaluator (prompt alignment: the share of the prompt's attributes the
image shows; 1.0 = every attribute right). The README and `ilf demo` pick their showcase prompts from the ones that
score 1.0 on every seed, and docs/worlds.md says in words what the world cannot draw.

    python scripts/showcase_prompts.py --out docs/showcase-prompts.md     # ~1 minute on one CPU thread
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Candidates: the old README showcase, single objects (training and held-out wordings), counts and relations.
CANDIDATES = [
    "a small red circle above a large blue square",  # the README's showcase until issue 19
    "a large red circle in the center",
    "a large blue square in the center",
    "a small green triangle in the top left",
    "a large yellow cross on the right",
    "a large blue square in the bottom right",
    "a small red circle at the top",
    "three small red circles",
    "two large blue squares",
    "a large red cross to the left of a large blue circle",
    "a small green square below a large green triangle",
    "a large blue circle below a large white circle",
    "a large red circle to the left of a large blue square",
    "a small white circle to the left of a small white cross",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/showcase-prompts.md"), help="where the table goes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3], help="seeds per prompt")
    p.add_argument("--steps", type=int, default=20, help="plain steps (default 20, the reference)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    from ilf.quiet import silence_torchvision_advice

    silence_torchvision_advice()
    import torch

    from ilf.bench.paired import Items, Method, generate
    from ilf.worlds import load_evaluator, load_pipeline, shapes

    torch.set_num_threads(args.threads)
    pipe, ev = load_pipeline("shapes"), load_evaluator("shapes")
    held = set(shapes.prompts("heldout"))
    items = Items([c for c in CANDIDATES for _ in args.seeds], [s for _ in CANDIDATES for s in args.seeds])
    images = generate(pipe, "shapes", Method(f"plain:{args.steps}", args.steps), items).images
    scores = ev.score(images, items.conditions).numpy().reshape(len(CANDIDATES), len(args.seeds))
    lines = [f"# Which prompts the shapes world draws (plain {args.steps} steps)", "",
             f"`python scripts/showcase_prompts.py --out {args.out}`: each prompt with seeds "
             f"{', '.join(map(str, args.seeds))}, scored by the shapes evaluator (prompt alignment, 1.0 = every "
             "attribute right). Showcase prompts are taken from the rows right on every seed.", "",
             "| prompt | split | alignment per seed | right on every seed |", "|---|---|---|---|"]
    for prompt, row in zip(CANDIDATES, scores):
        split = "held-out" if prompt in held else "training"
        lines.append(f"| {prompt} | {split} | {' '.join(f'{v:.2f}' for v in row)} | "
                     f"{'yes' if (row >= 1.0 - 1e-6).all() else 'no'} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
