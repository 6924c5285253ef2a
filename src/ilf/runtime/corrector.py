"""The cache-corrector mode: a trained feedback block that corrects a training-free cache's forecast.

diffusers' TaylorSeer skips every block between full steps and returns, for each block, a Taylor
extrapolation of its output. ILF's premise is that partial computation beats skipping and that a trained
block of the backbone's own class can predict features. The corrector joins the two (`corrector_config` has
the equations): on a forecast step blocks `0 … a−1` run fresh, block e's output is TaylorSeer's forecast, F
corrects it with what the fresh blocks saw, and the tail blocks and the output layer run on the result.

Hooks (diffusers' registry, removed without a trace by `detach`):

* on the transformer, the call planner (`planner.py`, as for ILF and the paper cache; this runtime is its
  executor): locates the call on the host without a device read (the scheduler's counter, or `ilf_cache_step=
  (k, n)` passed by a training rollout), decides full or forecast, and picks the cache state of the call's
  branch (calls of one step are branches: Flux's true CFG runs cond, then uncond);
* on blocks a … e: on a full step block a records its input streams and block e its output streams (the
  Taylor factors are updated with diffusers' own `TaylorSeerState`); on a forecast step block a computes the
  correction and every block a … e returns without computing, block e with the corrected streams.

Explicit control for training: `ilf_feedback=False` (the stock forward), `ilf_cache_step=(k, n)` (step k of
an n-step schedule, state kept by the runtime) and `ilf_forecast={"h.<stream>": ĥ_e, "x.<stream>": x̂_a}`
(a forecast step with these forecasts, as recorded by a rollout: no state is read or written).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks import ModelHook
from torch import nn

from ..adapters import BackboneAdapter, get_adapter
from ..adapters.blocks import BlockSite
from ..config import ILFConfig
from ..corrector_config import CorrectorConfig
from ..errors import ScheduleError
from ..feedback import CorrectorModule, FeedbackModule, build_feedback, model_width
from ..hooks import ILF_BLOCK_HOOK, ILF_MODEL_HOOK, ArgBinder, HookHandle, register, unregister_all
from ..warn import warn_user
from .attached import FEEDBACK_ATTR, RUNTIME_ATTR, refuse_attached, refuse_diffusers_cache, resolve_target
from .clock import SchedulerClock
from .corrector_state import BranchCache
from .planner import ModelCall, attach_planner


@dataclass
class CallPlan:
    """What one transformer call does; made by the model hook, read by the block hooks."""

    mode: str  # "stock" | "full" | "forecast"
    step: int | None = None  # the denoising step (scheduled calls)
    branch: BranchCache | None = None  # the branch's cache state
    branch_index: int = 0  # the call's place among its step's calls
    given: dict | None = None  # explicit forecasts (training): {"h.<stream>": [B, L, D], "x.<stream>": ...}
    result: dict | None = None  # block e's corrected output streams, set by block a's hook
    recorded: dict = field(default_factory=dict)  # full step: block a's input streams


def textless_tail(adapter: BackboneAdapter, model: nn.Module) -> int:
    """Trailing blocks of a two-stream stack that return no text stream (SD3's `context_pre_only` last block):
    their input text stream is forecast like every other, so they run fresh after the correction."""
    n = 0
    for site in reversed(adapter.sites(model)):
        if len(site.stack.outputs) > 1 and getattr(site.module, "context_pre_only", False):
            n += 1
        else:
            break
    return n


class _SpanHook(ModelHook):
    """On blocks a … e (the span a forecast step does not compute)."""

    def __init__(self, runtime: "CacheCorrector", site: BlockSite, binder: ArgBinder):
        super().__init__()
        self.runtime, self.index, self.stack, self.binder = runtime, site.index, site.stack, binder

    def new_forward(self, module, *args, **kwargs):
        rt, plan = self.runtime, self.runtime.plan
        if plan is None or plan.mode == "stock":
            return self.fn_ref.original_forward(*args, **kwargs)
        a, e = rt.span
        if plan.mode == "full":
            if self.index == a:  # x_a: the streams block a is given
                call = self.binder.bind(args, kwargs)
                plan.recorded = {k: call.get(k) for k in self.stack.streams}
            out = self.fn_ref.original_forward(*args, **kwargs)
            if self.index == e:
                rt.record_full(plan, streams_of(self.stack.as_streams(out)))
            return out
        if self.index == a:  # forecast step: the correction, from this step's fresh x_a
            call = self.binder.bind(args, kwargs)
            plan.result = rt.correct(plan, {k: call.get(k) for k in self.stack.streams}, call)
        if self.index == e:
            return self.stack.as_output(plan.result)
        # skipped: the streams it was given pass on untouched (read by name, nothing else bound or computed)
        return self.stack.as_output({k: self.binder.get(args, kwargs, k) for k in self.stack.streams})


def streams_of(streams: dict) -> dict:
    """The streams a block returned that exist (SD3's last block returns no text stream)."""
    return {k: v for k, v in streams.items() if v is not None}


class CacheCorrector:
    """The corrector attached to one transformer. Made by `apply_corrector` (or `apply_ilf` on a corrector
    folder); undone by `detach` (`remove_ilf`)."""

    def __init__(self, model: nn.Module, adapter: BackboneAdapter, feedback: FeedbackModule,
                 config: CorrectorConfig, clock: SchedulerClock | None = None):
        self.model, self.adapter, self.feedback, self.config, self.clock = model, adapter, feedback, config, clock
        self.sites = adapter.sites(model)
        self.span = config.span(len(self.sites), textless_tail(adapter, model))
        if tuple(feedback.loop) != (self.span[1], self.span[1]):
            raise ScheduleError(f"this feedback was built for block {feedback.loop[1]}, the corrector forecasts "
                                f"block {self.span[1]}; build it with build_corrector_feedback")
        self.plan: CallPlan | None = None
        self.branches: list[BranchCache] = []  # per branch of a step: its cache state
        self.last: tuple[int, int] | None = None  # (step, branch) of the previous scheduled call
        # set by the pipeline-native trainer: called on every full step with (step, branch, block e's output
        # streams, block a's input streams), what it needs to rebuild every forecast (`corrector_state`)
        self.on_full = None
        self._num_steps: int | None = None
        self.corrected: frozenset[int] = frozenset()  # the forecast steps F runs on, for this run's length
        self.compute: frozenset[int] = frozenset()  # the full steps, for this run's length
        self.on_schedule, self.warned_off_schedule = True, False
        self._hooked: list[HookHandle] = []

    control_kwargs = ("ilf_feedback", "ilf_cache_step", "ilf_forecast")  # the planner pops these per call
    feature = "the corrector"  # the planner names it when it refuses a diffusers cache

    # ---- attach / detach ----
    def attach(self) -> "CacheCorrector":
        self.model.add_module(FEEDBACK_ATTR, self.feedback)
        setattr(self.model, RUNTIME_ATTR, self)
        handle, self.planner = attach_planner(self.model, self, ILF_MODEL_HOOK, self.clock, self.adapter)
        self._hooked.append(handle)
        a, e = self.span
        for site in self.sites[a:e + 1]:
            hook = _SpanHook(self, site, ArgBinder(type(site.module).forward))
            self._hooked.append(register(site.module, hook, ILF_BLOCK_HOOK))
        return self

    def detach(self) -> FeedbackModule:
        unregister_all(self._hooked)  # refuses before anything changes
        del self.model._modules[FEEDBACK_ATTR]
        delattr(self.model, RUNTIME_ATTR)
        self.plan, self.branches = None, []
        return self.feedback

    def reset(self) -> None:
        """Forget the cache state (a new run starts; done automatically when step 0 comes again)."""
        self.branches, self.last = [], None

    # ---- per call (the planner's executor) ----
    def end_call(self) -> None:
        self.plan = None

    def plan_call(self, call: ModelCall) -> None:
        """Host work once per call, no device read: full or forecast step, and the branch's cache state."""
        c = call.controls
        feedback, cache_step, given = c.get("ilf_feedback"), c.get("ilf_cache_step"), c.get("ilf_forecast")
        if feedback is False:
            self.plan = CallPlan("stock")
            return
        if given is not None:
            self.set_schedule(self.config.num_inference_steps)
            self.plan = CallPlan("forecast", step=given.get("step"), given=given)
            return
        if cache_step is not None:  # explicit: branch = the call's position within its step (true CFG: cond,
            step, num_steps = (int(v) for v in cache_step)  # then uncond); an earlier step starts a new run
            if self.last is None or step < self.last[0]:
                self.reset()
            branch = self.last[1] + 1 if self.last is not None and self.last[0] == step else 0
        elif self.clock is not None:
            info = call.step()  # the scheduler's counter, checked against the dtype the model got (Flux bf16)
            step, num_steps, branch = info.index, info.num_steps, call.branch()
            if call.starts_run():  # the planner's rule: a new schedule or an earlier step
                self.reset()
        else:
            raise ScheduleError("the corrector on a bare transformer needs apply_ilf(model, ..., scheduler=...) or "
                                "ilf_cache_step=(step, num_steps) per call")
        self.last = (step, branch)
        while len(self.branches) <= branch:
            dtype = next(self.model.parameters()).dtype  # factors in the model's dtype, as `ilf bench` runs it
            self.branches.append(BranchCache(self.config.order, dtype, self.config.uses_fresh_forecast))
        state = self.branches[branch]
        self.set_schedule(num_steps)
        full = step in self.compute or not state.ready
        self.plan = CallPlan("full" if full else "forecast", step=step, branch=state, branch_index=branch)

    def set_schedule(self, num_steps: int) -> None:
        """The run's length decides F's steps and whether the per-step weights apply (warned once if not)."""
        if num_steps == self._num_steps:
            return
        self._num_steps = num_steps
        self.compute = frozenset(self.config.compute_steps(num_steps))  # the full steps of this run length
        self.corrected = self.config.corrected_steps(num_steps)
        self.on_schedule = num_steps == self.config.num_inference_steps
        if not self.on_schedule and not self.warned_off_schedule:
            self.warned_off_schedule = True
            warn_user(f"this corrector was built for {self.config.num_inference_steps} steps; a {num_steps}-step "
                      "run uses TaylorSeer's own forecast (its per-step weights do not apply). Call the pipeline "
                      f"with num_inference_steps={self.config.num_inference_steps}.")  # ilf.warn: the user's line

    def record_full(self, plan: CallPlan, out_e: dict) -> None:
        """A full step: update the branch's cache with block e's output (and x_a where it is forecast)."""
        x_a = streams_of(plan.recorded)
        plan.branch.update(plan.step, out_e, x_a)
        if self.on_full is not None:
            self.on_full(plan.step, plan.branch_index, out_e, x_a)

    def forecasts(self, plan: CallPlan) -> dict:
        """This forecast step's inputs (given by a training call, or from the branch's cache; see
        `BranchCache.forecasts`)."""
        if plan.given is not None:
            return plan.given
        return plan.branch.forecasts(plan.step)

    def learned_forecast(self, fc: dict, stream: str, x_a: dict) -> torch.Tensor:
        """ĥ_e = TaylorSeer's forecast + Σ_j mix[step, j] · b_j, b_3 = the innovation x_a − x̂_a of the stream
        where it is forecast (the weights of this step; TaylorSeer's own forecast off-schedule)."""
        t = fc[f"t.{stream}"]
        step = fc.get("step")
        if not self.config.learned_forecast or step is None or not self.on_schedule:
            return t
        w = self.feedback.mix[int(step)].to(t.dtype)  # [4] or [4, D]: w[j] broadcasts over [B, L, D]
        out = t + w[0] * fc[f"b0.{stream}"] + w[1] * fc[f"b1.{stream}"] + w[2] * fc[f"b2.{stream}"]
        if f"x.{stream}" in fc and x_a.get(stream) is not None and x_a[stream].shape == t.shape:
            out = out + w[3] * (x_a[stream] - fc[f"x.{stream}"].to(t.dtype))
        return out

    def correct(self, plan: CallPlan, x_a: dict, call_a: dict) -> dict:
        """Block e's corrected output streams: base + s · (F(z) − z), where base is the cache's (learned) forecast
        (ĥ_e, or x_a + forecast residual) and z what F sees (the base, plus the innovation for "output")."""
        fc, cfg, img = self.forecasts(plan), self.config, self.adapter.image_stream
        stack_e = self.sites[self.span[1]].stack
        # None where block e returns no such stream (SD3's last block: no text stream)
        base = {k: self.learned_forecast(fc, k, x_a) if f"t.{k}" in fc else None for k in stack_e.streams}
        if cfg.forecast == "residual":  # x_a + Taylor(h_e − x_a) = ĥ_e + (x_a − x̂_a), per stream
            base = {k: v if v is None or f"x.{k}" not in fc else v + (x_a[k] - fc[f"x.{k}"].to(v.dtype))
                    for k, v in base.items()}
        step = fc.get("step")
        if step is None or int(step) not in self.corrected:  # F does not run on this step
            return base
        z = base[img]  # [B, L, D]
        if cfg.forecast == "output" and cfg.feed == "innovation":
            z = z + (x_a[img] - fc[f"x.{img}"].to(z.dtype))
        conditioning = {k: v for k, v in call_a.items() if k not in stack_e.streams}
        text = {k: (base[k] if base[k] is not None else x_a.get(k)) for k in stack_e.streams if k != img}
        fed = stack_e.as_streams(self.feedback(**conditioning, **text, **{img: z}))[img]  # F(z) [B, L, D]
        base[img] = base[img] + self.feedback.scales[0].to(z.dtype) * (fed.to(z.dtype) - z)
        return base


def build_corrector_feedback(model: nn.Module, config: CorrectorConfig, adapter: BackboneAdapter) -> FeedbackModule:
    """A new, untrained F for `config` on `model`: a block built like block e (a copy of it with
    `init="copy"`), one zero scale; on the model's device and dtype."""
    _, e = config.span(len(adapter.sites(model)), textless_tail(adapter, model))
    fb = build_feedback(model, ILFConfig(loop=(e, e), init=config.init, t_post="none"), adapter)
    ref = next(model.parameters())
    module = CorrectorModule(fb.block, fb.loop, config.mix_shape(model_width(model)))
    return module.to(device=ref.device, dtype=ref.dtype).train(model.training)


def apply_corrector(target, config: CorrectorConfig | None = None, *, feedback: FeedbackModule | None = None,
                    scheduler=None) -> CacheCorrector:
    """Attach a cache corrector (new and untrained unless `feedback` is given) to a pipeline or transformer.

    Untrained (scale 0) the pipeline's output is exactly the cache's own (diffusers' TaylorSeer with the same
    settings). A trained corrector is attached from its folder with `apply_ilf(pipe, folder)`.

    Example::

        apply_corrector(pipe, CorrectorConfig(interval=3, warmup=3, fresh=1, correct_steps="all"))
        image = pipe(prompt, num_inference_steps=20).images[0]   # 9 full steps, 11 corrected forecasts
        remove_ilf(pipe)
    """
    model, clock = resolve_target(target, scheduler)
    adapter = get_adapter(model)
    refuse_attached(model, "apply_corrector()")
    refuse_diffusers_cache(model, "the corrector")
    return attach_corrector(model, adapter, config or CorrectorConfig(), feedback, clock)


def attach_corrector(model: nn.Module, adapter: BackboneAdapter, config: CorrectorConfig,
                     feedback: FeedbackModule | None, clock: SchedulerClock | None) -> CacheCorrector:
    """Attach to a transformer already checked (`apply_corrector`, `apply_ilf`): nothing attached, no cache."""
    feedback = feedback if feedback is not None else build_corrector_feedback(model, config, adapter)
    return CacheCorrector(model, adapter, feedback, config, clock).attach()
