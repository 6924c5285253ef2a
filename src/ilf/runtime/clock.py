"""Where a denoising call sits in the pipeline's schedule.

diffusers' PixArt and DiT pipelines pass the transformer only `timestep`. The step, the schedule length
and the next step's timestep are read from the pipeline's scheduler at call time (so a new
`num_inference_steps`, or a scheduler swapped after attaching, is seen on the next call).

A plan names *denoising steps*, not model calls. Most schedulers make one call per step; second-order
ones (Heun, KDPM2) make two per step but one on the last; PNDM makes four per Runge-Kutta warm-up step
(`skip_prk_steps=False`) or two on its first step (`skip_prk_steps=True`). Every call of a step gets that
step's decision and that step's gap. This runs on the host once per call (outside any compiled region);
the scheduler's timesteps are read into a Python list once per schedule.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import PNDMScheduler

from ..errors import ScheduleError

_ATOL = 1e-3  # the match of a timestep that reached the model in float32 / float64 / an integer dtype
_MANTISSA = {torch.bfloat16: 7, torch.float16: 10}  # the half-precision dtypes a pipeline may round t to


@dataclass(frozen=True)
class StepInfo:
    index: int  # the denoising step: 0 = first (noisiest)
    num_steps: int  # denoising steps of the schedule
    t: float  # this call's timestep: the scheduler's exact value (not the model's rounded copy)
    t_next: float  # the next step's timestep; 0 after the last step
    num_train_timesteps: int
    t_step: float | None = None  # the step's own timestep where a call is not the step's first (Heun's 2nd)

    @property
    def gap(self) -> float:
        """i in eq. 4–5: the step's distance to the next step's timestep (the same for all its calls)."""
        return (self.t if self.t_step is None else self.t_step) - self.t_next


def _half_ulp(x: float, mantissa: int) -> float:
    return 0.0 if x == 0 else 2.0 ** (math.floor(math.log2(abs(x))) - mantissa) / 2


def timestep_tolerance(t: float, dtype: torch.dtype | None = None, units: float = 1.0) -> float:
    """How far (scheduler units) a model's timestep may lie from the scheduler's `t` when it reached the model
    in `dtype`, at `units` model units per scheduler unit (Flux: 1/1000).

    Flux pipelines cast t to the latents' dtype and then divide by 1000 in that dtype: two roundings, each at
    most half a unit in the last place (bf16 near t = 1000: 2 + 1.95 scheduler units; fp16: about 0.5).
    Full-precision and integer timesteps match to 1e-3."""
    m = _MANTISSA.get(dtype)
    if m is None:
        return _ATOL
    return _ATOL + _half_ulp(t, m) + _half_ulp(t * units, m) / units


def scalar_timestep(timestep) -> float:
    """The (shared) timestep of a call: pipelines pass one value expanded over the batch. Reads the value
    into Python (a host-device sync on a GPU): the compatibility and fallback path only."""
    if not torch.is_tensor(timestep):
        return float(timestep)
    values = timestep.detach().flatten().tolist()  # one read
    if not values:
        raise ScheduleError("the transformer was called with an empty timestep tensor")
    if any(v != values[0] for v in values[1:]):
        raise ScheduleError(
            "the batch mixes timesteps, so no single schedule step applies; pass ilf_t_post= (and "
            "ilf_feedback=) explicitly when calling the transformer with per-sample timesteps"
        )
    return float(values[0])


@dataclass
class _Layout:
    """One schedule as plain Python: each call's timestep and denoising step, each step's first call."""

    timesteps: list[float]
    call_step: list[int]
    first_call: list[int]
    calls_seen: int = 0  # model calls located in this schedule so far (0: the next is the run's first)


def call_steps(sched, num_calls: int) -> list[int]:
    """The denoising step of each of the scheduler's `num_calls` model calls."""
    if isinstance(sched, PNDMScheduler):
        prk = 0 if sched.config.skip_prk_steps else len(sched.prk_timesteps)
        warmup = [i // 4 for i in range(prk)]  # Runge-Kutta: 4 calls per step
        plms = num_calls - prk
        if sched.config.skip_prk_steps:  # the first PLMS step evaluates twice (calls 0 and 1)
            return warmup + [max(j - 1, 0) for j in range(plms)]
        return warmup + [prk // 4 + j for j in range(plms)]
    if getattr(sched, "order", 1) == 2:  # Heun, KDPM2: calls 2k and 2k+1 are step k; the last step has one
        return [i // 2 for i in range(num_calls)]
    return list(range(num_calls))


def scheduler_counter(sched) -> tuple[int | None, bool]:
    """(index of the call being made, whether the scheduler has stepped yet) from its own counter, on the host.

    DPM-Solver, Euler, Heun, FlowMatch, UniPC, …: `step_index` (None until the first `step()`, then the
    call index is `begin_index`, 0 unless img2img set it); PNDM: `counter`. (None, False): no counter
    (DDIM, DDPM), the step is found by the timestep's value."""
    if isinstance(sched, PNDMScheduler):
        return int(sched.counter), int(sched.counter) > 0
    if not hasattr(sched, "step_index"):
        return None, False
    idx = sched.step_index
    if idx is None:
        return int(getattr(sched, "begin_index", None) or 0), False
    return int(idx), True


class SchedulerClock:
    """Locates a call in `get_scheduler()`'s schedule.

    Two entry points:

    * `locate_call(model_timestep, units)`: the runtime's path (ILF, the paper cache, the bench's hook context).
      It trusts the scheduler's own counter and reads no device tensor, except to verify the first call of each
      schedule (one read per pipeline call), a call made before the scheduler stepped that is not the run's
      first (true CFG's second branch at step 0), and every call of a scheduler without a counter (DDIM, DDPM).
    * `locate(timestep, dtype=None)`: the compatibility path, a float or tensor in the scheduler's units; it
      always reads the value (a host-device sync for a GPU tensor) and checks the counter against it.

    Both check a value against a tolerance derived from the dtype the model received (`timestep_tolerance`),
    match the nearest timestep only when the counter disagrees, refuse when two steps fall inside the
    tolerance, and return the scheduler's exact timestep.
    """

    def __init__(self, get_scheduler: Callable[[], object]):
        self._get_scheduler = get_scheduler
        self._cached: tuple[object, object, _Layout] | None = None  # (scheduler, its timesteps, layout)

    def _layout(self, sched) -> _Layout:
        ts = sched.timesteps
        if self._cached is not None and self._cached[0] is sched and self._cached[1] is ts:
            return self._cached[2]
        # one read per schedule (a pipeline call sets new timesteps)
        values = [float(v) for v in torch.as_tensor(ts).detach().flatten().tolist()]
        steps = call_steps(sched, len(values))
        first = [steps.index(k) for k in range(steps[-1] + 1)] if steps else []
        layout = _Layout(values, steps, first)
        self._cached = (sched, ts, layout)
        return layout

    def scheduler(self):
        """The scheduler the calls follow now (the pipeline's current one)."""
        return self._get_scheduler()

    def _ready(self):
        sched = self._get_scheduler()
        if sched is None or getattr(sched, "timesteps", None) is None:
            raise ScheduleError(
                "the scheduler has no timesteps yet; call scheduler.set_timesteps(n) before the transformer"
            )
        return sched, self._layout(sched)

    def locate(self, timestep, dtype: torch.dtype | None = None) -> StepInfo:
        """The step of a call whose timestep, in the scheduler's units, is `timestep` (a float or a tensor;
        `dtype`: the dtype the model received it in, for the tolerance; default: the tensor's own)."""
        sched, lay = self._ready()
        if dtype is None and torch.is_tensor(timestep):
            dtype = timestep.dtype
        idx, _ = scheduler_counter(sched)
        return self._step(sched, lay, self._match(sched, lay, idx, scalar_timestep(timestep), dtype, 1.0))

    def locate_call(self, model_timestep, units: float = 1.0) -> StepInfo:
        """The step of a model call from the host: the scheduler's counter, verified against the value only
        where the class docstring says. `model_timestep`: the model's `timestep` argument (model units);
        `units`: model units per scheduler unit (`BackboneAdapter.timestep_units`)."""
        sched, lay = self._ready()
        first = lay.calls_seen == 0
        lay.calls_seen += 1
        idx, stepped = scheduler_counter(sched)
        n = len(lay.timesteps)
        if idx is not None and 0 <= idx < n and not first and stepped:
            return self._step(sched, lay, idx)  # trusted: no device read
        dtype = model_timestep.dtype if torch.is_tensor(model_timestep) else None
        t = scalar_timestep(model_timestep) / units
        return self._step(sched, lay, self._match(sched, lay, idx, t, dtype, units))

    def _match(self, sched, lay: _Layout, idx: int | None, t: float, dtype, units: float) -> int:
        ts = lay.timesteps
        n = len(ts)
        if idx is not None and 0 <= idx < n and abs(ts[idx] - t) <= timestep_tolerance(ts[idx], dtype, units):
            return idx
        matches = [i for i, v in enumerate(ts) if abs(v - t) <= timestep_tolerance(v, dtype, units)]
        if not matches:
            raise ScheduleError(
                f"timestep {t:g} is not in the scheduler's timesteps (nearest "
                f"{min(ts, key=lambda v: abs(v - t), default=float('nan')):g}); ILF reads the step from "
                "pipe.scheduler, so the pipeline must denoise with that scheduler"
            )
        if len({lay.call_step[i] for i in matches}) > 1:
            raise ScheduleError(
                f"timestep {t:g} occurs {len(matches)} times in {type(sched).__name__}'s timesteps (within the "
                f"rounding of {dtype or 'its dtype'}) and its step counter does not say which call this is; ILF cannot tell the denoising step. Use a scheduler from the "
                "README's verified list, or pass ilf_feedback= / ilf_t_post= per call"
            )
        return min(matches, key=lambda i: abs(ts[i] - t))

    def _step(self, sched, lay: _Layout, idx: int) -> StepInfo:
        ts = lay.timesteps
        step = lay.call_step[idx]
        num_steps = len(lay.first_call)
        t, t_step = ts[idx], ts[lay.first_call[step]]
        t_next = ts[lay.first_call[step + 1]] if step + 1 < num_steps else 0.0
        horizon = int(getattr(getattr(sched, "config", None), "num_train_timesteps", 1000) or 1000)
        return StepInfo(index=step, num_steps=num_steps, t=t, t_next=t_next, num_train_timesteps=horizon,
                        t_step=None if t_step == t else t_step)


def flow_sigma(scheduler, timestep: float, noise: str) -> float:
    """The rectified-flow σ ∈ [0, 1] of the noise level at `timestep` (scheduler units), for hooks that read
    one (SeaCache's spectral filter assumes x_t = (1 − σ)·x0 + σ·ε).

    noise "flow": σ = t / num_train_timesteps (flow schedulers' timesteps are σ · num_train_timesteps).
    noise "ddpm": x_t = √ᾱ·x0 + √(1 − ᾱ)·ε has the signal-to-noise ratio of the flow σ = √(1 − ᾱ) / (√ᾱ +
    √(1 − ᾱ)), with ᾱ the scheduler's `alphas_cumprod` at t (interpolated between integer timesteps)."""
    cfg = scheduler.config
    n = int(cfg.num_train_timesteps)
    if noise == "flow":
        return min(1.0, max(0.0, float(timestep) / n))
    if noise != "ddpm":
        raise ScheduleError(f"noise {noise!r} is unknown; expected 'flow' or 'ddpm'")
    acp = _alphas_cumprod(scheduler)
    t = min(max(float(timestep), 0.0), len(acp) - 1.0)
    lo = int(t)
    hi = min(lo + 1, len(acp) - 1)
    a = acp[lo] + (acp[hi] - acp[lo]) * (t - lo)
    signal, noise_std = math.sqrt(a), math.sqrt(1 - a)
    return noise_std / (signal + noise_std)


_ACP: "weakref.WeakKeyDictionary[object, tuple[object, list[float]]]" = weakref.WeakKeyDictionary()


def _alphas_cumprod(scheduler) -> list[float]:
    """The scheduler's ᾱ as Python floats (float64), read once per scheduler and ᾱ tensor."""
    acp = scheduler.alphas_cumprod
    cached = _ACP.get(scheduler)
    if cached is None or cached[0] is not acp:
        cached = (acp, torch.as_tensor(acp, dtype=torch.float64).tolist())
        _ACP[scheduler] = cached
    return cached[1]
