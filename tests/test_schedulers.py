"""A plan names denoising steps, not model calls: second-order and PNDM schedulers through real pipelines."""

import pytest
import torch
from diffusers import HeunDiscreteScheduler, KDPM2DiscreteScheduler, PNDMScheduler

from ilf import ILFConfig, ScheduleError, apply_ilf, count_block_forwards
from ilf.runtime.clock import SchedulerClock
from ilf.schedule import loop_ratio
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # KDPM2 on NumPy 2

LOOP = (1, 3)  # m = 3 loop blocks of 6: a feedback call costs 6 + 3 + 1 blocks


def _generate(pipe, kind, steps=5):
    g = torch.Generator().manual_seed(0)
    if kind == "dit":
        out = pipe(class_labels=[1, 7], num_inference_steps=steps, generator=g, output_type="latent")
    else:
        out = pipe(["a red cat", "a dog"], num_inference_steps=steps, generator=g, output_type="latent",
                   height=16, width=16, **pixart_call_kwargs())
    return torch.as_tensor(out.images)


def _pipe(kind, scheduler):
    pipe = tiny_pipeline(kind, num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler
    return pipe


def _record(rt):
    """Per transformer call: (located step, feedback on, the call's t, the step's gap, t_post)."""
    seen, orig = [], rt.plan_call

    def plan_call(call):
        orig(call)
        step, loop = call.step(), rt.active  # the loop executor is armed only on a feedback call
        t_post = None if loop is None else float(torch.as_tensor(loop.t_post).flatten()[0])
        seen.append((step.index, loop is not None, step.t, step.gap, t_post))

    rt.plan_call = plan_call
    return seen


# (scheduler, 5-step calls, denoising step of each call)
SCHEDULERS = {
    "heun": (lambda: HeunDiscreteScheduler(), [0, 0, 1, 1, 2, 2, 3, 3, 4]),
    "kdpm2": (lambda: KDPM2DiscreteScheduler(), [0, 0, 1, 1, 2, 2, 3, 3, 4]),
    "pndm-plms": (lambda: PNDMScheduler(skip_prk_steps=True), [0, 0, 1, 2, 3, 4]),
    "pndm-prk": (lambda: PNDMScheduler(), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 4]),
}


@pytest.mark.parametrize("kind", ["pixart-alpha", "dit"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_call_of_a_feedback_step_gets_feedback_with_its_steps_gap(kind, name):
    make, steps_of_calls = SCHEDULERS[name]
    pipe = _pipe(kind, make())
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="outer:2", t_post="rescale"))
    seen = _record(rt)
    with count_block_forwards(pipe) as counter:
        _generate(pipe, kind, steps=5)
    assert [s[0] for s in seen] == steps_of_calls
    on_calls = [i for i, s in enumerate(seen) if s[1]]
    assert on_calls == [i for i, k in enumerate(steps_of_calls) if k in (0, 1, 3, 4)]
    assert counter.total == 6 * len(seen) + 4 * len(on_calls)  # heun / kdpm2: 82 (70 before the fix)
    # each step's gap: its first call's timestep minus the next step's first call's timestep (0 at the end)
    ts = pipe.scheduler.timesteps.tolist()
    first = [steps_of_calls.index(k) for k in range(5)]
    step_t = [ts[i] for i in first] + [0.0]
    k = loop_ratio(3, 6, "m/n")
    for step, on, t, gap, t_post in seen:
        assert gap == pytest.approx(step_t[step] - step_t[step + 1], abs=1e-3)
        if on:
            assert t_post == pytest.approx(max(t - gap * k, 0.0), abs=1e-3)


def test_heun_block_count_of_the_issue():
    pipe = _pipe("pixart-alpha", HeunDiscreteScheduler())
    apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="outer:2"))
    with count_block_forwards(pipe) as counter:
        _generate(pipe, "pixart-alpha", steps=5)
    assert (counter.calls, counter.total, counter.feedback) == (9, 82, 7)


@pytest.mark.parametrize("name", ["heun", "pndm-prk"])
def test_untrained_feedback_with_t_post_none_is_stock_under_other_schedulers(name):
    pipe = _pipe("pixart-alpha", SCHEDULERS[name][0]())
    ref = _generate(pipe, "pixart-alpha")
    apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="all", t_post="none"))
    with count_block_forwards(pipe) as fed:  # an attach that attached nothing would count 6 per call
        out = _generate(pipe, "pixart-alpha")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert fed.calls > 0 and fed.total == fed.calls * (6 + 3 + 1) and fed.feedback == fed.calls


def test_a_repeated_timestep_without_a_step_counter_is_refused_clearly():
    class Sched:  # an unknown scheduler: one call per step, a repeated timestep, no step counter
        timesteps = torch.tensor([900.0, 600.0, 600.0, 300.0])
        step_index = None
        begin_index = None

    sched = Sched()
    clock = SchedulerClock(lambda: sched)
    assert clock.locate(torch.tensor([900.0])).index == 0
    sched.begin_index = 3  # the counter points elsewhere: the value must be found, and it is ambiguous
    with pytest.raises(ScheduleError, match="occurs 2 times.*verified list"):
        clock.locate(torch.tensor([600.0]))
