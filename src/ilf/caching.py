"""The paper's caching baseline (§2.2, Fig. 6, Tables 1 and 6), attachable with one call.

On refresh steps every block runs and each cacheable block keeps its residual r = B(x) − x, i.e. its
attention, cross-attention and feed-forward results as the block adds them to its input. On the other steps
a cacheable block does not run: its output is x_new + r. For MMDiT blocks (SD3, Flux) this holds per stream
(image and text each keep their residual); a stream the block does not return stays `None`.
"""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook
from torch import nn

from .adapters import get_adapter
from .adapters.blocks import IMAGE_STREAM, BlockStack
from .attached import CACHE_ATTR, get_cache, get_runtime, refuse_diffusers_cache, resolve_target
from .clock import StepInfo
from .config import CacheConfig
from .errors import ILFError, ScheduleError
from .hooks import CACHE_BLOCK_HOOK, CACHE_MODEL_HOOK, ArgBinder, HookHandle, check_removable, register, unregister
from .schedule import cache_refresh_steps



class _CacheModelHook(ModelHook):
    def __init__(self, runtime: "PaperCache"):
        super().__init__()
        self.runtime = runtime

    def pre_forward(self, module, *args, **kwargs):
        self.runtime.begin_call(args, kwargs, kwargs.pop("ilf_cache_refresh", None))
        return args, kwargs


class _CacheBlockHook(ModelHook):
    def __init__(self, runtime: "PaperCache", binder: ArgBinder, stack: BlockStack):
        super().__init__()
        self.runtime = runtime
        self.binder = binder  # the block class's signature, read at attach
        self.stack = stack
        self.residual: dict | None = None  # stream → [B, L, D] from the last refresh step

    def new_forward(self, module, *args, **kwargs):
        x = {k: self.binder.get(args, kwargs, k) for k in self.stack.streams}  # the streams it was given
        r = self.residual
        if self.runtime.refresh or r is None or r[IMAGE_STREAM].shape != x[IMAGE_STREAM].shape:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self.residual = {k: None if v is None else (v - x[k]).detach()
                             for k, v in self.stack.as_streams(out).items()}
            return out
        return self.stack.as_output({k: None if v is None else x[k] + v for k, v in r.items()})


class PaperCache:
    """The caching baseline attached to one transformer. Made by `apply_cache`."""

    def __init__(self, model: nn.Module, config: CacheConfig, clock):
        self.model, self.config, self.clock = model, config, clock
        self.adapter = get_adapter(model)
        self.cached = config.block_indices(len(self.adapter.blocks(model)))
        self.refresh = True
        self.step: StepInfo | None = None
        self._hooked: list[HookHandle] = []
        self.model_binder = ArgBinder(type(model).forward)
        self._block_hooks: list[_CacheBlockHook] = []

    def attach(self) -> "PaperCache":
        self._hooked.append(register(self.model, _CacheModelHook(self), CACHE_MODEL_HOOK))
        sites = self.adapter.sites(self.model)
        for i in self.cached:
            hook = _CacheBlockHook(self, ArgBinder(type(sites[i].module).forward), sites[i].stack)
            self._hooked.append(register(sites[i].module, hook, CACHE_BLOCK_HOOK))
            self._block_hooks.append(hook)
        setattr(self.model, CACHE_ATTR, self)
        return self

    def detach(self) -> None:
        for handle in self._hooked:  # refuse before anything changes
            check_removable(handle)
        for handle in reversed(self._hooked):
            unregister(handle)
        self._hooked.clear()
        self._block_hooks.clear()
        delattr(self.model, CACHE_ATTR)

    @torch.compiler.disable  # host work once per call (reads the scheduler); compiled code sees the flag
    def begin_call(self, args, kwargs, refresh: bool | None) -> None:
        refuse_diffusers_cache(self.model, "the paper cache")  # enabled after apply_cache
        if refresh is not None:
            self.refresh = bool(refresh)
            return
        if self.clock is None:
            raise ScheduleError(
                "the paper cache on a bare transformer needs ilf_cache_refresh=True/False per call, or "
                "apply_cache(model, ..., scheduler=scheduler)"
            )
        t = self.adapter.call_inputs(self.model, args, kwargs, self.model_binder).get("timestep")
        self.step = self.clock.locate(self.adapter.to_scheduler_units(self.model, t))
        self.refresh = self.step.index in cache_refresh_steps(self.step.num_steps, self.config.refresh_every)


def apply_cache(target, config: CacheConfig | None = None, *, scheduler=None, **overrides) -> PaperCache:
    """Attach the paper's caching baseline to a pipeline or transformer.

    Example::

        apply_cache(pipe, CacheConfig(location="inner", num_blocks=18, refresh_every=3))  # 326 block fwds / 20 steps
        image = pipe(prompt, num_inference_steps=20).images[0]
        remove_cache(pipe)
    """
    model, clock = resolve_target(target, scheduler)
    config = CacheConfig(**{**(config or CacheConfig()).to_dict(), **overrides})
    if get_cache(model) is not None:
        raise ILFError("the paper cache is already attached; call remove_cache() first")
    if get_runtime(model) is not None:
        raise ILFError("ILF is attached to this transformer; call remove_ilf() before apply_cache()")
    refuse_diffusers_cache(model, "the paper cache")
    return PaperCache(model, config, clock).attach()


def remove_cache(target) -> None:
    model, _ = resolve_target(target)
    cache = get_cache(model)
    if cache is not None:
        cache.detach()
