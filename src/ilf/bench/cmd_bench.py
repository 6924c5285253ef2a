"""`ilf bench`: its parser (with the method grammar, families and presets in the epilog), a benchmark run from
arguments (`run_bench_args`, `run_bench` for library callers such as the demo), and recipes: a paper recipe's
parts run one after the other, with their tables merged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilf.argtypes import COUNT, INDEX

from .cli_args import (
    add_metric_args, add_source_args, add_workload_args, build_items, build_scorer_from, build_source, check_metrics,
)
from .methods import families_help
from .presets import PRESETS
from .recipes import shipped_recipes

BENCH_EPILOG = """\
method grammar: FAMILY[:STEPS][,KEY=VALUE]...  (a value with commas in brackets; label=TEXT names the row;
every option explained by --list-methods)
{families}

presets: {presets}

examples:
  ilf bench --tiny sd3 --feedback untrained --out bench-tiny     # every family on a tiny random SD3 (or pixart, flux…)
  ilf bench --world shapes --feedback runs/shapes-fb --methods @table1 @peers --diagnostics --out bench-shapes
  ilf bench --pipeline PixArt-alpha/PixArt-XL-2-512x512 --prompts benchmark-prompts.json --images-per-prompt 10 \\
      --feedback fb/ --methods @table1 --clip clip-vit-large --imagereward-python ir-venv/bin/python --out t1
  ilf bench --recipe table1-pixart-alpha-512 --set FEEDBACK=fb/ --set MJHQ=/data/mjhq30k ...   (shipped recipes: ilf bench --help lists them)
  accelerate launch -m ilf.cli bench ...                                    # generation sharded over GPUs
"""


SOURCE_KEYS = ("world", "pipeline", "tiny")
BENCH_DEFAULTS = dict(
    batch_size=4, seed=0, images_per_prompt=1, repeats=3, warmup=1, time_batch=1, grid_items=4,
    crop="auto", methods=["@all"], out="bench-results", metric_batch_size=32,
)


def add_parser(subparsers) -> None:
    epilog = BENCH_EPILOG.format(families=families_help(), presets=", ".join("@" + p for p in PRESETS))
    p = subparsers.add_parser(
        "bench", help="compare ILF with plain steps, the paper cache and diffusers/cache-dit caches",
        description="Generate the same items (prompts/classes, seeds) with every method on one pipeline; record "
        "block forwards, s/img (median after warm-up), peak memory and every metric; write results.json, a "
        "Table-1-shaped table.md, pareto.png and grid.png (and with --diagnostics the Fig. 3-4 heatmaps).",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_args(p)
    add_workload_args(p)
    g = p.add_argument_group("methods")
    g.add_argument("--methods", nargs="+", default=None, metavar="SPEC",
                   help="method strings and @presets, in table order; the first is the reference for PSNR/SSIM and "
                   "speedups (default: @all)")
    g.add_argument("--feedback", metavar="PATH", default=None,
                   help="feedback folder for ilf rows without feedback= ('untrained': zero scales, for smoke runs; the "
                   "plain model's output only with t_post=none); without it, such rows are skipped with a note")
    g.add_argument("--list-methods", action="store_true", help="print the method families and presets, then exit")
    g = p.add_argument_group("timing")
    g.add_argument("--repeats", type=INDEX, default=None, help="timed calls per method (default 3; 0 = no timing)")
    g.add_argument("--warmup", type=INDEX, default=None, help="untimed calls per method before timing (default 1)")
    g.add_argument("--time-batch", type=COUNT, default=None, metavar="B", help="images per timed call (default 1)")
    add_metric_args(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--out", metavar="DIR", default=None, help="output folder (default bench-results)")
    g.add_argument("--grid-items", type=INDEX, default=None, metavar="K", help="columns of grid.png (default 4; 0: none)")
    g.add_argument("--crop", default=None, help="zoomed crop of grid.png: auto (where methods differ most from the "
                   "reference) or CX,CY,SIDE as fractions (default auto)")
    g.add_argument("--pareto-metric", default=None, metavar="KEY",
                   help="y axis of pareto.png (default: imagereward, alignment, accuracy, clip_score, fid, psnr: the "
                   "first measured)")
    g.add_argument("--diagnostics", action="store_true", default=None,
                   help="also record the feature dynamics of Fig. 3-4 for every method and write heatmaps")
    g.add_argument("--npz", action="store_true", default=None,
                   help="also pack each method's images as an ADM-evaluator .npz (arr_0 [N,H,W,3] uint8)")
    g.add_argument("--resume", action="store_true", default=None, help="keep images already generated in --out")
    g.add_argument("--no-progress", action="store_true", default=None, help="no progress bars")
    g = p.add_argument_group("recipes")
    g.add_argument("--recipe", metavar="NAME_OR_TOML", default=None,
                   help=f"a paper recipe: a shipped one ({', '.join(shipped_recipes())}) or a .toml path; its settings, "
                   "overridden by the flags given here")
    g.add_argument("--set", action="append", metavar="NAME=VALUE", dest="set_vars",
                   help="value of ${NAME} in the recipe (e.g. FEEDBACK=fb/, MJHQ=/data/mjhq30k); repeatable")
    p.set_defaults(func=cmd_bench)


def apply_recipe_defaults(args, settings: dict, parser_defaults: dict) -> argparse.Namespace:
    """Fill every option not given on the command line from the recipe, then from the defaults."""
    merged = argparse.Namespace(**vars(args))
    if any(getattr(args, k, None) for k in SOURCE_KEYS):  # a pipeline given here replaces the recipe's
        settings = {k: v for k, v in settings.items() if k not in SOURCE_KEYS}
    for key, value in settings.items():
        if getattr(merged, key, None) is None:
            setattr(merged, key, value)
    for key, value in parser_defaults.items():
        if getattr(merged, key, None) is None:
            setattr(merged, key, value)
    return merged


def cmd_bench(args) -> int:
    """Run a benchmark (or every part of a recipe)."""
    if args.list_methods:
        print("families (FAMILY:DEFAULT_STEPS):\n" + families_help(verbose=True))
        for name, items in PRESETS.items():
            print(f"@{name}: {' '.join(items)}")
        return 0
    if args.recipe:
        return run_recipe(args)
    run_bench_args(apply_recipe_defaults(args, {}, BENCH_DEFAULTS))
    return 0


def run_recipe(args) -> int:
    from .recipes import load_recipe, parse_sets
    from .report import write_merged
    from .runner import load_results

    allowed = {k for k in vars(args) if k not in ("func", "command", "recipe", "set_vars", "list_methods")}
    parts = load_recipe(args.recipe, parse_sets(args.set_vars), allowed)
    out = Path(args.out or parts[0][1].get("out") or BENCH_DEFAULTS["out"])
    results, names = [], []
    for name, settings in parts:
        run_args = apply_recipe_defaults(args, settings, BENCH_DEFAULTS)
        run_args.out = str(out / name) if name else str(out)
        print(f"ilf bench: recipe {args.recipe}" + (f", part {name}" if name else ""), file=sys.stderr)
        res = run_bench_args(run_args)
        if res is not None and name:
            results.append(load_results(run_args.out))
            names.append(name)
    if len(results) > 1:
        write_merged(results, out, names)
        print(f"ilf bench: merged table of {len(results)} parts in {out / 'table.md'}", file=sys.stderr)
    return 0


def run_bench(argv: list[str]):
    """`ilf bench ARGV…` as a library call (the demo's path); returns the results dict."""
    parser = argparse.ArgumentParser(prog="ilf")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *argv])
    return run_bench_args(apply_recipe_defaults(args, {}, BENCH_DEFAULTS))


def run_bench_args(args):
    """Run one benchmark from parsed arguments (recipe defaults already applied)."""
    from .presets import expand_methods
    from .runner import Bench, BenchOptions

    specs = expand_methods(list(args.methods))
    source = build_source(args)
    items = build_items(args, source)
    check_metrics(args, source)
    feedback = args.feedback
    if feedback is None and source.kind == "tiny" and any(s.family == "ilf" for s in specs):
        feedback = "untrained"  # a random tiny model has nothing a feedback could have been trained on
        print("ilf bench: --tiny without --feedback: ILF rows use an untrained feedback (zero scales; their t_post "
              "still shifts the post-feedback conditioning unless t_post=none)", file=sys.stderr)
    options = BenchOptions(
        out_dir=Path(args.out), batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup,
        time_batch=args.time_batch, feedback=feedback, grid_items=args.grid_items, crop=args.crop,
        diagnostics=bool(args.diagnostics), pareto_metric=args.pareto_metric, progress=not args.no_progress,
        resume=bool(args.resume), npz=bool(args.npz), report_metrics=args.report_metrics,
    )
    results = Bench(source, items, specs, lambda: build_scorer_from(args, source), options).run()
    if results is not None:
        print((Path(args.out) / "table.md").read_text())
        print(f"ilf bench: wrote {args.out}/ ({', '.join(sorted(results['outputs'].keys()))})", file=sys.stderr)
    return results
