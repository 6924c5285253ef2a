"""Small helpers over diffusers' `HookRegistry`: register, remove without a trace, bind call arguments.

ilf changes a model only through named hooks in diffusers' registry, so removing them gives the stock
module back: the registry and the per-instance `forward` it installs are deleted when no hook is left.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

# Hook names, one per role, as diffusers names its own hooks.
ILF_MODEL_HOOK = "ilf_model"
ILF_BLOCK_HOOK = "ilf_block"
ILF_TIME_HOOK = "ilf_time"
CACHE_MODEL_HOOK = "ilf_paper_cache_model"
CACHE_BLOCK_HOOK = "ilf_paper_cache_block"


def register(module: torch.nn.Module, hook: ModelHook, name: str) -> None:
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)


def unregister(module: torch.nn.Module, name: str) -> None:
    """Remove hook `name` from `module`; drop the registry and its forward if nothing else is hooked."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    registry.remove_hook(name, recurse=False)
    if not registry.hooks:
        del module._diffusers_hook
        # HookRegistry leaves the original bound method as an instance attribute; the class method is
        # the stock forward, so dropping the attribute restores the module exactly.
        module.__dict__.pop("forward", None)


def has_hook(module: torch.nn.Module, name: str) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(name) is not None


@functools.lru_cache(maxsize=None)
def _signature(fn: Callable) -> inspect.Signature:
    return inspect.signature(fn)


def bind_arguments(fn: Callable, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name every argument of a call to `fn` (an unbound method; `self` excluded).

    Models call their blocks positionally under gradient checkpointing and by keyword otherwise; binding
    makes both look the same to the hooks.
    """
    params = list(_signature(fn).parameters)[1:]  # drop `self`
    if len(args) > len(params):
        raise TypeError(f"{fn.__qualname__} got {len(args)} positional arguments, takes {len(params)}")
    bound = dict(zip(params, args))
    bound.update(kwargs)
    return bound
