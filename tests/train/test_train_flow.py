"""Training a feedback for a flow-matching backbone (SD3, FlowMatchEulerDiscreteScheduler) end to end."""

import json

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from ilf import apply_ilf
from ilf.train.config import TrainConfig
from ilf.train.trainer import train


def _cfg(tiny_world, out, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "sd3"), data=tiny_world / "captions", loop=(2, 4),
                lr=1e-2, batch_size=4, max_steps=4, checkpoint_every=0, log_every=1, max_sequence_length=16,
                progress=False, inference_t_post="none", distill="fad")
    base.update(kw)
    return TrainConfig(**base)


def test_trajectory_distillation_trains_an_sd3_feedback_with_the_flow_scheduler(tiny_world, tmp_path):
    result = train(_cfg(tiny_world, tmp_path / "traj", distill="trajectory", student_steps=4, feedback_steps="last:2",
                        data=None, prompts=tiny_world / "prompts.txt", rollout_every=2, guidance_scale=3.0))
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


def test_the_flow_teacher_grid_is_the_first_that_holds_the_students(tiny_world, tmp_path):
    """FlowMatch Euler (shift 3) puts both ends on every grid, so its grids nest at k·(N − 1) + 1 steps: for a
    4-step student the trajectory's teacher is 10 steps (not 8 or 9), found on the pipeline's own schedules."""
    from accelerate import Accelerator

    from ilf import ILFConfig
    from ilf.train.native import PipelineObjective

    pipe = DiffusionPipeline.from_pretrained(tiny_world / "sd3")
    pipe.set_progress_bar_config(disable=True)
    runtime = apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="last:2", t_post="none"))
    obj = PipelineObjective(pipe=pipe, runtime=runtime, prompts=["a red cat"], call_kwargs={"max_sequence_length": 16},
                            output_dir=tmp_path, num_steps=4, teacher_steps=None, rollout_every=2, per_device=1,
                            accelerator=Accelerator(cpu=True), seed=0, record_batch=1, progress=False)
    assert obj._teacher_steps() == 10


def test_validation_grid_runs_on_an_sd3_backbone(tiny_world, tmp_path):
    # the grid passes the pipeline's own call defaults: SD3 takes neither clean_caption nor resolution binning
    from PIL import Image

    train(_cfg(tiny_world, tmp_path / "val", max_steps=2, validate_every=2, validation_prompts=["a red cat"]))
    grid = Image.open(tmp_path / "val" / "validation" / "step-00000002.png")
    assert grid.height == 3 * 16  # rows: plain 20, plain 10, ILF 10 (16 px images)
