"""Qwen-Image, FLUX.2 and Z-Image through their real tiny pipelines (`ilf.tiny_image`): the tiny models' blocks
matter, an untrained corrector is exactly diffusers' TaylorSeer and counts exactly the blocks it computes,
removal restores the stock pipeline bit for bit, bf16 runs, no device read per step, and ILF's t_post is
re-embedded (Qwen-Image) or refused with what to use instead (FLUX.2, Z-Image)."""

from __future__ import annotations

import copy

import pytest
import torch

from ilf import ILFConfig, ILFError, LoopRangeError, apply_ilf, count_block_forwards, remove_ilf
from ilf.adapters import get_adapter
from ilf.runtime.attached import get_runtime
from ilf.bench.family import MethodContext
from ilf.bench.family_diffusers import TaylorSeerFamily
from ilf.bench.hook_context import is_native
from ilf.bench.methods import parse_method
from ilf.runtime.corrector import apply_corrector
from ilf.corrector_config import CorrectorConfig, taylor_compute_steps
from ilf.tiny import call_kwargs, tiny_pipeline
from test_host_syncs import PER_PIPELINE_CALL, count_syncs

STEPS = 8
PROMPTS = ["a red cat above a dog", "a blue square"]
# kind: (call options, transformer calls per step). Qwen-Image with true CFG: cond then uncond, two calls.
KINDS = {
    "qwen-image": ({"negative_prompt": ["", ""]}, 2),
    "flux2": ({}, 1),
    "z-image": ({}, 1),
}
N_DUAL = 3  # the tiny FLUX.2's dual-stream blocks (then 3 single-stream ones)
# The corrector settings tested per family (fresh, correct_steps). FLUX.2's F needs block a to be a single-stream
# block like the last one (fresh >= its dual blocks); below that, the learned forecast alone.
CORRECTORS = {
    "qwen-image": [(0, "all"), (1, "all")],
    "flux2": [(0, "none"), (1, "none"), (N_DUAL, "all")],
    "z-image": [(0, "all"), (1, "all")],
}
LOOP = {"qwen-image": (2, 4), "flux2": (N_DUAL, 4), "z-image": (2, 4)}  # FLUX.2: within the single blocks


def make_pipe(kind, dtype=torch.float32):
    pipe = tiny_pipeline(kind)
    if dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.kind, (pipe.options, pipe.calls_per_step) = kind, KINDS[kind]
    return pipe


def run(pipe, steps=STEPS) -> torch.Tensor:
    """Final latents of a two-prompt run from a fixed seed. Prompts by keyword (FLUX.2's first argument is
    `image`), in a new list each run: Z-Image's `encode_prompt` rewrites the caller's list in place (each
    prompt replaced by its chat-templated form), so a reused list would be templated again on the next run."""
    g = torch.Generator().manual_seed(0)
    out = pipe(prompt=list(PROMPTS), num_inference_steps=steps, generator=g, output_type="latent",
               **call_kwargs(pipe.kind), **pipe.options)
    return out.images


def hooked(model):
    """Modules holding a hook or an instance forward (an empty registry a pipeline's `cache_context` leaves does
    not count)."""
    return [n for n, m in model.named_modules()
            if getattr(getattr(m, "_diffusers_hook", None), "hooks", None) or "forward" in m.__dict__]


def num_blocks(pipe):
    return len(get_adapter(pipe.transformer).blocks(pipe.transformer))


@pytest.fixture(params=list(KINDS), scope="module")
def pipe(request):
    return make_pipe(request.param)


@pytest.fixture(scope="module")
def pipes():
    """One fp32 pipeline per kind, built on first use."""
    made = {}

    def get(kind):
        if kind not in made:
            made[kind] = make_pipe(kind)
        return made[kind]

    return get


def taylorseer(pipe, interval=2, warmup=2):
    """diffusers' TaylorSeer at these settings on every block of the contract, attached as `ilf bench` does
    (natively through `enable_cache` where the model has `CacheMixin`); its images and block forwards."""
    spec = parse_method(f"taylorseer:{STEPS},interval={interval},warmup={warmup}")
    att = TaylorSeerFamily().prepare(spec, MethodContext(pipe, 0)).attach(pipe)
    try:
        att.before_call()
        with count_block_forwards(pipe) as counter:
            images = run(pipe)
    finally:
        att.detach()
    return images, counter.total


# ---- the tiny models are meaningful ----

def test_every_block_matters(pipe):
    """Deleting any one block of the contract moves the pipeline's output: the perturbed gates make every
    block visible, so identity tests cannot pass vacuously."""
    ref = run(pipe, 2)
    model = pipe.transformer
    sites = get_adapter(model).sites(model)
    assert len(sites) == 6
    try:
        for site in sites:
            pruned = copy.deepcopy(model)
            blocks = getattr(pruned, site.stack.attr)
            del blocks[[i for i, b in enumerate(getattr(model, site.stack.attr)) if b is site.module][0]]
            pipe.transformer = pruned
            assert (run(pipe, 2) - ref).abs().max() > 1e-3, f"dropping block {site.index} changed nothing"
    finally:
        pipe.transformer = model
    assert torch.equal(run(pipe, 2), ref)


def test_z_image_contract_is_the_main_layers_and_its_refiners_run_every_call():
    pipe = make_pipe("z-image")
    model = pipe.transformer
    assert [s.module for s in get_adapter(model).sites(model)] == list(model.layers)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda *a, name=n: seen.append(name))
             for n, m in (("noise", model.noise_refiner[0]), ("context", model.context_refiner[0]))]
    try:
        with count_block_forwards(pipe) as counter:
            run(pipe, 3)
    finally:
        for h in hooks:
            h.remove()
    assert counter.total == 6 * 3 and counter.calls == 3  # CFG batched in one call; refiners not counted
    assert seen == ["noise", "context"] * 3


# ---- the corrector ----

@pytest.mark.parametrize("kind, fresh, correct", [(k, f, c) for k, fc in CORRECTORS.items() for f, c in fc])
def test_untrained_corrector_is_exactly_taylorseer_counts_and_removes(pipes, kind, fresh, correct):
    pipe = pipes(kind)
    assert is_native(pipe.transformer) == (pipe.kind != "z-image")  # diffusers' enable_cache where it has one
    ts, ts_blocks = taylorseer(pipe)
    stock = run(pipe)
    n, c = num_blocks(pipe), pipe.calls_per_step
    apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=fresh, correct_steps=correct,
                                          num_inference_steps=STEPS))
    assert hooked(pipe.transformer)
    try:
        with count_block_forwards(pipe) as counter:
            out = run(pipe)
    finally:
        remove_ilf(pipe)
    assert torch.equal(out, ts)
    assert (out - stock).abs().max() > 1e-3  # the cache did forecast
    full = len(taylor_compute_steps(STEPS, 2, 2))
    forecast = STEPS - full
    f = forecast if correct == "all" else 0  # F once per corrected forecast call
    assert counter.total == c * (full * n + forecast * fresh + f) and counter.feedback == c * f
    assert ts_blocks == c * full * n  # diffusers' own: every block forecast between full steps
    assert hooked(pipe.transformer) == []
    assert torch.equal(run(pipe), stock)  # removed: the stock pipeline again, bit for bit


@pytest.mark.parametrize("part", ["scale", "mix"])
def test_trained_corrector_changes_images_and_remove_restores_stock(pipe, part):
    stock = run(pipe)
    fresh, correct = CORRECTORS[pipe.kind][-1]
    rt = apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=fresh, correct_steps=correct,
                                               num_inference_steps=STEPS))
    try:
        untrained = run(pipe)
        with torch.no_grad():  # F at full scale, or the forecast extrapolated twice as far
            (rt.feedback.scales if part == "scale" else rt.feedback.mix[:, 1]).fill_(1.0)
        trained = run(pipe)
    finally:
        remove_ilf(pipe)
    assert (trained - untrained).abs().max() > 1e-4
    assert hooked(pipe.transformer) == [] and get_runtime(pipe.transformer) is None
    assert torch.equal(run(pipe), stock)


def test_flux2_corrector_keeps_the_joined_sequence_as_block_e_output():
    """The forecast block e is a single-stream block: its one stream is text + image tokens."""
    pipe = make_pipe("flux2")
    rt = apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=N_DUAL, correct_steps="all",
                                               num_inference_steps=STEPS))
    seen = []
    h = pipe.transformer.single_transformer_blocks[-1].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    try:
        run(pipe)
    finally:
        h.remove()
        remove_ilf(pipe)
    text = call_kwargs("flux2")["max_sequence_length"]
    assert type(rt.feedback.block).__name__ == "Flux2SingleTransformerBlock"
    assert set(seen) == {torch.Size([2, text + 16, 16])}  # [B, T + L, D]


# ---- ILF: t_post ----

@pytest.mark.parametrize("kind", ["flux2", "z-image"])
def test_ilf_t_post_is_refused_with_what_to_use_instead_and_attaches_nothing(kind):
    pipe = make_pipe(kind)
    name = {"flux2": "FLUX.2", "z-image": "Z-Image"}[kind]
    with pytest.raises(ILFError, match=rf"{name}.*t_post=\"none\".*corrector"):
        apply_ilf(pipe, ILFConfig(loop=LOOP[kind]))  # the default t_post ("rescale")
    assert hooked(pipe.transformer) == [] and get_runtime(pipe.transformer) is None
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP[kind], t_post="none", feedback_steps="all"))
    rt.update(t_post="uniform")  # changed after attach: refused on the first feedback call
    with pytest.raises(ILFError, match=rf"{name}.*t_post=\"none\""):
        run(pipe, 2)
    remove_ilf(pipe)
    assert hooked(pipe.transformer) == []


def test_flux2_loop_across_the_dual_single_boundary_is_refused():
    pipe = make_pipe("flux2")
    with pytest.raises(LoopRangeError, match=r"crosses FLUX.2's dual/single boundary at block 3.*0\.\.2 or 3\.\.5"):
        apply_ilf(pipe, ILFConfig(loop=(2, 4), t_post="none"))
    assert hooked(pipe.transformer) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_untrained_ilf_with_t_post_none_is_stock_and_counts_its_loop(kind):
    pipe = make_pipe(kind)
    ref = run(pipe, 4)
    b, e = LOOP[kind]
    apply_ilf(pipe, ILFConfig(loop=(b, e), t_post="none", feedback_steps="all"))
    with count_block_forwards(pipe) as fed:
        out = run(pipe, 4)
    remove_ilf(pipe)
    assert torch.equal(out, ref)
    c = pipe.calls_per_step
    assert fed.total == c * 4 * (6 + e - b + 2) and fed.feedback == c * 4
    assert hooked(pipe.transformer) == [] and torch.equal(run(pipe, 4), ref)


def test_qwen_image_t_post_reaches_the_loop_rerun_the_blocks_after_it_and_the_output_layer():
    """Zero scales: only t_post changes anything (eq. 2-3: the loop b..e re-runs at t_post, and so does
    everything after it). Against the stock model with t_post's temb handed to blocks b..N-1 and `norm_out`
    (hooks on a stock model)."""
    pipe = make_pipe("qwen-image")
    model = pipe.transformer
    g = torch.Generator().manual_seed(1)
    inputs = dict(hidden_states=torch.randn(2, 16, 16, generator=g),  # 4×4 packed tokens
                  encoder_hidden_states=torch.randn(2, 5, 16, generator=g), timestep=torch.full((2,), 0.6),
                  img_shapes=[[(1, 4, 4)]] * 2)
    t_post = torch.full((2,), 0.45)
    with torch.no_grad():
        ref = model(**inputs).sample
        temb_post = model.time_text_embed(t_post, model.img_in(inputs["hidden_states"]))  # [B, D]
        swap = [blk.register_forward_pre_hook(lambda m, a, kw: (a, {**kw, "temb": temb_post}), with_kwargs=True)
                for blk in model.transformer_blocks[LOOP["qwen-image"][0]:]]
        swap.append(model.norm_out.register_forward_pre_hook(lambda m, a: (a[0], temb_post)))
        want = model(**inputs).sample
        for h in swap:
            h.remove()
        apply_ilf(model, ILFConfig(loop=LOOP["qwen-image"]))
        got = model(**inputs, ilf_t_post=t_post).sample
        remove_ilf(model)
    assert (want - ref).abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---- bf16 ----

@pytest.mark.parametrize("kind", list(KINDS))
def test_bf16_runs_close_to_fp32_and_the_corrector_is_taylorseer(kind):
    fp32 = run(make_pipe(kind)).float()
    pipe = make_pipe(kind, torch.bfloat16)
    stock = run(pipe)
    assert torch.isfinite(stock).all()
    # bf16 rounds each op to 2^-9 relative; through the text encoder, 8 steps and CFG (Z-Image's 5.0 amplifies
    # it most) the latents land 0.7-2.8% (relative L2) from fp32's here; another seed's run is 110-150% away
    assert (stock.float() - fp32).norm() <= 0.05 * fp32.norm()
    ts, _ = taylorseer(pipe)
    fresh, correct = CORRECTORS[kind][-1]
    apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=fresh, correct_steps=correct,
                                          num_inference_steps=STEPS))
    with count_block_forwards(pipe) as counter:
        out = run(pipe)
    remove_ilf(pipe)
    assert torch.equal(out, ts)
    full = len(taylor_compute_steps(STEPS, 2, 2))
    assert counter.total == pipe.calls_per_step * (full * 6 + (STEPS - full) * (fresh + 1))
    assert hooked(pipe.transformer) == [] and torch.equal(run(pipe), stock)


# ---- no device read per step ----

def _syncs(pipe, steps):
    run(pipe, 2)  # warm: one-time lazy work is not per-step work
    with count_syncs() as seen:
        run(pipe, steps)
    return seen["n"]


@pytest.mark.parametrize("what", ["corrector", "ilf"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_no_sync_per_step(kind, what):
    pipe = make_pipe(kind)
    stock = {n: _syncs(pipe, n) for n in (10, 20)}
    if what == "corrector":
        fresh, correct = CORRECTORS[kind][-1]
        apply_ilf(pipe, CorrectorConfig(fresh=fresh, correct_steps=correct, num_inference_steps=10))
    else:
        apply_ilf(pipe, ILFConfig(loop=LOOP[kind], t_post="none", feedback_steps="all"))
    try:
        extra = {n: _syncs(pipe, n) - stock[n] for n in (10, 20)}
    finally:
        remove_ilf(pipe)
    assert extra[10] <= PER_PIPELINE_CALL and extra[20] <= PER_PIPELINE_CALL, (extra, stock)
