"""cache-dit's DBCache (`cache_dit.enable_cache`), when the optional extra is installed (`pip install ilf[cache-dit]`).

cache-dit ships a block adapter per pipeline (`BlockAdapter`: the block lists and their `ForwardPattern`, the
block's inputs and return order): PixArt and Sana (`transformer_blocks`, Pattern_3: hidden_states in and out),
DiT (Pattern_3 and a patch functor), SD3 (`transformer_blocks`, Pattern_1: returns (encoder_hidden_states,
hidden_states)) and Flux (Pattern_1; by default its dual- and single-stream lists run as one chain, the single
list a "dummy" that a patch functor skips in the model's forward, so Fn/Bn count across both). It manages its
own per-call context, so it needs no help from us beyond attaching, reading its statistics
(`cache_dit.summary`) and detaching (`cache_dit.disable_cache`); where the pipeline runs the CFG branches as two
calls (Flux's true CFG) it is told so (`enable_separate_cfg`), else it would take them for two steps.
It is imported lazily: without it the family reports itself unavailable and the harness records the row as
skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from .family import TWO_CALLS, Attachment, Family, Prepared
from .grammar import Option, parse_float, parse_int


def _quiet_cache_dit():
    """cache-dit logs INFO lines on every enable and a warning on every disable; keep the bench output readable."""
    from .hook_context import quiet_loggers  # imports diffusers: not when the CLI lists the families

    return quiet_loggers(*(n for n in logging.root.manager.loggerDict if n.startswith(("cache_dit", "CACHE_DIT"))))


def _import_cache_dit():
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")  # read once, when cache_dit is first imported
    import cache_dit

    return cache_dit


class CacheDiTFamily(Family):
    name = "cache-dit"
    peer = True
    summary = ("cache-dit DBCache: the first FN and last BN blocks always run, the middle ones are skipped while "
               "the residual after the first FN changes less than THRESHOLD (optional extra)")
    options = {
        "fn": Option(parse_int, "Fn_compute_blocks: leading blocks that always run", 1),
        "bn": Option(parse_int, "Bn_compute_blocks: trailing blocks that always run", 0),
        "threshold": Option(parse_float, "residual_diff_threshold", 0.08),
        "warmup": Option(parse_int, "max_warmup_steps: the first steps never skip (cache-dit's default 8)", 8),
        "max_cached": Option(parse_int, "max_cached_steps (-1 = no limit)", -1),
        "max_continuous": Option(parse_int, "max_continuous_cached_steps (-1 = no limit)", -1),
    }

    def unavailable(self):
        if importlib.util.find_spec("cache_dit") is None:
            return "cache-dit is not installed (pip install 'ilf[cache-dit]')"
        return None

    def prepare(self, spec, ctx):
        cache_dit = _import_cache_dit()
        settings = dict(
            Fn_compute_blocks=spec.get("fn", 1), Bn_compute_blocks=spec.get("bn", 0),
            residual_diff_threshold=spec.get("threshold", 0.08), max_warmup_steps=spec.get("warmup", 8),
            max_cached_steps=spec.get("max_cached", -1), max_continuous_cached_steps=spec.get("max_continuous", -1),
            num_inference_steps=spec.steps,
        )
        if ctx.cfg_batch == TWO_CALLS:  # Flux's true CFG: cond then uncond calls, cached apart (cache-dit's option)
            settings.update(enable_separate_cfg=True, cfg_compute_first=False)

        def attach(pipe):
            model = pipe.transformer
            # cache-dit's disable leaves things behind: its statistics as attributes of the block list, the block
            # list re-registered last among the transformer's children, and for DiT its patch functor (a patched
            # instance `forward`, an `_is_patched` flag and an `_norm1_emb` alias submodule). Detach undoes all of
            # it so the model is stock again.
            attrs_before = {name: set(m.__dict__) for name, m in model.named_modules()}
            children_before = list(model._modules)
            with _quiet_cache_dit():
                cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(**settings))

            def stats():
                with _quiet_cache_dit():
                    summary = cache_dit.summary(pipe, logging=False)
                return {"cached_steps_last_call": [list(map(int, s.cached_steps)) for s in summary]}

            def detach():
                with _quiet_cache_dit():
                    cache_dit.disable_cache(pipe)
                for name in [n for n in model._modules if n not in children_before]:
                    del model._modules[name]  # the `_norm1_emb` alias of transformer_blocks[0].norm1.emb
                for name, m in model.named_modules():
                    for attr in set(m.__dict__) - attrs_before.get(name, set(m.__dict__)):
                        if attr == "forward" or attr.startswith("_"):
                            del m.__dict__[attr]  # a patched forward, flags, statistics
                if list(model._modules) != children_before:
                    model._modules = type(model._modules)((k, model._modules[k]) for k in children_before)

            return Attachment(detach, stats=stats)

        version = getattr(cache_dit, "__version__", None)
        return Prepared(spec, attach, {"config": settings, "cache_dit_version": str(version) if version else None})

