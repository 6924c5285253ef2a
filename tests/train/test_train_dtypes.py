"""Precomputed data of any dtype train any backbone dtype (issue 19): `ilf precompute ... --dtype bf16` followed by
`ilf train` without `--mixed-precision bf16` used to end in "mat1 and mat2 must have the same dtype, but got BFloat16
and Float"."""

import torch
from safetensors import safe_open

from ilf.train.config import TrainConfig
from ilf.train.data import Shards
from ilf.train.trainer import train


def _cfg(tiny_world, out, data, **kw):
    base = dict(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), data=data, loop=(2, 4), lr=1e-3,
                batch_size=4, max_steps=2, checkpoint_every=0, log_every=1, max_sequence_length=16, progress=False,
                distill="fad")
    base.update(kw)
    return TrainConfig(**base)


def test_fp16_shards_train_an_fp32_backbone_and_are_read_in_its_dtype(tiny_world, tmp_path, capsys):
    from ilf.train.precompute import precompute

    shards = tmp_path / "shards"
    precompute(str(tiny_world / "pixart-alpha"), tiny_world / "captions", shards, max_sequence_length=16,
               device="cpu", dtype="bf16", progress=False)
    source = Shards(shards)
    with safe_open(str(source.shards[0][0]), framework="pt") as f:
        assert f.get_slice("latents").get_dtype() == "F16"  # precompute stores latents and embeddings in fp16
    assert source.stored_dtypes() == {"F16"}
    source.set_float_dtype(torch.float32)
    row = source.read(3)
    assert row["latents"].dtype == torch.float32 and row["encoder_hidden_states"].dtype == torch.float32
    assert row["encoder_attention_mask"].dtype != torch.float32 or not row["encoder_attention_mask"].is_floating_point()

    result = train(_cfg(tiny_world, tmp_path / "run", shards))  # mixed_precision "no", backbone fp32
    assert result.steps == 2 and (result.feedback_dir / "ilf_feedback.safetensors").is_file()
    assert "precomputed in F16; read as fp32" in capsys.readouterr().out
