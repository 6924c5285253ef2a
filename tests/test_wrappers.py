"""ILF and the paper cache beside what other libraries install: accelerate hooks (cpu offload), diffusers'
group offloading, and class-level wrappers of a block's forward (profilers, tracers)."""

import functools

import pytest
import torch
from accelerate.hooks import ModelHook as AccelerateHook
from accelerate.hooks import add_hook_to_module, remove_hook_from_module
from diffusers.hooks import apply_group_offloading
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.normalization import AdaLayerNormSingle

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, remove_cache, remove_ilf
from ilf.runtime.planner import ModelCall
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

LOOP = (2, 4)


class CountingHook(AccelerateHook):
    def __init__(self):
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


def _generate(pipe, steps=3):
    g = torch.Generator().manual_seed(0)
    out = pipe(["a red cat"], num_inference_steps=steps, generator=g, output_type="latent", height=16, width=16,
               **pixart_call_kwargs())
    return out.images


@pytest.fixture
def pipe():
    p = tiny_pipeline("pixart-alpha", num_layers=6)
    p.set_progress_bar_config(disable=True)
    return p


def _attach(pipe, how):
    if how == "ilf":
        rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="first:1"))
        rt.feedback.scales.data.fill_(0.5)
        return lambda: remove_ilf(pipe)
    apply_cache(pipe, CacheConfig("inner", 4, 2))
    return lambda: remove_cache(pipe)


def _stock_forward(module):
    # accelerate's removal leaves the bound class method as an instance attribute: that is stock
    fwd = module.forward
    return getattr(fwd, "__func__", None) is type(module).forward and not hasattr(module, "_diffusers_hook")


@pytest.mark.parametrize("how", ["ilf", "cache"])
@pytest.mark.parametrize("order", ["accelerate_first", "accelerate_last"])
def test_accelerate_hooks_keep_firing_after_removal(pipe, how, order):
    model = pipe.transformer
    targets = {"transformer": model, "loop block": model.transformer_blocks[3]}
    hooks = {name: CountingHook() for name in targets}
    if order == "accelerate_last":
        remove = _attach(pipe, how)
    for name, module in targets.items():
        add_hook_to_module(module, hooks[name])
    if order == "accelerate_first":
        remove = _attach(pipe, how)
    _generate(pipe, steps=3)
    before = {n: h.calls for n, h in hooks.items()}
    assert before["transformer"] == 3
    if how == "ilf":  # the loop block runs twice on the feedback step, through accelerate's hook both times
        assert before["loop block"] == 4
    remove()
    _generate(pipe, steps=3)
    assert {n: h.calls - before[n] for n, h in hooks.items()} == {"transformer": 3, "loop block": 3}
    for module in targets.values():  # and accelerate's own removal still gives the stock module back
        remove_hook_from_module(module)
        assert _stock_forward(module)


def test_group_offloading_survives_ilf_both_ways(pipe):
    ref = _generate(pipe)
    apply_group_offloading(pipe.transformer, onload_device="cpu", offload_device="cpu", offload_type="block_level",
                           num_blocks_per_group=2)
    offloaded = {n for n, m in pipe.transformer.named_modules() if hasattr(m, "_diffusers_hook")}
    assert offloaded  # the fixture really installs hooks
    remove = _attach(pipe, "ilf")
    changed = _generate(pipe)
    assert (changed - ref).abs().max() > 1e-4
    remove()
    assert {n for n, m in pipe.transformer.named_modules() if hasattr(m, "_diffusers_hook")} == offloaded
    torch.testing.assert_close(_generate(pipe), ref, rtol=0, atol=0)
    remove = _attach(pipe, "ilf")  # once more, ILF under the offloading hooks
    torch.testing.assert_close(_generate(pipe), changed, rtol=0, atol=0)
    remove()
    torch.testing.assert_close(_generate(pipe), ref, rtol=0, atol=0)


@pytest.fixture
def wrapped_block_class(monkeypatch):
    """Profiler-style class-level wrappers, without functools.wraps, of the block's forward and of PixArt's
    time embedding (which the pipeline calls with two positional arguments)."""
    seen = []

    def wrapper(original):
        def forward(self, *args, **kwargs):
            seen.append(len(args))
            return original(self, *args, **kwargs)

        return forward

    def wrap():
        for cls in (BasicTransformerBlock, AdaLayerNormSingle):
            monkeypatch.setattr(cls, "forward", wrapper(cls.forward))

    yield wrap, seen


@pytest.mark.parametrize("how", ["ilf", "cache"])
@pytest.mark.parametrize("when", ["before_attach", "after_attach"])
def test_a_class_level_wrapper_without_wraps_does_not_break_binding(pipe, wrapped_block_class, how, when):
    wrap, seen = wrapped_block_class
    if how == "ilf":
        rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="all"))
        rt.feedback.scales.data.fill_(0.5)
    else:
        apply_cache(pipe, CacheConfig("inner", 4, 2))
    expected = _generate(pipe)
    if when == "before_attach":
        (remove_ilf if how == "ilf" else remove_cache)(pipe)
        wrap()
        if how == "ilf":
            apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="all"), feedback=rt.feedback)
        else:
            apply_cache(pipe, CacheConfig("inner", 4, 2))
    else:
        wrap()
    torch.testing.assert_close(_generate(pipe), expected, rtol=0, atol=0)
    assert seen  # the wrapper really ran


def test_positional_block_call_through_a_generic_wrapper_is_refused_clearly(pipe, wrapped_block_class):
    wrap, _ = wrapped_block_class
    wrap()
    rt = apply_ilf(pipe.transformer, ILFConfig(loop=LOOP))
    block = pipe.transformer.transformer_blocks[3]
    rt.plan_call(ModelCall(rt.planner, (), {"hidden_states": torch.zeros(1, 16, 16), "timestep": torch.tensor([500])},
                           {"ilf_t_post": 100.0}))  # a feedback call armed, as the model hook would
    with pytest.raises(TypeError, match="by keyword"):
        block(torch.zeros(1, 16, 16), None, None, None, torch.zeros(1, 96))


def test_an_unknown_wrapper_over_ilf_is_refused_before_anything_changes(pipe):
    from ilf import ILFError
    from ilf.runtime.attached import get_runtime

    apply_ilf(pipe, ILFConfig(loop=LOOP))
    block = pipe.transformer.transformer_blocks[4]
    under = block.forward
    block.forward = functools.partial(lambda *a, **k: under(*a, **k))  # e.g. a tracer's instance wrapper
    with pytest.raises(ILFError, match="remove that wrapper first"):
        remove_ilf(pipe)
    assert get_runtime(pipe.transformer) is not None
    assert all(hasattr(b, "_diffusers_hook") for b in pipe.transformer.transformer_blocks[2:])
