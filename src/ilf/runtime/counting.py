"""Count transformer-block forwards: the paper's latency proxy (§4.2)."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from ..adapters import get_adapter
from .attached import FEEDBACK_ATTR, resolve_target


@dataclass
class BlockForwardCounter:
    total: int = 0
    calls: int = 0  # transformer calls (denoising steps × calls per step)
    per_block: Counter = field(default_factory=Counter)  # "block.3" / "feedback" → forwards

    @property
    def feedback(self) -> int:
        return self.per_block["feedback"]


@contextlib.contextmanager
def count_block_forwards(target) -> Iterator[BlockForwardCounter]:
    """Count every block forward (feedback block included) while the context is open.

    A block is counted when it computes, detected by its first normalisation layer (its stack's `marker` in
    the adapter's block contract) being called; a block that a cache skips (ours or diffusers') is not
    counted.

    Example::

        with count_block_forwards(pipe) as counter:
            pipe(prompt, num_inference_steps=20)
        counter.total  # 560 for a 28-block PixArt
    """
    model, _ = resolve_target(target)
    adapter = get_adapter(model)
    counter = BlockForwardCounter()
    sites = adapter.sites(model)
    marked = {f"block.{s.index}": (s.module, s.stack.marker) for s in sites}
    fb = getattr(model, FEEDBACK_ATTR, None)
    if fb is not None:  # built like the loop's last block, so it has that block's marker
        marked["feedback"] = (fb.block, sites[fb.loop[1]].stack.marker)
    handles = []

    def make(name):
        def hook(module, args):
            counter.total += 1
            counter.per_block[name] += 1

        return hook

    def on_call(module, args):
        counter.calls += 1

    try:
        for name, (block, marker) in marked.items():
            handles.append(getattr(block, marker).register_forward_pre_hook(make(name)))
        handles.append(model.register_forward_pre_hook(on_call))
        yield counter
    finally:
        for h in handles:
            h.remove()
