"""What the pipeline-native corrector trainer records: the pipeline, the prompts and every call's kwargs.

A user's pipeline and prompts come as they are (`ilf.train_corrector`, `ilf train --pipeline ID --prompts
FILE`). An embedded world (`ilf train --world NAME`) supplies all three: its pipeline, `rollout_size` prompts
drawn from its train split with the run's seed (captions, class ids, or for shapes-flow its MiniLM caption
embeddings as pipeline kwargs) and its call kwargs (guidance, sequence length).
"""

from __future__ import annotations

import torch

from ..dtypes import torch_dtype
from ..errors import ILFError
from ..loading import load_pipeline
from .prompts import check_prompts, read_prompts


def world_prompts(world: str, n: int, seed: int) -> list:
    """`n` train-split prompts of an embedded world, a pure function of `seed`."""
    g = torch.Generator().manual_seed(seed * 7919 + 1)
    if world == "digits":
        return [int(v) for v in torch.randint(10, (n,), generator=g)]
    from ..worlds import shapes

    # the captions of the world's own train samples (its scene kinds in the proportions it was trained on), not a
    # uniform draw over every caption the grammar makes (nearly all of them relations)
    captions = [shapes.sample(i, "train", seed)[1] for i in range(n)]
    if world == "shapes":
        return captions
    from ..worlds.registry import prompt_kwargs

    return [prompt_kwargs(world, [c]) for c in captions]  # shapes-flow: MiniLM embeddings as pipeline kwargs


def native_inputs(cfg, pipe=None, prompts=None, call_kwargs=None) -> tuple:
    """(pipe, prompts, call kwargs) for `cfg`; the guidance they use is recorded in cfg.guidance_scale."""
    world_call = {}
    if pipe is None:
        pipe, world_call = load_pipeline(cfg.world, cfg.pipeline, dtype=torch_dtype(cfg.backbone_dtype))
        from .trainer import use_scheduler

        use_scheduler(pipe, cfg.scheduler)
    elif cfg.scheduler is not None:
        raise ILFError("scheduler= swaps the scheduler of a pipeline ilf loads; set pipe.scheduler yourself")
    world_call.pop("num_inference_steps", None)  # a world's default run length: the trained one replaces it
    call = {**(world_call if call_kwargs is None else call_kwargs), **cfg.call_kwargs}
    steps = call.pop("num_inference_steps", cfg.student_steps)
    if steps != cfg.student_steps:
        raise ILFError(f"call_kwargs say num_inference_steps={steps} but --distill {cfg.distill} trains for "
                       f"{cfg.student_steps} steps; pass num_inference_steps={steps} to train_corrector "
                       "(--student-steps) instead")
    for key in ("generator", "latents"):
        if key in call:
            raise ILFError(f"call_kwargs must not set {key!r}: the trainer draws one seeded noise per prompt "
                           "(seed=) so that the stock and the corrected runs start from the same noise")
    if cfg.max_sequence_length is not None:
        import inspect

        if "max_sequence_length" not in inspect.signature(type(pipe).__call__).parameters:
            raise ILFError(f"--max-sequence-length: {type(pipe).__name__} takes no max_sequence_length")
        call["max_sequence_length"] = cfg.max_sequence_length
    if cfg.guidance_scale is not None:
        call["guidance_scale"] = cfg.guidance_scale
    elif "guidance_scale" in call:
        cfg.guidance_scale = float(call["guidance_scale"])
    if prompts is None and cfg.prompts is not None:
        prompts = read_prompts(cfg.prompts)
    if prompts is None and cfg.world is not None:
        prompts = world_prompts(cfg.world, cfg.rollout_size, cfg.seed)
    if prompts is None:
        raise ILFError(f"--distill {cfg.distill} records the pipeline's own sampling of your prompts: give --prompts "
                       "FILE (one prompt per line; 128 are enough, docs/train-your-corrector.md)")
    return pipe, check_prompts(prompts), call
