"""What SeaCache is handed on image models: each call's cache context (the pipeline's name, the step, the flow
sigma), the flow sigma of a ddpm noise level, and Flux's packed latents back on their grid."""

import math

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, HookRegistry, StateManager

from ilf.bench.hook_context import CONTEXT_NAME, attach_diffusers_hooks
from ilf.bench.peer_support import raw_image_latents
from ilf.runtime.clock import flow_sigma
from ilf.eval.prompts import make_items
from ilf.eval.sources import default_conditions, load_tiny_source


class _Nothing(BaseState):
    def reset(self):
        pass


class ContextSpy(ModelHook):
    """A stateful hook that records, at each transformer call, the cache context the hooks are given."""

    _is_stateful = True

    def __init__(self):
        super().__init__()
        self.manager = StateManager(_Nothing)
        self.seen = []

    def reset_state(self, module):
        return module

    def pre_forward(self, module, *args, **kwargs):
        c = self.manager.context
        self.seen.append((c.name, c.step_index, c.num_inference_steps, c.sigma))
        return args, kwargs


def contexts_of_a_run(kind, steps, **call_kwargs):
    from diffusers.hooks import FirstBlockCacheConfig

    src = load_tiny_source(kind, num_layers=2, **call_kwargs)
    items = make_items(default_conditions(src, 1), num_images=1)
    spy = ContextSpy()
    registry = HookRegistry.check_if_exists_or_initialize(src.pipe.transformer)
    registry.register_hook(spy, "spy")  # registered before the context hook: runs inside it
    att = attach_diffusers_hooks(src.pipe, lambda _: FirstBlockCacheConfig(threshold=0.0))
    try:
        src(items, steps)
    finally:
        att.detach()
        registry.remove_hook("spy", recurse=False)
    return src, spy.seen


def test_flux_true_cfg_keeps_the_pipelines_context_names_with_the_step_and_sigma():
    src, seen = contexts_of_a_run("flux", 4, negative_prompt="", true_cfg_scale=2.0)
    sigmas = [float(s) for s in src.pipe.scheduler.sigmas[:4]]
    # Flux's pipeline names its two calls per step; each context carries where the loop is
    assert [(n, i) for n, i, _, _ in seen] == [(n, i) for i in range(4) for n in ("cond", "uncond")]
    assert all(steps == 4 for _, _, steps, _ in seen)
    assert [s for _, _, _, s in seen] == pytest.approx([s for s in sigmas for _ in (0, 1)], abs=1e-6)


def test_pipelines_without_contexts_get_one_per_call_with_the_ddpm_sigma():
    src, seen = contexts_of_a_run("pixart", 3)
    sched = src.pipe.scheduler
    assert [(n, i, k) for n, i, k, _ in seen] == [(CONTEXT_NAME, i, 3) for i in range(3)]
    expected = [flow_sigma(sched, float(t), "ddpm") for t in sched.timesteps]
    assert [s for *_, s in seen] == pytest.approx(expected)
    assert 0 < expected[-1] < expected[0] < 1


def test_flow_sigma_of_a_ddpm_level_has_its_signal_to_noise_ratio():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    for t in (0, 250, 999):
        s = flow_sigma(sched, t, "ddpm")
        # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and (1 - s) x0 + s eps have the same signal-to-noise ratio
        assert (1 - s) / s == pytest.approx(math.sqrt(abar[t] / (1 - abar[t])), rel=1e-4)
    mid = flow_sigma(sched, 250.5, "ddpm")  # between integer timesteps: between their sigmas
    assert flow_sigma(sched, 250, "ddpm") < mid < flow_sigma(sched, 251, "ddpm")
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    flow.set_timesteps(5)
    assert [flow_sigma(flow, float(t), "flow") for t in flow.timesteps] == pytest.approx(
        [float(s) for s in flow.sigmas[:5]], abs=1e-6)


def test_flux_packed_tokens_go_back_to_their_grid():
    from diffusers import FluxPipeline

    latents = torch.randn(2, 4, 6, 8)  # [B, C, H, W]
    packed = FluxPipeline._pack_latents(latents, 2, 4, 6, 8)  # [B, 12, 16]: 2x2 patches
    ids = FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32)  # [12, 3]
    perm = torch.randperm(12)  # the grid comes from the ids, not from the token order
    packed, ids = packed[:, perm], ids[perm]

    class FluxLike(torch.nn.Module):
        def forward(self, hidden_states, img_ids=None, timestep=None):
            return hidden_states

    out = raw_image_latents(FluxLike(), (), {"hidden_states": packed, "img_ids": ids})
    assert len(out) == 2 and out[0].shape == (16, 1, 3, 4)  # [D, T=1, h, w]
    for b in range(2):
        for k in range(12):
            r, c = int(ids[k, 1]), int(ids[k, 2])
            assert torch.equal(out[b][:, 0, r, c], packed[b, k])
    images = raw_image_latents(FluxLike(), (latents,), {})  # [B, C, H, W] models: each sample as one frame
    assert len(images) == 2 and torch.equal(images[1][:, 0], latents[1])
    assert raw_image_latents(FluxLike(), (), {"hidden_states": torch.randn(2, 12, 16)}) is None  # no ids
