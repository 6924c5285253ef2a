"""diffusers' cache hooks (and cache-dit) on tiny PixArt/DiT pipelines: the block forwards (and attention skips)
they must give, computed by hand from each hook's documented rule; and the stock pipeline after detaching."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from ilf import count_block_forwards
from ilf.bench.errors import MethodSpecError
from ilf.bench.family import MethodContext
from ilf.bench.methods import get_family, parse_method
from ilf.bench.stock import check_stock, fingerprint

STEPS = 20
BLOCKS = 6
# diffusers' FasterCache calls torch.meshgrid without `indexing=` (its own deprecation warning, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")


def run(source, items, text):
    """Prepare, attach, generate once (counting), detach; returns (images, block forwards, stats, info)."""
    spec = parse_method(text)
    before = fingerprint(source.pipe)
    ctx = MethodContext(source.pipe, source.num_blocks, run_once=lambda s: source(items[:1], s),
                        cfg_batch=source.cfg_batch)
    prepared = get_family(spec.family).prepare(spec, ctx)
    att = prepared.attach(source.pipe)
    try:
        att.before_call()
        with count_block_forwards(source.pipe) as counter:
            images = source(items, spec.steps)
        stats = att.stats()
    finally:
        att.detach()
    check_stock(source.pipe, before, spec.name)
    return images, counter.total, stats, prepared.info


def timesteps(source, steps=STEPS):
    sched = DPMSolverMultistepScheduler.from_config(source.pipe.scheduler.config)
    sched.set_timesteps(steps)
    return [float(t) for t in sched.timesteps]


@pytest.fixture(autouse=True)
def stock_afterwards(pixart6, pixart_items, pixart_reference):
    yield
    # whatever a test attached, the pipeline gives the stock images again
    assert torch.equal(pixart6(pixart_items, STEPS), pixart_reference)


def test_first_block_cache_always_skipping_runs_block0_only_after_step0(pixart6, pixart_items, pixart_reference):
    images, blocks, stats, _ = run(pixart6, pixart_items, "fbc:20,threshold=1e9")
    assert blocks == BLOCKS + (STEPS - 1)  # step 0 runs all 6 blocks, steps 1..19 only block 0
    assert stats["hooked"]["block"] == {"modules": 6, "calls": 120, "computed": 25, "skipped": 95}
    assert not torch.equal(images, pixart_reference)
    _, blocks, _, _ = run(pixart6, pixart_items, "fbc:20,threshold=0")
    assert blocks == BLOCKS * STEPS  # never below a zero threshold: nothing skipped


def test_taylorseer_predicts_blocks_between_its_compute_steps(pixart6, pixart_items, pixart_reference):
    compute = [0, 1, 2, 4, 9, 14, 19]  # interval 5, warm-up 3 (diffusers' rule, by hand)
    images, blocks, stats, info = run(pixart6, pixart_items, "taylorseer:20,interval=5,warmup=3")
    assert blocks == BLOCKS * len(compute)
    assert info["compute_steps"] == compute
    assert not torch.equal(images, pixart_reference)
    _, blocks, stats, _ = run(pixart6, pixart_items, "taylorseer:20,interval=5,warmup=3,mode=lite")
    assert blocks == BLOCKS * len(compute)  # lite: blocks skipped, the output projection extrapolated
    assert stats["hooked"]["block"]["computed"] == BLOCKS * len(compute)


def test_magcache_calibrates_then_skips_by_its_accumulated_error(pixart6, pixart_items):
    # threshold 1e9: after the retention steps (int(0.2 * 20 + 0.5) = 4) it skips max_skip=3 steps, computes one,
    # ...: computes steps 0-3, 7, 11, 15, 19 = 8 steps
    _, blocks, _, info = run(pixart6, pixart_items, "magcache:20,threshold=1e9,max_skip=3,retention=0.2")
    assert blocks == BLOCKS * 8
    ratios = info["calibration"]["ratios"]
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(0.5 < r < 2 for r in ratios)
    _, blocks, _, _ = run(pixart6, pixart_items, "magcache:20,threshold=0")
    assert blocks == BLOCKS * STEPS


def test_pab_skips_attention_not_blocks(pixart6, pixart_items):
    ts = timesteps(pixart6)

    def computed(skip, lo=100, hi=800):  # PAB: compute at iteration 0, outside (lo, hi), or every skip-th call
        return sum(1 for i, t in enumerate(ts) if i == 0 or not (lo < t < hi) or i % skip == 0)

    _, blocks, stats, _ = run(pixart6, pixart_items, "pab:20,spatial=2,cross=4")
    assert blocks == BLOCKS * STEPS
    assert stats["hooked"]["self_attention"]["computed"] == BLOCKS * computed(2)
    assert stats["hooked"]["cross_attention"]["computed"] == BLOCKS * computed(4)
    assert stats["hooked"]["self_attention"]["calls"] == BLOCKS * STEPS


def test_fastercache_skips_the_unconditional_branch_and_extrapolates_attention(pixart6, pixart_items):
    ts = timesteps(pixart6)
    uncond = [i > 0 and -1 < t < 641 and i % 5 != 0 for i, t in enumerate(ts)]
    # attention is extrapolated only on calls without the unconditional half, inside (-1, 681), except every 2nd
    skip_attn = [u and -1 < t < 681 and not (i > 0 and i % 2 == 0) for i, (u, t) in enumerate(zip(uncond, ts))]
    _, blocks, stats, info = run(pixart6, pixart_items, "fastercache:20")
    assert info["cfg_cache"] is True
    assert blocks == BLOCKS * STEPS
    assert stats["uncond_skipped_calls"] == sum(uncond) and stats["transformer_calls"] == STEPS
    assert stats["hooked"]["self_attention"]["skipped"] == BLOCKS * sum(skip_attn)


def test_seacache_reuses_the_residual_by_its_step_rules(pixart6, pixart_items, pixart_reference):
    # threshold 1e9: SeaCache reuses whenever it may. It computes the first `retention` and the last `end` steps,
    # and after `max_cached` reused steps one in full: max_cached=2 computes steps 0, 3, 6, ..., 18 and 19 (8);
    # max_cached=3: 0, 4, 8, 12, 16, 19 (6); no limit, retention 5, end 3: 0-4 and 17-19 (8). A reused step runs
    # no block at all (block 0 too: the cached residual replaces the whole stack). The step index and step
    # count come from the context `CallContextHook` sets: without it every call runs in full.
    images, blocks, stats, info = run(pixart6, pixart_items, "seacache:20,threshold=1e9")
    assert blocks == BLOCKS * 8 and stats["path"] == "cache-context shim"
    assert info["config"]["max_consecutive_cached"] == 2
    assert not torch.equal(images, pixart_reference)
    assert run(pixart6, pixart_items, "seacache:20,threshold=1e9,max_cached=3")[1] == BLOCKS * 6
    assert run(pixart6, pixart_items, "seacache:20,threshold=1e9,retention=5,end=3,max_cached=0")[1] == BLOCKS * 8
    assert run(pixart6, pixart_items, "seacache:20,threshold=0")[1] == BLOCKS * STEPS


def test_seacache_settings_diffusers_refuses_are_refused_before_running(pixart6):
    ctx = MethodContext(pixart6.pipe, pixart6.num_blocks)
    with pytest.raises(MethodSpecError, match="threshold.*non-negative"):
        get_family("seacache").prepare(parse_method("seacache:20,threshold=-1"), ctx)
    with pytest.raises(MethodSpecError, match="order='2' is invalid"):
        parse_method("seacache:20,order=2")


def test_cache_dit_dbcache(pixart6, pixart_items, pixart_reference):
    pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (pip install 'ilf[cache-dit]')")
    images, blocks, stats, _ = run(pixart6, pixart_items, "cache-dit:20,fn=1,bn=0,threshold=1e9,warmup=4")
    assert blocks == 4 * BLOCKS + (STEPS - 4) * 1  # 4 warm-up steps in full, then only the first block
    assert stats["cached_steps_last_call"][0] == list(range(4, STEPS))
    assert not torch.equal(images, pixart_reference)


def test_without_our_cache_context_the_hooks_fail_on_pixart(pixart6, pixart_items):
    # The reason for the context hook: PixArt's pipeline never sets one, and the stateful hooks need it.
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache

    from ilf.bench.stock import strip_empty_registries

    model = pixart6.pipe.transformer
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.05))
    try:
        with pytest.raises(ValueError, match="No cache context is set"):
            pixart6(pixart_items[:1], 2)
    finally:
        reg = HookRegistry.check_if_exists_or_initialize(model)
        reg.remove_hook("fbc_leader_block_hook", recurse=True)
        reg.remove_hook("fbc_block_hook", recurse=True)
        strip_empty_registries(model)


def test_dit_rows(dit6):
    from ilf.eval.prompts import make_items
    from ilf.eval.sources import default_conditions

    items = make_items(default_conditions(dit6, 2), num_images=2)
    ref = dit6(items, STEPS)
    _, blocks, _, _ = run(dit6, items, "fbc:20,threshold=1e9")
    assert blocks == BLOCKS + STEPS - 1
    _, blocks, _, _ = run(dit6, items, "taylorseer:20,interval=5,warmup=3")
    assert blocks == BLOCKS * 7
    _, blocks, stats, info = run(dit6, items, "fastercache:20")
    assert info["cfg_cache"] is False and "cond,uncond" in info["note"]  # DiT batches [cond, uncond]
    assert blocks == BLOCKS * STEPS and "uncond_skipped_calls" not in stats
    assert torch.equal(dit6(items, STEPS), ref)


def test_fastercache_on_a_pixart_with_size_conditions():
    # PixArt-alpha 1024 (sample_size 128) passes resolution/aspect-ratio conditions batched for both CFG branches;
    # when FasterCache drops the unconditional half, they are halved too (else adaln_single fails on the shapes).
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel

    from ilf.tiny import pixart_call_kwargs
    from ilf.tiny_parts import tiny_t5, tiny_tokenizer, tiny_vae

    torch.manual_seed(0)
    model = PixArtTransformer2DModel(num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=8,
                                     num_layers=1, sample_size=128, patch_size=8, cross_attention_dim=24,
                                     caption_channels=32, norm_num_groups=1).eval()
    assert model.use_additional_conditions
    pipe = PixArtAlphaPipeline(tokenizer=tiny_tokenizer(), text_encoder=tiny_t5(), vae=tiny_vae(), transformer=model,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    kwargs = pixart_call_kwargs(height=256, width=256, output_type="latent", num_inference_steps=3)
    spec = parse_method("fastercache:3,uncond=5")
    prepared = get_family("fastercache").prepare(spec, MethodContext(pipe, 1, cfg_batch="uncond,cond"))
    before = fingerprint(pipe)
    att = prepared.attach(pipe)
    try:
        att.before_call()
        with torch.inference_mode():
            pipe("a red cat", **kwargs)
        stats = att.stats()
    finally:
        att.detach()
    check_stock(pipe, before, spec.name)
    sched = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(3)
    ts = [float(t) for t in sched.timesteps]
    assert stats["uncond_skipped_calls"] == sum(i > 0 and -1 < t < 641 and i % 5 != 0 for i, t in enumerate(ts)) >= 1
