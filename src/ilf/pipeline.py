"""Attach ILF to (and detach it from) a diffusers pipeline or a bare transformer."""

from __future__ import annotations

import dataclasses
import os

from torch import nn

from .adapters import get_adapter
from .runtime.attached import get_runtime, refuse_attached, refuse_diffusers_cache, resolve_target
from .config import INFERENCE_FIELDS, ILFConfig
from .runtime.corrector import CacheCorrector, attach_corrector
from .corrector_config import CORRECTOR_INFERENCE_FIELDS, CorrectorConfig
from .errors import FeedbackMismatchError, ILFError
from .feedback import FeedbackModule, build_feedback, load_feedback, write_feedback
from .hub import base_model_of, push_folder
from .runtime.ilf_loop import ILFRuntime



def apply_ilf(
    target,
    config: ILFConfig | CorrectorConfig | str | os.PathLike | None = None,
    *,
    feedback: FeedbackModule | None = None,
    scheduler=None,
    strict: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    **overrides,
) -> ILFRuntime | CacheCorrector:
    """Attach a trained feedback folder (a corrector of TaylorSeer or an Inner Loop Feedback) or a new one to a
    pipeline or transformer of any supported family (docs/models.md); the pipeline is then used unchanged.

    A folder saved from the corrector mode (`CorrectorConfig`: a feedback trained on top of diffusers'
    TaylorSeer cache) attaches the cache and its corrector together, at the schedule recorded in the folder,
    and returns the `CacheCorrector`; a `CorrectorConfig` builds a new, untrained one (the cache alone).

    Args:
        target: a diffusers pipeline of a supported family (anything with `.transformer` and `.scheduler`:
            PixArt-α/Σ, DiT, SD3, Flux, Sana and the others `ilf.adapters.supported_classes()` lists), or its bare
            transformer.
        config: a feedback folder saved by `save_feedback` / `ilf train`, or a Hub repo id (`"org/name"`,
            fetched through huggingface_hub: `HF_HUB_OFFLINE=1` reads only the local cache; a local folder of
            that name wins); a `CorrectorConfig` (a new, untrained corrector: exactly TaylorSeer); or an
            `ILFConfig` (a new, untrained feedback is built with zero scales: with `t_post="none"` the
            output is exactly the stock model's; with any other t_post, e.g. the default `"rescale"`, the
            blocks after the feedback and the output layer are conditioned on t_post, so it differs).
        feedback: an existing `FeedbackModule` to attach with `config` (e.g. one being trained).
        scheduler: for a bare transformer, the scheduler whose timesteps the calls follow. Without it each
            call must pass `ilf_t_post=` (and may pass `ilf_feedback=`).
        strict: refuse a saved feedback whose backbone weights differ from this backbone's.
        revision, cache_dir, token: for a Hub repo id, as `huggingface_hub.snapshot_download` takes them.
        **overrides: inference settings replacing the config's (`feedback_steps`, `t_post`, `t_post_ratio`,
            `anneal_floor`; for a new feedback also `loop`, `init`, `init_block`).

    Returns the `ILFRuntime` (its `.feedback` is the trainable module, `.update()` changes the schedule), or for
    a corrector the `CacheCorrector`. `config=None` is refused: there is no default to attach.

    Example::

        pipe = PixArtAlphaPipeline.from_pretrained("PixArt-alpha/PixArt-XL-2-512x512")
        apply_ilf(pipe, "my-feedback", feedback_steps="outer:2", t_post="rescale")
        image = pipe("a red fox in the snow", num_inference_steps=10).images[0]
        remove_ilf(pipe)
    """
    if config is None:  # no silent default: an untrained paper loop would change the output, fit no 12-block model
        raise ILFError(
            "apply_ilf() needs what to attach: a feedback folder or Hub repo id (from `ilf train` / save_feedback), "
            "an ILFConfig(loop=(b, e)) for a new inner loop, or a CorrectorConfig() for a new TaylorSeer corrector"
        )
    model, clock = resolve_target(target, scheduler)
    adapter = get_adapter(model)
    refuse_attached(model, "apply_ilf()")
    refuse_diffusers_cache(model, "ILF")
    if isinstance(config, CorrectorConfig):  # a new, untrained corrector of a training-free cache
        config = dataclasses.replace(config, **overrides) if overrides else config
        return attach_corrector(model, adapter, config, feedback, clock)
    if isinstance(config, (str, os.PathLike)):
        fb, saved = load_feedback(config, model, strict=strict, revision=revision, cache_dir=cache_dir, token=token)
        if isinstance(saved, CorrectorConfig):  # the cache and its trained corrector, at the recorded schedule
            bad = {k for k in overrides if k not in CORRECTOR_INFERENCE_FIELDS}
            if bad:
                raise FeedbackMismatchError(
                    f"{sorted(bad)} cannot change for a trained corrector; only {sorted(CORRECTOR_INFERENCE_FIELDS)} "
                    "can be overridden (it was trained for the recorded cache schedule)"
                )
            if saved.full_steps is not None and "full_steps" not in overrides and \
                    overrides.keys() & {"interval", "warmup", "cooldown"}:
                overrides = {**overrides, "full_steps": None}  # a new spread schedule replaces the trained mask
            return attach_corrector(model, adapter, dataclasses.replace(saved, **overrides), feedback or fb, clock)
        bad = {k for k in overrides if k not in INFERENCE_FIELDS}
        if bad:
            raise FeedbackMismatchError(
                f"{sorted(bad)} cannot change for a trained feedback (it was trained for loop {saved.loop}); "
                f"only {sorted(INFERENCE_FIELDS)} can be overridden"
            )
        config = dataclasses.replace(saved, **overrides)
        feedback = feedback or fb
    else:
        if not isinstance(config, ILFConfig):
            raise ILFError(f"config must be a feedback folder (or Hub repo id), an ILFConfig or a CorrectorConfig, "
                           f"got {type(config).__name__}")
        config = dataclasses.replace(config, **overrides) if overrides else config
        if feedback is None:
            feedback = build_feedback(model, config, adapter)
    return ILFRuntime(model, adapter, feedback, config, clock).attach()


def remove_ilf(target) -> FeedbackModule | None:
    """Detach ILF; the transformer is the stock model again. Returns the detached feedback (or None)."""
    model, _ = resolve_target(target)
    runtime = get_runtime(model)
    return runtime.detach() if runtime is not None else None


def save_feedback(
    target,
    path: str | os.PathLike,
    *,
    extra: dict | None = None,
    base_model_name_or_path: str | None = None,
    base_model_revision: str | None = None,
    push_to_hub: bool = False,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
):
    """Save the attached feedback (only its tensors) and its config as an adapter folder, atomically.

    The config records the base model as peft does (`base_model_name_or_path`, `revision`): what you pass,
    else what diffusers recorded when the pipeline / transformer was loaded. `push_to_hub=True` then uploads
    the folder to `repo_id` (default: the folder's name) with huggingface_hub's `HfApi`, as diffusers'
    `save_pretrained(push_to_hub=True)` does.

    Example::

        save_feedback(pipe, "pixart-fb", push_to_hub=True, repo_id="me/pixart-alpha-512-ilf")
        apply_ilf(other_pipe, "me/pixart-alpha-512-ilf")
    """
    model, _ = resolve_target(target)
    runtime = get_runtime(model)
    if runtime is None:
        raise ILFError("no ILF is attached to this transformer; apply_ilf() first")
    name, revision = base_model_of(model, pipeline=None if isinstance(target, nn.Module) else target)
    if base_model_name_or_path is not None and base_model_name_or_path != name:
        name, revision = base_model_name_or_path, None  # another id: its recorded revision does not apply
    base = (name, base_model_revision or revision)
    out = write_feedback(path, model, runtime.feedback, runtime.config, extra=extra, base_model=base)
    if push_to_hub:
        push_folder(out, repo_id or out.name, private=private, token=token, commit_message=commit_message)
    return out
