"""The video families (Wan 2.x, HunyuanVideo 1.5) through their real tiny pipelines: latents with frames, every
block visible, exact block counts, the untrained corrector against diffusers' own TaylorSeer hooks
(`transformer.enable_cache`), removal bit for bit, bf16, no host sync per step, and ILF's t_post (refused on
Wan, carried by the shared temb hooks on HunyuanVideo 1.5).

Both pipelines run classifier-free guidance as two transformer calls per step (cond, then uncond), so every
count is per call × 2. test_corrector and test_half_precision also run both families (tests/tiny_runs.CASES).
"""

import pytest
import torch
from diffusers.hooks import TaylorSeerCacheConfig

from ilf import ILFConfig, ILFError, apply_ilf, count_block_forwards, remove_ilf
from ilf.runtime.attached import get_runtime
from ilf.runtime.corrector import apply_corrector
from ilf.corrector_config import CorrectorConfig
from ilf.tiny import call_kwargs
from test_host_syncs import ATTACH, PER_PIPELINE_CALL, _extra
from tiny_runs import make_pipe, run

VIDEO = ["wan", "hunyuan-video-1.5"]
N = 6  # blocks of the tiny transformers
CALLS = 2  # cond + uncond per step
BLOCKS = {"wan": r"blocks\.\d+", "hunyuan-video-1.5": r"transformer_blocks\.\d+"}  # TaylorSeer's identifiers
LATENT = {"wan": (16, 2, 4, 4), "hunyuan-video-1.5": (4, 2, 4, 4)}  # C, F (5 frames, time /4), H, W
PATCH = {"wan": (1, 2, 2), "hunyuan-video-1.5": (1, 1, 1)}
STEPS = 8
FULL = [0, 1, 3, 5, 7]  # TaylorSeer interval 2, warm-up 2 over 8 steps (diffusers' _measure_should_compute)


@pytest.fixture(params=VIDEO, scope="module")
def pipe(request):
    return make_pipe(request.param)


def _hooked(model):
    """Modules holding an ilf hook (the fixture's pipeline also carries what diffusers' `disable_cache` leaves:
    empty registries whose wrapper stays the blocks' `forward`)."""
    return [n for n, m in model.named_modules()
            if any(h.startswith("ilf") for h in getattr(getattr(m, "_diffusers_hook", None), "hooks", None) or ())]


def _blocks(pipe):
    return pipe.transformer.blocks if pipe.kind == "wan" else pipe.transformer.transformer_blocks


def test_latents_are_video_and_every_frame_reaches_the_blocks(pipe):
    seen = []
    handle = _blocks(pipe)[0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("hidden_states", args[0] if args else None).shape),
        with_kwargs=True)
    try:
        latents = run(pipe, 2)
    finally:
        handle.remove()
    c, f, h, w = LATENT[pipe.kind]
    assert latents.shape == (2, c, f, h, w) and f > 1  # [B, C, F, H, W]
    pt, ph, pw = PATCH[pipe.kind]
    assert seen[0] == (2, (f // pt) * (h // ph) * (w // pw), 24 if pipe.kind == "wan" else 16)  # all frames' tokens
    assert len(seen) == 2 * CALLS
    # decoded by the family's video VAE: 5 frames. One prompt: diffusers 0.42.1's HunyuanVideo 1.5 VAE cannot
    # decode a batch of 2 (its causal mask [B, L, L] meets attention [B, 1, L, L]) unless vae.enable_slicing()
    frames = call(pipe, 2, output_type="np", prompts=["a red cat"])
    assert frames.shape[:2] == (1, 5)


def call(pipe, steps, seed=0, output_type="latent", prompts=("a red cat above a dog", "a blue square"), **overrides):
    """`run` with other call options: the two prompts of tiny_runs.run, `call_kwargs(kind, **overrides)`."""
    return pipe(list(prompts), num_inference_steps=steps, output_type=output_type,
                generator=torch.Generator().manual_seed(seed), **call_kwargs(pipe.kind, **overrides)).frames


@pytest.mark.parametrize("k", [0, 3, N - 1])
def test_dropping_a_block_changes_the_video(pipe, k):
    ref = run(pipe, 2)
    blocks = _blocks(pipe)
    block = blocks[k]
    del blocks[k]
    try:
        pruned = run(pipe, 2)
    finally:
        blocks.insert(k, block)
    assert (pruned - ref).abs().max() > 1e-2, f"block {k} does not matter"
    assert torch.equal(run(pipe, 2), ref)  # the block back: the stock video again


def test_stock_counts_two_calls_per_step_and_one_without_guidance(pipe):
    with count_block_forwards(pipe) as counter:
        run(pipe, 5)
    assert (counter.total, counter.calls) == (N * 5 * CALLS, 5 * CALLS)
    if pipe.kind == "wan":
        with count_block_forwards(pipe) as single:
            call(pipe, 5, guidance_scale=1.0)
    else:  # HunyuanVideo 1.5's scale lives on its guider component
        guider, pipe.guider = pipe.guider, pipe.guider.new(guidance_scale=1.0)
        try:
            with count_block_forwards(pipe) as single:
                run(pipe, 5)
        finally:
            pipe.guider = guider
    assert (single.total, single.calls) == (N * 5, 5)


def taylorseer(pipe):
    """diffusers' TaylorSeer on every block, natively (both models have CacheMixin and both pipelines open a
    cache context per call), with its factors in the model's dtype."""
    model = pipe.transformer
    model.enable_cache(TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=2, cache_identifiers=[BLOCKS[pipe.kind]],
        taylor_factors_dtype=next(model.parameters()).dtype))
    try:
        with count_block_forwards(pipe) as counter:
            out = run(pipe, STEPS)
    finally:
        model.disable_cache()
    return out, counter.total


@pytest.mark.parametrize("fresh", [0, 1])
def test_untrained_corrector_is_diffusers_taylorseer_and_remove_restores_stock(pipe, fresh):
    stock = run(pipe, STEPS)
    ts, ts_blocks = taylorseer(pipe)
    assert ts_blocks == CALLS * N * len(FULL)  # diffusers computed every block on the full steps only
    apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=fresh, correct_steps="all",
                                          num_inference_steps=STEPS))
    try:
        with count_block_forwards(pipe) as counter:
            out = run(pipe, STEPS)
    finally:
        remove_ilf(pipe)
    forecast = STEPS - len(FULL)
    assert torch.equal(out, ts)
    assert not torch.allclose(out, stock, atol=1e-3)  # the cache forecast: not the stock video
    assert counter.total == CALLS * (len(FULL) * N + forecast * (fresh + 1))  # + fresh blocks and F
    assert counter.feedback == CALLS * forecast
    assert torch.equal(run(pipe, STEPS), stock) and _hooked(pipe.transformer) == []


def test_trained_corrector_acts_and_remove_restores_stock(pipe):
    stock = run(pipe, STEPS)
    rt = apply_corrector(pipe, CorrectorConfig(interval=2, warmup=2, fresh=1, correct_steps="all",
                                               num_inference_steps=STEPS))
    try:
        untrained = run(pipe, STEPS)
        with torch.no_grad():
            rt.feedback.scales.fill_(0.5)
        with count_block_forwards(pipe) as counter:
            trained = run(pipe, STEPS)
    finally:
        remove_ilf(pipe)
    assert (trained - untrained).abs().max() > 1e-3
    assert counter.total == CALLS * (len(FULL) * N + 3 * 2) < CALLS * STEPS * N
    assert torch.equal(run(pipe, STEPS), stock)
    assert _hooked(pipe.transformer) == [] and get_runtime(pipe.transformer) is None


def test_bf16_is_finite_close_to_fp32_and_the_corrector_is_taylorseer_in_bf16(pipe):
    ref = run(pipe, 5)
    other_seed = call(pipe, 5, seed=1)
    half = make_pipe(pipe.kind, torch.bfloat16)
    seen = []
    handle = _blocks(half)[0].register_forward_hook(lambda m, args, out: seen.append(
        (out[0] if isinstance(out, tuple) else out).dtype))
    try:
        out = run(half, 5)  # Wan keeps its latents (and the scheduler's steps) in float32, HV1.5 in bf16
    finally:
        handle.remove()
    assert set(seen) == {torch.bfloat16} and torch.isfinite(out).all()  # the blocks computed in bf16
    rel = lambda a: float((a.float() - ref).norm() / ref.norm())  # noqa: E731
    assert rel(out) < 0.1 < 0.5 < rel(other_seed)  # measured: 0.019 (Wan), 0.044 (HV1.5); another noise ~1.4
    ts, _ = taylorseer(half)
    apply_corrector(half, CorrectorConfig(interval=2, warmup=2, fresh=1, correct_steps="all",
                                          num_inference_steps=STEPS))
    try:
        with count_block_forwards(half) as counter:
            corrected = run(half, STEPS)
    finally:
        remove_ilf(half)
    assert torch.equal(corrected, ts) and counter.feedback == CALLS * (STEPS - len(FULL))
    assert torch.equal(run(half, 5), out)


def test_ilf_untrained_is_stock_and_counts_its_loop(pipe):
    stock = run(pipe, 5)
    rt = apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1", t_post="none"))
    try:
        with count_block_forwards(pipe) as fed:
            out = run(pipe, 5)
        with torch.no_grad():
            rt.feedback.scales.fill_(0.5)
        trained = run(pipe, 5)
    finally:
        remove_ilf(pipe)
    assert torch.equal(out, stock)
    assert (fed.total, fed.feedback) == (CALLS * (N * 5 + 2 * (3 + 1)), CALLS * 2)  # steps 0, 4: loop of 3 re-run + F
    assert (trained - stock).abs().max() > 1e-3
    assert torch.equal(run(pipe, 5), stock) and _hooked(pipe.transformer) == []


def test_wan_refuses_t_post_at_attach_and_on_an_explicit_call():
    pipe = make_pipe("wan")
    stock = run(pipe, 3)
    with pytest.raises(ILFError, match=r"t_post is not supported on Wan .*t_post=\"none\".*apply_corrector"):
        apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1", t_post="uniform"))
    assert _hooked(pipe.transformer) == [] and get_runtime(pipe.transformer) is None
    assert not hasattr(pipe.transformer, "ilf_feedback") and torch.equal(run(pipe, 3), stock)
    model = pipe.transformer  # bare: an explicit t_post other than the call's own timestep
    apply_ilf(model, ILFConfig(loop=(2, 4), t_post="none"))
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 4, 4, generator=g), timestep=torch.tensor([700]),
                  encoder_hidden_states=torch.randn(1, 16, 32, generator=g))
    try:
        with torch.no_grad():
            model(**inputs, ilf_t_post=inputs["timestep"])  # t_post = t: runs
            with pytest.raises(ILFError, match="t_post is not supported on Wan"):
                model(**inputs, ilf_t_post=torch.tensor([600.0]))
    finally:
        remove_ilf(model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hunyuan_video_t_post_reaches_the_blocks_after_the_feedback(dtype):
    pipe = make_pipe("hunyuan-video-1.5", dtype)
    stock = run(pipe, 5)
    apply_ilf(pipe, ILFConfig(loop=(2, 4), feedback_steps="outer:1", t_post="uniform"))
    try:
        out = run(pipe, 5)  # zero scales: only t_post differs (bf16: t_post in the timestep's dtype)
    finally:
        remove_ilf(pipe)
    assert torch.isfinite(out).all() and (out.float() - stock.float()).abs().max() > 1e-3
    assert torch.equal(run(pipe, 5), stock)


DEFAULT_T_POST = {"ilf-no-feedback-step", "ilf-outer:2"}  # ILFConfig's default t_post: refused on Wan
SYNC_CASES = [(case, what) for case in VIDEO for what in ATTACH if not (case == "wan" and what in DEFAULT_T_POST)]


@pytest.mark.parametrize("case, what", SYNC_CASES)
def test_no_host_sync_per_step(case, what):
    """test_host_syncs' attachments (Wan: those with t_post="none", the corrector and the paper cache)."""
    attach, detach = ATTACH[what]
    extra, stock = _extra(make_pipe(case), attach, detach)
    assert extra[10] <= PER_PIPELINE_CALL and extra[20] <= PER_PIPELINE_CALL, (extra, stock)


def test_wan22_two_transformers_each_take_their_own_corrector():
    """Wan 2.2's experts: `transformer` runs the steps with t ≥ boundary_ratio·1000, `transformer_2` the rest.
    `apply_corrector(pipe)` attaches to `pipe.transformer` only; the second expert takes its own."""
    from diffusers import WanPipeline

    from ilf.tiny_video import tiny_wan, tiny_wan_pipeline

    parts = tiny_wan_pipeline()
    pipe = WanPipeline(tokenizer=parts.tokenizer, text_encoder=parts.text_encoder, vae=parts.vae,
                       transformer=parts.transformer, transformer_2=tiny_wan(seed=1), scheduler=parts.scheduler,
                       boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    pipe.kind = "wan"
    pipe.scheduler.set_timesteps(10)
    high = int((pipe.scheduler.timesteps >= 500).sum())  # UniPC, flow shift 3: 8 of 10 steps
    assert 0 < high < 10

    def counted():
        with count_block_forwards(pipe.transformer) as c1, count_block_forwards(pipe.transformer_2) as c2:
            out = call(pipe, 10)
        return out, c1, c2

    stock, c1, c2 = counted()
    assert (c1.total, c2.total) == (CALLS * N * high, CALLS * N * (10 - high))
    cfg = CorrectorConfig(interval=2, warmup=2, fresh=1, correct_steps="all", num_inference_steps=10)
    apply_corrector(pipe, cfg)
    apply_corrector(pipe.transformer_2, cfg, scheduler=pipe.scheduler)
    try:
        out, c1, c2 = counted()
    finally:
        remove_ilf(pipe)
        remove_ilf(pipe.transformer_2)
    forecasts = [s for s in range(high) if s not in (0, 1, 3, 5, 7, 9)]  # the first expert's forecast steps
    assert c1.feedback == CALLS * len(forecasts) and c1.total < CALLS * N * high
    assert c2.total == CALLS * N * (10 - high)  # steps 8 and 9: its first call is full, 9 is a full step
    assert not torch.equal(out, stock) and torch.equal(call(pipe, 10), stock)
    pipe.transformer = None  # only the low-noise expert: the pipeline has no `.transformer` to attach to
    with pytest.raises(ILFError, match="transformer"):
        apply_corrector(pipe, cfg)
