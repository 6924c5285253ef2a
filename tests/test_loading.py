"""The one pipeline loader (`ilf.loading`): real diffusers folders, skipped components, call defaults, errors."""

import pytest
import torch

from ilf.errors import ILFError
from ilf.loading import load_pipeline, stock_call_kwargs
from ilf.tiny import tiny_pipeline
from ilf.tiny_mmdit import tiny_mmdit_pipeline


def test_loads_a_folder_with_the_stock_call_defaults(pipe_dirs):
    pipe, call = load_pipeline(pipeline=str(pipe_dirs / "pixart-alpha"))
    assert type(pipe).__name__ == "PixArtAlphaPipeline"
    assert next(pipe.transformer.parameters()).dtype == torch.float32
    # the tiny model's sample size (8) has no aspect-ratio bins, and the caption cleaner needs bs4/ftfy
    assert call == {"clean_caption": False, "use_resolution_binning": False}
    dit, dit_call = load_pipeline(pipeline=str(pipe_dirs / "dit"), dtype=torch.bfloat16)
    assert type(dit).__name__ == "DiTPipeline" and dit_call == {}
    assert next(dit.transformer.parameters()).dtype == torch.bfloat16


def test_skip_leaves_components_out(pipe_dirs):
    pipe, _ = load_pipeline(pipeline=str(pipe_dirs / "pixart-alpha"), skip=("text_encoder", "tokenizer", "vae"))
    assert pipe.text_encoder is None and pipe.tokenizer is None and pipe.vae is None
    assert pipe.transformer is not None
    dit, _ = load_pipeline(pipeline=str(pipe_dirs / "dit"), skip=("text_encoder", "vae"))  # DiT has no text encoder
    assert dit.vae is None


def test_binning_stays_on_where_the_pipeline_has_bins():
    pipe = tiny_pipeline("pixart-alpha", num_layers=2)
    pipe.transformer.register_to_config(sample_size=64)  # PixArt-α 512 px: binned
    assert stock_call_kwargs(pipe) == {"clean_caption": False}
    sana = tiny_mmdit_pipeline("sana")
    assert stock_call_kwargs(sana)["use_resolution_binning"] is False  # tiny Sana's sample size 8 has no bins
    assert stock_call_kwargs(tiny_mmdit_pipeline("sd3")) == {}


def test_bad_requests_say_what_to_pass(tmp_path):
    with pytest.raises(ILFError, match="cannot load the pipeline .*model_index.json"):
        load_pipeline(pipeline=str(tmp_path / "missing"))
    with pytest.raises(ILFError, match="exactly one of"):
        load_pipeline()
    with pytest.raises(ILFError, match="exactly one of"):
        load_pipeline(world="shapes", pipeline="x")
    with pytest.raises(ILFError, match="unknown world 'moons'; worlds: shapes"):
        load_pipeline(world="moons")
