"""The one pipeline loader: an embedded world, or a diffusers pipeline folder / hub id, with the call arguments
every call to it should pass. `ilf generate`, `ilf train` and the bench/eval sources all load through here."""

from __future__ import annotations

import inspect

from .errors import ILFError

# The sample sizes each pipeline has aspect-ratio bins for (diffusers' `use_resolution_binning` raises on others)
BINNED_SAMPLE_SIZES = {"PixArtAlphaPipeline": (32, 64, 128), "PixArtSigmaPipeline": (32, 64, 128, 256),
                       "SanaPipeline": (16, 32, 64, 128)}


def stock_call_kwargs(pipe) -> dict:
    """Call arguments a stock diffusers pipeline needs to run offline at any size: PixArt/Sana's caption cleaner
    off (it needs bs4/ftfy; benchmark prompts are clean) and PixArt/Sana's resolution binning off at sample
    sizes they have no bins for."""
    params = inspect.signature(type(pipe).__call__).parameters
    call = {}
    if "clean_caption" in params:  # PixArt, Sana (not SD3, Flux)
        call["clean_caption"] = False
    sample_size = getattr(getattr(pipe, "transformer", None), "config", {}).get("sample_size")
    bins = BINNED_SAMPLE_SIZES.get(type(pipe).__name__)
    if bins is not None and "use_resolution_binning" in params and sample_size not in bins:
        call["use_resolution_binning"] = False
    return call


def load_pipeline(world: str | None = None, pipeline: str | None = None, *, device=None, dtype=None,
                  skip: tuple[str, ...] = ()):
    """(pipeline, call kwargs) for an embedded `world` or a diffusers `pipeline` (folder or hub id; offline it
    reads the local cache only). Exactly one of the two.

    dtype: a torch dtype (default float32). skip: components not to load (e.g. "text_encoder", "tokenizer", "vae"
    when training on precomputed latents); names the pipeline does not have are ignored. The progress bar is
    off; callers that want it turn it on."""
    import torch

    if (world is None) == (pipeline is None):
        raise ILFError("load a pipeline from exactly one of world= (an embedded world) or pipeline= (a diffusers "
                       "folder or hub id)")
    dtype = dtype or torch.float32
    if world is not None:
        from .worlds import paths, registry

        if world not in paths.BACKBONE_WORLDS:
            raise ILFError(f"unknown world {world!r}; worlds: {', '.join(paths.BACKBONE_WORLDS)}")
        if not paths.transformer(world).is_dir():
            raise ILFError(f"the {world!r} world's backbone is not shipped in this install "
                           f"({paths.transformer(world)} is missing); train it with "
                           "`python -m ilf.worlds.train_backbone` or use --tiny for a smoke run")
        pipe = registry.load_pipeline(world, device=device or "cpu", dtype=dtype)
        return pipe, dict(registry.CALL_KWARGS[world])
    from diffusers import DiffusionPipeline

    try:
        components = DiffusionPipeline.load_config(pipeline) if skip else {}
        omitted = {k: None for k in skip if k in components}
        pipe = DiffusionPipeline.from_pretrained(pipeline, dtype=dtype, **omitted)
    except (OSError, ValueError) as err:
        raise ILFError(
            f"cannot load the pipeline {pipeline!r} ({err}); pass a local diffusers folder (model_index.json) or a "
            "hub id already in the cache (HF_HUB_OFFLINE=1 never downloads)"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe = pipe.to(device)
    return pipe, stock_call_kwargs(pipe)
