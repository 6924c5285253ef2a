"""Trajectory distillation: the sampler is the pipeline's, the update is the scheduler's, the run is recorded."""

import json
import warnings

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file

from ilf import ILFError, apply_ilf
from ilf.adapters import get_adapter
from ilf.tiny import pixart_call_kwargs, tiny_pipeline
from ilf.train import checkpoint as ckpt
from ilf.train.config import TrainConfig
from ilf.train.paths import Conditions, grid_targets, new_scheduler, replay, sample_paths
from ilf.train.trainer import train

PROMPTS = ["a red cat", "a blue dog", "a small square"]


def _dit_conds(n=3):
    return Conditions({"class_labels": torch.tensor([3, 7, 11][:n])}, {"class_labels": torch.tensor([1000])})


def _dit_pipe():
    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("kind", ["pixart-alpha", "dit"])
def test_sampler_is_the_pipelines_own_guided_run(kind):
    pipe = tiny_pipeline(kind)
    pipe.set_progress_bar_config(disable=True)
    model = pipe.transformer
    noise = randn_tensor((3, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    if kind == "dit":
        conds = _dit_conds()
        out = pipe(class_labels=[3, 7, 11], guidance_scale=4.0, num_inference_steps=6, output_type="np",
                   generator=torch.Generator().manual_seed(5)).images
    else:
        with torch.no_grad():
            pe, pm, ne, nm = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=True, negative_prompt="",
                                                max_sequence_length=16, clean_caption=False)
        conds = Conditions({"encoder_hidden_states": pe, "encoder_attention_mask": pm},
                           {"encoder_hidden_states": ne[:1], "encoder_attention_mask": nm[:1]})
        # the pipeline gets the same embeddings (the empty prompt's once, as the sampler broadcasts it)
        out = pipe(negative_prompt=None, prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne[:1].expand(3, -1, -1),
                   negative_prompt_attention_mask=nm[:1].expand(3, -1), guidance_scale=4.0, num_inference_steps=6,
                   output_type="latent", latents=noise, **pixart_call_kwargs()).images
    path = sample_paths(model, get_adapter(model), pipe.scheduler, noise, conds, 6, 4.0, batch_size=3)
    assert path.states.shape == (3, 6, 4, 8, 8) and path.outputs.shape == (3, 6, 4, 8, 8)
    # in smaller batches too, up to the rounding of batch-size-dependent kernels (~1e-4 after 6 steps)
    halves = sample_paths(model, get_adapter(model), pipe.scheduler, noise, conds, 6, 4.0, batch_size=2)
    torch.testing.assert_close(halves.final, path.final, rtol=0, atol=2e-3)
    final = path.final
    if kind == "dit":  # DiTPipeline always decodes
        with torch.no_grad():
            final = pipe.vae.decode(final / pipe.vae.config.scaling_factor).sample
        final = (final / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        assert abs(final - out).max() < 1e-6
    else:
        torch.testing.assert_close(final, out, rtol=0, atol=1e-6)
    torch.testing.assert_close(path.states[:, 0], noise)  # DPM-Solver's init_noise_sigma is 1


@pytest.mark.parametrize("cls,config", [
    (DPMSolverMultistepScheduler, {}),  # DPM-Solver++ 2M, lower-order final step
    (DPMSolverMultistepScheduler, {"solver_order": 3}),
    (UniPCMultistepScheduler, {}),  # with its corrector, which reuses the last sample
    (DDIMScheduler, {}),
    (EulerDiscreteScheduler, {}),  # scaled model input, sigma-space states
])
def test_replayed_update_is_the_schedulers_step_over_a_whole_run(cls, config):
    pipe = _dit_pipe()
    template = cls.from_config(pipe.scheduler.config, **config)
    model, n = pipe.transformer, 7
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    path = sample_paths(model, get_adapter(model), template, noise, _dit_conds(), n, 3.0)
    nxt = torch.cat([path.states[:, 1:], path.final[:, None]], 1)  # the state after each step
    for k in range(n):
        sched = replay(template, n, k, path.states[:, :k], path.outputs[:, :k])
        t = sched.timesteps[k]
        sched.scale_model_input(path.states[:, k], t)
        eps = path.outputs[:, k].clone().requires_grad_(True)
        x_next = sched.step(eps, t, path.states[:, k]).prev_sample
        assert (x_next - nxt[:, k]).abs().max() <= 1e-6, f"step {k}"
        x_next.sum().backward()  # the update is differentiable in the prediction
        assert eps.grad is not None and eps.grad.abs().sum() > 0


def test_targets_are_the_teachers_states_at_the_students_next_grid_points():
    pipe = _dit_pipe()
    model = pipe.transformer
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    student, teacher = new_scheduler(pipe.scheduler, 5), new_scheduler(pipe.scheduler, 10)
    # linspace spacing: the 5-step grid is every second point of the 10-step one
    assert student.timesteps.tolist() == teacher.timesteps[::2].tolist()
    path = sample_paths(model, get_adapter(model), pipe.scheduler, noise, _dit_conds(2), 10, 4.0)
    targets = grid_targets(student, teacher, path)
    assert targets.shape == (2, 5, 4, 8, 8)
    for k in range(4):
        assert torch.equal(targets[:, k], path.states[:, 2 * (k + 1)])
    assert torch.equal(targets[:, 4], path.final)
    with pytest.raises(ILFError, match=r"not lie on the teacher's 6-step grid; choose --teacher-steps from \[8, 12, 16"):
        grid_targets(new_scheduler(pipe.scheduler, 4), new_scheduler(pipe.scheduler, 6), path)


def test_two_call_schedulers_are_refused_with_the_fix():
    with pytest.raises(ILFError, match="HeunDiscreteScheduler calls the model 2 times per step.*--scheduler"):
        new_scheduler(HeunDiscreteScheduler(), 5)


def _traj_cfg(tiny_world, out, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), data=tiny_world / "captions",
                loop=(2, 4), lr=1e-2, batch_size=4, max_steps=6, checkpoint_every=0, log_every=1,
                max_sequence_length=16, progress=False, distill="trajectory", student_steps=4,
                feedback_steps="last:2", rollout_size=8, rollout_every=3, inference_t_post="none")
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

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_world / "pixart-alpha")
    pipe.set_progress_bar_config(disable=True)
    apply_ilf(pipe, result.feedback_dir)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pipe("a red cat", num_inference_steps=4, **pixart_call_kwargs())
        assert not [w for w in seen if "trained for" in str(w.message)]
        pipe("a red cat", num_inference_steps=6, **pixart_call_kwargs())
        pipe("a red cat", num_inference_steps=6, **pixart_call_kwargs())
    off = [w for w in seen if "trained for 4" in str(w.message)]
    assert len(off) == 1 and "num_inference_steps=4" in str(off[0].message)


def test_trajectory_trains_the_schedulers_own_update_for_another_scheduler(tiny_world, tmp_path):
    result = train(_traj_cfg(tiny_world, tmp_path / "unipc", max_steps=2, scheduler="UniPCMultistepScheduler"))
    meta = json.loads((result.feedback_dir / "ilf_config.json").read_text())
    assert meta["config"]["scheduler"] == "UniPCMultistepScheduler"
    with pytest.raises(ILFError, match="not a diffusers scheduler class"):
        train(_traj_cfg(tiny_world, tmp_path / "bad", scheduler="NoSuchScheduler"))


def test_trajectory_resume_restores_the_rollout_buffer_and_ends_identical(tiny_world, tmp_path):
    full = train(_traj_cfg(tiny_world, tmp_path / "full", max_steps=8, checkpoint_every=4))
    train(_traj_cfg(tiny_world, tmp_path / "part", max_steps=4, checkpoint_every=4))
    saved = load_file(str(ckpt.checkpoint_dir(tmp_path / "part", 4) / "rollout.safetensors"))
    assert int(saved["rollout_step"]) == 3 and saved["states"].shape == (8, 4, 4, 8, 8)
    # step 4 is no refresh point (every 3): the resumed run must use the buffer rolled out at step 3
    resumed = train(_traj_cfg(tiny_world, tmp_path / "part", max_steps=8, checkpoint_every=4, resume="latest"))
    a = load_file(str(full.feedback_dir / "ilf_feedback.safetensors"))
    b = load_file(str(resumed.feedback_dir / "ilf_feedback.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trajectory_config_errors_name_the_fix(tiny_world, tmp_path):
    with pytest.raises(ILFError, match="must exceed --student-steps"):
        _traj_cfg(tiny_world, tmp_path, teacher_steps=4)
    with pytest.raises(ILFError, match="no step in a 4-step schedule"):
        train(_traj_cfg(tiny_world, tmp_path / "none", feedback_steps="none"))


def test_precomputed_teacher_paths_train_the_same_feedback_and_refuse_another_schedule(tiny_world, tmp_path):
    from ilf.train.precompute import precompute_teacher_paths
    from ilf.train.teacher_paths import TeacherPaths

    paths = tmp_path / "paths"
    meta = precompute_teacher_paths(str(tiny_world / "pixart-alpha"), tiny_world / "captions", paths, num_paths=8,
                                    student_steps=4, max_sequence_length=16, batch_size=64, progress=False)
    assert meta["rows"] == 8 and meta["teacher_steps"] == 8 and meta["scheduler"] == "DPMSolverMultistepScheduler"
    assert meta["guidance_scale"] == 4.5  # PixArtAlphaPipeline's own default
    loaded = TeacherPaths(paths)
    assert loaded.targets.shape == (8, 4, 4, 8, 8) and len(loaded.conds) == 8
    direct = train(_traj_cfg(tiny_world, tmp_path / "direct", max_steps=4))
    from_paths = train(_traj_cfg(tiny_world, tmp_path / "from-paths", max_steps=4, data=paths))
    log = (tmp_path / "from-paths" / "train_log.jsonl").read_text()
    assert '"teacher_precomputed": true' in log
    a = load_file(str(direct.feedback_dir / "ilf_feedback.safetensors"))
    b = load_file(str(from_paths.feedback_dir / "ilf_feedback.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    with pytest.raises(ILFError, match=r"made for another run \(student_steps: paths 4 vs run 5"):
        train(_traj_cfg(tiny_world, tmp_path / "other", student_steps=5, data=paths))
    with pytest.raises(ILFError, match="only --distill trajectory"):
        train(_traj_cfg(tiny_world, tmp_path / "fad", distill="fad", data=paths))


def test_trajectory_non_finite_loss_stops_before_the_update(tiny_world, tmp_path, monkeypatch):
    from ilf.train.trainer import NonFiniteLossError
    from ilf.train.trajectory import TrajectoryObjective

    real, calls = TrajectoryObjective.loss, {"n": 0}

    def poisoned(self, *a, **k):
        calls["n"] += 1
        terms, n = real(self, *a, **k)
        if calls["n"] == 3:
            terms.total = terms.total * float("nan")
        return terms, n

    monkeypatch.setattr(TrajectoryObjective, "loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3.*step-00000002"):
        train(_traj_cfg(tiny_world, out, max_steps=6, checkpoint_every=2))
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2]
    assert (ckpt.checkpoint_dir(out, 2) / "rollout.safetensors").is_file()
    assert not (out / "feedback").exists()
