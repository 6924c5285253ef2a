"""Training a feedback for a flow-matching backbone (SD3, FlowMatchEulerDiscreteScheduler) end to end."""

import json

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from ilf import apply_ilf
from ilf.adapters import get_adapter
from ilf.tiny import tiny_pipeline
from ilf.train.config import TrainConfig
from ilf.train.paths import Conditions, replay, sample_paths
from ilf.train.trainer import train


def _cfg(tiny_world, out, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "sd3"), data=tiny_world / "captions", loop=(2, 4),
                lr=1e-2, batch_size=4, max_steps=4, checkpoint_every=0, log_every=1, max_sequence_length=16,
                progress=False, inference_t_post="none", distill="fad")
    base.update(kw)
    return TrainConfig(**base)


def _sd3_conds(model, n=3):
    g = torch.Generator().manual_seed(2)
    c = model.config
    cond = {"encoder_hidden_states": torch.randn(n, 5, c.joint_attention_dim, generator=g),
            "pooled_projections": torch.randn(n, c.pooled_projection_dim, generator=g)}
    return Conditions(cond, {k: v[:1] * 0 for k, v in cond.items()})


def test_replayed_flow_match_euler_update_is_the_schedulers_step():
    pipe = tiny_pipeline("sd3")
    model, n = pipe.transformer, 5
    template = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    path = sample_paths(model, get_adapter(model), template, noise, _sd3_conds(model), n, 4.0)
    nxt = torch.cat([path.states[:, 1:], path.final[:, None]], 1)
    for k in range(n):
        sched = replay(template, n, k, path.states[:, :k], path.outputs[:, :k])
        t = sched.timesteps[k]
        v = path.outputs[:, k].clone().requires_grad_(True)
        x_next = sched.step(v, t, path.states[:, k]).prev_sample
        assert (x_next - nxt[:, k]).abs().max() <= 1e-6, f"step {k}"
        x_next.sum().backward()
        assert v.grad.abs().sum() > 0


def test_trajectory_distillation_trains_an_sd3_feedback_with_the_flow_scheduler(tiny_world, tmp_path):
    result = train(_cfg(tiny_world, tmp_path / "traj", distill="trajectory", student_steps=4, feedback_steps="last:2",
                        rollout_size=8, rollout_every=2, guidance_scale=3.0))
    meta = json.loads((result.feedback_dir / "ilf_config.json").read_text())
    assert meta["config"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert meta["backbone"]["fingerprint"]["class"] == "SD3Transformer2DModel"
    log = [json.loads(x) for x in (tmp_path / "traj" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss_distill"] for r in log if "loss_distill" in r]
    assert len(losses) == 4 and all(v > 0 for v in losses)
    assert load_file(str(result.feedback_dir / "ilf_feedback.safetensors"))["scales"].abs().sum() > 0
    pipe = DiffusionPipeline.from_pretrained(tiny_world / "sd3")
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=4, height=16, width=16, max_sequence_length=16, output_type="np",
              guidance_scale=3.0)
    ref = pipe("a red cat", generator=torch.Generator().manual_seed(0), **kw).images
    apply_ilf(pipe, result.feedback_dir)
    out = pipe("a red cat", generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(out - ref).max() > 1e-4  # the trained feedback acts on the real pipeline


def test_fad_trains_an_sd3_feedback_on_captioned_images(tiny_world, tmp_path):
    result = train(_cfg(tiny_world, tmp_path / "fad", distill="fad", t_post="rescale"))
    log = [json.loads(x) for x in (tmp_path / "fad" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss_distill" in r]
    assert len(steps) == 4 and all(r["loss_distill"] > 0 and r["loss_diffusion"] > 0 for r in steps)
    assert load_file(str(result.feedback_dir / "ilf_feedback.safetensors"))["scales"].abs().sum() > 0


def test_flow_match_grids_align_at_k_times_n_minus_1_plus_1_and_the_default_picks_one():
    from ilf.train.paths import aligned_teacher_steps, default_teacher_steps

    sched = tiny_pipeline("sd3").scheduler  # FlowMatchEuler, shift 3: both ends on every grid
    assert aligned_teacher_steps(sched, 4)[:3] == [7, 10, 13]
    assert default_teacher_steps(sched, 4) == 10


def test_validation_grid_runs_on_an_sd3_backbone(tiny_world, tmp_path):
    # the grid passes the pipeline's own call defaults: SD3 takes neither clean_caption nor resolution binning
    from PIL import Image

    train(_cfg(tiny_world, tmp_path / "val", max_steps=2, validate_every=2, validation_prompts=["a red cat"]))
    grid = Image.open(tmp_path / "val" / "validation" / "step-00000002.png")
    assert grid.height == 3 * 16  # rows: plain 20, plain 10, ILF 10 (16 px images)
