"""diffusers 0.42's own cache hooks as benchmark families, on every backbone ilf supports.

FirstBlockCache, TaylorSeerCache, MagCache, PyramidAttentionBroadcast, FasterCache and SeaCache, each built
from its diffusers config and attached by `hook_context.attach_diffusers_hooks`: natively (`enable_cache`) on
a model with `CacheMixin` (Flux), through a cache-context shim on PixArt, DiT, SD3 and Sana. What a hook must
know about a family's blocks (their lists, SD3's block without a text stream) and what is refused (Sana's
blocks for FirstBlockCache, MagCache and SeaCache, SeaCache on SD3, PAB and FasterCache under Flux's true CFG)
is in `peer_support` and the families.

Block forwards are counted by ilf's counter (a block counts when its marker runs, so a block these hooks
skip is not counted). PAB and FasterCache skip attention inside blocks that still run, so their rows also
record each hooked module's own calls and real computations (`ComputeCounter`).
"""

from __future__ import annotations

from .errors import BenchError, MethodRefused, MethodSpecError
from .family import Family, Prepared
from .grammar import Option, parse_choice, parse_float, parse_int, parse_pair, parse_pos_int

# Importing this module imports no torch or diffusers (the CLI lists these families in its help): the
# hooks (`hook_context`, `peer_support`) and diffusers' configs are imported by `prepare`.

COND_SPLIT_HOOK = "ilf_bench_added_cond_split"


class PeerFamily(Family):
    """A diffusers hook: a peer of ILF (its own curve and colour in the plots)."""

    peer = True


class FirstBlockCacheFamily(PeerFamily):
    name = "fbc"
    summary = "diffusers FirstBlockCache: skip blocks 1..N-1 when block 0's residual barely changed"
    options = {"threshold": Option(parse_float, "relative change of block 0's residual below which a step is skipped", 0.05)}

    def prepare(self, spec, ctx):
        from diffusers.hooks import FirstBlockCacheConfig

        from .hook_context import attach_diffusers_hooks, is_native
        from .peer_support import blocks_view, refuse_unless_it_applies, textless_blocks

        threshold = spec.get("threshold", 0.05)
        model = ctx.pipe.transformer
        left_out = [] if is_native(model) else textless_blocks(model)  # SD3's last block: it always runs

        def attach(pipe):
            view = blocks_view(pipe.transformer, left_out) if left_out else None
            return attach_diffusers_hooks(pipe, lambda _: FirstBlockCacheConfig(threshold=threshold), view=view)

        refuse_unless_it_applies(self.name, ctx.pipe, attach)
        info = {"config": {"threshold": threshold}}
        if left_out:
            info["note"] = (f"blocks {left_out} return no text stream (context_pre_only), which FirstBlockCache's "
                            "tail block needs; the hook covers the blocks before them, and they always run")
        return Prepared(spec, attach, info)


class TaylorSeerFamily(PeerFamily):
    name = "taylorseer"
    summary = ("diffusers TaylorSeerCache: between full steps, each block's output (mode=block) or only the "
               "output projection (mode=lite) is a Taylor extrapolation")
    options = {
        "interval": Option(parse_pos_int, "a full step every INTERVAL steps after the warm-up", 2),
        "warmup": Option(parse_int, "the first WARMUP steps always compute", 3),
        "cooldown": Option(parse_int, "steps >= COOLDOWN always compute (default: never)"),
        "order": Option(parse_pos_int, "Taylor order", 1),
        "mode": Option(parse_choice("block", "lite"), "block: predict every block's output; lite: skip the blocks and "
                       "predict the output projection", "block"),
    }

    def _steps(self, spec):
        # diffusers' TaylorSeer step rule, held to its hook by a test (imported here: the CLI parses before torch)
        from ..corrector_config import taylor_compute_steps

        return taylor_compute_steps(spec.steps, spec.get("interval", 2), spec.get("warmup", 3), spec.get("cooldown"))

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * len(self._steps(spec))

    def prepare(self, spec, ctx):
        from diffusers.hooks import TaylorSeerCacheConfig

        from .hook_context import attach_diffusers_hooks
        from .peer_support import block_patterns, textless_blocks

        model = ctx.pipe.transformer
        dtype = next(model.parameters()).dtype  # Taylor factors in the model's dtype (diffusers defaults to bf16)
        left_out = textless_blocks(model)  # SD3's last block returns None for the text stream: it always runs
        blocks = block_patterns(model, left_out)
        out_proj = ["proj_out_2" if hasattr(model, "proj_out_2") else "proj_out"]
        lite = spec.get("mode", "block") == "lite"
        settings = dict(
            cache_interval=spec.get("interval", 2), disable_cache_before_step=spec.get("warmup", 3),
            disable_cache_after_step=spec.get("cooldown"), max_order=spec.get("order", 1), taylor_factors_dtype=dtype,
            skip_predict_identifiers=blocks if lite else None, cache_identifiers=out_proj if lite else blocks,
        )

        def attach(pipe):
            return attach_diffusers_hooks(pipe, lambda _: TaylorSeerCacheConfig(**settings))

        steps = self._steps(spec)
        info = {"compute_steps": steps, "config": {
            "cache_interval": settings["cache_interval"],
            "disable_cache_before_step": settings["disable_cache_before_step"],
            "disable_cache_after_step": settings["disable_cache_after_step"], "max_order": settings["max_order"],
            "taylor_factors_dtype": str(dtype), "mode": "lite" if lite else "block",
            "predicted": out_proj if lite else blocks, "skipped": blocks if lite else []}}
        if left_out:
            info["note"] = f"blocks {left_out} return no text stream (context_pre_only): not hooked, they always run"
            info["predicted_block_forwards"] = ctx.num_blocks * len(steps) + len(left_out) * (spec.steps - len(steps))
        return Prepared(spec, attach, info)


class MagCacheFamily(PeerFamily):
    name = "magcache"
    summary = ("diffusers MagCache: skip whole steps while the accumulated residual-magnitude error stays small "
               "(ratios calibrated on the first prompt)")
    options = {
        "threshold": Option(parse_float, "accumulated error below which a step is skipped", 0.06),
        "max_skip": Option(parse_int, "at most this many consecutive skipped steps (K)", 3),
        "retention": Option(parse_float, "the first RETENTION x steps never skip", 0.2),
    }

    def prepare(self, spec, ctx):
        import torch
        from diffusers.hooks import MagCacheConfig

        from ilf.adapters import get_adapter

        from .hook_context import CONTEXT_NAME, NATIVE_CONTEXT, attach_diffusers_hooks, find_hook, is_native, state_of
        from .peer_support import refuse_unless_it_applies

        if ctx.run_once is None:
            raise BenchError("MagCache needs a calibration run, but no calibration item was given")
        # Calibration: MagCache's calibrate mode computes every step and collects mean |r_t| / |r_{t-1}| of the
        # model's residual. It clears the list when step_index reaches num_inference_steps, so it is told one
        # step more than runs; the ratios are read from its state (the conditional call's) after every
        # transformer call, as pipelines with CacheMixin (Flux) reset the hook states when their call ends.
        cal = MagCacheConfig(calibrate=True, num_inference_steps=spec.steps + 1)
        refuse_unless_it_applies(self.name, ctx.pipe, lambda pipe: attach_diffusers_hooks(pipe, lambda _: cal))
        model = ctx.pipe.transformer
        context = NATIVE_CONTEXT if is_native(model) else CONTEXT_NAME
        att = attach_diffusers_hooks(ctx.pipe, lambda _: cal)
        head = find_hook(get_adapter(model).sites(model)[0].module,
                         lambda h: getattr(h, "config", None) is cal and hasattr(h, "state_manager"))
        ratios: list[float] = []
        grab = model.register_forward_hook(
            lambda *_: ratios.__setitem__(slice(None), map(float, state_of(head, context).calibration_ratios)))
        try:
            att.before_call()
            ctx.run_once(spec.steps)
        finally:
            grab.remove()
            att.detach()
        if len(ratios) != spec.steps:
            raise BenchError(f"MagCache calibration gave {len(ratios)} ratios for {spec.steps} steps")
        cfg_kwargs = dict(threshold=spec.get("threshold", 0.06), max_skip_steps=spec.get("max_skip", 3),
                          retention_ratio=spec.get("retention", 0.2), num_inference_steps=spec.steps)

        def attach(pipe):
            return attach_diffusers_hooks(pipe, lambda _: MagCacheConfig(mag_ratios=torch.tensor(ratios), **cfg_kwargs))

        return Prepared(spec, attach, {"config": cfg_kwargs, "calibration": {
            "ratios": ratios, "on": "the first item (prompt/class and seed) of the run", "steps": spec.steps}})


class PABFamily(PeerFamily):
    name = "pab"
    summary = ("diffusers PyramidAttentionBroadcast: reuse attention outputs inside a timestep range "
               "(blocks still run; only attention is skipped)")
    options = {
        "spatial": Option(parse_pos_int, "self-attention computed every SPATIAL calls in range", 2),
        "cross": Option(parse_pos_int, "cross-attention computed every CROSS calls in range (PixArt, Sana)", 4),
        "range": Option(parse_pair, "timestep range LO-HI where self-attention may be reused", (100.0, 800.0)),
        "cross_range": Option(parse_pair, "timestep range LO-HI where cross-attention may be reused", (100.0, 800.0)),
    }

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps  # every block runs; the skipped attention is in the row's peer stats

    def prepare(self, spec, ctx):
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        from .hook_context import attach_diffusers_hooks
        from .peer_support import check_two_calls

        check_two_calls(self.name, ctx.cfg_batch)
        settings = dict(spatial_attention_block_skip_range=spec.get("spatial", 2),
                        cross_attention_block_skip_range=spec.get("cross", 4),
                        spatial_attention_timestep_skip_range=spec.get("range", (100.0, 800.0)),
                        cross_attention_timestep_skip_range=spec.get("cross_range", (100.0, 800.0)))

        def attach(pipe):
            return attach_diffusers_hooks(pipe, lambda hook: PyramidAttentionBroadcastConfig(
                current_timestep_callback=lambda: hook.timestep, **settings))

        info = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
        return Prepared(spec, attach, info)


class FasterCacheFamily(PeerFamily):
    name = "fastercache"
    summary = ("diffusers FasterCache: extrapolate self-attention between computed steps, and approximate the "
               "unconditional CFG branch from the conditional one (CFG-cache; where CFG is batched [uncond, cond])")
    options = {
        "spatial": Option(parse_pos_int, "self-attention computed every SPATIAL calls in range", 2),
        "range": Option(parse_pair, "timestep range LO-HI where self-attention may be extrapolated", (-1.0, 681.0)),
        "uncond": Option(parse_pos_int, "CFG-cache: the unconditional branch computed every UNCOND steps in range", 5),
        "uncond_range": Option(parse_pair, "timestep range LO-HI where the unconditional branch may be skipped",
                               (-1.0, 641.0)),
        "weight": Option(parse_float, "attention extrapolation weight (diffusers' default 0.5)", 0.5),
    }

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps  # every block runs (on half the batch where CFG-cache skips uncond)

    def prepare(self, spec, ctx):
        from diffusers.hooks import FasterCacheConfig

        from .hook_context import CondHalfHook, attach_diffusers_hooks
        from .peer_support import check_two_calls

        check_two_calls(self.name, ctx.cfg_batch)
        # FasterCache's CFG-cache assumes the batch is [uncond, cond] (PixArt, SD3, Sana); DiTPipeline batches
        # [cond, uncond], and without CFG (Flux, guidance-distilled) there is no branch to skip. There it runs as
        # "guidance distilled": attention extrapolation only.
        cfg_cache = ctx.cfg_batch == "uncond,cond"
        weight = spec.get("weight", 0.5)
        settings = dict(
            spatial_attention_block_skip_range=spec.get("spatial", 2),
            spatial_attention_timestep_skip_range=spec.get("range", (-1.0, 681.0)),
            unconditional_batch_skip_range=spec.get("uncond", 5),
            unconditional_batch_timestep_skip_range=spec.get("uncond_range", (-1.0, 641.0)),
            tensor_format="BCHW", is_guidance_distilled=not cfg_cache,
        )

        def attach(pipe):
            def config(hook):
                return FasterCacheConfig(current_timestep_callback=lambda: hook.timestep,
                                         attention_weight_callback=lambda _: weight, **settings)

            inner = ((COND_SPLIT_HOOK, CondHalfHook()),) if cfg_cache else ()
            return attach_diffusers_hooks(pipe, config, inner_hooks=inner, count_uncond_skips=cfg_cache)

        info = {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}
        info["attention_weight"] = weight
        notes = None if cfg_cache else (
            f"CFG-cache off: the pipeline batches {ctx.cfg_batch or 'no CFG branches'}, "
            "FasterCache needs [uncond, cond]")
        return Prepared(spec, attach, {"config": info, "cfg_cache": cfg_cache, **({"note": notes} if notes else {})})


class SeaCacheFamily(PeerFamily):
    name = "seacache"
    summary = ("diffusers SeaCache: skip every block (the stack's cached residual, extrapolated) while a spectrally "
               "filtered change of the noisy latents stays under a budget")
    options = {
        "threshold": Option(parse_float, "accumulated relative change below which a step reuses the residual", 0.25),
        "order": Option(parse_choice("0", "1"), "0: reuse the last residual; 1: extrapolate from the last two", "1"),
        "retention": Option(parse_int, "the first RETENTION steps always compute", 1),
        "end": Option(parse_int, "the last END steps always compute", 1),
        "max_cached": Option(parse_int, "at most this many consecutive reused steps (0: no limit)", 2),
        "power": Option(parse_float, "exponent of the clean-signal power prior of the filter", 3.0),
    }

    def prepare(self, spec, ctx):
        from diffusers.hooks import SeaCacheConfig

        from .hook_context import attach_diffusers_hooks
        from .peer_support import raw_image_latents, refuse_unless_it_applies, textless_blocks

        settings = dict(threshold=spec.get("threshold", 0.25), residual_order=int(spec.get("order", "1")),
                        retention_steps=spec.get("retention", 1), cache_end_steps=spec.get("end", 1),
                        max_consecutive_cached=spec.get("max_cached", 2), power_exp=spec.get("power", 3.0))
        try:
            SeaCacheConfig(**settings)
        except ValueError as err:
            raise MethodSpecError(f"{spec.name!r}: {err}") from None
        if textless_blocks(ctx.pipe.transformer):
            raise MethodRefused(
                f"{self.name}: {type(ctx.pipe.transformer).__name__}'s last block returns no text stream "
                "(context_pre_only), and SeaCache's tail block records the stream it returns; unlike "
                "FirstBlockCache it hooks every block list of the model, so that block cannot be left out")

        def attach(pipe):
            # SeaCache reads (C, T, H, W) latents through `raw_vision_callback` (it ships one for Wan/Cosmos
            # video only) and the step and flow sigma from the cache context, which `CallContextHook` sets
            return attach_diffusers_hooks(
                pipe, lambda _: SeaCacheConfig(raw_vision_callback=raw_image_latents, **settings))

        refuse_unless_it_applies(self.name, ctx.pipe, attach)
        return Prepared(spec, attach, {"config": settings, "note": (
            "images as one-frame videos; sigma: the flow sigma of the step's noise level (ddpm models: the one "
            "with the same signal-to-noise ratio)")})


# in table order (the registry, `methods`, lists them after ilf's own families)
PEER_FAMILIES = (FirstBlockCacheFamily(), TaylorSeerFamily(), MagCacheFamily(), PABFamily(), FasterCacheFamily(),
                 SeaCacheFamily())
