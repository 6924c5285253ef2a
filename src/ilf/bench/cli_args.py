"""The argument groups `ilf bench`, `ilf eval` and `ilf tune` share, and what they build: the pipeline source,
the items (prompts/classes and seeds) and the scorer.

The argument groups import nothing heavy; `build_*` import torch, diffusers and the eval stack when called.
"""

from __future__ import annotations

import argparse

from ilf.argtypes import COUNT, INDEX, guidance_scale
from ilf.choices import DTYPE_NAMES, TINY_KINDS
from ilf.dtypes import torch_dtype
from ilf.worlds.paths import BACKBONE_WORLDS


def add_source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline (one of)")
    src = g.add_mutually_exclusive_group(required=False)
    src.add_argument("--world", choices=BACKBONE_WORLDS,
                     help="an embedded world's shipped backbone (shapes: PixArt text-to-image; digits: DiT classes; "
                     "shapes-flow: SD3 rectified flow)")
    src.add_argument("--pipeline", metavar="PATH_OR_ID",
                     help="a diffusers pipeline folder or cached hub id of any supported family (see docs/models.md)")
    src.add_argument("--tiny", choices=TINY_KINDS,
                     help="a tiny stand-in with random weights (smoke runs: every code path, meaningless images)")
    g.add_argument("--tiny-layers", type=COUNT, default=None, metavar="N",
                   help="blocks of the --tiny model (default: the real depth: 28, SD3-medium 24, FLUX.1 19+38)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available, else cpu; under "
                   "accelerate launch: this process's GPU)")
    g.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="weights dtype of --pipeline (default fp32; fp16 on GPU is what the paper times)")
    g.add_argument("--scheduler", choices=["default", "dpm++", "ddim", "euler"], default=None,
                   help="denoising scheduler: the pipeline's own (default), DPM-Solver++ multistep (the paper's), "
                   "DDIM or Euler, built from the pipeline's scheduler config")
    g.add_argument("--guidance-scale", type=guidance_scale, default=None,
                   help="classifier-free guidance scale (default: the pipeline's / world's own)")
    g.add_argument("--threads", type=COUNT, default=None, metavar="N",
                   help="torch CPU threads (default: torch's; 1 is fastest for --tiny models on a shared machine)")
    g.add_argument("--height", type=COUNT, default=None, help="image height in pixels (PixArt; default: the model's)")
    g.add_argument("--width", type=COUNT, default=None, help="image width in pixels (PixArt; default: the model's)")


def add_workload_args(p: argparse.ArgumentParser) -> None:
    from ilf.eval.prompts import PROMPT_FILE_HELP

    g = p.add_argument_group("what to generate")
    g.add_argument("--prompts", metavar="FILE", default=None,
                   help=f"prompts / class ids: {PROMPT_FILE_HELP} (default: the world's held-out prompts or all "
                   "digit classes; fixed prompts or DiT sample classes for --tiny)")
    g.add_argument("--num-images", type=COUNT, default=None, metavar="N",
                   help="images per method (default: every prompt x --images-per-prompt; 8 for worlds and --tiny)")
    g.add_argument("--images-per-prompt", type=COUNT, default=None, metavar="K",
                   help="images of each prompt, named {id}_{k}.png (ImageReward's benchmark: 10; default 1)")
    g.add_argument("--seed", type=INDEX, default=None, help="item i uses seed SEED + i (default 0; recorded per item)")
    g.add_argument("--batch-size", type=COUNT, default=None, metavar="B", help="images per pipeline call (default 4)")


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
    g.add_argument("--metric-batch-size", type=COUNT, default=None, metavar="B",
                   help="images per metric forward (default 32)")
    g.add_argument("--report-metrics", nargs="+", default=None, metavar="KEY",
                   help="only these metric keys go into the results and table (e.g. fid clip_score; default: all "
                   "measured); recipes use it to take each metric from the prompt set the paper used")


# ---------------------------------------------------------------------------------------------- building


def device_of(arg: str | None) -> str:
    import torch

    if arg:
        return arg
    if torch.cuda.is_available():
        from ilf.eval.generate import get_state

        return str(get_state().device)
    return "cpu"


SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def build_source(args):
    source = load_source(args)
    if args.scheduler and args.scheduler != "default":
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[args.scheduler])
        source.pipe.scheduler = cls.from_config(source.pipe.scheduler.config)
    return source


def load_source(args):
    import torch

    from ilf.errors import ILFError
    from ilf.eval.sources import load_pipeline_source, load_tiny_source, load_world_source

    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    dtype = torch_dtype(args.dtype or "fp32")
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
                        device=device_of(getattr(args, "device", None)), batch_size=args.metric_batch_size or 32,
                        progress=not args.no_progress)
