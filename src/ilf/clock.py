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

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import PNDMScheduler

from .errors import ScheduleError

_ATOL = 1e-3


@dataclass(frozen=True)
class StepInfo:
    index: int  # the denoising step: 0 = first (noisiest)
    num_steps: int  # denoising steps of the schedule
    t: float  # this call's timestep
    t_next: float  # the next step's timestep; 0 after the last step
    num_train_timesteps: int
    t_step: float | None = None  # the step's own timestep where a call is not the step's first (Heun's 2nd)

    @property
    def gap(self) -> float:
        """i in eq. 4–5: the step's distance to the next step's timestep (the same for all its calls)."""
        return (self.t if self.t_step is None else self.t_step) - self.t_next


def scalar_timestep(timestep) -> float:
    """The (shared) timestep of a call: pipelines pass one value expanded over the batch."""
    t = torch.as_tensor(timestep).flatten()
    if t.numel() == 0:
        raise ScheduleError("the transformer was called with an empty timestep tensor")
    if t.numel() > 1 and not torch.all(t == t[0]):
        raise ScheduleError(
            "the batch mixes timesteps, so no single schedule step applies; pass ilf_t_post= (and "
            "ilf_feedback=) explicitly when calling the transformer with per-sample timesteps"
        )
    return float(t[0])


@dataclass(frozen=True)
class _Layout:
    """One schedule as plain Python: each call's timestep and denoising step, each step's first call."""

    timesteps: list[float]
    call_step: list[int]
    first_call: list[int]


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


def _call_counter(sched) -> int | None:
    """The index of the call being made, from the scheduler's own counter (None: unknown)."""
    if isinstance(sched, PNDMScheduler):
        return int(sched.counter)
    idx = getattr(sched, "step_index", None)  # None before the first `step()` of a run
    if idx is None:
        idx = getattr(sched, "begin_index", None) or 0
    return int(idx)


class SchedulerClock:
    """Locates a call in `get_scheduler()`'s schedule."""

    def __init__(self, get_scheduler: Callable[[], object]):
        self._get_scheduler = get_scheduler
        self._cached: tuple[object, object, _Layout] | None = None  # (scheduler, its timesteps, layout)

    def _layout(self, sched) -> _Layout:
        ts = sched.timesteps
        if self._cached is not None and self._cached[0] is sched and self._cached[1] is ts:
            return self._cached[2]
        values = [float(v) for v in torch.as_tensor(ts).detach().to("cpu", torch.float64).flatten().tolist()]
        steps = call_steps(sched, len(values))
        first = [steps.index(k) for k in range(steps[-1] + 1)] if steps else []
        layout = _Layout(values, steps, first)
        self._cached = (sched, ts, layout)
        return layout

    def scheduler(self):
        """The scheduler the calls follow now (the pipeline's current one)."""
        return self._get_scheduler()

    def locate(self, timestep) -> StepInfo:
        sched = self._get_scheduler()
        if sched is None or getattr(sched, "timesteps", None) is None:
            raise ScheduleError(
                "the scheduler has no timesteps yet; call scheduler.set_timesteps(n) before the transformer"
            )
        lay = self._layout(sched)
        ts, t, n = lay.timesteps, scalar_timestep(timestep), len(lay.timesteps)
        # The scheduler's own counter is exact where it exists (DPM-Solver, Euler, Heun: step_index; PNDM:
        # counter); otherwise (DDIM, …) the timestep is found by value, which needs it to be unique.
        idx = _call_counter(sched)
        if not (0 <= idx < n and abs(ts[idx] - t) < _ATOL):
            matches = [i for i, v in enumerate(ts) if abs(v - t) < _ATOL]
            if not matches:
                raise ScheduleError(
                    f"timestep {t:g} is not in the scheduler's timesteps; ILF reads the step from "
                    "pipe.scheduler, so the pipeline must denoise with that scheduler"
                )
            if len(matches) > 1 and len({lay.call_step[i] for i in matches}) > 1:
                raise ScheduleError(
                    f"timestep {t:g} occurs {len(matches)} times in {type(sched).__name__}'s timesteps and its "
                    "step counter does not say which call this is; ILF cannot tell the denoising step. Use a "
                    "scheduler from the README's verified list, or pass ilf_feedback= / ilf_t_post= per call"
                )
            idx = matches[0]
        step = lay.call_step[idx]
        num_steps = len(lay.first_call)
        t_step = ts[lay.first_call[step]]
        t_next = ts[lay.first_call[step + 1]] if step + 1 < num_steps else 0.0
        horizon = int(getattr(getattr(sched, "config", None), "num_train_timesteps", 1000) or 1000)
        return StepInfo(
            index=step, num_steps=num_steps, t=t, t_next=t_next, num_train_timesteps=horizon,
            t_step=None if abs(t_step - t) < _ATOL else t_step,
        )


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
    acp = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
    t = min(max(float(timestep), 0.0), len(acp) - 1.0)
    lo = int(t)
    hi = min(lo + 1, len(acp) - 1)
    a = acp[lo] + (acp[hi] - acp[lo]) * (t - lo)
    signal, noise_std = a.sqrt(), (1 - a).sqrt()
    return float(noise_std / (signal + noise_std))
