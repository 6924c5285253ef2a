"""`ilf tune`: search feedback plans x t_post x step counts x loops for the best ILF setting within a budget."""

from __future__ import annotations

from pathlib import Path

from ilf.argtypes import COUNT, positive_float
from ilf.choices import T_POST_RATIOS, T_POST_STRATEGIES

from .cli_args import add_metric_args, add_source_args, add_workload_args, build_items, build_scorer_from, build_source


def add_parser(subparsers) -> None:
    t = subparsers.add_parser(
        "tune", help="search feedback steps x t_post x loops for the best ILF setting within a budget",
        description="Generate every ILF setting (skip plans x t_post strategies x step counts x the loops of the "
        "given feedbacks) whose predicted block forwards fit the budget, on a calibration set; score each by "
        "--metric; print the best as a method string and write tune.json (all tried) — the search the paper ran "
        "by hand (Fig. 10, 15, 16).",
    )
    add_source_args(t)
    add_workload_args(t)
    t.add_argument("--feedback", nargs="+", required=True, metavar="PATH",
                   help="trained feedback folder(s), one per loop to consider ('untrained' for a smoke run)")
    b = t.add_mutually_exclusive_group(required=True)
    b.add_argument("--budget", type=positive_float, help="block forwards per image allowed (paper: 332 for 1.8x of 560)")
    b.add_argument("--speedup", type=positive_float, help="target speedup over --reference in block forwards (budget = "
                   "reference block forwards / SPEEDUP)")
    t.add_argument("--steps", nargs="+", type=COUNT, default=[8, 10, 12], help="step counts to try (default 8 10 12)")
    t.add_argument("--plans", nargs="+", default=["outer", "first", "last", "alternating", "all"],
                   help="plan kinds: outer, first, last, skip-inner, skip-outer (each with every K), alternating, "
                   "all (default: outer first last alternating all)")
    t.add_argument("--t-post", nargs="+", default=["rescale", "uniform", "anneal", "none"], dest="t_posts", choices=T_POST_STRATEGIES,
                   help="t_post strategies to try (default: rescale uniform anneal none)")
    t.add_argument("--ratios", nargs="+", default=["m/n"], choices=T_POST_RATIOS,
                   help="k of eq. 4-5 to try with rescale/anneal (default m/n)")
    t.add_argument("--reference", default="plain:20",
                   help="reference method for the budget and PSNR (default plain:20)")
    t.add_argument("--metric", default=None, help="score to maximise/minimise: psnr, ssim, alignment, accuracy, "
                   "world_fd, clip_score, ... (default: alignment/accuracy for worlds, else psnr)")
    t.add_argument("--max-configs", type=COUNT, default=48,
                   help="at most this many candidates, those using the budget best (default 48)")
    add_metric_args(t)
    t.add_argument("--out", metavar="DIR", default="tune-results", help="output folder (default tune-results)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    """Auto-tune an ILF schedule."""

    from .methods import parse_method
    from .tune import TuneSpace, autotune

    source = build_source(args)
    args.num_images = args.num_images or 8
    items = build_items(args, source)
    scorer = build_scorer_from(args, source)
    ref = parse_method(args.reference)
    from .methods import get_family

    ref_blocks = get_family(ref.family).predicted_block_forwards(ref, source.num_blocks)
    budget = args.budget if args.budget is not None else ref_blocks / args.speedup
    metric = args.metric or {"shapes": "alignment", "shapes-flow": "alignment", "digits": "accuracy"}.get(
        source.world, "psnr")
    space = TuneSpace(args.feedback, args.steps, args.plans, args.t_posts, args.ratios)
    summary = autotune(source, items, scorer, space, budget=budget, metric=metric, reference=args.reference,
                       out_dir=Path(args.out), batch_size=args.batch_size or 4, max_configs=args.max_configs,
                       progress=not args.no_progress)
    best = summary["best"]
    print(f"best of {summary['num_candidates']} (budget {budget:g} block forwards, {metric}): {best['method']}")
    print(f"  {metric} = {best['score']:.4f}, {best['block_forwards']:.0f} block forwards; "
          f"all tried: {args.out}/tune.json")
    return 0
