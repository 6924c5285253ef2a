"""The corrector's one state model (issue 25): the planner owns runs and branches, attach-time checks run once,
a forecast step's skipped blocks bind nothing, the schedule is built once per run length."""

import pytest
import torch

import ilf.runtime.corrector as corrector_module
import ilf.pipeline as pipeline_module
from ilf import CorrectorConfig, apply_ilf
from ilf.corrector_config import CorrectorConfig as ConfigClass
from ilf.hooks import ArgBinder
from ilf.tiny import call_kwargs, tiny_pipeline

STEPS = 8


@pytest.fixture
def pipe():
    p = tiny_pipeline("pixart-alpha", num_layers=6)
    p.set_progress_bar_config(disable=True)
    return p


def run(pipe, **kw) -> torch.Tensor:
    out = pipe(["a red cat", "a blue dog"], num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
               output_type="latent", **call_kwargs("pixart-alpha"), **kw)
    return out.images


def test_a_run_cut_after_its_first_step_does_not_shift_the_next_runs_branches(pipe):
    """A run that stops after step 0 (the trainer's template capture does) and a new run's step 0: the planner
    sees a new schedule, so the new run starts over at branch 0 instead of taking its step 0 for a second call."""
    rt = apply_ilf(pipe, CorrectorConfig(interval=2, warmup=2, num_inference_steps=STEPS))
    with torch.no_grad():
        rt.feedback.mix.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    reference = run(pipe)

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    with pytest.raises(Stop):
        run(pipe, callback=stop, callback_steps=1)  # PixArt's per-step callback, after step 0
    assert len(rt.branches) == 1
    assert torch.equal(run(pipe), reference)
    assert len(rt.branches) == 1  # one call per step (CFG batched): one branch, never a phantom second


def test_attach_time_checks_run_once(pipe, monkeypatch):
    seen = []
    real = pipeline_module.refuse_diffusers_cache

    def counted(model, what):
        seen.append(what)
        return real(model, what)

    monkeypatch.setattr(pipeline_module, "refuse_diffusers_cache", counted)
    monkeypatch.setattr(corrector_module, "refuse_diffusers_cache", counted)
    apply_ilf(pipe, CorrectorConfig(num_inference_steps=STEPS))
    assert len(seen) == 1


def test_skipped_blocks_bind_nothing_and_the_schedule_is_built_once(pipe, monkeypatch):
    """Per call, two bindings whatever the depth: the planner's (the call's timestep) and block a's (its input
    streams); blocks 1 … e of a forecast step only pass their streams on. TaylorSeer's step plan is built once
    per run length, not per call."""
    apply_ilf(pipe, CorrectorConfig(interval=2, warmup=2, num_inference_steps=STEPS))
    binds, plans, calls = [0], [0], [0]
    real_bind, real_plan = ArgBinder.bind, ConfigClass.compute_steps

    def bind(self, args, kwargs):
        binds[0] += 1
        return real_bind(self, args, kwargs)

    def plan(self, n):
        plans[0] += 1
        return real_plan(self, n)

    monkeypatch.setattr(ArgBinder, "bind", bind)
    monkeypatch.setattr(ConfigClass, "compute_steps", plan)
    hook = pipe.transformer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    run(pipe)
    assert calls[0] == STEPS  # one call per step
    assert binds[0] == 2 * calls[0]
    built = plans[0]
    assert 1 <= built < calls[0]  # when the run length is first seen (the full steps, and F's steps from them)
    run(pipe)
    hook.remove()
    assert plans[0] == built  # a second run of the same length builds nothing
