"""Where a denoising call sits in the pipeline's schedule.

diffusers' PixArt and DiT pipelines pass the transformer only `timestep`. The step index, the schedule
length and the next timestep are read from the pipeline's scheduler at call time (so a new
`num_inference_steps`, or a scheduler swapped after attaching, is seen on the next call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import ScheduleError


@dataclass(frozen=True)
class StepInfo:
    index: int  # 0 = first (noisiest) step
    num_steps: int
    t: float
    t_next: float  # the scheduler's next timestep; 0 after the last step
    num_train_timesteps: int

    @property
    def gap(self) -> float:
        """i in eq. 4–5: the distance to the next timestep."""
        return self.t - self.t_next


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


class SchedulerClock:
    """Locates a timestep in `get_scheduler().timesteps`."""

    def __init__(self, get_scheduler: Callable[[], object]):
        self._get_scheduler = get_scheduler

    def scheduler(self):
        """The scheduler the calls follow now (the pipeline's current one)."""
        return self._get_scheduler()

    def locate(self, timestep) -> StepInfo:
        sched = self._get_scheduler()
        if sched is None or getattr(sched, "timesteps", None) is None:
            raise ScheduleError(
                "the scheduler has no timesteps yet; call scheduler.set_timesteps(n) before the transformer"
            )
        ts = torch.as_tensor(sched.timesteps).detach().to("cpu", torch.float64).flatten()
        t = scalar_timestep(timestep)
        n = len(ts)
        # The scheduler's own counter is exact where it exists (DPM-Solver, Euler, …): None before the
        # first `step()` of a run, k while step k is computed.
        idx = getattr(sched, "step_index", None)
        if idx is None:
            idx = getattr(sched, "begin_index", None) or 0
        if not (0 <= idx < n and abs(float(ts[idx]) - t) < 1e-3):
            matches = torch.nonzero(torch.abs(ts - t) < 1e-3).flatten()
            if len(matches) == 0:
                raise ScheduleError(
                    f"timestep {t:g} is not in the scheduler's timesteps; ILF reads the step from "
                    "pipe.scheduler, so the pipeline must denoise with that scheduler"
                )
            idx = int(matches[0])
        t_next = float(ts[idx + 1]) if idx + 1 < n else 0.0
        horizon = int(getattr(getattr(sched, "config", None), "num_train_timesteps", 1000) or 1000)
        return StepInfo(index=int(idx), num_steps=n, t=t, t_next=t_next, num_train_timesteps=horizon)
