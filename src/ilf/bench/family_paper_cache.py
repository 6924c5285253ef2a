"""The `paper-cache` family: the paper's caching baseline (§2.2, Fig. 6), ilf's own `apply_cache`.

Cacheable blocks (`location`, `blocks`) reuse their residual between refresh steps (0, k, 2k, ...).
"""

from __future__ import annotations

from .family import Attachment, Family, Prepared
from .grammar import Option, parse_choice, parse_int, parse_pos_int


def default_cache_blocks(num_blocks: int) -> int:
    """The paper's 18 of 28 cacheable blocks, scaled to other depths."""
    return max(1, round(18 * num_blocks / 28))


class PaperCacheFamily(Family):
    name = "paper-cache"
    summary = "the paper's caching baseline: cacheable blocks reuse their residual between refresh steps"
    options = {
        "location": Option(parse_choice("inner", "outer", "first", "last", "alternating"),
                           "which blocks are cacheable", "inner"),
        "blocks": Option(parse_int, "c, how many blocks are cacheable (default 18 of 28, scaled to the model)"),
        "refresh": Option(parse_pos_int, "k: steps 0, k, 2k, ... recompute everything", 3),
    }

    def config(self, spec, num_blocks):
        from ilf.config import CacheConfig

        c = spec.get("blocks", default_cache_blocks(num_blocks))
        return CacheConfig(spec.get("location", "inner"), c, spec.get("refresh", 3))

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        from ilf.schedule import predicted_block_forwards

        cfg = self.config(spec, num_blocks)
        return predicted_block_forwards(num_blocks, spec.steps, cached_blocks=cfg.num_blocks,
                                        refresh_every=cfg.refresh_every)

    def prepare(self, spec, ctx):
        from ilf.runtime.paper_cache import apply_cache, remove_cache

        cfg = self.config(spec, ctx.num_blocks)
        cfg.block_indices(ctx.num_blocks)  # raises if c exceeds the model

        def attach(pipe):
            apply_cache(pipe, cfg)
            return Attachment(lambda: remove_cache(pipe))

        info = {"cache": cfg.to_dict(), "cached_blocks": list(cfg.block_indices(ctx.num_blocks))}
        return Prepared(spec, attach, info)
