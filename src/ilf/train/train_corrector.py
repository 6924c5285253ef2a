"""`ilf.train_corrector`: train the corrector for a user's own diffusers pipeline from a list of prompts."""

from __future__ import annotations

from pathlib import Path

from ..errors import ILFError
from .config import WORLD_CORRECTOR, TrainConfig


def train_corrector(pipe, prompts, output_dir, *, call_kwargs: dict | None = None, num_inference_steps: int = 20,
                    interval: int = 2, warmup: int = 3, order: int = 1, full_steps=None, max_steps: int | None = None,
                    lr: float | None = None, batch_size: int | None = None, rollout_every: int = 100,
                    record_batch: int | None = None, teacher_steps: int | None = None, mix_per_channel: bool = False,
                    seed: int = 0, resume: str | None = None, checkpoint_every: int = 500,
                    mixed_precision: str = "no", progress: bool = True) -> Path:
    """Train a corrector of diffusers' TaylorSeer for `pipe`, on its own sampling of `prompts`; returns the
    folder `apply_ilf(pipe, folder)` attaches (OUTPUT_DIR/feedback).

    pipe: any pipeline ilf supports (`ilf.adapters.supported_classes()`), as you run it (dtype, device,
        scheduler, offload). It is called with `call_kwargs`, `num_inference_steps` and one seeded generator per
        prompt; it records the stock run and, every `rollout_every` iterations, the run with the corrector.
    prompts: prompt strings, class ids (class-conditional pipelines) or dicts of pipeline-call kwargs (e.g.
        `prompt_embeds`); 32 to 128 suffice (docs/train-your-corrector.md).
    call_kwargs: given to every call: height, width, guidance_scale, true_cfg_scale, negative_prompt,
        num_frames, max_sequence_length, … exactly as at inference.
    interval, warmup, order: TaylorSeer's schedule (`cache_interval`, `disable_cache_before_step`, `max_order`).
    full_steps: an explicit list of full steps (a step mask, including 0) replacing interval/warm-up, e.g.
        [0, 1, 2, 4, 6, 9] for a 10-step run with 6 full steps.
    max_steps, lr, batch_size: the optimisation (default: the shipped recipe, 600 iterations of 32 at lr 3e-3).
    record_batch: prompts per recorded pipeline call (default: min(4, batch_size)); a training batch is made of
        whole calls, so small calls keep it diverse (measured: docs/native-equivalence).
    teacher_steps: the stock run's step count (default: `num_inference_steps`: the target is exactly the image
        plain steps give; a multiple lands on a finer grid).
    resume: "latest" or a checkpoint folder of OUTPUT_DIR, as `ilf train --resume`.

    Refused, with the cause: a combination of the transformer's outputs other than plain outputs or CFG
    (guidance_rescale, norm-rescaled CFG, PAG, skip-layer guidance), a stochastic scheduler, a pipeline whose
    steps do not call `pipe.transformer`.

    Example::

        folder = ilf.train_corrector(pipe, prompts, "runs/pixart-corrector",
                                     call_kwargs=dict(height=512, width=512, guidance_scale=4.5))
        ilf.apply_ilf(pipe, folder)
        image = pipe("a red fox in the snow", num_inference_steps=20).images[0]
    """
    from .trainer import train

    if getattr(pipe, "transformer", None) is None:
        raise ILFError(f"train_corrector needs a diffusers pipeline with a `transformer`; got {type(pipe).__name__}")
    name = getattr(pipe, "name_or_path", None) or type(pipe).__name__
    cfg = TrainConfig(
        output_dir=Path(output_dir), pipeline=str(name), distill="corrector", student_steps=num_inference_steps,
        teacher_steps=teacher_steps, cache_interval=interval, cache_warmup=warmup, cache_order=order,
        cache_full_steps=None if full_steps is None else list(full_steps),
        mix_per_channel=mix_per_channel, lr=lr or WORLD_CORRECTOR["lr"],
        batch_size=batch_size or WORLD_CORRECTOR["batch_size"], max_steps=max_steps or WORLD_CORRECTOR["max_steps"],
        rollout_every=rollout_every, record_batch=record_batch, seed=seed, resume=resume,
        checkpoint_every=checkpoint_every, mixed_precision=mixed_precision, progress=progress,
    )
    from ..runtime.attached import RUNTIME_ATTR
    from ..pipeline import remove_ilf

    if getattr(pipe.transformer, RUNTIME_ATTR, None) is not None:
        raise ILFError("a feedback or corrector is attached to this pipeline; remove_ilf(pipe) first: the corrector "
                       "is trained on the stock pipeline's sampling")
    try:
        return train(cfg, pipe=pipe, prompts=prompts, call_kwargs=call_kwargs).feedback_dir
    finally:  # the pipeline goes back as it came, whatever happened
        if getattr(pipe.transformer, RUNTIME_ATTR, None) is not None:
            remove_ilf(pipe)
