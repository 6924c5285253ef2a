"""An explicit full-step mask (`CorrectorConfig.full_steps`, `--cache-full-steps`, the bench's `full=`): the
corrector computes exactly the masked steps, a mask equal to TaylorSeer's schedule is that schedule bit for bit,
the trainer trains exactly the other steps, and a bad mask is refused naming the flag."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator

from ilf import CorrectorConfig, apply_ilf, count_block_forwards, remove_ilf
from ilf.adapters import get_adapter
from ilf.bench.errors import MethodSpecError
from ilf.bench.family_corrector import CorrectorFamily
from ilf.bench.methods import parse_method
from ilf.corrector_config import taylor_compute_steps, taylor_schedule_of
from ilf.errors import ILFError, ScheduleError
from ilf.train.config import TrainConfig
from ilf.train.native import PipelineObjective
from tiny_runs import make_pipe, run

STEPS = 8
MASK = (0, 1, 4, 7)  # not a TaylorSeer schedule: two warm-up steps, a gap of 2, then of 2 again, none at 2/3/5/6


def full_steps_run(pipe, steps=STEPS):
    """(images, the steps on which every block ran) of one call of `pipe`, from the block forwards counted
    between transformer calls."""
    model = pipe.transformer
    n_blocks = len(get_adapter(model).blocks(model))
    marks = []
    with count_block_forwards(pipe) as counter:
        hook = model.register_forward_pre_hook(lambda m, a: marks.append(counter.total))
        try:
            images = run(pipe, steps)
        finally:
            hook.remove()
        marks.append(counter.total)
    per_call = [b - a for a, b in zip(marks, marks[1:])]  # block forwards of each transformer call
    n = pipe.calls_per_step
    return images, sorted({i // n for i, c in enumerate(per_call) if c >= n_blocks})


@pytest.mark.parametrize("case", ["pixart-alpha", "sd3", "flux-true-cfg"])
def test_a_mask_computes_exactly_its_steps_and_taylorseers_schedule_as_a_mask_is_that_schedule(case):
    pipe = make_pipe(case)
    stock = run(pipe, STEPS)
    ts_steps = tuple(taylor_compute_steps(STEPS, 2, 2))
    outs = {}
    for name, cfg in {"spread": CorrectorConfig(interval=2, warmup=2, num_inference_steps=STEPS),
                      "as-mask": CorrectorConfig(full_steps=ts_steps, num_inference_steps=STEPS),
                      "mask": CorrectorConfig(full_steps=MASK, num_inference_steps=STEPS)}.items():
        apply_ilf(pipe, cfg)
        try:
            outs[name] = full_steps_run(pipe)
        finally:
            remove_ilf(pipe)
    assert outs["spread"][1] == list(ts_steps) and outs["as-mask"][1] == list(ts_steps)
    assert torch.equal(outs["as-mask"][0], outs["spread"][0])
    assert outs["mask"][1] == list(MASK)
    assert not torch.allclose(outs["mask"][0], outs["spread"][0], atol=1e-5)
    assert torch.equal(run(pipe, STEPS), stock)  # removed: stock again


def test_off_its_run_length_a_mask_gives_way_to_the_spread_schedule_and_the_file_keeps_it():
    cfg = CorrectorConfig(full_steps=[7, 0, 3], interval=3, warmup=1, num_inference_steps=10)
    assert cfg.full_steps == (0, 3, 7)  # sorted, a tuple (hashable, as the frozen config must be)
    assert sorted(cfg.compute_steps(10)) == [0, 3, 7]
    assert sorted(cfg.compute_steps(12)) == taylor_compute_steps(12, 3, 1)
    assert cfg.block_forwards(10, 12) == 3 * 12
    assert cfg.block_forwards(10, 12, textless_tail=1) == 3 * 12 + 7
    back = CorrectorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


@pytest.mark.parametrize("mask, words", [((1, 2), "include step 0"), ((0, 10), "0..9"), ((0, 2, 2), "distinct"),
                                         (tuple(range(10)), "nothing is forecast"), ("0,1", "list of step")])
def test_a_bad_mask_is_refused_with_the_cause(mask, words):
    with pytest.raises(ScheduleError, match=words):
        CorrectorConfig(full_steps=mask, num_inference_steps=10)


def test_the_trainer_names_the_flag_and_trains_exactly_the_unmasked_steps(tmp_path):
    with pytest.raises(ILFError, match="--cache-full-steps.*include step 0"):
        TrainConfig(output_dir=tmp_path, world="shapes", cache_full_steps=[1, 4], student_steps=10)
    with pytest.raises(ILFError, match="--cache-full-steps is a corrector flag"):
        TrainConfig(output_dir=tmp_path, world="shapes", distill="trajectory", cache_full_steps=[0, 4])
    pipe = make_pipe("pixart-alpha")
    runtime = apply_ilf(pipe, CorrectorConfig(full_steps=MASK, num_inference_steps=STEPS))
    try:
        obj = PipelineObjective(
            pipe=pipe, runtime=runtime, prompts=["a red cat", "a blue dog"], call_kwargs={"guidance_scale": 4.5},
            output_dir=tmp_path, num_steps=STEPS, teacher_steps=None, rollout_every=10, per_device=2,
            accelerator=Accelerator(cpu=True), seed=0, record_batch=2, log=lambda *a: None, progress=False)
    finally:
        remove_ilf(pipe)
    assert obj.forecast_steps == [2, 3, 5, 6]


def test_the_cli_refuses_a_malformed_mask_before_anything_loads(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ilf", "train", "--world", "shapes", "--output-dir", str(tmp_path / "o"),
                        "--cache-full-steps", "0,two,5"], capture_output=True, text=True)
    assert r.returncode == 2 and "--cache-full-steps" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_the_bench_spec_takes_a_mask_and_refuses_a_bad_one():
    fam = CorrectorFamily()
    spec = parse_method("corrector:10,feedback=untrained,full=0+1+2+5+9")
    assert parse_method("corrector:10,feedback=untrained,full=[0,1,2,5,9]") == spec
    cfg = fam.config_of(spec)
    assert cfg.full_steps == (0, 1, 2, 5, 9) and cfg.num_inference_steps == 10
    assert fam.predicted_block_forwards(spec, 12) == 5 * 12
    with pytest.raises(MethodSpecError, match="include step 0"):
        fam.config_of(parse_method("corrector:10,feedback=untrained,full=1+2"))


def test_a_new_spread_schedule_replaces_a_trained_mask(tmp_path):
    pipe = make_pipe("pixart-alpha")
    rt = apply_ilf(pipe, CorrectorConfig(full_steps=MASK, num_inference_steps=STEPS))
    from ilf import save_feedback

    save_feedback(pipe, tmp_path / "fb")
    remove_ilf(pipe)
    rt = apply_ilf(pipe, str(tmp_path / "fb"))
    assert rt.config.full_steps == MASK
    remove_ilf(pipe)
    rt = apply_ilf(pipe, str(tmp_path / "fb"), interval=3)
    try:
        assert rt.config.full_steps is None and rt.config.interval == 3
    finally:
        remove_ilf(pipe)


def test_a_masked_corrector_resumes_from_its_checkpoint(tmp_path):
    """The checkpoint's config (read back from JSON) must equal the run's own, mask included."""
    from ilf.train.trainer import train

    common = dict(output_dir=tmp_path / "run", world="digits", distill="corrector", student_steps=8,
                  cache_full_steps=[0, 1, 4, 7], rollout_size=8, rollout_every=10, batch_size=4, lr=1e-3,
                  checkpoint_every=2, progress=False, log_every=1)
    train(TrainConfig(max_steps=2, **common))
    result = train(TrainConfig(max_steps=4, resume="latest", **common))
    assert result.steps == 4
    saved = json.loads((result.feedback_dir / "ilf_config.json").read_text())["config"]
    assert saved["full_steps"] == [0, 1, 4, 7] and saved["num_inference_steps"] == 8


@pytest.mark.parametrize("n, interval, warmup, cooldown", [(20, 2, 3, None), (20, 2, 1, 19), (12, 3, 2, None),
                                                           (14, 4, 1, 13)])
def test_a_masks_taylorseer_twin_computes_the_same_steps(n, interval, warmup, cooldown):
    steps = taylor_compute_steps(n, interval, warmup, cooldown)
    twin = taylor_schedule_of(steps, n)
    assert twin is not None and taylor_compute_steps(n, *twin) == steps
    assert taylor_schedule_of([0, 5, 6], 20) is None  # no TaylorSeer setting skips 1-4 and then computes 5 and 6
