"""diffusers 0.42's own cache hooks, made to run on PixArt and DiT.

FirstBlockCache, TaylorSeerCache, MagCache, PyramidAttentionBroadcast and FasterCache are applied with
their `apply_*` functions. They were written for models with `CacheMixin`, whose pipelines wrap every
transformer call in `transformer.cache_context(...)`; `PixArtTransformer2DModel` and `DiTTransformer2DModel`
have no `CacheMixin` and their pipelines set no context, so the stateful hooks would raise "No cache
context is set". `_CacheContextHook`, registered on the transformer after the peer's hooks (so it runs
first), sets the registry's `CacheContext` for every call (`_set_cache_context`, what `cache_context` does)
and clears it afterwards; it also records the call's timestep for the hooks that ask for it
(`current_timestep_callback`: PAB, FasterCache). Hook state is reset before every pipeline call, and
detaching removes every hook by name and the registries they leave, so the pipeline is stock again.

Block forwards are counted by ilf's counter (a block counts when its `norm1` runs, so a block these hooks
skip is not counted). PAB and FasterCache skip attention inside blocks that still run, so their rows also
record each hooked module's own calls and real computations (`ComputeCounter`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from ilf.clock import SchedulerClock, scalar_timestep
from ilf.errors import ScheduleError
from ilf.hooks import bind_arguments

from .errors import BenchError
from .methods import (
    Attachment, Family, Option, Prepared, parse_choice, parse_float, parse_int, parse_pair, parse_pos_int, register_family,
)
from .stock import strip_empty_registries

CONTEXT_HOOK = "ilf_bench_cache_context"
COND_SPLIT_HOOK = "ilf_bench_added_cond_split"
CONTEXT_NAME = "denoise"  # PixArt and DiT batch the CFG branches into one call: one context per step


class _CacheContextHook(ModelHook):
    """On the transformer: the `CacheContext` its pipeline never sets, for the duration of each call."""

    def __init__(self, clock: SchedulerClock):
        super().__init__()
        self.clock = clock
        self.timestep: float | None = None

    def pre_forward(self, module, *args, **kwargs):
        t = bind_arguments(type(module).forward, args, kwargs).get("timestep")
        self.timestep = scalar_timestep(t)
        where = {}
        with contextlib.suppress(ScheduleError):  # a call outside the scheduler's steps still gets a context
            step = self.clock.locate(t)
            where = {"step_index": step.index, "num_inference_steps": step.num_steps}
        _set_cache_context(module, CacheContext(CONTEXT_NAME, timestep=self.timestep, **where))
        return args, kwargs

    def post_forward(self, module, output):
        _set_cache_context(module, None)
        return output


class _AddedCondSplitHook(ModelHook):
    """On the transformer, inside FasterCache: PixArt-α 1024 passes `added_cond_kwargs` (resolution, aspect
    ratio) batched for both CFG branches; when FasterCache drops the unconditional half of the other inputs,
    keep only the conditional half of these too (the pipeline batches [uncond, cond])."""

    def pre_forward(self, module, *args, **kwargs):
        call = bind_arguments(type(module).forward, args, kwargs)
        extra, x = call.get("added_cond_kwargs"), call.get("hidden_states")
        if isinstance(extra, dict) and torch.is_tensor(x):
            n = x.shape[0]
            fixed = {k: (v[v.shape[0] // 2:] if torch.is_tensor(v) and v.ndim and v.shape[0] == 2 * n else v)
                     for k, v in extra.items()}
            kwargs = {**kwargs, "added_cond_kwargs": fixed}
        return args, kwargs


class ComputeCounter:
    """For each module a peer hooked: how often it was called, and how often it really computed.

    A call is seen by a torch pre-hook on the module (it fires before the diffusers hook decides); a
    computation by a pre-hook on the first submodule the module's own forward runs (`norm1` of a block,
    `to_q` of an attention, `net[0]` of a feed-forward). Modules without such a marker (a bare Linear)
    report calls only.
    """

    def __init__(self, model: nn.Module, hook_names: tuple[str, ...]):
        self.calls: dict[str, int] = {}
        self.computed: dict[str, int] = {}
        self.modules: dict[str, int] = {}
        self._handles = []
        for _, m in model.named_modules():
            reg = m.__dict__.get("_diffusers_hook")
            if reg is None or not any(reg.get_hook(n) is not None for n in hook_names):
                continue
            kind, marker = _kind_and_marker(m)
            self.modules[kind] = self.modules.get(kind, 0) + 1
            self.calls.setdefault(kind, 0)
            self._handles.append(m.register_forward_pre_hook(self._bump(self.calls, kind)))
            if marker is not None:
                self.computed.setdefault(kind, 0)
                self._handles.append(marker.register_forward_pre_hook(self._bump(self.computed, kind)))

    @staticmethod
    def _bump(table: dict, kind: str):
        def hook(module, args):
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


def _kind_and_marker(m: nn.Module) -> tuple[str, nn.Module | None]:
    if isinstance(m, BasicTransformerBlock):
        return "block", m.norm1
    if isinstance(m, Attention):
        return ("cross_attention" if m.is_cross_attention else "self_attention"), m.to_q
    if isinstance(m, FeedForward):
        return "feed_forward", m.net[0]
    if hasattr(m, "transformer_blocks"):
        return "denoiser", None
    return type(m).__name__, None


class _UncondSkipCounter:
    """FasterCache's CFG-cache: counts transformer calls whose blocks saw only the conditional half."""

    def __init__(self, model: nn.Module):
        self.full = self.halved = 0
        self._batch = None

        def outer(module, args, kwargs):
            x = bind_arguments(type(module).forward, args, kwargs).get("hidden_states")
            self._batch = x.shape[0] if torch.is_tensor(x) else None

        def inner(module, args):
            if self._batch is not None and args and torch.is_tensor(args[0]):
                self.full += 1
                self.halved += int(args[0].shape[0] < self._batch)

        self._handles = [model.register_forward_pre_hook(outer, with_kwargs=True),
                         model.pos_embed.register_forward_pre_hook(inner)]

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


def _model_and_clock(pipe):
    from ilf.adapters import get_adapter
    from ilf.pipeline import resolve_target

    model, clock = resolve_target(pipe)
    get_adapter(model)  # PixArt or DiT, else a clear UnsupportedModelError
    return model, clock


def attach_diffusers_hooks(
    pipe,
    apply: Callable[[nn.Module, _CacheContextHook], None],
    hook_names: tuple[str, ...],
    *,
    inner_hooks: tuple[tuple[str, ModelHook], ...] = (),
    count_uncond_skips: bool = False,
) -> Attachment:
    """Apply a diffusers cache hook to `pipe.transformer` with the cache context set around every call.

    `apply(model, context_hook)` installs the peer (it may read `context_hook.timestep`). `inner_hooks` are
    registered on the transformer before it (they run inside the peer's own transformer hook).
    """
    model, clock = _model_and_clock(pipe)
    registry = HookRegistry.check_if_exists_or_initialize(model)
    for name, hook in inner_hooks:
        registry.register_hook(hook, name)
    ctx_hook = _CacheContextHook(clock)
    with quiet_loggers("diffusers.hooks"):
        apply(model, ctx_hook)
    registry.register_hook(ctx_hook, CONTEXT_HOOK)  # registered last = runs first
    registry.invalidate_child_registries_cache()  # `_set_cache_context` must reach the new block hooks
    counter = ComputeCounter(model, hook_names)
    uncond = _UncondSkipCounter(model) if count_uncond_skips else None

    def before_call():
        registry.reset_stateful_hooks(recurse=True)

    def stats():
        out = {"hooked": counter.stats()}
        if uncond is not None:
            out["uncond_skipped_calls"] = uncond.halved
            out["transformer_calls"] = uncond.full
        return out

    def detach():
        counter.remove()
        if uncond is not None:
            uncond.remove()
        for name in hook_names:
            registry.remove_hook(name, recurse=True)
        for name in (CONTEXT_HOOK, *(n for n, _ in inner_hooks)):
            registry.remove_hook(name, recurse=False)
        registry.invalidate_child_registries_cache()
        strip_empty_registries(model)

    return Attachment(detach, before_call, stats)


# ---------------------------------------------------------------------------------------------- families


class _PeerFamily(Family):
    peer = True


class FirstBlockCacheFamily(_PeerFamily):
    name = "fbc"
    summary = "diffusers FirstBlockCache: skip blocks 1..N-1 when block 0's residual barely changed"
    options = {"threshold": Option(parse_float, "relative change of block 0's residual below which a step is skipped", 0.05)}

    def prepare(self, spec, ctx):
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
        from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK

        cfg = FirstBlockCacheConfig(threshold=spec.get("threshold", 0.05))

        def attach(pipe):
            return attach_diffusers_hooks(pipe, lambda m, _: apply_first_block_cache(m, cfg),
                                          (_FBC_LEADER_BLOCK_HOOK, _FBC_BLOCK_HOOK))

        return Prepared(spec, attach, {"config": {"threshold": cfg.threshold}})


def taylorseer_compute_steps(num_steps: int, interval: int, warmup: int, cooldown: int | None) -> list[int]:
    """Steps on which TaylorSeer computes (diffusers' `_measure_should_compute`); the others are predicted."""
    return [s for s in range(num_steps)
            if s < warmup or (s - warmup - 1) % interval == 0 or (cooldown is not None and s >= cooldown)]


class TaylorSeerFamily(_PeerFamily):
    name = "taylorseer"
    summary = ("diffusers TaylorSeerCache: between full steps, each block's output (mode=block) or only the "
               "output projection (mode=lite) is a Taylor extrapolation")
    options = {
        "interval": Option(parse_pos_int, "a full step every INTERVAL steps after the warm-up", 2),
        "warmup": Option(parse_int, "the first WARMUP steps always compute", 3),
        "cooldown": Option(parse_int, "steps >= COOLDOWN always compute (default: never)"),
        "order": Option(parse_pos_int, "Taylor order", 1),
        "mode": Option(parse_choice("block", "lite"), "block: predict every block's output; lite: skip the blocks and "
                       "predict the output projection", "block"),
    }

    def _steps(self, spec):
        return taylorseer_compute_steps(spec.steps, spec.get("interval", 2), spec.get("warmup", 3),
                                        spec.get("cooldown"))

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * len(self._steps(spec))

    def prepare(self, spec, ctx):
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache
        from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

        model = ctx.pipe.transformer
        dtype = next(model.parameters()).dtype  # Taylor factors in the model's dtype (diffusers defaults to bf16)
        blocks = [r"transformer_blocks\.\d+"]
        out_proj = ["proj_out_2" if hasattr(model, "proj_out_2") else "proj_out"]
        lite = spec.get("mode", "block") == "lite"
        cfg = TaylorSeerCacheConfig(
            cache_interval=spec.get("interval", 2), disable_cache_before_step=spec.get("warmup", 3),
            disable_cache_after_step=spec.get("cooldown"), max_order=spec.get("order", 1),
            taylor_factors_dtype=dtype,
            skip_predict_identifiers=blocks if lite else None, cache_identifiers=out_proj if lite else blocks,
        )

        def attach(pipe):
            return attach_diffusers_hooks(pipe, lambda m, _: apply_taylorseer_cache(m, cfg), (_TAYLORSEER_CACHE_HOOK,))

        return Prepared(spec, attach, {"compute_steps": self._steps(spec), "config": {
            "cache_interval": cfg.cache_interval, "disable_cache_before_step": cfg.disable_cache_before_step,
            "disable_cache_after_step": cfg.disable_cache_after_step, "max_order": cfg.max_order,
            "taylor_factors_dtype": str(dtype), "mode": "lite" if lite else "block",
            "predicted": out_proj if lite else blocks, "skipped": blocks if lite else []}})


class MagCacheFamily(_PeerFamily):
    name = "magcache"
    summary = ("diffusers MagCache: skip whole steps while the accumulated residual-magnitude error stays small "
               "(ratios calibrated on the first prompt)")
    options = {
        "threshold": Option(parse_float, "accumulated error below which a step is skipped", 0.06),
        "max_skip": Option(parse_int, "at most this many consecutive skipped steps (K)", 3),
        "retention": Option(parse_float, "the first RETENTION x steps never skip", 0.2),
    }

    def prepare(self, spec, ctx):
        from diffusers.hooks import MagCacheConfig, apply_mag_cache
        from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

        names = (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK)
        if ctx.run_once is None:
            raise BenchError("MagCache needs a calibration run, but no calibration item was given")
        # Calibration: MagCache's calibrate mode computes every step and collects mean |r_t| / |r_{t-1}| of the
        # model's residual. It clears the list when step_index reaches num_inference_steps, so it is told one
        # step more than runs, and the ratios are read from its state after the run.
        cal = MagCacheConfig(calibrate=True, num_inference_steps=spec.steps + 1)
        att = attach_diffusers_hooks(ctx.pipe, lambda m, _: apply_mag_cache(m, cal), names)
        try:
            att.before_call()
            ctx.run_once(spec.steps)
            head = ctx.pipe.transformer.transformer_blocks[0]._diffusers_hook.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK)
            ratios = [float(r) for r in head.state_manager._state_cache[CONTEXT_NAME].calibration_ratios]
        finally:
            att.detach()
        if len(ratios) != spec.steps:
            raise BenchError(f"MagCache calibration gave {len(ratios)} ratios for {spec.steps} steps")
        cfg_kwargs = dict(threshold=spec.get("threshold", 0.06), max_skip_steps=spec.get("max_skip", 3),
                          retention_ratio=spec.get("retention", 0.2), num_inference_steps=spec.steps)

        def attach(pipe):
            cfg = MagCacheConfig(mag_ratios=torch.tensor(ratios), **cfg_kwargs)
            return attach_diffusers_hooks(pipe, lambda m, _: apply_mag_cache(m, cfg), names)

        return Prepared(spec, attach, {"config": cfg_kwargs, "calibration": {
            "ratios": ratios, "on": "the first item (prompt/class and seed) of the run", "steps": spec.steps}})


class PABFamily(_PeerFamily):
    name = "pab"
    summary = ("diffusers PyramidAttentionBroadcast: reuse attention outputs inside a timestep range "
               "(blocks still run; only attention is skipped)")
    options = {
        "spatial": Option(parse_pos_int, "self-attention computed every SPATIAL calls in range", 2),
        "cross": Option(parse_pos_int, "cross-attention computed every CROSS calls in range (PixArt only)", 4),
        "range": Option(parse_pair, "timestep range LO-HI where self-attention may be reused", (100.0, 800.0)),
        "cross_range": Option(parse_pair, "timestep range LO-HI where cross-attention may be reused", (100.0, 800.0)),
    }

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps  # every block runs; the skipped attention is in the row's peer stats

    def prepare(self, spec, ctx):
        from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast
        from diffusers.hooks.pyramid_attention_broadcast import _PYRAMID_ATTENTION_BROADCAST_HOOK

        settings = dict(spatial_attention_block_skip_range=spec.get("spatial", 2),
                        cross_attention_block_skip_range=spec.get("cross", 4),
                        spatial_attention_timestep_skip_range=spec.get("range", (100.0, 800.0)),
                        cross_attention_timestep_skip_range=spec.get("cross_range", (100.0, 800.0)))

        def attach(pipe):
            def apply(model, hook):
                cfg = PyramidAttentionBroadcastConfig(current_timestep_callback=lambda: hook.timestep, **settings)
                apply_pyramid_attention_broadcast(model, cfg)

            return attach_diffusers_hooks(pipe, apply, (_PYRAMID_ATTENTION_BROADCAST_HOOK,))

        info = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
        return Prepared(spec, attach, info)


class FasterCacheFamily(_PeerFamily):
    name = "fastercache"
    summary = ("diffusers FasterCache: extrapolate self-attention between computed steps, and approximate the "
               "unconditional CFG branch from the conditional one (CFG-cache; PixArt only)")
    options = {
        "spatial": Option(parse_pos_int, "self-attention computed every SPATIAL calls in range", 2),
        "range": Option(parse_pair, "timestep range LO-HI where self-attention may be extrapolated", (-1.0, 681.0)),
        "uncond": Option(parse_pos_int, "CFG-cache: the unconditional branch computed every UNCOND steps in range", 5),
        "uncond_range": Option(parse_pair, "timestep range LO-HI where the unconditional branch may be skipped",
                               (-1.0, 641.0)),
        "weight": Option(parse_float, "attention extrapolation weight (diffusers' default 0.5)", 0.5),
    }

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps  # every block runs (on half the batch where CFG-cache skips uncond)

    def prepare(self, spec, ctx):
        from diffusers.hooks import FasterCacheConfig, apply_faster_cache
        from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK

        # FasterCache's CFG-cache assumes the batch is [uncond, cond] (PixArt); DiTPipeline batches
        # [cond, uncond], and without CFG there is no branch to skip. There it runs as "guidance distilled":
        # attention extrapolation only.
        cfg_cache = ctx.cfg_batch == "uncond,cond"
        weight = spec.get("weight", 0.5)
        settings = dict(
            spatial_attention_block_skip_range=spec.get("spatial", 2),
            spatial_attention_timestep_skip_range=spec.get("range", (-1.0, 681.0)),
            unconditional_batch_skip_range=spec.get("uncond", 5),
            unconditional_batch_timestep_skip_range=spec.get("uncond_range", (-1.0, 641.0)),
            tensor_format="BCHW", is_guidance_distilled=not cfg_cache,
        )

        def attach(pipe):
            def apply(model, hook):
                cfg = FasterCacheConfig(current_timestep_callback=lambda: hook.timestep,
                                        attention_weight_callback=lambda _: weight, **settings)
                apply_faster_cache(model, cfg)

            inner = ((COND_SPLIT_HOOK, _AddedCondSplitHook()),) if cfg_cache else ()
            return attach_diffusers_hooks(pipe, apply, (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK),
                                          inner_hooks=inner, count_uncond_skips=cfg_cache)

        info = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
        info["attention_weight"] = weight
        notes = None if cfg_cache else (
            f"CFG-cache off: the pipeline batches {ctx.cfg_batch or 'no CFG branches'}, "
            "FasterCache needs [uncond, cond]")
        return Prepared(spec, attach, {"config": info, "cfg_cache": cfg_cache, **({"note": notes} if notes else {})})


for _fam in (FirstBlockCacheFamily(), TaylorSeerFamily(), MagCacheFamily(), PABFamily(), FasterCacheFamily()):
    register_family(_fam)

