"""Trajectory distillation (the paper's ILF, trained for an inference schedule) on recordings of the pipeline's own
sampling: the schedule is recorded, rollouts refresh, the update is the scheduler's own for any deterministic
scheduler class, errors name the fix, a non-finite loss stops before the update."""

import json
import warnings

import pytest
import torch
from accelerate import Accelerator
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from safetensors.torch import load_file

from ilf import ILFConfig, ILFError, apply_ilf
from ilf.tiny import call_kwargs, tiny_pipeline
from ilf.train import checkpoint as ckpt
from ilf.train.config import TrainConfig
from ilf.train.native import PipelineObjective
from ilf.train.record import unpack
from ilf.train.trainer import train


@pytest.mark.parametrize("cls,config", [
    (DPMSolverMultistepScheduler, {}),  # DPM-Solver++ 2M, lower-order final step
    (DPMSolverMultistepScheduler, {"solver_order": 3}),
    (UniPCMultistepScheduler, {}),  # with its corrector, which reuses the last sample
    (DDIMScheduler, {}),
    (EulerDiscreteScheduler, {}),  # scaled model input, sigma-space states
])
def test_a_replayed_feedback_step_is_the_schedulers_own_update_for_any_scheduler_class(cls, config, tmp_path):
    """The scheduler copied after the pipeline's own set_timesteps and replayed with the rollout's inputs gives
    every step of a 7-step run exactly (multistep history, lower-order steps, correctors, scaled inputs), and
    its update is differentiable in the model's prediction."""
    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **config)
    runtime = apply_ilf(pipe, ILFConfig(loop=(1, 3), feedback_steps="all", t_post="none"))
    with torch.no_grad():
        runtime.feedback.scales.fill_(0.5)
    obj = PipelineObjective(pipe=pipe, runtime=runtime, prompts=[3, 7, 11], call_kwargs={"guidance_scale": 3.0},
                            output_dir=tmp_path, num_steps=7, teacher_steps=7, rollout_every=10, per_device=3,
                            accelerator=Accelerator(cpu=True), seed=0, record_batch=3, progress=False)
    obj.prepare()
    obj.refresh(0)
    skel, tensors = obj.cache.get(obj._rank_file(obj.rollout_dir, 0))
    for k in range(7):
        nxt = unpack(skel["steps"][k]["prev"], tensors)  # what the pipeline's solver returned
        x_next = obj.replay_step(pipe.transformer, 0, k)
        assert (x_next - nxt).abs().max() <= 1e-6 * nxt.abs().max(), f"step {k}"
        x_next.sum().backward()  # the update is differentiable in the feedback's parameters
        assert runtime.feedback.scales.grad.abs().sum() > 0
        runtime.feedback.zero_grad()


def test_targets_are_the_teachers_states_at_the_students_next_timesteps(tmp_path):
    """With a finer stock run (10 steps for a 5-step student), target k is the stock state reached at the
    student's timestep k+1 (the last: the final state); a run of the teacher alone gives those very states."""
    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=True)
    runtime = apply_ilf(pipe, ILFConfig(loop=(1, 3), feedback_steps="last:2", t_post="none"))
    obj = PipelineObjective(pipe=pipe, runtime=runtime, prompts=[3, 7], call_kwargs={"guidance_scale": 4.0},
                            output_dir=tmp_path, num_steps=5, teacher_steps=None, rollout_every=10, per_device=2,
                            accelerator=Accelerator(cpu=True), seed=0, record_batch=2, progress=False)
    obj.prepare()
    assert obj.m == 10  # DPM-Solver++'s leading spacing: the 5-step grid is every second point of the 10-step one
    states = []
    with torch.no_grad():  # the stock 10-step run from the same seeded noises, stepped by hand
        from ilf.train.record import PipelineRecorder

        with PipelineRecorder(pipe, inject={"ilf_feedback": False}) as rec, rec.run() as run:
            pipe(**obj._call(0, 10))
        after = [s.prev for s in run.steps]  # the state each stock step reached
    _, teacher = obj.cache.get(obj._rank_file(obj.root / "teacher-10", 0))
    for k in obj.forecast_steps:  # the trained steps 3, 4: the student's t_{k+1} is the teacher's t_{2(k+1)}
        assert torch.equal(teacher[f"target.{k}"], after[2 * (k + 1) - 1])


def _traj_cfg(tiny_world, out, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), prompts=tiny_world / "prompts.txt",
                loop=(2, 4), lr=1e-2, batch_size=4, max_steps=6, checkpoint_every=0, log_every=1,
                max_sequence_length=16, progress=False, distill="trajectory", student_steps=4,
                feedback_steps="last:2", rollout_every=3, inference_t_post="none")
    base.update(kw)
    return TrainConfig(**base)


def test_trajectory_run_records_its_schedule_logs_rollouts_and_warns_off_schedule(tiny_world, tmp_path):
    result = train(_traj_cfg(tiny_world, tmp_path / "run", max_steps=7, guidance_scale=3.0))
    meta = json.loads((result.feedback_dir / "ilf_config.json").read_text())
    assert meta["config"]["num_inference_steps"] == 4
    assert meta["config"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert meta["config"]["guidance_scale"] == 3.0 and meta["config"]["feedback_steps"] == "last:2"
    assert meta["extra"]["train"]["distill"] == "trajectory"
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    events = [(r["event"], r["step"]) for r in log if "event" in r]
    assert events == [("prepare", 0), ("rollout", 0), ("rollout", 3), ("rollout", 6)]  # every 3 iterations
    assert all(r["rollout_seconds"] > 0 for r in log if r.get("event") == "rollout")
    losses = [r["loss_distill"] for r in log if "loss_distill" in r]
    assert len(losses) == 7 and all(v > 0 for v in losses)
    assert load_file(str(result.feedback_dir / "ilf_feedback.safetensors"))["scales"].abs().sum() > 0

    pipe = DiffusionPipeline.from_pretrained(tiny_world / "pixart-alpha")
    pipe.set_progress_bar_config(disable=True)
    apply_ilf(pipe, result.feedback_dir)
    kw = call_kwargs("pixart-alpha")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pipe("a red cat", num_inference_steps=4, **kw)
        assert not [w for w in seen if "trained for" in str(w.message)]
        pipe("a red cat", num_inference_steps=6, **kw)
        pipe("a red cat", num_inference_steps=6, **kw)
    off = [w for w in seen if "trained for 4" in str(w.message)]
    assert len(off) == 1 and "num_inference_steps=4" in str(off[0].message)


def test_trajectory_trains_the_schedulers_own_update_for_another_scheduler(tiny_world, tmp_path):
    result = train(_traj_cfg(tiny_world, tmp_path / "unipc", max_steps=2, scheduler="UniPCMultistepScheduler"))
    meta = json.loads((result.feedback_dir / "ilf_config.json").read_text())
    assert meta["config"]["scheduler"] == "UniPCMultistepScheduler"
    with pytest.raises(ILFError, match="not a diffusers scheduler class"):
        train(_traj_cfg(tiny_world, tmp_path / "bad", scheduler="NoSuchScheduler"))


def test_trajectory_config_errors_name_the_fix(tiny_world, tmp_path):
    with pytest.raises(ILFError, match="must exceed --student-steps"):
        _traj_cfg(tiny_world, tmp_path, teacher_steps=4)
    with pytest.raises(ILFError, match="reads no --data; give --prompts"):
        _traj_cfg(tiny_world, tmp_path, prompts=None, data=tiny_world / "captions")
    with pytest.raises(ILFError, match="no step in a 4-step schedule"):
        train(_traj_cfg(tiny_world, tmp_path / "none", feedback_steps="none"))


def test_trajectory_non_finite_loss_stops_before_the_update(tiny_world, tmp_path, monkeypatch):
    from ilf.train.trainer import NonFiniteLossError

    real, calls = PipelineObjective.loss, {"n": 0}

    def poisoned(self, *a, **k):
        calls["n"] += 1
        terms, n = real(self, *a, **k)
        if calls["n"] == 3:
            terms.total = terms.total * float("nan")
        return terms, n

    monkeypatch.setattr(PipelineObjective, "loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3.*step-00000002"):
        train(_traj_cfg(tiny_world, out, max_steps=6, checkpoint_every=2))
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2]
    assert (ckpt.checkpoint_dir(out, 2) / "native_state.json").is_file()
    assert not (out / "feedback").exists()
