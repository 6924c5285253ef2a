"""The tiny SD3 / Flux / Sana pipelines: they run offline, text and every block reach the output, and each
pipeline calls its transformer the way the ILF wrappers will assume (calls per step, CFG layout, units)."""

import copy

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline

from ilf.tiny import tiny_pipeline
from ilf.tiny_mmdit import KINDS, mmdit_call_kwargs, sd3_medium, tiny_flux, tiny_mmdit_pipeline, tiny_sana, tiny_sd3
from ilf.tiny_parts import GATES, perturb

STEPS = 3
_PIPES = {}


def pipe_of(kind):
    if kind not in _PIPES:
        _PIPES[kind] = tiny_mmdit_pipeline(kind)
        _PIPES[kind].set_progress_bar_config(disable=True)
    return _PIPES[kind]


def run(pipe, kind, prompt="a red cat", seed=0, **kw):
    kw = mmdit_call_kwargs(kind, num_inference_steps=STEPS, output_type="np", **kw)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kw).images


class Calls:
    """Records every transformer call's positional and keyword arguments."""

    def __init__(self, transformer):
        self.calls = []
        self.transformer = transformer

    def __enter__(self):
        self.handle = self.transformer.register_forward_pre_hook(
            lambda m, args, kwargs: self.calls.append((args, dict(kwargs))), with_kwargs=True
        )
        return self.calls

    def __exit__(self, *exc):
        self.handle.remove()


def latents_in(call):
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]  # Sana passes the latents positionally


@pytest.mark.parametrize("kind", KINDS)
def test_runs_offline_with_stock_scheduler(kind):
    pipe = pipe_of(kind)
    stock = DPMSolverMultistepScheduler if kind == "sana" else FlowMatchEulerDiscreteScheduler
    assert isinstance(pipe.scheduler, stock)
    size = mmdit_call_kwargs(kind)["height"]
    with Calls(pipe.transformer) as calls:
        images = run(pipe, kind)
    assert images.shape == (1, size, size, 3) and (images >= 0).all() and (images <= 1).all()
    assert images.std() > 1e-3  # not a constant image
    # one call per step: SD3 and Sana batch [uncond, cond] (guidance_scale defaults > 1), Flux has no CFG batch
    assert len(calls) == STEPS
    assert {latents_in(c).shape[0] for c in calls} == {1 if kind.startswith("flux") else 2}


def test_scheduler_configs():
    cfg = {k: pipe_of(k).scheduler.config for k in KINDS}
    assert cfg["sd3"].shift == 3.0 and not cfg["sd3"].use_dynamic_shifting
    assert cfg["flux"].shift == 1.0 and not cfg["flux"].use_dynamic_shifting
    dev = cfg["flux-dev"]
    assert dev.shift == 3.0 and dev.use_dynamic_shifting and (dev.base_shift, dev.max_shift) == (0.5, 1.15)
    assert cfg["sana"].prediction_type == "flow_prediction" and cfg["sana"].use_flow_sigmas
    assert cfg["sana"].flow_shift == 3.0


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_and_deterministic(kind):
    first = run(pipe_of(kind), kind, seed=1)
    assert (run(pipe_of(kind), kind, seed=1) == first).all()
    assert not (run(pipe_of(kind), kind, seed=2) == first).all()
    for build_seed in (0, 1):  # construction is seeded too
        rebuilt = tiny_mmdit_pipeline(kind, seed=build_seed)
        rebuilt.set_progress_bar_config(disable=True)
        assert (run(rebuilt, kind, seed=1) == first).all() == (build_seed == 0)


# Each text encoder alone must reach the image: a dead one (e.g. CLIP pooling a position that is the same
# for every prompt) would leave the prompt path partly untested.
PROMPT_ROUTES = {
    "sd3": [{}, {"prompt_2": "a red cat", "prompt_3": "a red cat"}, {"prompt_3": "a red cat"},
            {"prompt_2": "a red cat"}],
    "flux": [{}, {"prompt_2": "a red cat"}],
    "flux-dev": [{}, {"prompt_2": "a red cat"}],
    "sana": [{}],
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_text_encoder_reaches_the_image(kind):
    pipe = pipe_of(kind)
    for fixed in PROMPT_ROUTES[kind]:
        a = run(pipe, kind, prompt="a red cat", **fixed)
        b = run(pipe, kind, prompt="a blue dog", **fixed)
        assert abs(a - b).max() > 1e-3, fixed


def transformer_inputs(kind):
    """The arguments of the first transformer call of a pipeline run, for calling the transformer directly."""
    pipe = pipe_of(kind)
    with Calls(pipe.transformer) as calls:
        run(pipe, kind)
    return calls[0]


def block_lists(kind):
    return ["transformer_blocks"] + (["single_transformer_blocks"] if kind.startswith("flux") else [])


def deletion_effects(transformer, kind, call):
    """max |Δ output| when each block is deleted in turn."""
    args, kwargs = call
    with torch.no_grad():
        base = transformer(*args, **kwargs)[0]
        effects = []
        for name in block_lists(kind):
            for k in range(len(getattr(transformer, name))):
                cut = copy.deepcopy(transformer)
                del getattr(cut, name)[k]
                effects.append(float((cut(*args, **kwargs)[0] - base).abs().max()))
    return effects


@pytest.mark.parametrize("kind", ["sd3", "flux", "sana"])
def test_every_block_matters(kind):
    transformer = pipe_of(kind).transformer
    effects = deletion_effects(transformer, kind, transformer_inputs(kind))
    n = sum(len(getattr(transformer, name)) for name in block_lists(kind))
    assert len(effects) == n and min(effects) > 1e-2, effects  # far above the 1e-4 the ILF tests assume


@pytest.mark.parametrize("kind,build", [("sd3", tiny_sd3), ("flux", tiny_flux), ("sana", tiny_sana)])
def test_perturb_revives_zeroed_gates(kind, build):
    """Zero-initialised gates (adaLN-Zero, as DiT-family training code does) make every block the identity;
    perturb makes each block matter again."""
    transformer = build(num_layers=2, **({"num_single_layers": 2} if kind == "flux" else {}))
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            # the blocks' gates only: the output layer and Sana's final (shift, scale) table stay as drawn
            if any(g in name for g in GATES) and not name.startswith(("norm_out", "proj_out", "scale_shift")):
                p.zero_()
    call = transformer_inputs(kind)
    assert max(deletion_effects(transformer, kind, call)) < 1e-6
    perturb(transformer, seed=0)
    assert min(deletion_effects(transformer, kind, call)) > 1e-2


def test_flux_true_cfg_two_calls_per_step_cond_first():
    pipe = pipe_of("flux")
    with Calls(pipe.transformer) as calls:
        run(pipe, "flux", negative_prompt="a blue dog", true_cfg_scale=4.0)
    assert len(calls) == 2 * STEPS and all(latents_in(c).shape[0] == 1 for c in calls)
    with torch.no_grad():  # as in the pipeline: with autograd on, T5 differs in the last bits
        cond, _, _ = pipe.encode_prompt("a red cat", max_sequence_length=16)
        uncond, _, _ = pipe.encode_prompt("a blue dog", max_sequence_length=16)
    for i in range(STEPS):
        assert torch.equal(calls[2 * i][1]["encoder_hidden_states"], cond)
        assert torch.equal(calls[2 * i + 1][1]["encoder_hidden_states"], uncond)
        assert torch.equal(calls[2 * i][1]["timestep"], calls[2 * i + 1][1]["timestep"])


def test_cfg_batch_is_uncond_first():
    sd3 = pipe_of("sd3")
    with Calls(sd3.transformer) as calls:
        run(sd3, "sd3")
    with torch.no_grad():
        cond, uncond, _, _ = sd3.encode_prompt("a red cat", None, None, max_sequence_length=16)
    assert torch.equal(calls[0][1]["encoder_hidden_states"], torch.cat([uncond, cond]))

    sana = pipe_of("sana")
    with Calls(sana.transformer) as calls:
        run(sana, "sana")
    with torch.no_grad():
        cond, _, uncond, _ = sana.encode_prompt("a red cat", max_sequence_length=16, complex_human_instruction=None)
    assert torch.equal(calls[0][1]["encoder_hidden_states"], torch.cat([uncond, cond]))


@pytest.mark.parametrize("kind", KINDS)
def test_timestep_units(kind):
    """SD3 and Sana get the scheduler's t (0…1000; Sana × timestep_scale = 1), Flux gets t / 1000."""
    pipe = pipe_of(kind)
    with Calls(pipe.transformer) as calls:
        run(pipe, kind)
    got = torch.stack([c[1]["timestep"][0].float() for c in calls])
    ts = pipe.scheduler.timesteps.float()
    assert ts[0] > 990  # the first step starts at (nearly) pure noise in 0…1000 units
    scale = 1 / 1000 if kind.startswith("flux") else pipe.transformer.config.get("timestep_scale", 1.0)
    assert torch.allclose(got, ts * scale)


def test_flux_dev_embeds_guidance_and_schnell_does_not():
    dev = pipe_of("flux-dev")
    assert (run(dev, "flux-dev", guidance_scale=1.0) != run(dev, "flux-dev", guidance_scale=5.0)).any()
    with Calls(pipe_of("flux").transformer) as calls:
        run(pipe_of("flux"), "flux")
    assert calls[0][1]["guidance"] is None


def test_sd3_medium_architecture():
    """The real-size config, built on the meta device (no 8 GB of weights): SD3-medium has 2.03 B parameters."""
    with torch.device("meta"):
        model = sd3_medium()
        one = sd3_medium(num_layers=1)
    assert sum(p.numel() for p in model.parameters()) == 2_028_328_000
    assert len(model.transformer_blocks) == 24 and model.transformer_blocks[-1].context_pre_only
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.attention_head_dim, cfg.caption_projection_dim) == (24, 64, 1536)
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.pos_embed_max_size) == (4096, 2048, 192)
    assert len(one.transformer_blocks) == 1 and one.transformer_blocks[0].context_pre_only


def test_tiny_pipeline_delegates_new_kinds():
    assert isinstance(tiny_pipeline("flux", num_layers=1, num_single_layers=1), FluxPipeline)
    with pytest.raises(ValueError, match="unknown kind"):
        mmdit_call_kwargs("sdxl")
