"""The call planner: one model-level hook that locates each transformer call on the host and hands it to an
executor, which decides what the call does and arms its own block hooks for that call only.

The three executors, ILF's inner loop (`ilf_loop.py`), the paper cache (`paper_cache.py`) and the corrector of
TaylorSeer (`corrector.py`), and the bench's cache-context hook (`bench/hook_context.py`) locate calls through the
same `CallPlanner.locate`, i.e. `SchedulerClock.locate_call`: the scheduler's own
counter, read on the host, verified against the timestep's value once per schedule (and only where the
counter cannot be trusted, see `SchedulerClock`). No device tensor is read per call, so on a GPU the launch
queue never waits for the host.

Writing another executor (a fourth mode under the planner)::

    class MyExecutor:
        control_kwargs = ("my_flag",)          # keyword arguments a caller may pass the model; popped
        feature = "my mode"                    # named in the planner's refusal of a diffusers cache

        def plan_call(self, call: ModelCall) -> None:
            # host only, once per model call, outside any compiled region: read call.inputs (the model's
            # arguments by name), call.controls (the popped control kwargs), call.step() (StepInfo, located
            # once; raises ScheduleError without a scheduler) and call.branch() (0, 1, …: the call's place
            # among the calls of one step, e.g. Flux true CFG's cond / uncond). Never read a tensor's value.
            # Decide, then arm: set the one attribute your block hooks test (None on a plain call).

        def end_call(self) -> None:
            # disarm: drop per-call tensors (runs after the model returned; not after it raised, so
            # plan_call must also re-arm from scratch). Whole-model compilation traces it: keep it to
            # attribute stores such as `self.armed = None`.

    handle, planner = attach_planner(model, MyExecutor(), "my_model_hook", clock)  # clock: SchedulerClock or None
    ...
    hooks.unregister(handle)                                                     # detach

`clock` comes from `attached.resolve_target(pipe_or_model, scheduler)`. Without an executor, `CallPlanner(model,
adapter, clock).locate(model_timestep)` alone gives the sync-free `StepInfo` (the bench's cache-context hook
uses it so); `SchedulerClock.locate(t, dtype=...)` is the older path that always reads the value.

Block hooks of an executor keep their plain path to `if self.executor.armed is None: return original(...)`:
one attribute test, which `torch.compile` guards as one `is None` check (never the length of a dict or a
block index), so plain calls compile to one graph per block class. On the armed path, branch only on role
flags many blocks share and keep per-block state on the block's own hook, never in a dict indexed by block
(`ilf_loop.FeedbackLoop.block`): regional compilation then stays at one graph per block class and role.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from diffusers.hooks import ModelHook
from torch import nn

from ..adapters import BackboneAdapter, get_adapter
from ..errors import ScheduleError
from ..hooks import ArgBinder, HookHandle, register
from .attached import refuse_diffusers_cache
from .clock import SchedulerClock, StepInfo

__all__ = ["CallExecutor", "CallPlanner", "ModelCall", "PlannerHook", "attach_planner"]


class CallPlanner:
    """Locates calls of one model in its clock's schedule, on the host; counts calls per step (branches)."""

    def __init__(self, model: nn.Module, adapter: BackboneAdapter, clock: SchedulerClock | None):
        self.model, self.adapter, self.clock = model, adapter, clock
        self.binder = ArgBinder(type(model).forward)  # the model's signature, read once
        self._last: tuple[object, int, int] | None = None  # (schedule, step index, branch) of the last call
        self.new_run = True  # whether the last located call began a run (executors drop their run state then)

    def locate(self, timestep) -> StepInfo:
        """The step of a call with the model's `timestep` argument; sync-free (see `SchedulerClock.locate_call`)."""
        if self.clock is None:
            raise ScheduleError("this transformer was attached without a scheduler, so its calls have no step")
        if timestep is None:
            raise ScheduleError("the transformer was called without `timestep`; the step is read from it")
        return self.clock.locate_call(timestep, self.adapter.timestep_units(self.model))

    def branch_of(self, step: StepInfo) -> int:
        """0 for the first call of a step, 1 for the next call of the same step (true CFG's uncond, Heun's
        second evaluation), …; reset when the schedule or the step changes."""
        sched = self.clock.scheduler() if self.clock is not None else None
        schedule = getattr(sched, "timesteps", None)
        last = self._last
        branch = last[2] + 1 if last is not None and last[0] is schedule and last[1] == step.index else 0
        # a new run: a new schedule (the pipeline's `set_timesteps` made new timesteps), or an earlier step
        self.new_run = last is None or last[0] is not schedule or step.index < last[1]
        self._last = (schedule, step.index, branch)
        return branch


class ModelCall:
    """One transformer call as an executor sees it: arguments by name, popped controls, and (lazily, once)
    its step and branch."""

    def __init__(self, planner: CallPlanner, args: tuple, kwargs: dict, controls: dict):
        self.planner, self.args, self.kwargs, self.controls = planner, args, kwargs, controls
        self._inputs: dict | None = None
        self._step: tuple[StepInfo, int] | None = None

    @property
    def inputs(self) -> dict:
        if self._inputs is None:
            self._inputs = self.planner.adapter.call_inputs(self.planner.model, self.args, self.kwargs,
                                                            self.planner.binder)
        return self._inputs

    def step(self) -> StepInfo:
        if self._step is None:
            step = self.planner.locate(self.inputs.get("timestep"))
            self._step = (step, self.planner.branch_of(step))
            self._new_run = self.planner.new_run
        return self._step[0]

    def branch(self) -> int:
        self.step()
        return self._step[1]

    def starts_run(self) -> bool:
        """Whether this call begins a new run of the pipeline (a new schedule, or an earlier step)."""
        self.step()
        return self._new_run


class CallExecutor(Protocol):
    control_kwargs: tuple[str, ...]
    feature: str  # what the executor is, for messages ("ILF", "the corrector", …)

    def plan_call(self, call: ModelCall) -> None: ...

    def end_call(self) -> None: ...


class PlannerHook(ModelHook):
    """On the transformer: pops the executor's control kwargs, plans the call on the host, disarms after."""

    def __init__(self, planner: CallPlanner, executor: CallExecutor):
        super().__init__()
        self.planner, self.executor = planner, executor

    def pre_forward(self, module, *args, **kwargs):
        controls = {k: kwargs.pop(k) for k in self.executor.control_kwargs if k in kwargs}
        self._plan(args, kwargs, controls)
        return args, kwargs

    @torch.compiler.disable  # host work once per call; compiled code sees only the armed state
    def _plan(self, args, kwargs, controls) -> None:
        # a diffusers cache enabled after attach keeps per-block state that follows no executor: refused here,
        # for every executor, before a block runs (one attribute read)
        refuse_diffusers_cache(self.planner.model, self.executor.feature)
        self.executor.plan_call(ModelCall(self.planner, args, kwargs, controls))

    def post_forward(self, module, output: Any):
        self.executor.end_call()  # traced by dynamo: keep it to attribute stores (no reads, no branches)
        return output


def attach_planner(model: nn.Module, executor: CallExecutor, name: str, clock: SchedulerClock | None,
                   adapter: BackboneAdapter | None = None) -> tuple[HookHandle, CallPlanner]:
    """Register the planner hook for `executor` on `model` under hook name `name`."""
    planner = CallPlanner(model, adapter or get_adapter(model), clock)
    return register(model, PlannerHook(planner, executor), name), planner
