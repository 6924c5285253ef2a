"""What is exact about an untrained feedback, and where the code says so.

Zero scales make the feedback add nothing, but only `t_post="none"` leaves the output the stock model's:
the default `t_post="rescale"` conditions the blocks after the feedback (and the output layer) on t_post.
"""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from ilf import ILFConfig, apply_ilf, remove_ilf
from ilf.bench.methods import parse_method
from ilf.cli import main
from ilf.tiny import pixart_call_kwargs, tiny_pipeline


def _latents(pipe, steps=5):
    g = torch.Generator().manual_seed(0)
    return pipe(["a red cat"], num_inference_steps=steps, generator=g, output_type="latent", height=16, width=16,
                **pixart_call_kwargs()).images


def test_zero_scales_are_exact_only_with_t_post_none():
    pipe = tiny_pipeline("pixart-alpha", num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    ref = _latents(pipe)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="all", t_post="none"))
    torch.testing.assert_close(_latents(pipe), ref, rtol=1e-5, atol=1e-5)
    remove_ilf(pipe)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="all"))  # the default t_post: rescale
    assert (_latents(pipe) - ref).abs().max() > 1e-3


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    tiny_pipeline("pixart-alpha", num_layers=6).save_pretrained(root / "pixart")
    return root / "pixart"


def _png(folder):
    raw = [p for p in folder.iterdir() if not re.search(r"-x\d+\.png$", p.name)]  # not the upscaled copy
    assert len(raw) == 1
    return np.asarray(Image.open(raw[0]), dtype=np.int16)


def test_generate_with_an_untrained_loop_is_exactly_plain_and_t_post_changes_it(pipe_dir, tmp_path, capsys):
    args = ["generate", "--pipeline", str(pipe_dir), "--prompt", "a red cat", "--steps", "6", "--seed", "1",
            "--guidance", "1.0"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--out", str(tmp_path / "loop"), "--loop", "2", "4", "--feedback-steps", "all"]) == 0
    assert main(args + ["--out", str(tmp_path / "shifted"), "--loop", "2", "4", "--feedback-steps", "all",
                        "--t-post", "uniform"]) == 0
    capsys.readouterr()
    plain = _png(tmp_path / "plain")
    assert np.array_equal(_png(tmp_path / "loop"), plain)
    assert np.abs(_png(tmp_path / "shifted") - plain).max() > 0


def test_untrained_bench_rows_say_so():
    assert "feedback=untrained" in parse_method("ilf:10,feedback=untrained,plan=outer:2").display
    assert parse_method("ilf:10,feedback=/runs/fb,plan=outer:2").display == "ilf:10,plan=outer:2"  # paths hidden
