"""`ilf train` end to end on tiny real pipelines (in-process): learning, guards, resume, bad data."""

import json

import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline
from safetensors.torch import load_file

from ilf import FeedbackMismatchError, apply_ilf
from ilf.train import checkpoint as ckpt
from ilf.train.cli import add_train_parser
from ilf.train.config import TrainConfig
from ilf.train.encode import Encoder, model_kwargs
from ilf.train.objective import ilf_loss
from ilf.train.trainer import NonFiniteLossError, train


def _cfg(tiny_world, out, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), data=tiny_world / "captions",
                loop=(2, 4), lr=1e-3, batch_size=4, max_steps=6, checkpoint_every=2, log_every=1,
                max_sequence_length=16, progress=False, distill="fad")
    base.update(kw)
    return TrainConfig(**base)


def _eval_loss(pipeline_dir, captions_dir, feedback_dir=None):
    """The loss terms on a fixed batch with fixed noise and timesteps."""
    from ilf.train.data import CaptionFolder

    pipe = DiffusionPipeline.from_pretrained(pipeline_dir)
    model = pipe.transformer.eval()
    if feedback_dir is None:
        from ilf import ILFConfig

        apply_ilf(model, ILFConfig(loop=(2, 4)))
    else:
        apply_ilf(model, feedback_dir)
    source = CaptionFolder(captions_dir, 16)
    batch = Encoder(pipe, "text", 16).encode([source.read(i) for i in range(16)])
    g = torch.Generator().manual_seed(123)
    x0 = batch["latents"]
    noise, t = torch.randn(x0.shape, generator=g), torch.randint(1, 1000, (x0.shape[0],), generator=g)
    with torch.no_grad():
        return ilf_loss(model, model_kwargs(model, batch), x0, noise, t, DDPMScheduler())


def test_fad_training_lowers_the_loss_it_optimises(tiny_world, tmp_path):
    # A random tiny backbone is no denoiser, so its t/2 teacher is nearly unpredictable; the objective as a
    # whole must still fall. (tests/worlds checks the distillation term itself on a trained backbone.)
    pipe_dir = tiny_world / "pixart-alpha"
    before = _eval_loss(pipe_dir, tiny_world / "captions")
    result = train(_cfg(tiny_world, tmp_path / "run", max_steps=40, checkpoint_every=0, lr=1e-2, caption_dropout=0))
    after = _eval_loss(pipe_dir, tiny_world / "captions", result.feedback_dir)
    assert float(after.total) < 0.9 * float(before.total), (before, after)
    # the adapter holds one block plus the scales, nothing of the backbone
    weights = load_file(str(result.feedback_dir / "ilf_feedback.safetensors"))
    assert set(weights) == {"scales"} | {k for k in weights if k.startswith("block.")}
    assert weights["scales"].abs().sum() > 0
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 41))
    assert {"loss", "loss_diffusion", "loss_distill", "scales", "img_per_s", "lr"} <= set(log[-1])


def test_backbone_stays_frozen(tiny_world, tmp_path, monkeypatch):
    seen = {}
    import ilf.train.trainer as trainer

    real_prepare = trainer.Accelerator.prepare

    def spy(self, model, optimizer, sched):
        seen["model"] = model
        seen["state"] = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("ilf_feedback")}
        seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
        seen["optimized"] = sum(p.numel() for grp in optimizer.param_groups for p in grp["params"])
        return real_prepare(self, model, optimizer, sched)

    monkeypatch.setattr(trainer.Accelerator, "prepare", spy)
    train(_cfg(tiny_world, tmp_path / "run", max_steps=3, checkpoint_every=0))
    model = seen["model"]
    assert all(n.startswith("ilf_feedback.") for n in seen["trainable"])
    assert seen["optimized"] == sum(p.numel() for p in model.ilf_feedback.parameters())
    after = {k: v for k, v in model.state_dict().items() if not k.startswith("ilf_feedback")}
    assert all(torch.equal(after[k], v) for k, v in seen["state"].items())


def test_checkpoints_are_complete_pruned_and_resume_continues(tiny_world, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny_world, out, max_steps=6, keep_checkpoints=2))
    steps = [s for s, _ in ckpt.list_checkpoints(out)]
    assert steps == [4, 6]
    files = {p.name for p in ckpt.checkpoint_dir(out, 6).iterdir()}
    assert {"feedback.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json"} <= files
    assert not any("model" in f for f in files)  # the frozen backbone is not in a checkpoint
    assert not list((out / "checkpoints").glob(".*tmp"))
    # resuming a finished run does no step and keeps the result
    first = load_file(str(out / "feedback" / "ilf_feedback.safetensors"))
    r = train(_cfg(tiny_world, out, max_steps=6, resume="latest"))
    again = load_file(str(r.feedback_dir / "ilf_feedback.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_resume_in_process_equals_an_uninterrupted_run(tiny_world, tmp_path):
    full = train(_cfg(tiny_world, tmp_path / "full", max_steps=6, checkpoint_every=3))
    part = _cfg(tiny_world, tmp_path / "part", max_steps=3, checkpoint_every=3)
    train(part)
    resumed = train(_cfg(tiny_world, tmp_path / "part", max_steps=6, checkpoint_every=3, resume="latest"))
    a = load_file(str(full.feedback_dir / "ilf_feedback.safetensors"))
    b = load_file(str(resumed.feedback_dir / "ilf_feedback.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_loop_before_any_step(tiny_world, tmp_path):
    out = tmp_path / "run"
    train(_cfg(tiny_world, out, max_steps=2))
    log_before = (out / "train_log.jsonl").read_text()
    with pytest.raises(FeedbackMismatchError, match=r"trains loop \(2, 4\) but this run asks for \(1, 3\)"):
        train(_cfg(tiny_world, out, max_steps=4, loop=(1, 3), resume="latest"))
    assert (out / "train_log.jsonl").read_text() == log_before
    with pytest.raises(FeedbackMismatchError, match="another backbone"):
        train(_cfg(tiny_world, out, max_steps=4, pipeline=str(tiny_world / "pixart-alpha"), resume="latest",
                   data=tiny_world / "captions", loop=(2, 4), init="fresh")
              if False else _cfg_other_backbone(tiny_world, out))


def _cfg_other_backbone(tiny_world, out):
    from ilf.tiny import tiny_pipeline

    other = out.parent / "other-pipe"
    if not other.exists():
        tiny_pipeline("pixart-alpha", num_layers=6, heads=4).save_pretrained(other)
    return _cfg(tiny_world, out, max_steps=4, pipeline=str(other), resume="latest")


def test_non_finite_loss_stops_clearly_and_keeps_the_last_good_checkpoint(tiny_world, tmp_path, monkeypatch):
    import ilf.train.fad as fad

    real = fad.ilf_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        terms = real(*a, **k)
        if calls["n"] == 4:  # step 4: the loss turns NaN
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(fad, "ilf_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 4.*step-00000002"):
        train(_cfg(tiny_world, out, max_steps=6, checkpoint_every=2))
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2]
    good = load_file(str(ckpt.checkpoint_dir(out, 2) / "feedback.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "feedback").exists()


def test_unreadable_samples_are_skipped_counted_and_reported(tiny_world, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_world / "captions", data)
    (data / "img03.png").write_bytes(b"not a png")
    (data / "img05.txt").unlink()
    result = train(_cfg(tiny_world, tmp_path / "run", data=data, max_steps=8, checkpoint_every=0))
    assert result.skipped_samples >= 2
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_samples"] == result.skipped_samples


def test_class_folders_train_a_dit_feedback(tiny_world, tmp_path):
    result = train(_cfg(tiny_world, tmp_path / "run", pipeline=str(tiny_world / "dit"),
                        data=tiny_world / "classes", max_steps=3, checkpoint_every=0))
    meta = json.loads((result.feedback_dir / "ilf_config.json").read_text())
    assert meta["backbone"]["fingerprint"]["class"] == "DiTTransformer2DModel"


def test_precomputed_shards_hold_what_the_encoder_computes(tiny_world, tmp_path):
    from ilf.train.data import CaptionFolder, Shards
    from ilf.train.precompute import precompute

    meta = precompute(str(tiny_world / "pixart-alpha"), tiny_world / "captions", tmp_path / "shards",
                      batch_size=5, shard_size=6, max_sequence_length=16, device="cpu", progress=False)
    assert meta["rows"] == 16 and len(meta["shards"]) == 3 and meta["kind"] == "text"
    shards = Shards(tmp_path / "shards")
    pipe = DiffusionPipeline.from_pretrained(str(tiny_world / "pixart-alpha"))
    source = CaptionFolder(tiny_world / "captions", 16)
    for i in (0, 7, 15):
        enc = Encoder(pipe, "text", 16).encode([source.read(i)])
        row = shards.read(i)
        torch.testing.assert_close(row["latents"].float(), enc["latents"][0], rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(row["encoder_hidden_states"].float(), enc["encoder_hidden_states"][0],
                                   rtol=2e-3, atol=2e-3)
    result = train(_cfg(tiny_world, tmp_path / "run", data=tmp_path / "shards", max_steps=2, checkpoint_every=0))
    assert (result.feedback_dir / "ilf_feedback.safetensors").is_file()


def test_every_train_flag_is_documented():
    import argparse

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    options = [a for a in train_parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 40
    undocumented = [a.option_strings[0] for a in options if not (a.help and len(a.help) > 10)]
    assert undocumented == []


def test_config_errors_name_the_fix(tmp_path):
    from ilf import ILFError

    with pytest.raises(ILFError, match="exactly one backbone"):
        TrainConfig(output_dir=tmp_path)
    with pytest.raises(ILFError, match="--preset paper-t2i"):
        TrainConfig(output_dir=tmp_path, pipeline="x", data=tmp_path, distill="fad", max_steps=3)
    with pytest.raises(ILFError, match="not a multiple"):
        TrainConfig(output_dir=tmp_path, pipeline="x", data=tmp_path, distill="fad", lr=1, batch_size=6,
                    per_device_batch=4, max_steps=1).accumulation(1)
    assert TrainConfig(output_dir=tmp_path, pipeline="x", data=tmp_path, distill="fad", preset="paper-t2i").lr == 1e-6
    c2i = TrainConfig(output_dir=tmp_path, pipeline="x", data=tmp_path, distill="fad", preset="paper-c2i")
    assert c2i.batch_size == 8192


def test_validation_grid_and_ema(tiny_world, tmp_path):
    from PIL import Image

    out = tmp_path / "run"
    result = train(_cfg(tiny_world, out, max_steps=4, checkpoint_every=2, validate_every=4, ema_decay=0.5,
                        validation_prompts=["a red cat", "a blue dog"]))
    grid = Image.open(out / "validation" / "step-00000004.png")
    assert grid.size[1] == 3 * 16 and grid.size[0] > 2 * 16  # rows: plain 20, plain 10, ILF 10
    # the adapter holds the EMA weights, the checkpoint the raw ones (and the EMA copy)
    final = load_file(str(result.feedback_dir / "ilf_feedback.safetensors"))
    raw = load_file(str(ckpt.checkpoint_dir(out, 4) / "feedback.safetensors"))
    shadow = load_file(str(ckpt.checkpoint_dir(out, 4) / "ema.safetensors"))
    assert not torch.equal(final["scales"], raw["scales"])
    # EMAModel keeps parameters in `parameters()` order: a module's own (the scales) before its children's
    assert torch.equal(final["scales"], shadow["shadow.0"])


def test_gradient_checkpointing_trains_the_same_feedback(tiny_world, tmp_path):
    a = train(_cfg(tiny_world, tmp_path / "a", max_steps=3, checkpoint_every=0))
    b = train(_cfg(tiny_world, tmp_path / "b", max_steps=3, checkpoint_every=0, gradient_checkpointing=True))
    wa = load_file(str(a.feedback_dir / "ilf_feedback.safetensors"))
    wb = load_file(str(b.feedback_dir / "ilf_feedback.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
