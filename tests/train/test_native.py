"""The pipeline-native corrector trainer on every family's real tiny pipeline.

What must hold for a corrector trained from the pipeline's own sampling:
* a replayed forecast step (the recorded transformer arguments, forecasts rebuilt from full steps only, the
  recovered guidance combination, the scheduler replayed from its template) lands on the state the pipeline
  itself reached with the same corrector — for a corrector whose forecast weights are not zero;
* a trained corrector beats the untrained one (TaylorSeer) on noises and prompts it never saw, at the same
  block forwards;
* what it cannot reproduce is refused with the cause.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from ilf import CorrectorConfig, apply_ilf, count_block_forwards, remove_ilf
from ilf.errors import ILFError
from ilf.tiny import call_kwargs, tiny_pipeline
from ilf.config import ILFConfig
from ilf.train.native import PipelineObjective
from ilf.train.record import unpack

from tiny_runs import CASES, make_pipe

STEPS = 6
CONFIG = dict(interval=2, warmup=2, num_inference_steps=STEPS)
TRAIN_PROMPTS = ["a red cat", "a blue square above a dog", "the small circle", "a large green dog",
                 "a cat left of a square", "the blue circle", "a small red square", "an photo of a dog"]
HELD_OUT = ["a green cat below the circle", "a large blue square"]


# the shared family cases (tests/tiny_runs.py) and the image families with their own tiny pipelines
IMAGE_CASES = {"qwen-image": ("qwen-image", {}), "flux2": ("flux2", {}), "z-image": ("z-image", {})}
ALL_CASES = [*CASES, *IMAGE_CASES]


def make(case: str):
    if case in CASES:
        return make_pipe(case)
    kind, options = IMAGE_CASES[case]
    pipe = tiny_pipeline(kind)
    pipe.set_progress_bar_config(disable=True)
    pipe.kind, pipe.options = kind, options
    return pipe


def prompts_for(pipe, n: int, held_out: bool = False) -> list:
    if pipe.kind == "dit":
        return [5, 9][:n] if held_out else [1, 7, 3, 2, 0, 4, 6, 8][:n]
    return (HELD_OUT if held_out else TRAIN_PROMPTS)[:n]


def call_for(pipe, n: int) -> dict:
    """The case's call options, one negative prompt for every prompt (the trainer sizes it to each batch)."""
    opts = {k: (v[0] if k.startswith("negative_prompt") and isinstance(v, list) else v)
            for k, v in pipe.options.items()}
    return {**call_kwargs(pipe.kind), **opts}


def objective(pipe, runtime, tmp_path, n: int, teacher_steps=None):
    return PipelineObjective(
        pipe=pipe, runtime=runtime, prompts=prompts_for(pipe, n), call_kwargs=call_for(pipe, n),
        output_dir=tmp_path, num_steps=STEPS, teacher_steps=teacher_steps, rollout_every=10, per_device=n,
        accelerator=Accelerator(cpu=True), seed=0, record_batch=n, log=lambda *a: None, progress=False)


@pytest.mark.parametrize("case", ALL_CASES)
def test_a_replayed_forecast_step_lands_on_the_pipelines_own_next_state(case, tmp_path):
    pipe = make(case)
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    with torch.no_grad():
        runtime.feedback.mix.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))  # a non-trivial forecast
    obj = objective(pipe, runtime, tmp_path, 2)
    obj.prepare()
    obj.refresh(0)
    skel, tensors = obj.cache.get(obj._rank_file(obj.rollout_dir, 0))
    assert obj.forecast_steps == [2, 4]  # TaylorSeer interval 2, warm-up 2: steps 0, 1, 3, 5 compute
    for k in obj.forecast_steps:
        recorded = unpack(skel["steps"][k]["prev"], tensors)  # what the pipeline's solver returned
        with torch.no_grad():
            replayed = obj.replay_step(pipe.transformer, 0, k)
            runtime.feedback.mix.zero_()  # the control: TaylorSeer's own forecast lands elsewhere
            control = obj.replay_step(pipe.transformer, 0, k)
            runtime.feedback.mix.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        scale = recorded.abs().max()
        assert (replayed - recorded).abs().max() <= 1e-6 * scale, f"step {k}"  # fp32 rounding (seen: ≤ 1e-7)
        assert (control - recorded).abs().max() > 1e-5 * scale, f"step {k}: the forecast weights did not act"


@pytest.mark.parametrize("case", ALL_CASES)
def test_a_replayed_ilf_step_lands_on_the_pipelines_own_next_state(case, tmp_path):
    """The same recorder trains the paper's ILF (`--distill trajectory`): a replayed feedback step, with the
    feedback block and scales of the run and t_post read off the pipeline's schedule, lands where the pipeline
    went; with the scales zeroed (the stock model) it does not."""
    pipe = make(case)
    runtime = apply_ilf(pipe, ILFConfig(loop=(1, 2), feedback_steps="last:2", t_post="none"))
    with torch.no_grad():
        runtime.feedback.scales.fill_(1.0)
    obj = objective(pipe, runtime, tmp_path, 2, teacher_steps=STEPS)
    obj.prepare()
    obj.refresh(0)
    skel, tensors = obj.cache.get(obj._rank_file(obj.rollout_dir, 0))
    assert obj.forecast_steps == [STEPS - 2, STEPS - 1]
    for k in obj.forecast_steps:
        recorded = unpack(skel["steps"][k]["prev"], tensors)  # what the pipeline's solver returned
        with torch.no_grad():
            replayed = obj.replay_step(pipe.transformer, 0, k)
            runtime.feedback.scales.zero_()
            control = obj.replay_step(pipe.transformer, 0, k)
            runtime.feedback.scales.fill_(1.0)
        scale = recorded.abs().max()
        assert (replayed - recorded).abs().max() <= 1e-6 * scale, f"step {k}"
        assert (control - recorded).abs().max() > 4e-6 * scale, f"step {k}: the feedback did not act"


def test_the_trajectory_teacher_is_the_first_finer_grid_holding_the_students(tmp_path):
    """ILF learns from a finer stock path: the smallest M >= 2N whose timesteps contain the student's, found on
    the pipeline's own schedules (DPM-Solver++'s leading spacing: 2N; FlowMatch Euler's: 3N - 2 for N = 6? no:
    whatever holds), and the targets are the teacher's states at the student's next timesteps."""
    pipe = make("pixart-alpha")
    runtime = apply_ilf(pipe, ILFConfig(loop=(1, 2), feedback_steps="last:2", t_post="none"))
    obj = objective(pipe, runtime, tmp_path, 2)
    m = obj._teacher_steps()
    student = torch.as_tensor(obj._template(0).timesteps).double()
    from ilf.train.record import capture_template

    for fewer in range(2 * STEPS, m):  # every smaller grid misses a student timestep
        tt = torch.as_tensor(capture_template(pipe, obj._call(0, fewer), {"ilf_feedback": False}).timesteps)
        assert not all(bool((torch.abs(tt.double() - t) < 1e-3).any()) for t in student[1:])
    tt = torch.as_tensor(capture_template(pipe, obj._call(0, m), {"ilf_feedback": False}).timesteps).double()
    assert all(bool((torch.abs(tt - t) < 1e-3).any()) for t in student[1:])


def _final(pipe, prompts, seeds, call) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    kw = {"class_labels": list(prompts)} if pipe.kind == "dit" else {"prompt": list(prompts)}  # Z-Image edits lists
    out = pipe(**kw, generator=gens, num_inference_steps=STEPS, output_type="latent", **call)
    return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images).float()  # video: .frames


@pytest.mark.slow
@pytest.mark.parametrize("case", ALL_CASES)
def test_a_trained_corrector_beats_taylorseer_on_held_out_noises_and_prompts(case, tmp_path):
    import ilf

    pipe = make(case)
    n = len(TRAIN_PROMPTS)
    folder = ilf.train_corrector(pipe, prompts_for(pipe, n), tmp_path / "run", call_kwargs=call_for(pipe, n),
                                 num_inference_steps=STEPS, interval=2, warmup=2, max_steps=60, batch_size=8,
                                 record_batch=4, rollout_every=30, lr=1e-2, progress=False)
    held, seeds, call = prompts_for(pipe, 2, held_out=True), [5001, 5002], call_for(pipe, 2)
    stock = _final(pipe, held, seeds, call)
    apply_ilf(pipe, CorrectorConfig(**CONFIG))  # untrained: TaylorSeer exactly (tests/test_corrector.py)
    with count_block_forwards(pipe) as counter:
        untrained = _final(pipe, held, seeds, call)
    remove_ilf(pipe)
    apply_ilf(pipe, folder)
    with count_block_forwards(pipe) as counter_trained:
        trained = _final(pipe, held, seeds, call)
    remove_ilf(pipe)
    assert counter_trained.total == counter.total  # the same block forwards: the learned forecast costs none
    err_untrained = (untrained - stock).pow(2).mean()
    err_trained = (trained - stock).pow(2).mean()
    assert err_trained < err_untrained, (float(err_trained), float(err_untrained))
    assert not list((folder.parent / "record").glob("rollout-*"))  # the run's rollouts are gone, the teacher stays
    assert list((folder.parent / "record").glob("teacher-*"))


def test_a_stochastic_scheduler_is_refused_with_the_cause(tmp_path):
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = make_pipe("pixart-alpha")
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    with pytest.raises(ILFError, match="stochastic"):
        objective(pipe, runtime, tmp_path, 2).prepare()
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing recorded from a run that cannot be replayed


def test_qwen_images_norm_rescaled_true_cfg_is_refused_naming_the_combination(tmp_path):
    """Qwen-Image's true CFG rescales the guided output to the conditional one's norm, per token: no linear
    combination of the two outputs rebuilds it, so training on it would train on a wrong path."""
    pipe = make("qwen-image")
    pipe.options = {"negative_prompt": "a dog", "true_cfg_scale": 4.0}
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    with pytest.raises(ILFError, match="norm-rescaled"):
        objective(pipe, runtime, tmp_path, 2).prepare()


def test_skip_layer_guidance_is_refused_naming_the_combination(tmp_path):
    pipe = make_pipe("sd3")
    pipe.options = {**pipe.options, "skip_guidance_layers": [1], "skip_layer_guidance_start": 0.0}
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    with pytest.raises(ILFError, match="skip-layer guidance"):
        objective(pipe, runtime, tmp_path, 2).prepare()


def test_the_record_size_and_time_are_printed_before_training(tmp_path):
    pipe = make_pipe("pixart-alpha")
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    lines = []
    obj = objective(pipe, runtime, tmp_path, 2)
    obj.log = lines.append
    obj.prepare()
    obj.refresh(0)
    assert any("teacher record takes" in ln and "s per prompt" in ln for ln in lines)
    assert any("rollout record takes" in ln and "MiB" in ln for ln in lines)


def test_one_prompt_per_call_records_a_video_pipeline(tmp_path):
    """Wan passes `timestep = t.expand(B)`: with one prompt per call the recorded tensor is a view of another, which
    safetensors refuses to write unless it is copied."""
    pipe = make("wan")
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    obj = objective(pipe, runtime, tmp_path, 1)
    obj.prepare()
    obj.refresh(0)
    assert obj._rank_file(obj.rollout_dir, 0).is_file()


def test_at_most_two_rollouts_stay_on_disk(tmp_path):
    """The rollout being trained on and the one the newest checkpoint trained on (for a resume); none at the end."""
    pipe = make("pixart-alpha")
    runtime = apply_ilf(pipe, CorrectorConfig(**CONFIG))
    obj = objective(pipe, runtime, tmp_path, 2)
    obj.rollout_every = 1
    obj.prepare()
    on_disk = lambda: sorted(int(p.name.split("-")[1]) for p in (tmp_path / "record").glob("rollout-*"))  # noqa: E731
    obj.refresh(0)
    obj.refresh(1)
    assert on_disk() == [1]  # no checkpoint yet
    (tmp_path / "ckpt").mkdir()
    obj.save(tmp_path / "ckpt")
    obj.refresh(2)
    obj.refresh(3)
    assert on_disk() == [1, 3]  # the checkpoint's rollout stays until the next checkpoint
    obj.finish()
    assert on_disk() == [] and list((tmp_path / "record").glob("teacher-*"))


def test_a_worlds_prompts_follow_its_training_distribution():
    """The shapes worlds' prompts are the captions of their own train samples (scene kinds in the proportions the
    backbone learned), not a uniform draw over the grammar's captions, ~90 % of which are relations."""
    from ilf.train.native_inputs import world_prompts
    from ilf.worlds import shapes

    prompts = world_prompts("shapes", 300, seed=0)
    kinds = [shapes.parse_caption(p).kind for p in prompts]
    share = {k: kinds.count(k) / len(kinds) for k in ("single", "count", "relation")}
    every = [shapes.parse_caption(p).kind for p in shapes.prompts("train")]
    assert every.count("relation") / len(every) > 0.8  # what a uniform draw over captions would give
    assert all(0.1 < v < 0.7 for v in share.values()), share
    assert world_prompts("shapes", 5, seed=0) == prompts[:5] and world_prompts("shapes", 5, seed=1) != prompts[:5]
    flow = world_prompts("shapes-flow", 2, seed=0)
    assert set(flow[0]) >= {"prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds"}
    assert sorted(set(world_prompts("digits", 200, seed=0))) == list(range(10))
