"""ILF, the paper cache and the bench's cache context on every family's real tiny pipeline in bf16 and fp16.

Flux pipelines cast the timestep to the latents' dtype and divide by 1000 in it, so the model sees t rounded
(bf16: up to ~4 scheduler units near σ = 1). The step must still be found (on main it was refused with
"timestep 968.75 is not in the scheduler's timesteps"), and the scheduler's exact value kept.
"""

import pytest
import torch

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.adapters import get_adapter
from tiny_runs import CASES, make_pipe, run

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
LOOP = (2, 4)  # m = 3 loop blocks of 6


def _hooked(model):
    """Modules with a hook or an instance forward (Flux pipelines give the transformer an empty registry of
    their own through `cache_context`: only registries holding hooks count)."""
    return [n for n, m in model.named_modules()
            if getattr(getattr(m, "_diffusers_hook", None), "hooks", None) or "forward" in m.__dict__]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", list(CASES))
def test_untrained_feedback_is_stock_counts_its_blocks_and_removes(case, dtype):
    pipe = make_pipe(case, DTYPES[dtype])
    steps, n, c = 5, len(get_adapter(pipe.transformer).blocks(pipe.transformer)), pipe.calls_per_step
    with count_block_forwards(pipe) as stock_count:
        ref = run(pipe, steps)
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="outer:1", t_post="none"))
    seen = []
    orig = rt.plan_call

    def spy(call):
        orig(call)
        seen.append(call.step())  # the step the planner located for the call

    rt.plan_call = spy
    with count_block_forwards(pipe) as fed:
        out = run(pipe, steps)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # zero scales, t_post = t: bit for bit
    assert stock_count.total == n * steps * c
    assert fed.total == (n * steps + 2 * (LOOP[1] - LOOP[0] + 2)) * c and fed.feedback == 2 * c  # steps 0, 4
    timesteps = pipe.scheduler.timesteps.double().tolist()
    assert [s.index for s in seen] == [i for i in range(steps) for _ in range(c)]
    assert [s.t for s in seen] == [timesteps[s.index] for s in seen]  # the scheduler's exact value
    remove_ilf(pipe)
    assert _hooked(pipe.transformer) == []
    assert torch.equal(run(pipe, steps), ref)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_a_28_step_flux_dev_schedule_in_half_precision(dtype):
    pipe = make_pipe("flux-dev", DTYPES[dtype])
    ref = run(pipe, 28)
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="outer:2", t_post="none"))
    steps = []
    orig = rt.plan_call
    rt.plan_call = lambda call: (orig(call), steps.append((call.step().index, rt.active is not None)))
    with count_block_forwards(pipe) as fed:
        torch.testing.assert_close(run(pipe, 28), ref, rtol=0, atol=0)
    assert steps == [(i, i in (0, 1, 26, 27)) for i in range(28)]
    assert fed.total == 6 * 28 + 4 * 4


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", ["flux-dev", "flux-true-cfg", "sd3", "pixart-alpha"])
def test_paper_cache_in_half_precision(case, dtype):
    pipe = make_pipe(case, DTYPES[dtype])
    n, c = len(get_adapter(pipe.transformer).blocks(pipe.transformer)), pipe.calls_per_step
    ref = run(pipe, 6)
    apply_cache(pipe, CacheConfig("inner", 4, 1))
    torch.testing.assert_close(run(pipe, 6), ref, rtol=0, atol=0)
    remove_cache(pipe)
    apply_cache(pipe, CacheConfig("inner", 4, 2))
    with count_block_forwards(pipe) as counter:
        run(pipe, 6)
    assert counter.total == (n * 6 - 3 * 4) * c  # steps 1, 3, 5 skip the 4 inner blocks
    remove_cache(pipe)
    assert _hooked(pipe.transformer) == [] and torch.equal(run(pipe, 6), ref)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_the_bench_cache_context_keeps_its_step_in_half_precision(dtype, monkeypatch):
    """On main the hook context swallowed the refused bf16 timestep: diffusers' caches lost their step."""
    from diffusers.hooks import FirstBlockCacheConfig
    from diffusers.models.cache_utils import CacheMixin

    from ilf.bench.hook_context import attach_diffusers_hooks

    pipe = make_pipe("flux-dev", DTYPES[dtype])
    contexts, real = [], CacheMixin.cache_context

    def record(module, name, **where):
        if "timestep" in where:  # the hook context's (the pipeline's own "cond" context passes none)
            contexts.append(where)
        return real(module, name, **where)

    monkeypatch.setattr(CacheMixin, "cache_context", record)
    attachment = attach_diffusers_hooks(pipe, lambda ctx: FirstBlockCacheConfig(threshold=0.0))
    try:
        attachment.before_call()
        run(pipe, 5)
    finally:
        attachment.detach()
    timesteps = pipe.scheduler.timesteps.double().tolist()
    assert [c.get("step_index") for c in contexts] == list(range(5))
    assert [c["timestep"] for c in contexts] == timesteps  # the scheduler's exact timesteps
    assert all(c["num_inference_steps"] == 5 and 0 < c["sigma"] <= 1 for c in contexts)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", ["flux-dev", "flux-true-cfg", "sd3", "pixart-alpha"])
def test_corrector_in_half_precision_finds_its_steps_counts_and_removes(case, dtype):
    from ilf.corrector_config import CorrectorConfig, taylor_compute_steps

    pipe = make_pipe(case, DTYPES[dtype])
    steps, n, c = 8, len(get_adapter(pipe.transformer).blocks(pipe.transformer)), pipe.calls_per_step
    ref = run(pipe, steps)
    rt = apply_ilf(pipe, CorrectorConfig(interval=2, warmup=2, fresh=1, correct_steps="all", num_inference_steps=steps))
    with torch.no_grad():
        rt.feedback.scales.fill_(0.5)
    with count_block_forwards(pipe) as counter:
        out = run(pipe, steps)
    full = len(taylor_compute_steps(steps, 2, 2))
    tail = 1 if case == "sd3" else 0  # SD3's text-less last block runs on every step
    assert counter.total == c * (full * n + (steps - full) * (1 + 1 + tail)) and counter.feedback == c * (steps - full)
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    remove_ilf(pipe)
    assert _hooked(pipe.transformer) == []
    assert torch.equal(run(pipe, steps), ref)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", ["flux-dev", "sd3"])
def test_a_masked_corrector_in_half_precision_computes_its_mask_and_removes(case, dtype):
    """The fast tier's form (an explicit step mask; SD3's text-less last block forecast too) in bf16/fp16: the
    step is found on the scheduler's counter in the latents' dtype, so the mask's steps are exactly the full ones."""
    from ilf.corrector_config import CorrectorConfig

    pipe = make_pipe(case, DTYPES[dtype])
    steps, n, c = 8, len(get_adapter(pipe.transformer).blocks(pipe.transformer)), pipe.calls_per_step
    mask = (0, 1, 4, 7)
    ref = run(pipe, steps)
    rt = apply_ilf(pipe, CorrectorConfig(full_steps=mask, tail=0, num_inference_steps=steps))
    with torch.no_grad():
        rt.feedback.mix.fill_(0.1)  # a learned forecast off TaylorSeer's own
    with count_block_forwards(pipe) as counter:
        out = run(pipe, steps)
    assert counter.total == c * len(mask) * n  # forecast steps cost no block at all with tail 0
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    remove_ilf(pipe)
    assert _hooked(pipe.transformer) == []
    assert torch.equal(run(pipe, steps), ref)
