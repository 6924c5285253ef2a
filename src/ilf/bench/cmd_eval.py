"""`ilf eval`: generate one method's images (sharded over processes under `accelerate launch`) and score them,
or score an existing folder of images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_args import (
    add_metric_args, add_source_args, add_workload_args, build_items, build_scorer_from, build_source, check_metrics,
)


def add_parser(subparsers) -> None:
    e = subparsers.add_parser(
        "eval", help="generate one method's images and score them, or score an existing folder",
        description="With a pipeline and --method: generate the items into --out/images (sharded over processes "
        "under accelerate launch) and score them. With --images DIR: score that folder ({id}.png files).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ilf eval --world digits --method ilf:10,feedback=fb/ --out ev\n"
               "  ilf eval --images gens/ --prompts benchmark-prompts.json --images-per-prompt 10 "
               "--imagereward-python ir/bin/python\n  accelerate launch -m ilf.cli eval --pipeline ... --npz",
    )
    add_source_args(e)
    add_workload_args(e)
    e.add_argument("--method", default=None,
                   help="the method to generate with (grammar of `ilf bench`; default plain:20)")
    e.add_argument("--feedback", default=None, metavar="PATH", help="feedback for an ilf method without feedback=")
    e.add_argument("--images", metavar="DIR", default=None, help="score this folder instead of generating")
    e.add_argument("--reference", metavar="DIR", default=None,
                   help="folder of reference images with the same file names, for PSNR/SSIM")
    add_metric_args(e)
    e.add_argument("--out", metavar="DIR", default=None, help="output folder (default eval-results)")
    e.add_argument("--npz", action="store_true", help="also write images.npz for ADM's evaluator")
    e.add_argument("--resume", action="store_true", help="keep images already in --out/images")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    """Generate one method's images and score them, or score a folder."""

    from ilf.eval.score import to_jsonable
    from ilf.io import write_json

    out = Path(args.out or "eval-results")
    if args.images:
        items = _items_of_folder(args)
        scorer = build_scorer_from(args, _world_only(args))
        metrics = scorer.score(args.images, items, reference=args.reference)
        if not metrics:
            print("ilf eval: no metric applies: pass --reference DIR (PSNR/SSIM), --clip, --inception with "
                  "--fid-ref, --imagereward-python (with --prompts), or --world (with --prompts)", file=sys.stderr)
        result = {"images": args.images, "reference": args.reference, "metrics": metrics,
                  "items": [it.to_dict() for it in items]}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", to_jsonable(result))
        _print_metrics(metrics)
        return 0

    from .methods import parse_method
    from .runner import Bench, BenchOptions

    spec = parse_method(args.method or "plain:20")
    source = build_source(args)
    items = build_items(args, source)
    check_metrics(args, source)
    options = BenchOptions(out_dir=out, batch_size=args.batch_size or 4, feedback=args.feedback,
                           progress=not args.no_progress, resume=bool(args.resume))
    bench = Bench(source, items, [spec], lambda: build_scorer_from(args, source), options)
    row = bench.rows[0]
    row.folder = out / "images"
    bench.take_stock()
    bench.generate_row(row)
    if not bench.state.is_main_process:
        return 0
    metrics = build_scorer_from(args, source).score(row.folder, items, reference=args.reference)
    result = {"method": spec.to_dict(), "info": row.prepared.info, "source": source.describe(), "metrics": metrics,
              "num_processes": bench.state.num_processes, "items": [it.to_dict() for it in items]}
    if args.npz:
        from ilf.eval.adm import write_adm_npz
        from ilf.eval.generate import item_files

        write_adm_npz(item_files(out / "images", items), out / "images.npz")
        result["npz"] = "images.npz"
    write_json(out / "metrics.json", to_jsonable(result))
    _print_metrics(metrics)
    return 0


def _world_only(args):
    """A stand-in `source` carrying only the world name (scoring a folder needs no pipeline)."""
    from types import SimpleNamespace

    return SimpleNamespace(world=args.world) if args.world else None


def _items_of_folder(args):
    from ilf.errors import ILFError
    from ilf.eval.metrics import list_images
    from ilf.eval.prompts import Item, load_prompt_file, make_items

    if args.prompts:
        items = make_items(load_prompt_file(args.prompts), num_images=args.num_images,
                           images_per_prompt=args.images_per_prompt or 1, seed=args.seed or 0)
        return items
    if args.world:
        raise ILFError("scoring a world folder needs the prompts/classes: pass --prompts")
    files = list_images(args.images)
    return [Item(id=f.stem, prompt_id=f.stem, seed=-1) for f in files]


def _print_metrics(metrics: dict) -> None:
    for k, v in metrics.items():
        print(f"{k:20s} {v:.4f}" if isinstance(v, float) else f"{k:20s} {v}")
