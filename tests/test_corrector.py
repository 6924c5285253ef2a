"""The cache-corrector mode on every family's real tiny pipeline: untrained it is exactly diffusers' TaylorSeer
(as `ilf bench` attaches it: natively on Flux, through the cache-context shim elsewhere), it counts exactly
the blocks it computes, a trained one changes the images, and removing it restores the stock pipeline."""

import pytest
import torch

from ilf import count_block_forwards, remove_ilf
from ilf.bench.family import MethodContext
from ilf.bench.family_diffusers import TaylorSeerFamily
from ilf.bench.methods import parse_method
from ilf.runtime.corrector import apply_corrector, textless_tail
from ilf.corrector_config import CorrectorConfig, taylor_compute_steps
from ilf.adapters import get_adapter
from tiny_runs import CASES, make_pipe, run

STEPS = 8


def generate(pipe, steps=STEPS):
    return run(pipe, steps)


@pytest.fixture(params=list(CASES), scope="module")
def pipe(request):
    return make_pipe(request.param)


def taylorseer_images(pipe, interval, warmup):
    """diffusers' TaylorSeer at these settings, attached as `ilf bench` attaches it."""
    spec = parse_method(f"taylorseer:{STEPS},interval={interval},warmup={warmup}")
    prepared = TaylorSeerFamily().prepare(spec, MethodContext(pipe, 0))
    att = prepared.attach(pipe)
    try:
        att.before_call()
        with count_block_forwards(pipe) as counter:
            images = generate(pipe)
    finally:
        att.detach()
    return images, counter.total


@pytest.mark.parametrize("fresh", [0, 1])
def test_untrained_corrector_is_exactly_taylorseer_and_counts_its_partial_steps(pipe, fresh):
    ts, ts_blocks = taylorseer_images(pipe, interval=2, warmup=2)
    stock = generate(pipe)
    model = pipe.transformer
    n = len(get_adapter(model).blocks(model))
    tail = textless_tail(get_adapter(model), model)
    apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=fresh, correct_steps="all", num_inference_steps=STEPS))
    try:
        with count_block_forwards(pipe) as counter:
            out = generate(pipe)
    finally:
        remove_ilf(pipe)
    assert torch.equal(out, ts)
    assert not torch.allclose(out, stock, atol=1e-4)  # the cache did forecast: it is not the stock run
    full = len(taylor_compute_steps(STEPS, 2, 2))
    forecast = STEPS - full
    calls = pipe.calls_per_step
    assert counter.total == calls * (full * n + forecast * (fresh + 1 + tail))
    assert counter.feedback == calls * forecast  # F ran once per forecast call
    assert ts_blocks == calls * (full * n + forecast * tail)  # diffusers' own: the fresh blocks and F are ours
    assert torch.equal(generate(pipe), stock)  # removed: the stock pipeline again, bit for bit


@pytest.mark.parametrize("part", ["scale", "mix"])
def test_trained_corrector_changes_images_and_remove_restores_stock(pipe, part):
    stock = generate(pipe)
    rt = apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=1, correct_steps="all", num_inference_steps=STEPS))
    try:
        untrained = generate(pipe)
        with torch.no_grad():  # mix: extrapolate twice as far (a plain rescale would vanish in the final norm)
            (rt.feedback.scales if part == "scale" else rt.feedback.mix[:, 1]).fill_(1.0)
        trained = generate(pipe)
    finally:
        remove_ilf(pipe)
    assert (trained - untrained).abs().max() > 1e-4
    assert torch.equal(generate(pipe), stock)
    assert not hasattr(pipe.transformer, "_ilf_runtime") and not hasattr(pipe.transformer, "ilf_feedback")


def test_compute_steps_are_diffusers_taylorseer_decisions():
    from diffusers.hooks import TaylorSeerCacheConfig
    from diffusers.hooks.taylorseer_cache import TaylorSeerCacheHook, TaylorSeerState
    from diffusers.hooks.hooks import CacheContext, StateManager

    for interval, warmup, cooldown in [(2, 3, None), (3, 2, None), (4, 1, None), (2, 3, 15), (1, 1, None)]:
        cfg = TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup,
                                    disable_cache_after_step=cooldown)
        manager = StateManager(TaylorSeerState)
        manager.set_context(CacheContext("cond"))
        hook = TaylorSeerCacheHook(cfg.cache_interval, cfg.disable_cache_before_step, torch.float32, manager,
                                   cfg.disable_cache_after_step)
        decided = [s for s in range(20) if hook._measure_should_compute()[0]]
        assert decided == taylor_compute_steps(20, interval, warmup, cooldown)


def test_block_forward_prediction_matches_counts_of_the_config():
    cfg = CorrectorConfig(interval=3, warmup=3, fresh=1, correct_steps="all")
    # 20 steps: full 0,1,2,4,7,10,13,16,19 (9 x 12 blocks); 11 forecasts x (1 fresh + F)
    assert cfg.block_forwards(20, 12) == 9 * 12 + 11 * 2
    assert CorrectorConfig(interval=2, warmup=3, correct_steps="all").block_forwards(20, 12) == 11 * 12 + 9 * 1
    assert CorrectorConfig(fresh=2, correct_steps="all").block_forwards(20, 6, textless_tail=1) == 11 * 6 + 9 * (2 + 1 + 1)
    # F only on the last two forecast steps (17 and 19 of i2 w3), nothing fresh: F's 2 forwards
    assert CorrectorConfig(fresh=0, correct_steps="last:3").block_forwards(20, 12) == 11 * 12 + 2
    assert CorrectorConfig(fresh=0, correct_steps="none").block_forwards(20, 12) == 11 * 12
