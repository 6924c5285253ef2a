"""The `plain` family: the stock pipeline with STEPS steps (the reference row and the fewer-steps baselines)."""

from __future__ import annotations

from .family import Attachment, Family, Prepared


class PlainFamily(Family):
    name = "plain"
    summary = "the stock pipeline with STEPS steps"

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps

    def prepare(self, spec, ctx):
        return Prepared(spec, lambda pipe: Attachment(lambda: None))
