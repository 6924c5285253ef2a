"""Recording the user's own pipeline while it samples: what the pipeline-native trainer replays.

Nothing here knows a family. Two hooks watch one ordinary pipeline call:

* a model hook on `pipe.transformer` (diffusers' hook registry, removed without a trace) keeps every call's
  arguments by name (latents, timestep, text embeddings, position ids, guidance, masks … whatever the
  pipeline passes) and its output;
* a wrap of `pipe.scheduler.step` keeps what the solver was given at each step (the guided output y_k, the
  timestep, the sample x_k) and what it returned (x_{k+1}); a deep copy of the scheduler taken at its first
  step, after the pipeline's own `set_timesteps` (sigmas, FLUX's dynamic-shift mu, …), is the template every
  replay starts from.

The transformer calls made since the previous `scheduler.step` belong to the step (one call with CFG batched,
two with true CFG). Nested arguments (tuples of rotary tensors, lists of per-sample tensors, dicts) are kept as
they are; `pack` / `unpack` turn them into safetensors tensors plus a JSON skeleton.
"""

from __future__ import annotations

import copy
import json
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import ModelHook

from ..adapters.blocks import map_tensors
from ..errors import ILFError
from ..hooks import ArgBinder, register, unregister
from .guidance import relative_error, tolerance

RECORD_HOOK = "ilf_record"
CONTROL_PREFIX = "ilf_"  # our own control kwargs (a rollout's planner pops them): never recorded


def primary_output(out):
    """The model's prediction out of what its forward returned: `(sample, ...)`, `.sample`, or itself (a tensor,
    or Z-Image's list of per-sample tensors)."""
    if isinstance(out, tuple):
        return out[0]
    return getattr(out, "sample", out)


def detach(value):
    """`value` with every tensor detached, through tuples, lists and dicts."""
    return map_tensors(value, torch.Tensor.detach)


@dataclass
class StepRecord:
    """One `scheduler.step` call and the transformer calls that preceded it."""

    t: Any  # the timestep given to the step (a tensor or a number)
    sample: torch.Tensor  # x_k
    model_output: torch.Tensor  # y_k: the guided output the solver was given
    prev: torch.Tensor | None  # x_{k+1}: what the solver returned
    calls: list[dict] = field(default_factory=list)  # {"kwargs": {name: value}, "output": primary output}


@dataclass
class RecordedRun:
    template: Any = None  # the scheduler just before its first step (a deep copy)
    steps: list[StepRecord] = field(default_factory=list)
    extra_step_kwargs: dict = field(default_factory=dict)  # non-tensor step() kwargs besides return_dict


class _CallHook(ModelHook):
    def __init__(self, recorder: "PipelineRecorder", binder: ArgBinder, inject: dict):
        super().__init__()
        self.recorder, self.binder, self.inject = recorder, binder, inject

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs, **self.inject)  # outermost hook: ours reach the planner
        self.recorder.on_call(self.binder.bind(args, kwargs), out)
        return out


class TemplateCaptured(Exception):
    """Raised from the step wrap to end a pipeline call once the template is taken (`capture_template`)."""


class PipelineRecorder:
    """Records `pipe`'s calls while attached (a context manager); `run()` delimits one pipeline call.

    keep_call(k): whether step k's transformer arguments are kept (the trainer keeps only the forecast steps');
    outputs are always kept. inject: control kwargs added to every transformer call (`{"ilf_feedback": False}`:
    the stock model, with a corrector attached), never recorded.
    """

    def __init__(self, pipe, keep_call=lambda k: True, stop_after_template: bool = False, inject: dict | None = None):
        self.pipe, self.keep_call, self.stop_after_template = pipe, keep_call, stop_after_template
        self.inject = dict(inject or {})
        self.run_: RecordedRun | None = None
        self.pending: list[dict] = []
        self._handle = None
        self._step_binder = ArgBinder(type(pipe.scheduler).step, first="model_output")

    # ---- attach / detach ----
    def __enter__(self) -> "PipelineRecorder":
        model, sched = self.pipe.transformer, self.pipe.scheduler
        self._handle = register(model, _CallHook(self, ArgBinder(type(model).forward), self.inject), RECORD_HOOK)
        self._had_step = "step" in sched.__dict__
        original = sched.step

        def step(*args, **kwargs):
            return self.on_step(original, args, kwargs)

        sched.step = step
        return self

    def __exit__(self, *exc) -> None:
        unregister(self._handle)
        sched = self.pipe.scheduler
        if not self._had_step:
            sched.__dict__.pop("step", None)

    @contextmanager
    def run(self):
        self.run_, self.pending = RecordedRun(), []
        yield self.run_
        if self.pending:  # calls after the last step: not a sampling loop we understand
            raise ILFError(f"{type(self.pipe).__name__} called its transformer {len(self.pending)} time(s) after its "
                           "last scheduler step; ilf can only replay pipelines that call the model, then step")
        self.run_ = None

    # ---- events ----
    def on_call(self, bound: dict, out) -> None:
        if self.run_ is None:
            return
        k = len(self.run_.steps)
        kwargs = {n: detach(v) for n, v in bound.items() if not n.startswith(CONTROL_PREFIX)}
        self.pending.append({"kwargs": kwargs if self.keep_call(k) else None, "output": detach(primary_output(out))})

    def on_step(self, original, args, kwargs):
        run = self.run_
        if run is None:
            return original(*args, **kwargs)
        bound = self._step_binder.bind(args, kwargs)
        if run.template is None:
            run.template = copy.deepcopy(self.pipe.scheduler)
            run.template.__dict__.pop("step", None)  # the copy is a plain scheduler
            extra = {k: v for k, v in bound.items()
                     if k not in ("model_output", "timestep", "sample", "return_dict", "generator")}
            if any(not (v is None or isinstance(v, (bool, int, float, str))) for v in extra.values()):
                raise ILFError(f"the pipeline passes scheduler.step {sorted(extra)}, which a recording cannot replay; "
                               "ilf replays steps given numbers and strings only")
            run.extra_step_kwargs = extra
            if self.stop_after_template:
                raise TemplateCaptured
        if bound.get("generator") is not None:
            run.extra_step_kwargs["generator"] = True  # noted: a stochastic step cannot be replayed
        out = original(*args, **kwargs)
        prev = out[0] if isinstance(out, tuple) else out.prev_sample
        run.steps.append(StepRecord(t=detach(bound["timestep"]), sample=bound["sample"].detach(),
                                    model_output=bound["model_output"].detach(), prev=prev.detach(),
                                    calls=self.pending))
        self.pending = []
        return out


def capture_template(pipe, call: dict, inject: dict | None = None):
    """The pipeline's scheduler as it stands before its first step of `call` (the first step's transformer calls
    are made, with `inject`; the call ends there)."""
    with PipelineRecorder(pipe, keep_call=lambda k: False, stop_after_template=True, inject=inject) as rec, \
            rec.run() as run:
        try:
            pipe(**call)
        except TemplateCaptured:
            rec.pending = []
    return run.template


# ---- safetensors: nested values as tensors + a JSON skeleton ----

def pack(value, tensors: dict, seen: dict | None = None, prefix: str = "t"):
    """`value` as a JSON skeleton; its tensors go into `tensors` (a tensor met twice, e.g. the same text
    embedding at every step, is stored once)."""
    seen = {} if seen is None else seen
    if torch.is_tensor(value):
        key = (value.data_ptr(), value.storage_offset(), tuple(value.shape), tuple(value.stride()), value.dtype)
        if key not in seen:
            seen[key] = f"{prefix}{len(tensors)}"
            t = value.detach().contiguous().cpu()
            if t.untyped_storage().nbytes() != t.numel() * t.element_size():  # a view (Wan's t.expand(1)):
                t = t.clone()  # safetensors refuses tensors that share memory with another
            tensors[seen[key]] = t
        return {"T": seen[key]}
    if isinstance(value, (list, tuple)):
        return {"L" if isinstance(value, list) else "U": [pack(v, tensors, seen, prefix) for v in value]}
    if isinstance(value, dict):
        return {"D": {str(k): pack(v, tensors, seen, prefix) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"V": value}
    raise ILFError(f"the pipeline passed its transformer a {type(value).__name__}, which a recording cannot store; "
                   "ilf records tensors, numbers, strings and lists/tuples/dicts of them")


def unpack(skeleton, tensors: dict, device=None):
    """The inverse of `pack`; tensors moved to `device`."""
    if "T" in skeleton:
        t = tensors[skeleton["T"]]
        return t.to(device) if device is not None else t
    if "L" in skeleton:
        return [unpack(s, tensors, device) for s in skeleton["L"]]
    if "U" in skeleton:
        return tuple(unpack(s, tensors, device) for s in skeleton["U"])
    if "D" in skeleton:
        return {k: unpack(s, tensors, device) for k, s in skeleton["D"].items()}
    return skeleton["V"]


def write_shard(path: Path, skeleton: dict, tensors: dict) -> int:
    """Write one shard atomically (a temporary file renamed into place); returns its size in bytes."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"skeleton": json.dumps(skeleton)})
    os.replace(tmp, path)
    return path.stat().st_size


def read_shard(path: Path, device=None):
    """(skeleton, tensors) of a shard written by `write_shard`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        skeleton = json.loads(f.metadata()["skeleton"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return skeleton, tensors


def replay_check(run, step_kwargs: dict) -> None:
    """The scheduler, replayed from its template with the recorded inputs, must land on every recorded state."""
    if step_kwargs.get("generator"):
        raise ILFError("the pipeline passes a generator to scheduler.step: its solver is stochastic (e.g. ancestral or "
                       "SDE sampling), so a replayed step cannot land on the recorded state. Train with a "
                       "deterministic scheduler (DPM-Solver++, UniPC, Euler, flow matching Euler)")
    sched = copy.deepcopy(run.template)
    for k, s in enumerate(run.steps):
        out = sched.step(s.model_output, s.t, s.sample, return_dict=False, **step_kwargs)[0]
        err = relative_error(out, s.prev)
        if err > tolerance(s.prev.dtype):
            raise ILFError(f"step {k}: replaying {type(sched).__name__}.step from the recorded inputs does not land on "
                           f"the recorded state (relative error {err:.2g}); a stochastic or stateful solver cannot "
                           "be replayed. Train with a deterministic scheduler (DPM-Solver++, UniPC, Euler)")


class ShardCache:
    """Shards read from disk, the most recent kept in RAM up to `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.items, self.size = max_bytes, OrderedDict(), 0

    def get(self, path: Path):
        key = str(path)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value = read_shard(path)
        nbytes = sum(t.numel() * t.element_size() for t in value[1].values())
        self.items[key] = (value, nbytes)
        self.size += nbytes
        while self.size > self.max_bytes and len(self.items) > 1:
            _, (_, n) = self.items.popitem(last=False)
            self.size -= n
        return value

    def clear(self) -> None:
        self.items.clear()
        self.size = 0
