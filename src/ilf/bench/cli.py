"""`ilf bench`, `ilf eval` and `ilf tune`: the command-line faces of ilf.bench and ilf.eval.

Heavy imports (torch, diffusers, metrics) happen inside the command functions, so `ilf --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilf.worlds.paths import BACKBONE_WORLDS

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
  ilf bench --recipe table1-pixart-alpha-512 --set FEEDBACK=fb/ --set MJHQ=/data/mjhq30k ...   (bench/recipes/)
  accelerate launch -m ilf.cli bench ...                                    # generation sharded over GPUs
"""


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline (one of)")
    src = g.add_mutually_exclusive_group(required=False)
    src.add_argument("--world", choices=BACKBONE_WORLDS,
                     help="an embedded world's shipped backbone (shapes: PixArt text-to-image; digits: DiT classes; "
                     "shapes-flow: SD3 rectified flow)")
    src.add_argument("--pipeline", metavar="PATH_OR_ID",
                     help="a diffusers pipeline folder or cached hub id (PixArt-α/Σ, DiT-XL/2)")
    src.add_argument("--tiny", choices=["pixart", "pixart-sigma", "dit", "sd3", "flux", "flux-dev", "sana"],
                     help="a tiny stand-in with random weights (smoke runs: every code path, meaningless images)")
    g.add_argument("--tiny-layers", type=int, default=None, metavar="N",
                   help="blocks of the --tiny model (default: the real depth: 28, SD3-medium 24, FLUX.1 19+38)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available, else cpu; under "
                   "accelerate launch: this process's GPU)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="weights dtype of --pipeline (default float32; float16 on GPU is what the paper times)")
    g.add_argument("--scheduler", choices=["default", "dpm++", "ddim", "euler"], default=None,
                   help="denoising scheduler: the pipeline's own (default), DPM-Solver++ multistep (the paper's), "
                   "DDIM or Euler, built from the pipeline's scheduler config")
    g.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the pipeline's / world's own)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's; 1 is fastest for --tiny models on a shared machine)")
    g.add_argument("--height", type=int, default=None, help="image height in pixels (PixArt; default: the model's)")
    g.add_argument("--width", type=int, default=None, help="image width in pixels (PixArt; default: the model's)")


def add_workload_args(p: argparse.ArgumentParser) -> None:
    from ilf.eval.prompts import PROMPT_FILE_HELP

    g = p.add_argument_group("what to generate")
    g.add_argument("--prompts", metavar="FILE", default=None,
                   help=f"prompts / class ids: {PROMPT_FILE_HELP} (default: the world's held-out prompts or all "
                   "digit classes; fixed prompts or DiT sample classes for --tiny)")
    g.add_argument("--num-images", type=int, default=None, metavar="N",
                   help="images per method (default: every prompt x --images-per-prompt; 8 for worlds and --tiny)")
    g.add_argument("--images-per-prompt", type=int, default=None, metavar="K",
                   help="images of each prompt, named {id}_{k}.png (ImageReward's benchmark: 10; default 1)")
    g.add_argument("--seed", type=int, default=None, help="item i uses seed SEED + i (default 0; recorded per item)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B", help="images per pipeline call (default 4)")


def add_metric_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics (paper §4.1; each group runs when its inputs are given)")
    g.add_argument("--metrics", nargs="+", default=None, metavar="GROUP",
                   help="metric groups to compute, from: fidelity (PSNR/SSIM vs the reference method), world "
                   "(evaluator alignment/accuracy + Fréchet distance to real held-out images), clip (CLIP score + "
                   "CLIP-IQA), fid, imagereward (default: every group whose inputs are given); naming a group whose "
                   "inputs are missing is an error")
    g.add_argument("--clip", metavar="DIR", default=None,
                   help="a transformers CLIP checkpoint folder (e.g. openai/clip-vit-large-patch14) for CLIP score "
                   "and CLIP-IQA")
    g.add_argument("--inception", metavar="FILE", default=None,
                   help="FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth or safetensors)")
    g.add_argument("--fid-ref", metavar="NPZ_OR_DIR", default=None,
                   help="FID reference: statistics .npz (mu/sigma, or ADM arr_0 images) or an image folder such as "
                   "MJHQ-30K (searched recursively; statistics cached beside it)")
    g.add_argument("--imagereward-python", metavar="PYTHON", default=None,
                   help="python of a venv with `pip install image-reward` (it cannot share this environment)")
    g.add_argument("--metric-batch-size", type=int, default=None, metavar="B",
                   help="images per metric forward (default 32)")
    g.add_argument("--report-metrics", nargs="+", default=None, metavar="KEY",
                   help="only these metric keys go into the results and table (e.g. fid clip_score; default: all "
                   "measured); recipes use it to take each metric from the prompt set the paper used")


_SOURCE_KEYS = ("world", "pipeline", "tiny")
_BENCH_DEFAULTS = dict(
    batch_size=4, seed=0, images_per_prompt=1, repeats=3, warmup=1, time_batch=1, grid_items=4,
    crop="auto", methods=["@all"], out="bench-results", metric_batch_size=32,
)


def register(subparsers) -> None:
    from .methods import PRESETS, families_help

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
    g.add_argument("--repeats", type=int, default=None, help="timed calls per method (default 3; 0 = no timing)")
    g.add_argument("--warmup", type=int, default=None, help="untimed calls per method before timing (default 1)")
    g.add_argument("--time-batch", type=int, default=None, metavar="B", help="images per timed call (default 1)")
    add_metric_args(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--out", metavar="DIR", default=None, help="output folder (default bench-results)")
    g.add_argument("--grid-items", type=int, default=None, metavar="K", help="columns of grid.png (default 4; 0: none)")
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
                   help="a paper recipe (bench/recipes/*.toml): its settings, overridden by the flags given here")
    g.add_argument("--set", action="append", metavar="NAME=VALUE", dest="set_vars",
                   help="value of ${NAME} in the recipe (e.g. FEEDBACK=fb/, MJHQ=/data/mjhq30k); repeatable")
    p.set_defaults(func=cmd_bench)

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
    b.add_argument("--budget", type=float, help="block forwards per image allowed (paper: 332 for 1.8x of 560)")
    b.add_argument("--speedup", type=float, help="target speedup over --reference in block forwards (budget = "
                   "reference block forwards / SPEEDUP)")
    t.add_argument("--steps", nargs="+", type=int, default=[8, 10, 12], help="step counts to try (default 8 10 12)")
    t.add_argument("--plans", nargs="+", default=["outer", "first", "last", "alternating", "all"],
                   help="plan kinds: outer, first, last, skip-inner, skip-outer (each with every K), alternating, "
                   "all (default: outer first last alternating all)")
    t.add_argument("--t-post", nargs="+", default=["rescale", "uniform", "anneal", "none"], dest="t_posts",
                   help="t_post strategies to try (default: rescale uniform anneal none)")
    t.add_argument("--ratios", nargs="+", default=["m/n"], choices=["m/n", "n/m"],
                   help="k of eq. 4-5 to try with rescale/anneal (default m/n)")
    t.add_argument("--reference", default="plain:20",
                   help="reference method for the budget and PSNR (default plain:20)")
    t.add_argument("--metric", default=None, help="score to maximise/minimise: psnr, ssim, alignment, accuracy, "
                   "world_fd, clip_score, ... (default: alignment/accuracy for worlds, else psnr)")
    t.add_argument("--max-configs", type=int, default=48,
                   help="at most this many candidates, those using the budget best (default 48)")
    add_metric_args(t)
    t.add_argument("--out", metavar="DIR", default="tune-results", help="output folder (default tune-results)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_tune)


# ---------------------------------------------------------------------------------------------- helpers


def _device(arg: str | None) -> str:
    import torch

    if arg:
        return arg
    if torch.cuda.is_available():
        from ilf.eval.generate import get_state

        return str(get_state().device)
    return "cpu"


SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def build_source(args):
    source = _load_source(args)
    if args.scheduler and args.scheduler != "default":
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[args.scheduler])
        source.pipe.scheduler = cls.from_config(source.pipe.scheduler.config)
    return source


def _load_source(args):
    import torch

    from ilf.errors import ILFError
    from ilf.eval.sources import load_pipeline_source, load_tiny_source, load_world_source

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    dtype = getattr(torch, args.dtype or "float32")
    extra = {"guidance_scale": args.guidance_scale, "height": args.height, "width": args.width}
    if args.world:
        src = load_world_source(args.world, device=device, dtype=dtype)
        src.call_kwargs.update({k: v for k, v in extra.items() if v is not None})
        return src
    if args.pipeline:
        return load_pipeline_source(args.pipeline, device=device, dtype=dtype, **extra)
    if args.tiny:
        return load_tiny_source(args.tiny, num_layers=args.tiny_layers, device=device, **extra)
    raise ILFError("choose a pipeline: --world shapes|digits, --pipeline PATH_OR_ID, or --tiny pixart|dit|sd3|flux|sana")


def build_items(args, source):
    from ilf.eval.prompts import load_prompt_file, make_items
    from ilf.eval.sources import default_conditions

    ipp = args.images_per_prompt or 1
    if args.prompts:
        conds = load_prompt_file(args.prompts)
        n = args.num_images
    else:
        n = args.num_images or 8
        conds = default_conditions(source, max(1, (n + ipp - 1) // ipp))
    return make_items(conds, num_images=n, images_per_prompt=ipp, seed=args.seed or 0)


def check_metrics(args, source) -> None:
    """Fail before generating when a requested metric lacks its inputs."""
    from ilf.eval.score import check_metric_inputs

    check_metric_inputs(groups=args.metrics, world=source.world if source is not None else None, clip=args.clip,
                        inception=args.inception, fid_ref=args.fid_ref, imagereward_python=args.imagereward_python)


def build_scorer_from(args, source):
    from ilf.eval.score import build_scorer

    return build_scorer(groups=args.metrics, world=source.world if source is not None else None, clip=args.clip,
                        inception=args.inception, fid_ref=args.fid_ref, imagereward_python=args.imagereward_python,
                        device=_device(getattr(args, "device", None)), batch_size=args.metric_batch_size or 32,
                        progress=not args.no_progress)


def _apply_recipe_defaults(args, settings: dict, parser_defaults: dict) -> argparse.Namespace:
    """Fill every option not given on the command line from the recipe, then from the defaults."""
    merged = argparse.Namespace(**vars(args))
    if any(getattr(args, k, None) for k in _SOURCE_KEYS):  # a pipeline given here replaces the recipe's
        settings = {k: v for k, v in settings.items() if k not in _SOURCE_KEYS}
    for key, value in settings.items():
        if getattr(merged, key, None) is None:
            setattr(merged, key, value)
    for key, value in parser_defaults.items():
        if getattr(merged, key, None) is None:
            setattr(merged, key, value)
    return merged


# ---------------------------------------------------------------------------------------------- commands


def cmd_bench(args) -> int:
    """Run a benchmark (or every part of a recipe)."""
    from .methods import PRESETS, families_help

    if args.list_methods:
        print("families (FAMILY:DEFAULT_STEPS):\n" + families_help(verbose=True))
        for name, items in PRESETS.items():
            print(f"@{name}: {' '.join(items)}")
        return 0
    if args.recipe:
        return _run_recipe(args)
    run_bench_args(_apply_recipe_defaults(args, {}, _BENCH_DEFAULTS))
    return 0


def _run_recipe(args) -> int:
    from .recipes import load_recipe, parse_sets
    from .report import write_merged
    from .runner import load_results

    allowed = {k for k in vars(args) if k not in ("func", "command", "recipe", "set_vars", "list_methods")}
    parts = load_recipe(args.recipe, parse_sets(args.set_vars), allowed)
    out = Path(args.out or parts[0][1].get("out") or _BENCH_DEFAULTS["out"])
    results, names = [], []
    for name, settings in parts:
        run_args = _apply_recipe_defaults(args, settings, _BENCH_DEFAULTS)
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
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *argv])
    return run_bench_args(_apply_recipe_defaults(args, {}, _BENCH_DEFAULTS))


def run_bench_args(args):

    from .methods import expand_methods
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


def cmd_eval(args) -> int:
    """Generate one method's images and score them, or score a folder."""

    from ilf.eval.generate import generate, get_state
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

    from .methods import MethodContext, get_family, parse_method
    from .stock import check_stock, fingerprint

    spec = parse_method(args.method or "plain:20")
    source = build_source(args)
    items = build_items(args, source)
    check_metrics(args, source)
    state = get_state()
    before = fingerprint(source.pipe)
    fam = get_family(spec.family)
    ctx = MethodContext(source.pipe, source.num_blocks, run_once=lambda s: source(items[:1], s),
                        feedback=args.feedback, cfg_batch=source.cfg_batch)
    prepared = fam.prepare(spec, ctx)
    att = prepared.attach(source.pipe)
    try:
        generate(source, items, spec.steps, out / "images", batch_size=args.batch_size or 4,
                 progress=not args.no_progress, desc=spec.display, before_call=att.before_call, state=state,
                 skip_existing=args.resume)
    finally:
        att.detach()
    check_stock(source.pipe, before, spec.name)
    if not state.is_main_process:
        return 0
    metrics = build_scorer_from(args, source).score(out / "images", items, reference=args.reference)
    result = {"method": spec.to_dict(), "info": prepared.info, "source": source.describe(), "metrics": metrics,
              "num_processes": state.num_processes, "items": [it.to_dict() for it in items]}
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
