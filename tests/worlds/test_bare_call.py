"""A world's pipeline can be called as docs/worlds.md shows it, with nothing but the prompt (issue 25: shapes
failed with diffusers' "Invalid sample size", shapes-flow has no text encoder). The bare call must equal the stock
diffusers call with the world's documented settings, and explicit arguments still win."""

import numpy as np
import pytest
import torch

from ilf.worlds import load_pipeline
from ilf.worlds.registry import CALL_KWARGS, prompt_kwargs

PROMPT = "a large red circle in the center"


def _np(images):
    return np.stack([np.asarray(im, dtype=np.float32) for im in images])


def _stock(pipe):
    """diffusers' own class of a world pipeline: the reference the bare call is compared with."""
    stock = type(pipe).__mro__[1]
    assert stock.__module__.startswith("diffusers.")
    return stock


@pytest.mark.parametrize("world", ["shapes", "digits", "shapes-flow"])
def test_a_bare_call_runs_with_the_worlds_settings(world):
    pipe = load_pipeline(world)
    stock = _stock(pipe)
    assert type(pipe).__name__ == stock.__name__  # name-based checks and save_pretrained see the stock class
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    steps = CALL_KWARGS[world]["num_inference_steps"]
    with torch.no_grad():
        if world == "digits":
            labels = pipe.get_label_ids(["3", "7"])
            bare = pipe(class_labels=labels, generator=g()).images
            ref = stock.__call__(pipe, class_labels=labels, generator=g(), **CALL_KWARGS[world]).images
        elif world == "shapes":
            bare = pipe(PROMPT, generator=g()).images
            ref = stock.__call__(pipe, PROMPT, generator=g(), **CALL_KWARGS[world]).images
        else:
            bare = pipe(PROMPT, generator=g()).images
            ref = stock.__call__(pipe, generator=g(), **prompt_kwargs(world, [PROMPT]), **CALL_KWARGS[world]).images
    assert len(bare) == (2 if world == "digits" else 1) and bare[0].size == (32, 32)
    np.testing.assert_array_equal(_np(bare), _np(ref))
    # an explicit argument wins over the world's default
    with torch.no_grad():
        kw = {"class_labels": pipe.get_label_ids(["3"])} if world == "digits" else {"prompt": PROMPT}
        fewer = pipe(**kw, generator=g(), num_inference_steps=steps // 4, output_type="np").images
        full = pipe(**kw, generator=g(), output_type="np").images
    assert not np.array_equal(fewer, full)


def test_the_flow_world_takes_prompt_lists_and_images_per_prompt():
    pipe = load_pipeline("shapes-flow")
    with torch.no_grad():
        out = pipe(["a small blue square", PROMPT], num_images_per_prompt=2, num_inference_steps=2).images
    assert len(out) == 4
