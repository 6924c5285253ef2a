"""ILF and the paper cache refuse to share a transformer with a diffusers cache (`enable_cache`), either order:
together they would run without an error, with block counts and images that depend on which came first."""

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.errors import ILFError
from ilf.tiny_mmdit import mmdit_call_kwargs, tiny_mmdit_pipeline

STEPS = 6


@pytest.fixture(scope="module")
def pipe():
    p = tiny_mmdit_pipeline("flux", num_layers=3, num_single_layers=3)  # FluxTransformer2DModel has CacheMixin
    p.set_progress_bar_config(disable=True)
    return p


def run(pipe):
    with count_block_forwards(pipe) as counter:
        pipe("a red cat", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0), output_type="np",
             **mmdit_call_kwargs("flux"))
    return counter.total


def test_a_cache_enabled_first_refuses_ilf_and_the_paper_cache(pipe):
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    try:
        with pytest.raises(ILFError, match=r"diffusers cache \(FirstBlockCache\).*disable_cache\(\)"):
            apply_ilf(pipe, ILFConfig(loop=(1, 3)))
        with pytest.raises(ILFError, match=r"diffusers cache \(FirstBlockCache\).*the paper cache"):
            apply_cache(pipe, CacheConfig("inner", 2, 2))
        assert not hasattr(pipe.transformer, "ilf_feedback")  # refused before anything changed
    finally:
        pipe.transformer.disable_cache()
    apply_ilf(pipe, ILFConfig(loop=(1, 3)))
    try:
        assert run(pipe) == 6 * STEPS + 4 * 4  # outer:2: the loop (3) + F on 4 of 6 steps
    finally:
        remove_ilf(pipe)


@pytest.mark.parametrize("attach", ["ilf", "paper-cache"])
def test_a_cache_enabled_after_ilf_is_refused_at_the_next_call(pipe, attach):
    if attach == "ilf":
        apply_ilf(pipe, ILFConfig(loop=(1, 3)))
    else:
        apply_cache(pipe, CacheConfig("inner", 2, 2))
    pipe.transformer.enable_cache(TaylorSeerCacheConfig())
    try:
        with pytest.raises(ILFError, match=r"diffusers cache \(TaylorSeerCache\)"):
            run(pipe)
    finally:
        pipe.transformer.disable_cache()
    try:
        assert run(pipe) > 0  # disabling the cache is the fix
    finally:
        remove_ilf(pipe) if attach == "ilf" else remove_cache(pipe)
