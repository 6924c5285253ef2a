"""What ilf attaches to a transformer, found from a pipeline or the transformer itself.

One home for `resolve_target`, `get_runtime` and `get_cache`, which apply/remove of ILF, of the corrector and
of the paper cache, the planner, the block counter and the bench all need. It names the executors only by what
it asks of them (`AttachedRuntime`, `AttachedCache`), so it imports none of them: every executor imports it,
and no import runs back.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from diffusers.utils.torch_utils import unwrap_module
from torch import nn

from ..errors import ILFError
from .clock import SchedulerClock

FEEDBACK_ATTR = "ilf_feedback"  # the feedback is a submodule of the transformer: it follows .to() and DDP
RUNTIME_ATTR = "_ilf_runtime"
CACHE_ATTR = "_ilf_paper_cache"


class AttachedRuntime(Protocol):
    """What sits under `RUNTIME_ATTR`: ILF's loop (`ilf_loop.ILFRuntime`) or the corrector
    (`corrector.CacheCorrector`), as far as remove_ilf / save_feedback use it."""

    feedback: nn.Module
    config: Any

    def detach(self) -> nn.Module: ...


class AttachedCache(Protocol):
    """What sits under `CACHE_ATTR`: the paper cache (`paper_cache.PaperCache`), as far as remove_cache uses it."""

    def detach(self) -> None: ...


def resolve_target(target, scheduler=None) -> tuple[nn.Module, SchedulerClock | None]:
    """(transformer, clock) for a pipeline (`.transformer` + `.scheduler`) or a bare transformer."""
    model = getattr(target, "transformer", None)
    if isinstance(model, nn.Module) and not isinstance(target, nn.Module):
        model = unwrap_module(model)  # `torch.compile(pipe.transformer)`: ILF hooks the model it wraps
        pipe_ref = weakref.ref(target)  # the pipeline owns the transformer; no reference cycle through us
        return model, SchedulerClock(lambda: getattr(pipe_ref(), "scheduler", None))
    if isinstance(target, nn.Module):
        target = unwrap_module(target)
        return target, (SchedulerClock(lambda: scheduler) if scheduler is not None else None)
    raise ILFError(
        f"expected a diffusers pipeline with a `.transformer` or a transformer model, got {type(target).__name__}"
    )


def get_runtime(model: nn.Module) -> AttachedRuntime | None:
    """The ILF runtime or the corrector attached to `model` (a transformer), if any."""
    return getattr(model, RUNTIME_ATTR, None)


def get_cache(model: nn.Module) -> AttachedCache | None:
    """The paper cache attached to `model` (a transformer), if any."""
    return getattr(model, CACHE_ATTR, None)


def refuse_attached(model: nn.Module, call: str) -> None:
    """Raise if ILF (or a corrector) or the paper cache is already attached to `model`; `call`: the attaching
    call, for the message (e.g. "apply_ilf()")."""
    if get_runtime(model) is not None:
        raise ILFError("ILF is already attached to this transformer; call remove_ilf() first")
    if get_cache(model) is not None:
        raise ILFError(f"the paper cache is attached to this transformer; call remove_cache() before {call}")


def refuse_diffusers_cache(model: nn.Module, what: str) -> None:
    """Raise if a diffusers cache (`transformer.enable_cache(...)`: FirstBlockCache, TaylorSeer, MagCache, PAB,
    FasterCache, SeaCache) is on `model`: ILF re-runs loop blocks inside a step and the paper cache skips blocks,
    and the diffusers hooks keep per-block state that follows neither, so the two together give undefined
    images rather than an error. `what`: the ilf feature, for the message."""
    if getattr(model, "is_cache_enabled", False):
        name = type(getattr(model, "_cache_config", None)).__name__.removesuffix("Config")
        raise ILFError(
            f"a diffusers cache ({name}) is enabled on this transformer, and {what} cannot share the blocks with "
            "it (its per-block state does not follow blocks that re-run or are skipped); call "
            "transformer.disable_cache() first, or compare the two side by side with `ilf bench`"
        )
