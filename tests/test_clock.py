"""SchedulerClock: the step from the scheduler's counter on the host, values matched within the rounding of
the dtype the model received, the scheduler's exact value kept."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ilf import ScheduleError
from ilf.runtime.clock import SchedulerClock, timestep_tolerance


def test_the_tolerance_follows_the_dtype_the_model_received():
    # Flux: t cast to bf16, then /1000 in bf16: two roundings of half a unit in the last place each
    assert timestep_tolerance(968.75, torch.bfloat16, 1e-3) == pytest.approx(1e-3 + 2 + 1.953125, rel=1e-6)
    assert 0.4 < timestep_tolerance(968.75, torch.float16, 1e-3) < 0.6
    assert timestep_tolerance(968.75, torch.float32) == timestep_tolerance(968.75, None) == 1e-3


def _flux_dev(steps=28):
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    sched.set_timesteps(steps, mu=1.15)
    return sched


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_rounded_flux_timestep_is_found_by_value_with_its_exact_value(dtype):
    sched = _flux_dev()
    clock = SchedulerClock(lambda: sched)
    exact = sched.timesteps.double().tolist()
    for i, t in enumerate(sched.timesteps):
        sched._step_index = 99  # a counter that points nowhere: the value decides
        model_t = (t.to(dtype) / 1000)  # what FluxPipeline hands the model
        step = clock.locate(model_t.double() * 1000, dtype=dtype)
        assert (step.index, step.t) == (i, exact[i])


def test_two_steps_inside_the_tolerance_are_refused():
    class Sched:  # no usable counter, two timesteps 1 unit apart: bf16 rounding cannot tell them apart
        timesteps = torch.tensor([1000.0, 999.0, 500.0])
        step_index = None
        begin_index = 2

    clock = SchedulerClock(lambda: Sched())
    with pytest.raises(ScheduleError, match="occurs 2 times"):
        clock.locate(torch.tensor(999.5), dtype=torch.bfloat16)
    assert clock.locate(torch.tensor(999.0)).index == 1  # float32: exact


def test_locate_call_reads_the_value_only_to_verify_the_run_s_first_call(monkeypatch):
    sched = _flux_dev(6)
    clock = SchedulerClock(lambda: sched)
    reads = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or real(self))
    for i, t in enumerate(sched.timesteps):
        step = clock.locate_call((t.to(torch.bfloat16) / 1000).expand(2), units=1e-3)
        assert (step.index, step.t) == (i, float(real(sched.timesteps)[i]))
        sched._step_index = i + 1  # what scheduler.step() does
    assert len(reads) == 2  # the schedule once, the first call's timestep once


def test_locate_call_with_a_counter_that_never_moves_reads_every_call():
    """A loop that steps another scheduler leaves pipe.scheduler's counter at None: the values decide."""
    sched = _flux_dev(4)
    clock = SchedulerClock(lambda: sched)
    assert [clock.locate_call(t / 1000, units=1e-3).index for t in sched.timesteps] == [0, 1, 2, 3]
