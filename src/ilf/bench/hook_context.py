"""diffusers 0.42's own cache hooks attached to any model ilf has an adapter for, and their counters.

FirstBlockCache, TaylorSeerCache, MagCache, PyramidAttentionBroadcast, FasterCache and SeaCache were written
for models with `CacheMixin`, whose pipelines wrap every transformer call in `transformer.cache_context(name)`.
Two paths:

* **native** — a model with `CacheMixin` (`FluxTransformer2DModel`) takes the hook through
  `enable_cache(config)` and drops it with `disable_cache()`; its pipeline names each call's context itself
  ("cond", and "uncond" for Flux's true CFG, so the stateful hooks keep one state per branch).
* **context shim** — PixArt, DiT, SD3 and Sana have no `CacheMixin` and their pipelines set no context, so the
  stateful hooks would raise "No cache context is set". The hook is applied with its `apply_*` function.
  These pipelines batch both CFG branches into one call: one context per step.

On both paths `CallContextHook`, registered on the transformer after the peer's hooks (so it runs first), sets
each call's `CacheContext` (through `CacheMixin.cache_context`, which needs nothing of the mixin) under the
pipeline's name for the call, or `CONTEXT_NAME` where it gives none, with the step, the step count and the
flow σ that SeaCache reads and no pipeline passes, and clears it afterwards. The step is located on the host
by `ilf.runtime.planner.CallPlanner`, as ILF and the paper cache locate theirs (no device read per call; bf16/fp16
timesteps matched within their rounding). It records each call's timestep in the scheduler's units (the
scheduler's exact value; Flux is called with t/1000) for the hooks that ask for it (`current_timestep_callback`: PAB, FasterCache). Hook
state is reset before every pipeline call. Detaching removes exactly the hooks that attaching added (every
module's hook registry is compared before and after, so no hook name of diffusers' is needed) and the empty
registries they leave, so the pipeline is stock again. An attach that fails half-way removes what it added
before raising.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.models.attention import AttentionModuleMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.cache_utils import CacheMixin
from torch import nn

from ilf.adapters import get_adapter
from ilf.runtime.clock import flow_sigma, scalar_timestep
from ilf.errors import ScheduleError
from ilf.hooks import bind_arguments
from ilf.runtime.planner import CallPlanner

from .family import Attachment
from .stock import strip_empty_registries

CONTEXT_HOOK = "ilf_bench_cache_context"
CONTEXT_NAME = "denoise"  # the shim's one context per step (both CFG branches are batched in one call)
NATIVE_CONTEXT = "cond"  # the context diffusers pipelines with CacheMixin give the conditional call


class _NoState(BaseState):
    def reset(self):
        pass


class CallContextHook(ModelHook):
    """On the transformer, first of all hooks: records each call's timestep (scheduler units) and sets the
    call's `CacheContext` with where the denoising loop is (`step_index`, `num_inference_steps`, `timestep` and
    the flow `sigma`, which SeaCache needs and no pipeline passes), cleared when the call returns.

    The context keeps the name the pipeline gave the call (Flux: "cond" / "uncond"), seen through a
    `StateManager` of this hook's own that `cache_context` sets like every stateful hook's; pipelines that set
    none (PixArt, DiT, SD3, Sana) get `CONTEXT_NAME`. Clearing rather than restoring the pipeline's context is
    what the pipeline's own `with transformer.cache_context(...)` does next: it wraps exactly one call."""

    _is_stateful = True  # so that `cache_context` reaches `self.outer`; it holds no state to reset

    def __init__(self, planner: CallPlanner, noise: str):
        """planner: locates each call on the host (the scheduler's counter; `ilf.runtime.planner`), as ILF and the
        paper cache do; noise: the adapter's "flow" / "ddpm" (for `flow_sigma`)."""
        super().__init__()
        self.planner, self.noise = planner, noise
        self.outer = StateManager(_NoState)  # the context the pipeline set for this call, if any
        self.timestep: float | None = None
        self._context = None

    def reset_state(self, module):
        return module

    def pre_forward(self, module, *args, **kwargs):
        self._enter(module, args, kwargs)
        return args, kwargs

    @torch.compiler.disable  # host work once per call
    def _enter(self, module, args, kwargs) -> None:
        planner = self.planner  # the call's timestep as its adapter names it (Z-Image is called with `t`)
        t = planner.adapter.call_inputs(planner.model, args, kwargs, planner.binder).get("timestep")
        try:
            name = self.outer.context.name
        except ValueError:  # no context set by the pipeline
            name = CONTEXT_NAME
        where = {}
        try:  # the scheduler's counter on the host: the scheduler's exact timestep, no device read
            step = self.planner.locate(t)
            self.timestep = step.t
            where = {"step_index": step.index, "num_inference_steps": step.num_steps,
                     "sigma": flow_sigma(self.planner.clock.scheduler(), step.t, self.noise)}
        except ScheduleError:  # a call outside the scheduler's steps still gets a context (its value read)
            self.timestep = float(self.planner.adapter.to_scheduler_units(self.planner.model, scalar_timestep(t)))
        # `CacheMixin.cache_context` only needs a module; it is what a CacheMixin pipeline wraps each call in
        self._context = CacheMixin.cache_context(module, name, timestep=self.timestep, **where)
        self._context.__enter__()

    def post_forward(self, module, output):
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
        return output


class CondHalfHook(ModelHook):
    """On the transformer, inside FasterCache: FasterCache drops the unconditional half of the batched CFG
    inputs it knows by name (`hidden_states`, `encoder_hidden_states`, `timestep`, masks), but not of the
    others a family passes batched for both branches (SD3's `pooled_projections`, PixArt-α 1024's
    `added_cond_kwargs`); where it has, keep only their conditional half too (the batch is [uncond, cond])."""

    def pre_forward(self, module, *args, **kwargs):
        x = bind_arguments(type(module).forward, args, kwargs).get("hidden_states")
        if not torch.is_tensor(x):
            return args, kwargs
        n = x.shape[0]

        def half(v):
            if torch.is_tensor(v) and v.ndim and v.shape[0] == 2 * n:
                return v[n:]
            return {k: half(u) for k, u in v.items()} if isinstance(v, dict) else v

        return args, {k: half(v) for k, v in kwargs.items()}


def find_hook(module: nn.Module, predicate: Callable[[ModelHook], bool]) -> ModelHook | None:
    """The first diffusers hook on `module` (not its children) for which `predicate` holds."""
    registry = module.__dict__.get("_diffusers_hook")
    return next((h for h in registry.hooks.values() if predicate(h)), None) if registry is not None else None


def _hook_names(model: nn.Module) -> dict[str, set[str]]:
    out = {}
    for name, m in model.named_modules():
        registry = m.__dict__.get("_diffusers_hook")
        out[name] = set(registry.hooks) if registry is not None else set()
    return out


def _added_hooks(model: nn.Module, before: dict[str, set[str]]) -> list[tuple[str, nn.Module, str]]:
    """(module name, module, hook name) of every hook registered since `before` was taken."""
    added = []
    for name, m in model.named_modules():
        registry = m.__dict__.get("_diffusers_hook")
        if registry is not None:
            added += [(name, m, h) for h in registry.hooks if h not in before.get(name, set())]
    return added


class ComputeCounter:
    """For each module a peer hooked: how often it was called, and how often it really computed.

    A call is seen by a torch pre-hook on the module (it fires before the diffusers hook decides); a
    computation by a pre-hook on the first submodule the module's own forward runs (a block's marker from the
    adapter's block contract, `to_q` of an attention, `net[0]` of a feed-forward). Modules without such a
    marker (a bare Linear) report calls only. Calls inside compiled code are not counted (counting there would
    recompile the block on every call).
    """

    def __init__(self, model: nn.Module, hooked: list[nn.Module]):
        self.calls: dict[str, int] = {}
        self.computed: dict[str, int] = {}
        self.modules: dict[str, int] = {}
        self._handles = []
        markers = {id(s.module): s.stack.marker for s in get_adapter(model).sites(model)}
        for m in {id(m): m for m in hooked}.values():
            kind, marker = _kind_and_marker(model, m, markers)
            self.modules[kind] = self.modules.get(kind, 0) + 1
            self.calls.setdefault(kind, 0)
            self._handles.append(m.register_forward_pre_hook(self._bump(self.calls, kind)))
            if marker is not None:
                self.computed.setdefault(kind, 0)
                self._handles.append(marker.register_forward_pre_hook(self._bump(self.computed, kind)))

    @staticmethod
    def _bump(table: dict, kind: str):
        def hook(module, args):
            # not while dynamo traces: a Python int it sees is guarded, so each count would recompile the block
            if not torch.compiler.is_compiling():
                table[kind] += 1

        return hook

    def stats(self) -> dict:
        out = {}
        for kind, n in self.modules.items():
            c = self.calls[kind]
            k = self.computed.get(kind)
            out[kind] = {"modules": n, "calls": c, "computed": k, "skipped": None if k is None else c - k}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _kind_and_marker(model: nn.Module, m: nn.Module, markers: dict[int, str]) -> tuple[str, nn.Module | None]:
    if id(m) in markers:
        return "block", getattr(m, markers[id(m)])
    if isinstance(m, (Attention, AttentionModuleMixin)) and hasattr(m, "to_q"):  # PixArt's; Flux's FluxAttention
        return ("cross_attention" if getattr(m, "is_cross_attention", False) else "self_attention"), m.to_q
    if isinstance(m, FeedForward):
        return "feed_forward", m.net[0]
    if m is model:
        return "denoiser", None
    return type(m).__name__, None


class UncondSkipCounter:
    """FasterCache's CFG-cache: counts transformer calls whose blocks saw only the conditional half."""

    def __init__(self, model: nn.Module):
        self.full = self.halved = 0
        self._batch = None
        first = get_adapter(model).sites(model)[0].module

        def outer(module, args, kwargs):
            x = bind_arguments(type(module).forward, args, kwargs).get("hidden_states")
            self._batch = x.shape[0] if torch.is_tensor(x) else None

        def inner(module, args, kwargs):
            x = bind_arguments(type(module).forward, args, kwargs).get("hidden_states")
            if self._batch is not None and torch.is_tensor(x):
                self.full += 1
                self.halved += int(x.shape[0] < self._batch)
                self._batch = None  # once per call: the first block

        self._handles = [model.register_forward_pre_hook(outer, with_kwargs=True),
                         first.register_forward_pre_hook(inner, with_kwargs=True)]

    def remove(self):
        for h in self._handles:
            h.remove()


@contextlib.contextmanager
def quiet_loggers(*loggers: str):
    """Silence the experimental-feature warnings diffusers logs on every apply."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, loggers)]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def is_native(model: nn.Module) -> bool:
    """Whether the model takes diffusers' caches through `enable_cache` (and its pipeline sets the contexts)."""
    return isinstance(model, CacheMixin)


def apply_function(config) -> Callable[[nn.Module, object], None]:
    """diffusers' `apply_*` function for a cache config (what `CacheMixin.enable_cache` dispatches to)."""
    from diffusers import hooks as h

    table = {h.FirstBlockCacheConfig: h.apply_first_block_cache, h.TaylorSeerCacheConfig: h.apply_taylorseer_cache,
             h.MagCacheConfig: h.apply_mag_cache, h.FasterCacheConfig: h.apply_faster_cache,
             h.PyramidAttentionBroadcastConfig: h.apply_pyramid_attention_broadcast,
             h.SeaCacheConfig: h.apply_sea_cache}
    return table[type(config)]


def attach_diffusers_hooks(
    pipe,
    make_config: Callable[[CallContextHook], object],
    *,
    view: nn.Module | None = None,
    inner_hooks: tuple[tuple[str, ModelHook], ...] = (),
    count_uncond_skips: bool = False,
) -> Attachment:
    """Apply a diffusers cache hook to `pipe.transformer`, natively or with the cache context set around every call.

    `make_config(context_hook)` builds the peer's diffusers config (its callbacks may read
    `context_hook.timestep`). `view`: on the shim path, the module the hook is applied to instead of the model
    (a stand-in holding some of the model's own block lists, for a hook that must leave some blocks out).
    `inner_hooks` are registered on the transformer before the peer (they run inside its transformer hook).
    """
    from ilf.runtime.attached import resolve_target

    model, clock = resolve_target(pipe)
    adapter = get_adapter(model)  # a supported family, else a clear UnsupportedModelError
    native = is_native(model)
    before = _hook_names(model)
    registry = HookRegistry.check_if_exists_or_initialize(model)
    handles: list = []

    had_config = "_cache_config" in model.__dict__

    def detach():
        for h in handles:
            h.remove()
        handles.clear()
        # Last registered first: diffusers relinks the hook above a removed one by its `forward` only, which a
        # hook with its own `new_forward` (FasterCache's denoiser hook over our inner hook) does not call.
        for _, m, name in reversed(_added_hooks(model, before)):
            m._diffusers_hook.remove_hook(name, recurse=False)
        if native and model.is_cache_enabled:
            model.disable_cache()  # its hooks are gone already; this clears its config
        if not had_config:
            model.__dict__.pop("_cache_config", None)  # `disable_cache` leaves `_cache_config = None` behind
        registry.invalidate_child_registries_cache()
        strip_empty_registries(model)

    try:
        for name, hook in inner_hooks:
            registry.register_hook(hook, name)
        ctx_hook = CallContextHook(CallPlanner(model, adapter, clock), adapter.noise)
        config = make_config(ctx_hook)
        with quiet_loggers("diffusers.hooks", "diffusers.models.cache_utils"):
            if native:
                model.enable_cache(config)
            else:
                apply_function(config)(model if view is None else view, config)
        registry.register_hook(ctx_hook, CONTEXT_HOOK)  # registered last = runs first
        registry.invalidate_child_registries_cache()  # the context must reach the new block hooks
        own = {CONTEXT_HOOK, *(n for n, _ in inner_hooks)}
        counter = ComputeCounter(model, [m for _, m, n in _added_hooks(model, before) if n not in own])
        handles.append(counter)
        uncond = UncondSkipCounter(model) if count_uncond_skips else None
        if uncond is not None:
            handles.append(uncond)
    except Exception:
        detach()
        raise

    def before_call():
        registry.reset_stateful_hooks(recurse=True)

    def stats():
        out = {"hooked": counter.stats(), "path": "enable_cache" if native else "cache-context shim"}
        if uncond is not None:
            out["uncond_skipped_calls"] = uncond.halved
            out["transformer_calls"] = uncond.full
        return out

    return Attachment(detach, before_call, stats)


def state_of(hook: ModelHook, context: str):
    """A stateful hook's state for one cache context (through its `StateManager`)."""
    manager = hook.state_manager
    manager.set_context(CacheContext(context))
    try:
        return manager.get_state()
    finally:
        manager.set_context(None)
