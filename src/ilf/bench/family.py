"""The interface every benchmark family implements: `Family`, and what preparing and attaching a method give.

A family turns a `MethodSpec` into a `Prepared` method (one-time work: load a feedback, calibrate MagCache),
whose `attach(pipe)` gives an `Attachment`; detaching it leaves the stock pipeline. The families themselves
live in `family_plain`, `family_paper_cache`, `family_ilf`, `peers` (diffusers' hooks) and `cachedit`; the
registry of them is `methods`. Nothing heavy is imported here (the CLI's help lists the families).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .grammar import MethodSpec, Option

TWO_CALLS = "cond|uncond"  # `MethodContext.cfg_batch` of a pipeline that runs the CFG branches as two calls


class Attachment:
    """A method attached to a pipeline. `before_call` runs before every pipeline call (reset per-image state);
    `stats` returns the method's own counters since attaching; `detach` restores the stock pipeline."""

    def __init__(self, detach: Callable[[], None], before_call: Callable[[], None] | None = None,
                 stats: Callable[[], dict] | None = None):
        self._detach, self._before, self._stats = detach, before_call, stats

    def before_call(self) -> None:
        if self._before is not None:
            self._before()

    def stats(self) -> dict:
        return self._stats() if self._stats is not None else {}

    def detach(self) -> None:
        self._detach()


@dataclass
class MethodContext:
    """What preparing a method may need besides its spec."""

    pipe: Any
    num_blocks: int
    # runs the pipeline once on the first calibration item with the given step count (MagCache calibration)
    run_once: Callable[[int], None] | None = None
    feedback: str | None = None  # default feedback for `ilf` specs without feedback=
    # CFG layout: "uncond,cond" (PixArt/SD3/Sana), "cond,uncond" (DiT), TWO_CALLS (Flux true CFG), None
    cfg_batch: str | None = None


@dataclass
class Prepared:
    """A method ready to attach: `info` (resolved settings, calibration) goes into results.json."""

    spec: MethodSpec
    attach: Callable[[Any], Attachment]
    info: dict = field(default_factory=dict)


class Family:
    name: ClassVar[str]
    summary: ClassVar[str]
    default_steps: ClassVar[int] = 20
    options: ClassVar[dict[str, Option]] = {}
    # methods of one family share a curve in the Pareto plot and a colour in the grids
    peer: ClassVar[bool] = False

    def unavailable(self) -> str | None:
        """Why this family cannot run here (a missing optional package), or None."""
        return None

    def validate(self, spec: MethodSpec) -> None:
        """Cross-option checks that need no model."""

    def predicted_block_forwards(self, spec: MethodSpec, num_blocks: int, feedback: str | None = None) -> int | None:
        """Block forwards per image known before running (None for data-dependent methods)."""
        return None

    def max_batch(self, spec: MethodSpec) -> int | None:
        """The most images one pipeline call may hold (None: any). A method whose decisions are taken over the
        whole batch (cache-dit's dynamic skip) says 1, so each image's decisions are its own."""
        return None

    def prepare(self, spec: MethodSpec, ctx: MethodContext) -> Prepared:
        raise NotImplementedError
