"""The block-forward counter reproduces the paper's counts through real 28-block pipelines."""

import pytest
import torch

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, predicted_block_forwards
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

CASES = [  # (steps, ilf, cache, paper's block forwards)
    (20, None, None, 560),
    (12, None, None, 336),
    (10, ILFConfig(loop=(8, 19), feedback_steps="outer:2"), None, 332),
    (12, ILFConfig(loop=(8, 19), feedback_steps="skip-inner:8"), None, 388),
    (12, ILFConfig(loop=(0, 5), feedback_steps="all"), None, 420),
    (20, None, CacheConfig("inner", 18, 3), 326),
    (20, None, CacheConfig("inner", 18, 2), 380),
]


def _generate(pipe, kind, steps):
    g = torch.Generator().manual_seed(0)
    if kind == "dit":
        return pipe(class_labels=[1, 2], num_inference_steps=steps, generator=g, output_type="latent")
    return pipe(["a red cat", "a dog"], num_inference_steps=steps, generator=g, output_type="latent",
                height=16, width=16, **pixart_call_kwargs())


@pytest.mark.parametrize("kind", ["pixart-alpha", "dit"])
@pytest.mark.parametrize("steps, ilf, cache, expected", CASES)
def test_paper_block_counts(kind, steps, ilf, cache, expected):
    pipe = tiny_pipeline(kind, num_layers=28, heads=1, head_dim=8)
    pipe.set_progress_bar_config(disable=True)
    if ilf is not None:
        apply_ilf(pipe, ilf)
    if cache is not None:
        apply_cache(pipe, cache)
    with count_block_forwards(pipe) as counter:
        _generate(pipe, kind, steps)
    assert counter.total == expected
    assert counter.calls == steps  # one CFG-batched transformer call per step
    if ilf is not None:
        assert counter.feedback == (expected - 28 * steps) // (ilf.loop_len + 1)
    kw = dict(loop=ilf.loop, feedback_plan=ilf.feedback_steps) if ilf else {}
    if cache:
        kw = dict(cached_blocks=cache.num_blocks, refresh_every=cache.refresh_every)
    assert predicted_block_forwards(28, steps, **kw) == counter.total
