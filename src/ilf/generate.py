"""`ilf generate`: images from an embedded world or a real pipeline, plain, cached or with a feedback."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .argtypes import (COUNT, INDEX, add_loop_arg, add_threads_arg, check_plan_fits, guidance_scale, int_range,
                       set_threads)
from .choices import DTYPE_NAMES, T_POST_STRATEGIES
from .dtypes import torch_dtype
from .loading import load_pipeline
from .worlds.paths import BACKBONE_WORLDS, FLOW_WORLDS

SHIPPED = {"shipped": "default", "shipped-fast": "fast"}  # --feedback names of a world's shipped correctors


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "image"


UPSCALE_BELOW = 128  # images smaller than this (in pixels, the longer side) get an upscaled copy by default


def default_upscale(size: tuple[int, int]) -> int:
    """The smallest integer factor that brings an image under 128 px to at least 128 px; 1 (none) otherwise."""
    side = max(size)
    return 1 if side >= UPSCALE_BELOW else -(-UPSCALE_BELOW // side)


def save_images(images, out: Path, names: list[str], upscale: int | None) -> int:
    """Save every image as NAME.png (the raw pixels) and, when the factor is above 1, a nearest-neighbour
    NAME-xK.png beside it to look at. Returns the factor used."""
    from PIL import Image

    k = upscale or (default_upscale(images[0].size) if images else 1)
    for img, name in zip(images, names):
        img.save(out / f"{name}.png")
        if k > 1:
            img.resize((img.width * k, img.height * k), Image.NEAREST).save(out / f"{name}-x{k}.png")
    return k


def cache_spec(text: str) -> tuple[str, int, int]:
    """`--cache LOCATION:BLOCKS:REFRESH`, e.g. inner:18:3; BLOCKS and REFRESH integers >= 1."""
    import argparse

    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"must be LOCATION:BLOCKS:REFRESH with BLOCKS and REFRESH integers >= 1, "
                                         f"e.g. inner:18:3, got {text!r}")
    return parts[0], int(parts[1]), int(parts[2])


def check_inputs(args, class_to_image: bool) -> None:
    """A class-to-image pipeline needs --class-id, a text-to-image one --prompt: a usage error (exit 2)."""
    from .errors import ILFError

    if class_to_image and not args.class_id:
        raise ILFError("a class-to-image pipeline (DiT) needs --class-id ID [ID ...], e.g. --class-id 3 7")
    if not class_to_image and not args.prompt:
        raise ILFError('a text-to-image pipeline needs --prompt TEXT [TEXT ...], e.g. --prompt "a red circle"')


def cmd_generate(args) -> int:
    if args.world:  # known before anything is loaded
        from .worlds.paths import DATA_OF

        check_inputs(args, class_to_image=DATA_OF[args.world] == "digits")
    if args.feedback in SHIPPED and not args.world:
        from .errors import ILFError

        raise ILFError(f"--feedback {args.feedback} is an embedded world's corrector; use it with --world NAME, or pass "
                       "a folder from `ilf train --pipeline ...` with --pipeline")
    if args.feedback and args.feedback not in SHIPPED:  # a mistyped folder is said before torch is imported
        from .folders import check_feedback_folder
        from .hub import is_repo_id

        if Path(args.feedback).exists() or not is_repo_id(args.feedback):
            check_feedback_folder(args.feedback)
    import torch

    from .runtime.paper_cache import apply_cache

    from .config import CacheConfig, ILFConfig

    from .runtime.counting import count_block_forwards

    from .pipeline import apply_ilf

    set_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, call = load_pipeline(args.world, args.pipeline, device=device, dtype=torch_dtype(args.dtype))
    pipe.set_progress_bar_config(disable=False)
    overrides = {k: v for k, v in (("feedback_steps", args.feedback_steps), ("t_post", args.t_post)) if v is not None}
    trained = attached = None
    if args.feedback:
        path = args.feedback
        if path in SHIPPED:
            from .worlds import paths

            path = paths.feedback(args.world, SHIPPED[path])
        trained = attached = apply_ilf(pipe, path, **overrides).config  # the schedule it was trained for, if recorded
    elif args.loop:
        # untrained: zero scales and (unless --t-post says otherwise) t_post none, so exactly the plain output
        attached = apply_ilf(pipe, ILFConfig(loop=tuple(args.loop), **{"t_post": "none", **overrides})).config
    if args.cache:
        location, c, k = args.cache
        apply_cache(pipe, CacheConfig(location, c, k))
    # a feedback runs at the schedule it was trained for; else ILF's 1.7x setting, 10 steps
    default_steps = ((trained.num_inference_steps or 10) if trained else call.get("num_inference_steps", 20))
    call.update(num_inference_steps=args.steps or default_steps)
    if attached is not None and hasattr(attached, "feedback_steps"):  # an ILF plan may name only steps the run has
        check_plan_fits(attached.feedback_steps, call["num_inference_steps"], steps_flag="--steps")
    if args.guidance is not None:
        call["guidance_scale"] = args.guidance
    elif trained is not None and trained.guidance_scale is not None:
        call["guidance_scale"] = trained.guidance_scale
    is_dit = type(pipe).__name__ == "DiTPipeline"
    check_inputs(args, class_to_image=is_dit)
    if is_dit:
        inputs, names = dict(class_labels=args.class_id), [f"class{c}" for c in args.class_id]
    else:
        inputs, names = dict(prompt=args.prompt), [_slug(p) for p in args.prompt]
        inputs["num_images_per_prompt"] = args.num_images
        if args.world in FLOW_WORLDS:  # a pipeline without text encoders: MiniLM embeddings come in
            from .worlds import registry

            inputs = registry.prompt_kwargs(args.world, args.prompt, num_images_per_prompt=args.num_images,
                                            device=device, dtype=next(pipe.transformer.parameters()).dtype)
    out = Path(args.out)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    start = time.perf_counter()
    with count_block_forwards(pipe) as counter, torch.no_grad():
        images = pipe(**inputs, generator=g, **call).images
    seconds = time.perf_counter() - start
    per = args.num_images if not is_dit else 1
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that fails earlier leaves no empty folder
    k = save_images(images, out, [f"{i:03d}-{names[i // per]}" for i in range(len(images))], args.upscale)
    shown = f" (and {k}x nearest-neighbour copies, NAME-x{k}.png)" if k > 1 else ""
    print(f"{len(images)} images in {out}{shown} — {call['num_inference_steps']} steps, {counter.total} block "
          f"forwards, {seconds:.2f} s")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate images with an embedded world or a real pipeline, optionally with a trained "
        "corrector or ILF feedback",
        description="Generate images with an embedded world's pipeline or a diffusers pipeline of any supported "
        "family (see docs/models.md), plain, with a trained feedback folder (a corrector of TaylorSeer, the "
        "worlds' shipped one, or an ILF feedback) or with the paper's cache, and save them as PNGs. Prints the "
        "block forwards and the time taken.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", choices=BACKBONE_WORLDS, help="an embedded offline world")
    src.add_argument("--pipeline", help="a diffusers pipeline folder or hub id of any supported family "
                     "(see docs/models.md)")
    p.add_argument("--prompt", nargs="*", default=[], help="text prompts (text-to-image)")
    p.add_argument("--class-id", nargs="*", type=INDEX, default=[], help="class ids (class-to-image, e.g. DiT/digits)")
    p.add_argument("--feedback", help="a feedback folder to attach (ILF, or a corrector of TaylorSeer: the cache comes "
                   "with it); 'shipped' = the world's shipped corrector (~1.8x fewer block forwards, 20 steps), 'shipped-fast' = "
                   "its fast tier (<= 85 block forwards per image, >= 2.8x, at the shorter run it was trained for)")
    add_loop_arg(p,
                 help="attach an untrained feedback on this loop instead, for checking: zero scales and t_post none, so exactly "
                   "the plain output (with --t-post other than none the post-feedback blocks see the shifted timestep)")
    p.add_argument("--feedback-steps", help="override the feedback's schedule, e.g. outer:2, skip-inner:8, all")
    p.add_argument("--t-post", choices=T_POST_STRATEGIES, help="override the feedback's t_post")
    p.add_argument("--cache", type=cache_spec, help="the paper's cache instead, as LOCATION:BLOCKS:REFRESH, e.g. inner:18:3")
    p.add_argument("--steps", type=COUNT, help="denoising steps (default: the feedback's trained step count, else 10 with --feedback, "
                   "the paper's ILF setting; 20 without)")
    p.add_argument("--guidance", type=guidance_scale, help="classifier-free guidance scale (default: the feedback's trained one, else the pipeline's)")
    p.add_argument("--num-images", type=COUNT, default=1, help="images per prompt (default: 1)")
    p.add_argument("--seed", type=INDEX, default=0, help="random seed (default: 0)")
    p.add_argument("--upscale", type=int_range(1, 64), metavar="K",
                   help="also save a K-times nearest-neighbour copy of each image as NAME-xK.png, the raw NAME.png "
                   "kept (default: images under 128 px get the factor that brings them to 128 px or more; 1 = none)")
    p.add_argument("--out", default="ilf-images", help="output folder (default: ./ilf-images)")
    p.add_argument("--device", help="cuda, cpu, … (default: cuda when available)")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES, help="model dtype (default: fp32)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_generate)

