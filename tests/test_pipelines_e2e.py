"""End to end through real PixArtAlphaPipeline / PixArtSigmaPipeline / DiTPipeline objects (tiny, offline)."""

import pytest
import torch
from diffusers import DDIMScheduler

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards, remove_cache, remove_ilf
from ilf.schedule import loop_ratio
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

KINDS = ["pixart-alpha", "pixart-sigma", "dit"]


def generate(pipe, kind, steps=6, guidance=4.5):
    g = torch.Generator().manual_seed(0)
    if kind == "dit":
        out = pipe(class_labels=[1, 7], num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="np")
    else:
        out = pipe(["a red cat above a dog", "a blue square"], num_inference_steps=steps, guidance_scale=guidance,
                   generator=g, output_type="np", height=16, width=16, **pixart_call_kwargs())
    return torch.from_numpy(out.images)


@pytest.fixture(params=KINDS)
def pipe(request):
    p = tiny_pipeline(request.param, num_layers=6)
    p.set_progress_bar_config(disable=True)
    p.kind = request.param
    return p


def _spy(pipe):
    """Record, per transformer call, the step the runtime located and whether feedback ran."""
    seen = []
    rt = pipe.transformer._ilf_runtime

    def hook(module, args, output):  # after the call: what was decided for it
        step, loop = rt.planned
        seen.append((step.index, step.num_steps, loop is not None, step.t, step.t_next,
                     None if loop is None else float(torch.as_tensor(loop.t_post).flatten()[0])))

    orig = rt.plan_call

    def plan_call(call):
        orig(call)
        rt.planned = (call.step(), rt.active)  # the loop executor is armed only on a feedback call

    rt.plan_call = plan_call
    pipe.transformer.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("guidance", [1.0, 4.5])  # without and with the CFG batch
def test_untrained_feedback_leaves_images_unchanged(pipe, guidance):
    ref = generate(pipe, pipe.kind, guidance=guidance)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="all", t_post="none"))
    with count_block_forwards(pipe) as fed:  # an attach that attached nothing would count 6 per call
        out = generate(pipe, pipe.kind, guidance=guidance)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert (fed.calls, fed.total, fed.feedback) == (6, 6 * (6 + 3 + 1), 6)  # 6 steps, all with feedback


def test_trained_feedback_changes_images_and_remove_restores_them_exactly(pipe):
    ref = generate(pipe, pipe.kind)
    rt = apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1"))
    rt.feedback.scales.data.fill_(0.5)
    assert (generate(pipe, pipe.kind) - ref).abs().max() > 1e-3
    remove_ilf(pipe)
    assert torch.equal(generate(pipe, pipe.kind), ref)


def test_schedule_is_read_from_the_pipeline_scheduler_and_follows_step_changes(pipe):
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:2", t_post="rescale"))
    seen = _spy(pipe)
    generate(pipe, pipe.kind, steps=10)
    generate(pipe, pipe.kind, steps=12)
    assert [s[0] for s in seen] == list(range(10)) + list(range(12))
    assert [s[1] for s in seen] == [10] * 10 + [12] * 12
    on = [i for i, n, fb, *_ in seen if fb]
    assert on == [0, 1, 8, 9] + [0, 1, 10, 11]
    # t, t_next and t_post from the scheduler's own timesteps (eq. 4, k = m/n = 3/6)
    timesteps = pipe.scheduler.timesteps.tolist()  # the last run: 12 steps
    for (i, n, fb, t, t_next, t_post) in seen[10:]:
        assert t == timesteps[i]
        assert t_next == (timesteps[i + 1] if i + 1 < n else 0.0)
        if fb:
            assert t_post == pytest.approx(t - (t - t_next) * loop_ratio(3, 6, "m/n"), abs=1e-3)


def test_a_scheduler_swapped_after_attaching_is_followed(pipe):
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="last:1"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # no step_index: found by value
    seen = _spy(pipe)
    generate(pipe, pipe.kind, steps=5)
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert [s[2] for s in seen] == [False, False, False, False, True]


def test_cache_refreshing_every_step_equals_stock_and_caching_changes_images(pipe):
    ref = generate(pipe, pipe.kind)
    apply_cache(pipe, CacheConfig("inner", 4, 1))
    torch.testing.assert_close(generate(pipe, pipe.kind), ref, rtol=0, atol=0)
    remove_cache(pipe)
    apply_cache(pipe, CacheConfig("inner", 4, 2))
    assert (generate(pipe, pipe.kind) - ref).abs().max() > 1e-4
    remove_cache(pipe)
    assert torch.equal(generate(pipe, pipe.kind), ref)


def test_ilf_and_cache_are_exclusive(pipe):
    from ilf import ILFError

    apply_cache(pipe, CacheConfig("inner", 2, 2))
    with pytest.raises(ILFError, match="remove_cache"):
        apply_ilf(pipe, ILFConfig(loop=(2, 4)))
