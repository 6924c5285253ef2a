"""Small helpers over diffusers' `HookRegistry`: register, remove without a trace, bind call arguments.

ilf changes a model only through named hooks in diffusers' registry. Removing them restores exactly what was
there before: the stock class method, or the instance `forward` another library installed (accelerate's
`add_hook_to_module`, which cpu offload uses), and a registry that diffusers' own hooks (group offloading)
share is left to them.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .errors import ILFError

# Hook names, one per role, as diffusers names its own hooks.
ILF_MODEL_HOOK = "ilf_model"
ILF_BLOCK_HOOK = "ilf_block"
ILF_TIME_HOOK = "ilf_time"
CACHE_MODEL_HOOK = "ilf_paper_cache_model"
CACHE_BLOCK_HOOK = "ilf_paper_cache_block"

_MISSING = object()


@dataclass
class HookHandle:
    """What one `register` changed on one module, so that `unregister` undoes exactly that."""

    module: torch.nn.Module
    name: str
    prior_forward: Any  # the instance `forward` before ilf registered (`_MISSING`: the class method)
    installed_forward: Any  # the instance `forward` right after (the registry's wrapper)
    created_registry: bool


def register(module: torch.nn.Module, hook: ModelHook, name: str) -> HookHandle:
    created = not hasattr(module, "_diffusers_hook")
    prior = module.__dict__.get("forward", _MISSING)
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
    return HookHandle(module, name, prior, module.__dict__.get("forward"), created)


def check_removable(handle: HookHandle) -> None:
    """Raise `ILFError` if removing `handle`'s hook would cut off a wrapper installed over it."""
    module = handle.module
    top = module.__dict__.get("forward", _MISSING)
    if _is_last(handle) and top is not handle.installed_forward and not _accelerate_over(handle, top):
        raise ILFError(
            f"the forward of {type(module).__name__} was wrapped by {_qualname(top)} after ilf attached, so "
            "removing ilf's hook would cut that wrapper off; remove that wrapper first, then ilf / the cache"
        )


def unregister_all(handles: list[HookHandle]) -> None:
    """Remove the hooks of `handles` (last registered first) and empty the list; every one is checked with
    `check_removable` before any is removed, so a refusal changes nothing."""
    for handle in handles:
        check_removable(handle)
    for handle in reversed(handles):
        unregister(handle)
    handles.clear()


def unregister(handle: HookHandle) -> None:
    """Remove the hook of `handle`; whatever else wraps or hooks the module keeps working.

    Three cases: the registry's wrapper is the module's `forward` (the registry restores the previous one,
    and a bare class method is dropped again); accelerate wrapped the module after ilf (its `_old_forward`
    is pointed past ilf); an unknown wrapper sits on top (refused by `check_removable`).
    """
    module, name = handle.module, handle.name
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or registry.get_hook(name) is None:
        return
    check_removable(handle)
    is_last, top = _is_last(handle), module.__dict__.get("forward", _MISSING)
    accelerate_over = is_last and top is not handle.installed_forward
    registry.remove_hook(name, recurse=False)
    if is_last and handle.prior_forward is _MISSING:
        module.__dict__.pop("forward", None)  # the registry re-set the class method as an instance attribute
    if accelerate_over:
        module._old_forward = module.forward  # accelerate's wrapper now calls what was under ilf
        module.forward = top
    if not registry.hooks and handle.created_registry:
        del module._diffusers_hook


def _is_last(handle: HookHandle) -> bool:
    registry = getattr(handle.module, "_diffusers_hook", None)
    hooks = list(registry.hooks) if registry is not None else []
    return bool(hooks) and hooks[-1] == handle.name  # the registry keeps its hooks in registration order


def _accelerate_over(handle: HookHandle, top) -> bool:
    return top is not _MISSING and getattr(handle.module, "_old_forward", None) is handle.installed_forward


def _qualname(fn) -> str:
    inner = getattr(fn, "func", fn)
    return getattr(inner, "__qualname__", repr(inner))


class ArgBinder:
    """Names the arguments of calls to one forward, from its signature read once (at attach).

    Models call their blocks positionally under gradient checkpointing and by keyword otherwise; binding
    makes both look the same to the hooks. Reading the signature once keeps `inspect` out of the per-call
    path (so `torch.compile` traces through) and survives a class-level wrapper installed later. A generic
    `(*args, **kwargs)` wrapper seen at attach leaves only the positional fallback: the first positional
    argument is `first` (every diffusers block and model takes its hidden states first).
    """

    def __init__(self, fn: Callable, first: str = "hidden_states"):
        self.qualname = _qualname(fn)
        try:
            params = list(inspect.signature(fn).parameters.values())  # follows functools.wraps
        except (TypeError, ValueError):
            params = []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if params and params[0].kind in positional:
            params = params[1:]  # `self`
        names = tuple(p.name for p in params if p.kind in positional)
        self.generic = not names and any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
        self.names = (first,) if self.generic else names

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.names):
            seen = "a generic (*args, **kwargs) wrapper" if self.generic else f"parameters {self.names}"
            raise TypeError(
                f"{self.qualname} got {len(args)} positional arguments, but its signature when ilf attached was "
                f"{seen}, which names only {list(self.names)}; pass the other arguments by keyword, or "
                "attach ilf before wrapping the class's forward"
            )
        bound = dict(zip(self.names, args))
        bound.update(kwargs)
        return bound

    def get(self, args: tuple, kwargs: dict[str, Any], name: str):
        """Argument `name` of a call, by keyword or by its position (no full binding needed)."""
        if name in kwargs:
            return kwargs[name]
        if name in self.names[: len(args)]:
            return args[self.names.index(name)]
        raise TypeError(f"{self.qualname} was called without {name!r}")

    def replace(self, args: tuple, kwargs: dict[str, Any], name: str, value) -> tuple[tuple, dict[str, Any]]:
        """The call with argument `name` set to `value`, wherever the caller put it; other arguments
        untouched (so a generic wrapper's extra positional arguments pass through)."""
        if name in kwargs or name not in self.names[: len(args)]:
            return args, {**kwargs, name: value}
        i = self.names.index(name)
        return args[:i] + (value,) + args[i + 1:], kwargs


@functools.lru_cache(maxsize=None)
def binder_for(fn: Callable) -> ArgBinder:
    return ArgBinder(fn)


def bind_arguments(fn: Callable, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name every argument of a call to `fn` (an unbound method; `self` excluded). Outside per-call paths."""
    return binder_for(fn).bind(args, kwargs)
