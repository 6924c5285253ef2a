"""End to end through real StableDiffusion3Pipeline / FluxPipeline / SanaPipeline objects (tiny, offline), with
their stock flow-matching schedulers (FlowMatchEuler with shift; Flux-dev with dynamic shifting; Sana's
flow DPM-Solver++)."""

import pytest
import torch

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.schedule import loop_ratio, post_timestep
from ilf.tiny import tiny_pipeline
from ilf.tiny_mmdit import mmdit_call_kwargs

# (pipeline kind, call options, transformer calls per step)
CASES = {
    "sd3": ("sd3", {"guidance_scale": 5.0}, 1),
    "flux": ("flux", {}, 1),
    "flux-true-cfg": ("flux", {"negative_prompt": ["", ""], "true_cfg_scale": 3.0}, 2),
    "flux-dev": ("flux-dev", {"guidance_scale": 3.5}, 1),
    "sana": ("sana", {"guidance_scale": 4.5}, 1),
}
UNITS = {"sd3": 1.0, "flux": 1e-3, "flux-dev": 1e-3, "sana": 1.0}  # model timestep per scheduler timestep


def generate(pipe, steps=5, **extra):
    kw = {**mmdit_call_kwargs(pipe.kind), **pipe.options, **extra}
    out = pipe(["a red cat above a dog", "a blue square"], num_inference_steps=steps, output_type="np",
               generator=torch.Generator().manual_seed(0), **kw)
    return torch.from_numpy(out.images)


@pytest.fixture(params=list(CASES))
def pipe(request):
    kind, options, calls = CASES[request.param]
    p = tiny_pipeline(kind)
    p.set_progress_bar_config(disable=True)
    p.kind, p.options, p.calls_per_step = kind, options, calls
    return p


def _spy(pipe):
    """Per transformer call: (step, num_steps, feedback on, scheduler t, t_next, t_post in the model's units)."""
    seen, rt = [], pipe.transformer._ilf_runtime
    orig = rt.plan_call

    def plan_call(call):
        orig(call)
        step, loop = call.step(), rt.active  # the loop executor is armed only on a feedback call
        seen.append((step.index, step.num_steps, loop is not None, step.t, step.t_next,
                     None if loop is None else float(torch.as_tensor(loop.t_post).flatten()[0])))

    rt.plan_call = plan_call
    return seen


def test_untrained_feedback_with_t_post_none_leaves_images_unchanged(pipe):
    ref = generate(pipe)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="all", t_post="none"))
    with count_block_forwards(pipe) as fed:  # an attach that attached nothing would count 6 per call
        out = generate(pipe)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    c = pipe.calls_per_step
    assert (fed.calls, fed.total, fed.feedback) == (5 * c, 5 * c * (6 + 3 + 1), 5 * c)  # 5 steps, all fed back


def test_trained_feedback_changes_images_and_remove_restores_them_bit_for_bit(pipe):
    ref = generate(pipe)
    rt = apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1"))
    rt.feedback.scales.data.fill_(0.5)
    assert (generate(pipe) - ref).abs().max() > 1e-3
    remove_ilf(pipe)
    assert torch.equal(generate(pipe), ref)


def test_the_clock_reads_the_flow_schedule_and_t_post_in_its_units(pipe):
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:2", t_post="rescale"))
    seen = _spy(pipe)
    generate(pipe, steps=6)
    c = pipe.calls_per_step
    assert [s[0] for s in seen] == [i for i in range(6) for _ in range(c)]  # true CFG: both calls, one step
    assert [s[2] for s in seen] == [i in (0, 1, 4, 5) for i in range(6) for _ in range(c)]
    timesteps = pipe.scheduler.timesteps.tolist()  # in the scheduler's units (σ·1000)
    assert max(timesteps) > 900 and len(timesteps) == 6
    k = loop_ratio(3, 6, "m/n")
    for i, n, fb, t, t_next, t_post in seen:
        assert t == pytest.approx(timesteps[i], abs=1e-3)
        assert t_next == pytest.approx(timesteps[i + 1] if i + 1 < n else 0.0, abs=1e-3)
        if fb:  # eq. 4 on the scheduler's timesteps, handed to the model in its own units
            want = float(post_timestep("rescale", t, t - t_next, k=k)) * UNITS[pipe.kind]
            assert t_post == pytest.approx(want, rel=1e-5)


def test_block_counts_follow_the_paper_per_call(pipe):
    n, m, steps, c = 6, 3, 6, pipe.calls_per_step
    with count_block_forwards(pipe) as plain:
        generate(pipe, steps=steps)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1"))
    with count_block_forwards(pipe) as fed:
        generate(pipe, steps=steps)
    assert plain.calls == fed.calls == steps * c
    assert plain.total == n * steps * c
    assert fed.total == (n * steps + 2 * (m + 1)) * c and fed.feedback == 2 * c


def test_paper_cache_refreshing_every_step_is_stock_and_caching_skips_blocks(pipe):
    ref = generate(pipe, steps=6)
    apply_cache(pipe, CacheConfig("inner", 4, 1))
    torch.testing.assert_close(generate(pipe, steps=6), ref, rtol=0, atol=0)
    remove_cache(pipe)
    apply_cache(pipe, CacheConfig("inner", 4, 2))
    with count_block_forwards(pipe) as counter:
        cached = generate(pipe, steps=6)
    assert counter.total == (6 * 6 - 3 * 4) * pipe.calls_per_step  # 3 of 6 steps skip the 4 inner blocks
    assert (cached - ref).abs().max() > 1e-4
    remove_cache(pipe)
    assert torch.equal(generate(pipe, steps=6), ref)
