"""A corrector's adapter folder: it records the cache it was trained with, `apply_ilf(pipe, folder)` attaches the
cache and the corrector together at that schedule, and the paper-mode readers refuse it by name."""

import json

import pytest
import torch
from safetensors import safe_open

from ilf import FeedbackMismatchError, ILFConfig, apply_ilf, count_block_forwards, load_feedback, remove_ilf, save_feedback
from ilf.bench.errors import MethodSpecError
from ilf.bench.methods import get_family, parse_method
from ilf.runtime.corrector import CacheCorrector, apply_corrector
from ilf.corrector_config import CorrectorConfig
from ilf.errors import ILFError, ScheduleError
from ilf.feedback import CorrectorModule
from ilf.tiny import tiny_pipeline

STEPS = 8


def _run(pipe):
    out = pipe(class_labels=[1, 7], num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
               output_type="np")
    return torch.from_numpy(out.images)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DiT pipeline and a corrector folder with non-zero weights (as if trained), and its images."""
    pipe = tiny_pipeline("dit", num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    cfg = CorrectorConfig(interval=3, warmup=2, fresh=1, correct_steps="last:3", num_inference_steps=STEPS,
                          guidance_scale=4.0, scheduler=type(pipe.scheduler).__name__)
    rt = apply_corrector(pipe, cfg)
    with torch.no_grad():
        rt.feedback.scales.fill_(0.3)
        rt.feedback.mix[:, 1] = torch.linspace(-0.5, 0.5, STEPS)
    images = _run(pipe)
    folder = save_feedback(pipe, tmp_path_factory.mktemp("c") / "corrector")
    remove_ilf(pipe)
    return pipe, folder, images, cfg


def test_folder_records_the_mode_and_the_cache_schedule(saved):
    _, folder, _, cfg = saved
    meta = json.loads((folder / "ilf_config.json").read_text())
    assert meta["mode"] == "corrector"
    assert {k: meta["config"][k] for k in ("cache", "interval", "warmup", "order", "fresh", "correct_steps",
                                           "num_inference_steps")} == {
        "cache": "taylorseer", "interval": 3, "warmup": 2, "order": 1, "fresh": 1, "correct_steps": "last:3",
        "num_inference_steps": STEPS}
    # the block it corrects, e = N - 1 of 6, under its own name: a corrector has no inner loop (issue 25)
    assert meta["block"] == 5 and "loop" not in meta
    with safe_open(str(folder / "ilf_feedback.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "ilf-feedback", "block": "5"}


def test_a_folder_written_with_the_old_loop_field_still_loads_and_runs_the_same(saved, tmp_path, capsys):
    """Corrector folders saved before "block" recorded e as "loop": [e, e] (the ones shipped before issue 25)."""
    import shutil

    from ilf.cli import main
    from ilf.feedback import feedback_loop, read_feedback_config

    pipe, folder, images, cfg = saved
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    meta = json.loads((old / "ilf_config.json").read_text())
    meta["loop"] = [meta.pop("block")] * 2
    (old / "ilf_config.json").write_text(json.dumps(meta))  # the weights' checksum is unchanged
    assert feedback_loop(read_feedback_config(old)) == feedback_loop(read_feedback_config(folder)) == (5, 5)
    feedback, config = load_feedback(old, pipe.transformer)
    assert isinstance(feedback, CorrectorModule) and feedback.loop == (5, 5) and config == cfg
    apply_ilf(pipe, old)
    try:
        assert torch.equal(_run(pipe), images)
    finally:
        remove_ilf(pipe)
    assert main(["inspect", str(old)]) == 0 and main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[4] and out[0].endswith("(6 blocks), corrector at block 5"), out
    del meta["loop"]
    (old / "ilf_config.json").write_text(json.dumps(meta))
    with pytest.raises(ILFError, match='has no "block"; re-save'):
        load_feedback(old, pipe.transformer)


def test_apply_ilf_on_the_folder_attaches_cache_and_corrector_at_the_recorded_schedule(saved):
    pipe, folder, images, cfg = saved
    stock = _run(pipe)
    rt = apply_ilf(pipe, folder)
    try:
        assert isinstance(rt, CacheCorrector) and rt.config == cfg
        with count_block_forwards(pipe) as counter:
            again = _run(pipe)
    finally:
        remove_ilf(pipe)
    assert torch.equal(again, images)
    # 8 steps, interval 3 / warm-up 2: full 0, 1, 3, 6; forecast 2, 4, 5, 7 with 1 fresh block; F on 5 and 7
    assert counter.total == 4 * 6 + 4 * 1 + 2 and counter.feedback == 2
    assert torch.equal(_run(pipe), stock)


def test_load_feedback_returns_the_corrector_and_overrides_are_limited_to_the_schedule(saved):
    pipe, folder, _, cfg = saved
    module, config = load_feedback(folder, pipe.transformer)
    assert isinstance(module, CorrectorModule) and config == cfg
    assert float(module.scales.detach()[0]) == pytest.approx(0.3) and module.mix.shape == (STEPS, 4)
    with pytest.raises(FeedbackMismatchError, match=r"\['fresh'\] cannot change for a trained corrector"):
        apply_ilf(pipe, folder, fresh=0)
    rt = apply_ilf(pipe, folder, interval=2)  # the cache's plan may change
    remove_ilf(pipe)
    assert rt.config.interval == 2


def test_another_length_runs_taylorseer_forecast_and_warns_once(saved):
    pipe, folder, _, _ = saved
    apply_ilf(pipe, folder)
    try:
        with pytest.warns(UserWarning, match=f"built for {STEPS} steps; a 6-step run"):
            pipe(class_labels=[1], num_inference_steps=6, output_type="np")
    finally:
        remove_ilf(pipe)


def test_the_bench_runs_a_corrector_and_each_family_refuses_the_others_folder(saved, tmp_path):
    pipe, folder, _, _ = saved
    fam = get_family("corrector")
    spec = parse_method(f"corrector:{STEPS},feedback={folder}")
    assert fam.predicted_block_forwards(spec, 6) == 4 * 6 + 4 * 1 + 2
    with pytest.raises(MethodSpecError, match="fresh=, tail=, feed= and forecast= only apply to feedback=untrained"):
        fam.validate(parse_method(f"corrector:{STEPS},feedback={folder},fresh=2"))
    apply_ilf(pipe, ILFConfig(loop=(2, 4), t_post="none"))
    paper = save_feedback(pipe, tmp_path / "paper")
    remove_ilf(pipe)
    with pytest.raises(MethodSpecError, match="is not a corrector"):
        fam.config_of(parse_method(f"corrector:{STEPS},feedback={paper}"))
    with pytest.raises(MethodSpecError, match="is a corrector"):
        get_family("ilf").predicted_block_forwards(parse_method(f"ilf:{STEPS},feedback={folder}"), 6)


def test_bad_corrector_settings_name_the_fix():
    with pytest.raises(ScheduleError, match="interval must be an int >= 1"):
        CorrectorConfig(interval=0)
    with pytest.raises(ILFError, match="leave no block to forecast"):
        CorrectorConfig(fresh=6).span(6)
    with pytest.raises(ScheduleError, match="not understood"):
        CorrectorConfig(correct_steps="sometimes")


def test_a_corrector_whose_F_never_runs_is_saved_without_it_and_reloads_exactly(tmp_path):
    pipe = tiny_pipeline("dit", num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    rt = apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, num_inference_steps=STEPS, mix_per_channel=True))
    with torch.no_grad():
        rt.feedback.mix[:, 1] = 0.3
    images = _run(pipe)
    folder = save_feedback(pipe, tmp_path / "small")
    remove_ilf(pipe)
    from safetensors.torch import load_file

    assert sorted(load_file(str(folder / "ilf_feedback.safetensors"))) == ["mix", "scales"]
    apply_ilf(pipe, folder)
    try:
        assert torch.equal(_run(pipe), images)
    finally:
        remove_ilf(pipe)
