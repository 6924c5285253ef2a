"""Adapter files: only the feedback is saved, and a wrong, corrupted or misfit file changes nothing."""

import json

import pytest
import torch
from safetensors import safe_open

from ilf import (
    CorruptFeedbackError,
    FeedbackMismatchError,
    ILFConfig,
    LoopRangeError,
    UnsupportedModelError,
    apply_ilf,
    remove_ilf,
    save_feedback,
)
from ilf.feedback import CONFIG_NAME, WEIGHTS_NAME
from ilf.runtime.attached import get_runtime
from ilf.tiny import tiny_dit, tiny_pixart

LOOP = (2, 4)


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.full((2,), 500)
    if isinstance(model.config.get("caption_channels"), int):
        text = torch.randn(2, 5, model.config.caption_channels, generator=g)
        return dict(hidden_states=x, timestep=t, encoder_hidden_states=text,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    return dict(hidden_states=x, timestep=t, class_labels=torch.tensor([1, 1000]))


def _run(model, **extra):
    with torch.no_grad():
        return model(**_inputs(model), **extra).sample


@pytest.fixture(params=["pixart", "dit"])
def trained(request, tmp_path):
    """A backbone with a 'trained' (randomised) feedback saved to tmp_path/fb."""
    make = {"pixart": tiny_pixart, "dit": tiny_dit}[request.param]
    model = make(num_layers=6)
    rt = apply_ilf(model, ILFConfig(loop=LOOP, feedback_steps="outer:1", t_post="uniform"))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in rt.feedback.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    expected = _run(model, ilf_t_post=300.0)
    save_feedback(model, tmp_path / "fb")
    remove_ilf(model)
    return make, model, tmp_path / "fb", expected


def _untouched(model):
    assert get_runtime(model) is None
    assert not any(hasattr(m, "_diffusers_hook") for m in model.modules())
    assert not hasattr(model, "ilf_feedback")


def test_round_trip_reproduces_the_outputs_and_config(trained):
    make, model, path, expected = trained
    fresh = make(num_layers=6)  # same seed: the same backbone, a new object
    rt = apply_ilf(fresh, path)
    assert rt.config.loop == LOOP and rt.config.feedback_steps == "outer:1" and rt.config.t_post == "uniform"
    torch.testing.assert_close(_run(fresh, ilf_t_post=300.0), expected, rtol=0, atol=0)


def test_file_holds_only_the_feedback(trained):
    make, model, path, _ = trained
    with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
        keys = set(f.keys())
    block_keys = {f"block.{k}" for k in model.transformer_blocks[0].state_dict()}
    assert keys == block_keys | {"scales"}
    backbone_names = ("transformer_blocks", "pos_embed", "adaln_single", "proj_out", "caption_projection")
    assert not any(name in k for k in keys for name in backbone_names)
    meta = json.loads((path / CONFIG_NAME).read_text())
    assert meta["backbone"]["fingerprint"]["class"] == type(model).__name__
    assert meta["backbone"]["fingerprint"]["num_blocks"] == 6
    assert meta["loop"] == list(LOOP)
    n_feedback = sum(p.numel() for p in model.transformer_blocks[0].parameters()) + (LOOP[1] - LOOP[0] + 1)
    n_saved = 0
    with safe_open(str(path / WEIGHTS_NAME), framework="pt") as f:
        n_saved = sum(f.get_tensor(k).numel() for k in f.keys())
    assert n_saved == n_feedback


def test_other_architecture_is_refused(trained):
    make, _, path, _ = trained
    other = make(num_layers=6, heads=4)
    with pytest.raises(FeedbackMismatchError, match="trained for another backbone.*num_attention_heads"):
        apply_ilf(other, path)
    _untouched(other)
    family = tiny_dit(num_layers=6) if make is tiny_pixart else tiny_pixart(num_layers=6)
    with pytest.raises(FeedbackMismatchError, match="class"):
        apply_ilf(family, path)
    _untouched(family)


def test_other_checkpoint_of_the_same_architecture_needs_strict_false(trained):
    make, _, path, expected = trained
    other = make(num_layers=6, seed=123)
    with pytest.raises(FeedbackMismatchError, match="strict=False"):
        apply_ilf(other, path)
    _untouched(other)
    apply_ilf(other, path, strict=False)
    assert get_runtime(other) is not None


def test_fp16_copy_of_the_backbone_is_the_same_backbone(trained):
    make, _, path, _ = trained
    half = make(num_layers=6).half()
    rt = apply_ilf(half, path)
    assert rt.feedback.scales.dtype == torch.float16


@pytest.mark.parametrize("damage", ["flip", "truncate", "json", "no_weights", "bad_header"])
def test_corrupted_files_are_refused_clearly(trained, damage):
    make, _, path, _ = trained
    weights, cfg = path / WEIGHTS_NAME, path / CONFIG_NAME
    data = weights.read_bytes()
    if damage == "flip":
        weights.write_bytes(data[:-10] + bytes(b ^ 0xFF for b in data[-10:]))
    elif damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "json":
        cfg.write_text(cfg.read_text()[:40])
    elif damage == "no_weights":
        weights.unlink()
    else:  # a bad header with a matching checksum: only safetensors can tell
        meta = json.loads(cfg.read_text())
        del meta["weights"]["sha256"]
        cfg.write_text(json.dumps(meta))
        weights.write_bytes(b"\xff" * 8 + data[8:])
    model = make(num_layers=6)
    with pytest.raises(CorruptFeedbackError, match="corrupted|truncated|missing|not a readable"):
        apply_ilf(model, path)
    _untouched(model)


def test_loop_outside_the_model_in_a_file_is_refused(trained):
    make, _, path, _ = trained
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta["loop"] = [4, 9]
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    model = make(num_layers=6)
    with pytest.raises(LoopRangeError, match="outside the model"):
        apply_ilf(model, path)
    _untouched(model)


def test_a_trained_feedback_keeps_its_loop(trained):
    make, _, path, _ = trained
    model = make(num_layers=6)
    with pytest.raises(FeedbackMismatchError, match="cannot change for a trained feedback"):
        apply_ilf(model, path, loop=(1, 3))
    _untouched(model)
    rt = apply_ilf(model, path, feedback_steps="all", t_post="rescale")
    assert rt.config.feedback_steps == "all" and rt.config.loop == LOOP


def test_not_a_feedback_folder(tmp_path):
    model = tiny_dit()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptFeedbackError, match="not an ilf feedback folder"):
        apply_ilf(model, tmp_path / "empty")


def test_a_missing_feedback_folder_is_reported_as_missing(tmp_path):
    from ilf.errors import FeedbackNotFoundError

    with pytest.raises(FeedbackNotFoundError, match="does not exist") as info:
        apply_ilf(tiny_dit(), tmp_path / "nothing-here")
    assert "not an ilf feedback folder" not in str(info.value)


def test_a_file_of_a_feedback_folder_names_the_folder_to_pass(trained, tmp_path):
    make, _, path, _ = trained
    model = make(num_layers=6)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with pytest.raises(CorruptFeedbackError) as info:
            apply_ilf(model, path / name)
        message = str(info.value)
        assert f"{path / name} is a file; pass its folder {path}" in message
        assert "no ilf_config.json" not in message  # not the old self-contradicting "not a feedback folder"
        _untouched(model)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CorruptFeedbackError, match="notes.txt is a file, not a feedback folder"):
        apply_ilf(model, tmp_path / "notes.txt")


@pytest.mark.parametrize("num_layers", [12, 28])
def test_apply_ilf_without_a_config_is_refused_and_attaches_nothing(num_layers):
    # no silent default: on 28 blocks None used to attach an untrained paper loop that changed the output, on 12
    # it failed with a loop-range error about a loop nobody had asked for
    from ilf import CorrectorConfig, ILFError

    model = tiny_pixart(num_layers=num_layers)
    for call in (lambda: apply_ilf(model), lambda: apply_ilf(model, None)):
        with pytest.raises(ILFError) as info:
            call()
        message = str(info.value)
        assert "feedback folder" in message and "ILFConfig" in message and "CorrectorConfig" in message
        assert "loop" not in message.split("ILFConfig")[0]  # not a loop-range complaint
        _untouched(model)
    apply_ilf(model, CorrectorConfig())  # what the message offers works
    remove_ilf(model)


def test_saving_is_atomic(trained, monkeypatch):
    make, _, path, expected = trained
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    model = make(num_layers=6)
    apply_ilf(model, ILFConfig(loop=LOOP))

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("ilf.feedback.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_feedback(model, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["fb"]  # no temporary folder left


def test_unsupported_model_lists_the_supported_classes():
    with pytest.raises(UnsupportedModelError) as err:
        apply_ilf(torch.nn.Linear(2, 2), ILFConfig())
    for name in ("DiTTransformer2DModel", "Flux2Transformer2DModel", "FluxTransformer2DModel",
                 "HunyuanVideo15Transformer3DModel", "PixArtTransformer2DModel", "QwenImageTransformer2DModel",
                 "SD3Transformer2DModel", "SanaTransformer2DModel", "WanTransformer3DModel",
                 "ZImageTransformer2DModel"):  # every family README's table lists
        assert name in str(err.value), name
    assert "Linear is not supported" in str(err.value)
