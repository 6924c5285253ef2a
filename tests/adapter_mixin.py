"""Adapter tests written once and run per architecture (as diffusers' cache tests are).

A subclass provides: `make_model(num_layers, seed)`, `make_inputs(model, batch, cfg, t)` (the model call's
keyword arguments, with `timestep`; `t` in the scheduler's units, 0..1000), and `reference(model, feedback,
loop, inputs, t_post)`: a plain-PyTorch implementation of eq. 2–3 written independently of ilf's hooks.
`t_units` is the model's timestep per scheduler timestep (Flux: 1/1000); timesteps passed to the model in
these tests are multiplied by it. Blocks are addressed by global index across the model's block lists.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ilf import (
    CacheConfig, FeedbackMismatchError, ILFConfig, ScheduleError, apply_cache, apply_ilf, count_block_forwards,
    remove_cache, remove_ilf, save_feedback,
)
from ilf.adapters import get_adapter
from ilf.runtime.attached import get_runtime


def single_stream_loop(blocks, feedback, h, loop, cond_t, cond_p, **kw):
    """Eq. 2-3 written out over one block list (PixArt, DiT, Sana): B_0..B_e at t, f_feed = F(f_e), the loop
    re-run from B_b's input with s_i·f_feed added to each loop block's input, then B_{e+1}.. at t_post.
    `cond_t` / `cond_p`: the blocks' `timestep=` argument for t and t_post; `kw`: their other arguments."""
    b, e = loop
    for i in range(e + 1):
        if i == b:
            f_in = h
        h = blocks[i](h, timestep=cond_t, **kw)
    f_feed = feedback.block(h, timestep=cond_t, **kw)
    h = f_in
    for j, i in enumerate(range(b, e + 1)):
        h = blocks[i](h + feedback.scales[j] * f_feed, timestep=cond_p, **kw)
    for i in range(e + 1, len(blocks)):
        h = blocks[i](h, timestep=cond_p, **kw)
    return h


def _out(model, inputs, **extra):
    with torch.no_grad():
        return model(**inputs, **extra).sample


def _hooked_modules(model):
    return [n for n, m in model.named_modules() if hasattr(m, "_diffusers_hook") or "forward" in m.__dict__]


def _blocks(model):
    return get_adapter(model).blocks(model)


def _without_block(model, k):
    """A copy of `model` with global block k deleted from its block list."""
    pruned = copy.deepcopy(model)
    site = get_adapter(pruned).sites(pruned)[k]
    blocks = getattr(pruned, site.stack.attr)
    del blocks[[i for i, b in enumerate(blocks) if b is site.module][0]]
    return pruned


class ILFAdapterTests:
    num_layers = 6  # blocks in all (across the model's block lists)
    loop = (2, 4)
    t_units = 1.0

    def T(self, t):
        """A scheduler timestep in the model's units."""
        return t * self.t_units

    def other_family_model(self):
        from ilf.tiny import tiny_dit

        return tiny_dit(num_layers=self.num_layers)

    # ---- provided by subclasses ----
    def make_model(self, num_layers=None, seed=0):
        raise NotImplementedError

    def make_inputs(self, model, batch=1, cfg=False, t=600):
        raise NotImplementedError

    def reference(self, model, feedback, loop, inputs, t_post):
        raise NotImplementedError

    # ---- the fixture itself is meaningful ----
    def test_every_block_matters(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2)
        ref = _out(model, inputs)
        assert len(_blocks(model)) == self.num_layers
        for k in sorted({0, self.loop[0], self.loop[1], self.num_layers - 1}):
            pruned = _without_block(model, k)
            assert not torch.allclose(_out(pruned, inputs), ref, atol=1e-4), f"dropping block {k} changed nothing"

    # ---- identity of an untrained feedback ----
    @pytest.mark.parametrize("cfg", [False, True])
    def test_zero_scales_and_t_post_none_equal_stock(self, cfg):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2, cfg=cfg)
        ref = _out(model, inputs)
        apply_ilf(model, ILFConfig(loop=self.loop, t_post="none"))
        with count_block_forwards(model) as fed:  # an attach that attached nothing would count n
            out = _out(model, inputs, ilf_t_post=inputs["timestep"])
        torch.testing.assert_close(out, ref, rtol=1.3e-6, atol=1e-5)
        assert (fed.total, fed.feedback) == (self.num_layers + self.loop[1] - self.loop[0] + 2, 1)

    def test_t_post_reaches_the_blocks_after_the_feedback(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2)
        ref = _out(model, inputs)
        apply_ilf(model, ILFConfig(loop=self.loop))
        out = _out(model, inputs, ilf_t_post=self.T(200.0))  # zero scales, but later blocks see another timestep
        assert not torch.allclose(out, ref, atol=1e-4)

    def test_feedback_off_call_is_stock_even_with_trained_scales(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2)
        ref = _out(model, inputs)
        rt = apply_ilf(model, ILFConfig(loop=self.loop))
        rt.feedback.scales.data.fill_(0.7)
        torch.testing.assert_close(_out(model, inputs, ilf_feedback=False), ref, rtol=0, atol=0)

    # ---- eq. 2–3 against a plain reference ----
    @pytest.mark.parametrize("cfg", [False, True])
    @pytest.mark.parametrize("loop", [None, "single", "from_zero", "to_end"])
    def test_nonzero_scales_match_reference(self, cfg, loop):
        n = self.num_layers
        loop = {None: self.loop, "single": (3, 3), "from_zero": (0, 2), "to_end": (n - 3, n - 1)}[loop]
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2, cfg=cfg)
        rt = apply_ilf(model, ILFConfig(loop=loop, init="fresh"))
        torch.manual_seed(1)
        rt.feedback.scales.data.copy_(torch.randn(loop[1] - loop[0] + 1) * 0.5)
        t_post = torch.full_like(inputs["timestep"], self.T(350.0), dtype=torch.float32)
        out = _out(model, inputs, ilf_t_post=t_post)
        expected = self.reference(model, rt.feedback, loop, inputs, t_post)
        assert not torch.allclose(out, _out(model, inputs, ilf_feedback=False), atol=1e-3)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    def test_explicit_feedback_reads_t_post_off_the_attached_schedule(self):
        """`ilf_feedback=True` without `ilf_t_post`, on a model attached with a scheduler: the call's timestep
        (model units) is located on the schedule and t_post follows from that step. DDIM's 10 leading-spaced
        steps are 900, 800, …, 0, so the call at 600 has gap 100 and `t_post="uniform"` (t − gap/2) is 550."""
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=1000)
        sched.set_timesteps(10)
        assert sched.timesteps[3] == 600 and sched.timesteps[4] == 500
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2, t=600)
        rt = apply_ilf(model, ILFConfig(loop=self.loop, init="fresh", t_post="uniform"), scheduler=sched)
        rt.feedback.scales.data.fill_(0.5)
        out = _out(model, inputs, ilf_feedback=True)
        t_post = torch.full_like(inputs["timestep"], self.T(550.0), dtype=torch.float32)
        torch.testing.assert_close(out, self.reference(model, rt.feedback, self.loop, inputs, t_post),
                                   rtol=1e-5, atol=1e-5)

    # ---- the feedback block ----
    def test_feedback_block_is_a_backbone_block_with_copied_settings(self):
        model = self.make_model()
        rt = apply_ilf(model, ILFConfig(loop=self.loop))
        block, ref_block = rt.feedback.block, _blocks(model)[self.loop[1]]
        assert type(block) is type(ref_block)
        got = {k: v.shape for k, v in block.state_dict().items()}
        assert got == {k: v.shape for k, v in ref_block.state_dict().items()}
        for k, v in ref_block.state_dict().items():  # default init copies block e
            torch.testing.assert_close(block.state_dict()[k], v, rtol=0, atol=0)
        assert torch.equal(rt.feedback.scales.detach(), torch.zeros(self.loop[1] - self.loop[0] + 1))
        remove_ilf(model)
        fresh = apply_ilf(model, ILFConfig(loop=self.loop, init="fresh")).feedback.block
        assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in ref_block.state_dict().items())
        remove_ilf(model)
        blocks = _blocks(model)
        src = min(i for i, b in enumerate(blocks) if type(b) is type(blocks[self.loop[1]]))  # Flux: a single block
        other = apply_ilf(model, ILFConfig(loop=self.loop, init_block=src)).feedback.block
        first = blocks[src].state_dict()
        assert all(torch.equal(other.state_dict()[k], v) for k, v in first.items())

    # ---- detaching ----
    def test_remove_restores_bit_identical_stock_model(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2, cfg=True)
        ref = _out(model, inputs)
        keys = set(model.state_dict())
        rt = apply_ilf(model, ILFConfig(loop=self.loop))
        rt.feedback.scales.data.fill_(0.5)
        _out(model, inputs, ilf_t_post=self.T(100.0))
        removed = remove_ilf(model)
        assert removed is rt.feedback
        assert _hooked_modules(model) == []
        assert set(model.state_dict()) == keys and get_runtime(model) is None
        assert torch.equal(_out(model, inputs), ref)

    # ---- training support ----
    def test_gradient_checkpointing_gives_the_same_feedback_gradients(self):
        grads = []
        for ckpt in (False, True):
            model = self.make_model()
            model.requires_grad_(False)
            inputs = self.make_inputs(model, batch=2)
            rt = apply_ilf(model, ILFConfig(loop=self.loop))
            rt.feedback.scales.data.fill_(0.3)
            if ckpt:
                rt.enable_gradient_checkpointing()
            student = model(**inputs, ilf_t_post=self.T(300.0)).sample
            with torch.no_grad():  # a teacher call between the student's forward and its backward
                teacher = model(**inputs, ilf_feedback=False).sample
            ((student - teacher) ** 2).mean().backward()
            # (an MMDiT F's text-side output layers get no gradient: only F's image stream is fed back)
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in rt.feedback.parameters()])
            assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("ilf_feedback."))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert any(g.abs().sum() > 0 for g in grads[1])

    # ---- errors ----
    def test_bare_model_without_t_post_is_refused_clearly(self):
        model = self.make_model()
        apply_ilf(model, ILFConfig(loop=self.loop))
        with pytest.raises(ScheduleError, match="ilf_t_post"):
            _out(model, self.make_inputs(model))

    def test_loop_outside_the_model_is_refused_and_changes_nothing(self):
        from ilf import LoopRangeError

        model = self.make_model()
        with pytest.raises(LoopRangeError, match=f"it has {self.num_layers} blocks"):
            apply_ilf(model, ILFConfig(loop=(2, self.num_layers)))
        assert _hooked_modules(model) == [] and get_runtime(model) is None

    # ---- the paper's caching baseline ----
    def test_cache_refreshing_every_step_equals_stock(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2, cfg=True)
        ref = _out(model, inputs)
        apply_cache(model, CacheConfig("inner", 4, 1))
        torch.testing.assert_close(_out(model, inputs, ilf_cache_refresh=True), ref, rtol=0, atol=0)
        remove_cache(model)
        assert _hooked_modules(model) == []

    def test_cached_step_adds_the_stored_residuals(self):
        model = self.make_model()
        cache = apply_cache(model, CacheConfig("first", 2, 2))
        a, b = self.make_inputs(model, batch=2, t=600), self.make_inputs(model, batch=2, t=500)
        _out(model, a, ilf_cache_refresh=True)
        cached = _out(model, b, ilf_cache_refresh=False)
        # reference: blocks 0 and 1 return x + (B_i(x_refresh) - x_refresh) per stream, from the refresh call
        remove_cache(model)
        sites = get_adapter(model).sites(model)[:2]

        def streams_in(site, args, kw):
            names = ("hidden_states", "encoder_hidden_states")  # every family passes these first, in this order
            given = {**dict(zip(names, args)), **kw}
            return {k: given[k] for k in site.stack.outputs}

        res = []
        hooks = [s.module.register_forward_hook(
            lambda m, args, kw, out, s=s: res.append(
                {k: None if v is None else v - streams_in(s, args, kw)[k] for k, v in s.stack.as_streams(out).items()}),
            with_kwargs=True) for s in sites]
        _out(model, a)
        for h in hooks:
            h.remove()
        patch = [s.module.register_forward_hook(
            lambda m, args, kw, out, s=s, r=r: s.stack.as_output(
                {k: None if v is None else streams_in(s, args, kw)[k] + v for k, v in r.items()}),
            with_kwargs=True) for s, r in zip(sites, res)]
        expected = _out(model, b)
        for h in patch:
            h.remove()
        assert cache.cached == (0, 1)
        torch.testing.assert_close(cached, expected, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(cached, _out(model, b), atol=1e-4)

    # ---- the block-forward counter ----
    def test_block_counts_are_n_per_plain_call_and_n_plus_m_plus_1_with_feedback(self):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2)
        apply_ilf(model, ILFConfig(loop=self.loop))
        m = self.loop[1] - self.loop[0] + 1
        with count_block_forwards(model) as plain:
            _out(model, inputs, ilf_feedback=False)
        with count_block_forwards(model) as fed:
            _out(model, inputs, ilf_t_post=self.T(300.0))
        assert (plain.total, plain.calls, plain.feedback) == (self.num_layers, 1, 0)
        assert (fed.total, fed.feedback) == (self.num_layers + m + 1, 1)
        assert all(fed.per_block[f"block.{i}"] == 2 for i in range(self.loop[0], self.loop[1] + 1))

    # ---- adapter files ----
    def test_saved_feedback_reloads_exactly_and_refuses_another_family(self, tmp_path):
        model = self.make_model()
        inputs = self.make_inputs(model, batch=2)
        rt = apply_ilf(model, ILFConfig(loop=self.loop, t_post="none"))
        rt.feedback.scales.data.fill_(0.4)
        want = _out(model, inputs, ilf_t_post=inputs["timestep"])
        save_feedback(model, tmp_path / "fb")
        remove_ilf(model)
        apply_ilf(model, tmp_path / "fb")
        torch.testing.assert_close(_out(model, inputs, ilf_t_post=inputs["timestep"]), want, rtol=0, atol=0)
        other = self.other_family_model()
        with pytest.raises(FeedbackMismatchError, match="another backbone"):
            apply_ilf(other, tmp_path / "fb")
        assert _hooked_modules(other) == []
