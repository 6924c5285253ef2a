"""The paper's caching baseline (§2.2, Fig. 6, Tables 1 and 6), attachable with one call.

On refresh steps every block runs and each cacheable block keeps its residual r = B(x) − x, i.e. its
attention, cross-attention and feed-forward results as the block adds them to its input. On the other steps
a cacheable block does not run: its output is x_new + r. For MMDiT blocks (SD3, Flux) this holds per stream
(image and text each keep their residual); a stream the block does not return stays `None`. Where a step
makes several model calls (Flux true CFG: cond, then uncond), each keeps its own residuals.
"""

from __future__ import annotations

from diffusers.hooks import ModelHook
from torch import nn

from ..adapters import get_adapter
from ..adapters.blocks import IMAGE_STREAM, BlockStack
from ..config import CacheConfig
from ..errors import ILFError, ScheduleError
from ..hooks import CACHE_BLOCK_HOOK, CACHE_MODEL_HOOK, ArgBinder, HookHandle, register, unregister_all
from ..schedule import cache_refresh_steps
from .attached import CACHE_ATTR, get_cache, get_runtime, refuse_diffusers_cache, resolve_target
from .clock import StepInfo
from .planner import ModelCall, attach_planner



class _CacheBlockHook(ModelHook):
    def __init__(self, runtime: "PaperCache", binder: ArgBinder, stack: BlockStack):
        super().__init__()
        self.runtime = runtime
        self.binder = binder  # the block class's signature, read at attach
        self.stack = stack
        self.residuals: dict[int, dict] = {}  # branch → {stream: [B, L, D]} from the last refresh step

    def new_forward(self, module, *args, **kwargs):
        x = {k: self.binder.get(args, kwargs, k) for k in self.stack.streams}  # the streams it was given
        branch = self.runtime.branch
        r = self.residuals.get(branch)
        if self.runtime.refresh or r is None or r[IMAGE_STREAM].shape != x[IMAGE_STREAM].shape:
            out = self.fn_ref.original_forward(*args, **kwargs)
            self.residuals[branch] = {k: None if v is None else (v - x[k]).detach()
                                      for k, v in self.stack.as_streams(out).items()}
            return out
        return self.stack.as_output({k: None if v is None else x[k] + v for k, v in r.items()})


class PaperCache:
    """The caching baseline attached to one transformer. Made by `apply_cache`.

    An executor of the call planner (`planner.py`): per call it reads the step from the scheduler's counter on
    the host, and keeps one residual per block *and branch*: the calls of one step (Flux true CFG's cond and
    uncond, Heun's two evaluations) each reuse their own refresh call's residual."""

    control_kwargs = ("ilf_cache_refresh",)
    feature = "the paper cache"  # the planner names it when it refuses a diffusers cache

    def __init__(self, model: nn.Module, config: CacheConfig, clock):
        self.model, self.config, self.clock = model, config, clock
        self.adapter = get_adapter(model)
        self.cached = config.block_indices(len(self.adapter.blocks(model)))
        self.refresh = True
        self.branch = 0  # the call's place among the calls of its step (per-branch residuals)
        self.step: StepInfo | None = None
        self._hooked: list[HookHandle] = []
        self._block_hooks: list[_CacheBlockHook] = []

    def attach(self) -> "PaperCache":
        handle, self.planner = attach_planner(self.model, self, CACHE_MODEL_HOOK, self.clock, self.adapter)
        self._hooked.append(handle)
        sites = self.adapter.sites(self.model)
        for i in self.cached:
            hook = _CacheBlockHook(self, ArgBinder(type(sites[i].module).forward), sites[i].stack)
            self._hooked.append(register(sites[i].module, hook, CACHE_BLOCK_HOOK))
            self._block_hooks.append(hook)
        setattr(self.model, CACHE_ATTR, self)
        return self

    def detach(self) -> None:
        unregister_all(self._hooked)  # refuses before anything changes
        self._block_hooks.clear()
        delattr(self.model, CACHE_ATTR)

    def plan_call(self, call: ModelCall) -> None:
        """Host work once per call: refresh or reuse, and which branch's residuals."""
        refresh = call.controls.get("ilf_cache_refresh")
        if refresh is not None:
            self.refresh, self.branch = bool(refresh), 0
            return
        if self.clock is None:
            raise ScheduleError(
                "the paper cache on a bare transformer needs ilf_cache_refresh=True/False per call, or "
                "apply_cache(model, ..., scheduler=scheduler)"
            )
        self.step, self.branch = call.step(), call.branch()  # the scheduler's counter: no device read
        self.refresh = self.step.index in cache_refresh_steps(self.step.num_steps, self.config.refresh_every)

    def end_call(self) -> None:
        pass


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
