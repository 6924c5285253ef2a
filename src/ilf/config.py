"""Configuration dataclasses, validated when they are built.

`ILFConfig` describes one inner loop and how inference uses it; `CacheConfig` the paper's caching
baseline (§2.2, Fig. 6). Both are plain, frozen and JSON-serialisable so they travel inside adapter files
and benchmark results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .choices import CACHE_LOCATIONS, INIT_MODES, T_POST_RATIOS, T_POST_STRATEGIES
from .errors import ILFError, LoopRangeError, ScheduleError
from .schedule import parse_plan
from .warn import warn_user

# What may change for a feedback that exists (trained or attached): how inference uses it, not what it is.
INFERENCE_FIELDS = frozenset({"feedback_steps", "t_post", "t_post_ratio", "anneal_floor"})


PAPER_LOOP, PAPER_DEPTH = (8, 19), 28  # the paper's loop on 28-block PixArt / DiT


def paper_loop(num_blocks: int) -> tuple[int, int]:
    """The paper's loop (8, 19) of 28 blocks, scaled to a model of `num_blocks` blocks (12 blocks: (3, 8))."""
    return round(PAPER_LOOP[0] * num_blocks / PAPER_DEPTH), round(PAPER_LOOP[1] * num_blocks / PAPER_DEPTH)


@dataclass(frozen=True)
class ILFConfig:
    """One Inner Loop Feedback configuration.

    Args:
        loop: `(b, e)`, the first and last backbone block of the inner loop (inclusive). The paper uses
            `(8, 19)` on 28-block PixArt/DiT.
        feedback_steps: which denoising steps use the feedback: `"all"`, `"none"`, a named plan
            (`"outer:K"`, `"first:K"`, `"last:K"`, `"skip-inner:K"`, `"skip-first:K"`, `"skip-last:K"`,
            `"skip-outer:K"`, `"alternating"`) or explicit step indices (negative ones count from the end).
            The paper's 1.8x setting is 10 steps with `"outer:2"` (= `"skip-inner:6"`).
        t_post: time conditioning of everything after the feedback block: `"none"` (t), `"uniform"`
            (t − i/2), `"rescale"` (eq. 4: t − i·k) or `"anneal"` (eq. 5), with i the gap to the
            scheduler's next timestep.
        t_post_ratio: k in eq. 4–5. The paper writes `n/m` (n model blocks, m loop blocks), which moves
            t_post past the next timestep; `m/n` keeps it between t and the next step, which the paper's
            words ("an intermediate step") describe. Both are available; see the README for which measures
            better.
        anneal_floor: the minimum shift of eq. 5 (the paper's 10 timesteps).
        init: how a new feedback block starts: `"copy"` (weights of backbone block `init_block`) or
            `"fresh"` (the block class's own initialisation). Scales always start at zero.
        init_block: the backbone block copied by `init="copy"`; defaults to `e`.
        rerun_loop: `True` (ILF): re-run blocks b..e with the scaled feedback added. `False` is the control of
            the same size without an inner loop: the feedback's output is added once to `f_e`
            (`h_e = f_e + s_b · F(f_e)`), costing one block forward per feedback step instead of m + 1.
        feed_text: MMDiT backbones (SD3, Flux) only: also add `s_i ·` F's text-stream output to the text
            stream entering each loop block. `False` (the default, and the paper's single-stream recipe):
            only the image stream gets the feedback; see the README for the measurement behind the choice.
        num_inference_steps, scheduler, guidance_scale: the inference schedule a feedback was trained for
            (trajectory distillation records them; `None` = not trained for a particular schedule).
            `apply_ilf` keeps them as the run's defaults and warns once when a run uses another step count
            or scheduler class.
    """

    loop: tuple[int, int] = (8, 19)
    feedback_steps: str | tuple[int, ...] = "outer:2"
    t_post: str = "rescale"
    t_post_ratio: str = "m/n"
    anneal_floor: float = 10.0
    init: str = "copy"
    init_block: int | None = None
    rerun_loop: bool = True
    feed_text: bool = False
    num_inference_steps: int | None = None
    scheduler: str | None = None
    guidance_scale: float | None = None

    def __post_init__(self):
        loop = tuple(self.loop)
        if len(loop) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in loop):
            raise LoopRangeError(f"loop must be two block indices (b, e), got {self.loop!r}")
        b, e = loop
        if b < 0 or e < b:
            raise LoopRangeError(
                f"loop {loop} is not a range: need 0 <= b <= e (b = first loop block, e = last, inclusive)"
            )
        object.__setattr__(self, "loop", loop)
        steps = self.feedback_steps
        if not isinstance(steps, str):
            steps = tuple(steps)
        parse_plan(steps)  # raises ScheduleError on a bad plan
        object.__setattr__(self, "feedback_steps", steps)
        if self.t_post not in T_POST_STRATEGIES:
            raise ScheduleError(f"t_post={self.t_post!r} is unknown; choose one of {T_POST_STRATEGIES}")
        if self.t_post_ratio not in T_POST_RATIOS:
            raise ScheduleError(f"t_post_ratio={self.t_post_ratio!r} is unknown; choose one of {T_POST_RATIOS}")
        if not self.anneal_floor >= 0:
            raise ScheduleError(f"anneal_floor must be >= 0, got {self.anneal_floor}")
        if self.init not in INIT_MODES:
            raise ILFError(f"init={self.init!r} is unknown; choose one of {INIT_MODES}")
        if self.init_block is not None and (not isinstance(self.init_block, int) or self.init_block < 0):
            raise LoopRangeError(f"init_block must be a block index >= 0, got {self.init_block!r}")
        if not isinstance(self.rerun_loop, bool):
            raise ILFError(f"rerun_loop must be True (ILF) or False (the no-loop control), got {self.rerun_loop!r}")
        if not isinstance(self.feed_text, bool):
            raise ILFError(f"feed_text must be True or False, got {self.feed_text!r}")
        n = self.num_inference_steps
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ScheduleError(f"num_inference_steps must be a positive int or None, got {n!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, str):
            raise ScheduleError(f"scheduler must be a diffusers scheduler class name or None, got {self.scheduler!r}")
        if self.guidance_scale is not None and not self.guidance_scale >= 0:
            raise ScheduleError(f"guidance_scale must be >= 0 or None, got {self.guidance_scale!r}")

    @property
    def loop_len(self) -> int:
        """m, the number of blocks in the loop."""
        return self.loop[1] - self.loop[0] + 1

    def check_model(self, num_blocks: int) -> None:
        """Raise `LoopRangeError` unless the loop (and init block) fit a model of `num_blocks` blocks."""
        b, e = self.loop
        if e >= num_blocks:
            raise LoopRangeError(
                f"loop {self.loop} is outside the model: it has {num_blocks} blocks (0..{num_blocks - 1}); "
                f"choose 0 <= b <= e <= {num_blocks - 1}"
            )
        if self.init_block is not None and self.init_block >= num_blocks:
            raise LoopRangeError(
                f"init_block={self.init_block} is outside the model ({num_blocks} blocks, 0..{num_blocks - 1})"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loop"] = list(self.loop)
        if not isinstance(self.feedback_steps, str):
            d["feedback_steps"] = list(self.feedback_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ILFConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:  # written by a newer ilf: read what this version knows, say what it leaves out
            warn_user(
                f"ignoring ILFConfig fields {sorted(unknown)} that this ilf does not know (written by a newer "
                f"version?); known: {sorted(known)}. Upgrade ilf to use them."
            )
        d = {k: v for k, v in d.items() if k in known}
        if "loop" in d:
            d["loop"] = tuple(d["loop"])
        if "feedback_steps" in d and isinstance(d["feedback_steps"], list):
            d["feedback_steps"] = tuple(d["feedback_steps"])
        return cls(**d)


@dataclass(frozen=True)
class CacheConfig:
    """The paper's caching baseline (§2.2, Fig. 6, Table 6).

    On refresh steps every block runs and each cacheable block stores its residual (its attention,
    cross-attention and feed-forward results, summed as the block adds them to its input). On the other
    steps the cacheable blocks do not run: the stored residual is added to their new input.

    Args:
        location: which blocks are cacheable: `"first"`, `"last"`, `"outer"` (half from each end),
            `"inner"` (the middle ones) or `"alternating"` (evenly spaced).
        num_blocks: c, how many blocks are cacheable (paper: 18 inner for Table 1, 14 for Table 6).
        refresh_every: k; steps 0, k, 2k, … recompute everything (paper: 3 → 326 block forwards at 20
            steps; 2 → 380). `refresh_every=1` is the stock model.
    """

    location: str = "inner"
    num_blocks: int = 18
    refresh_every: int = 3

    def __post_init__(self):
        if self.location not in CACHE_LOCATIONS:
            raise ILFError(f"cache location {self.location!r} is unknown; choose one of {CACHE_LOCATIONS}")
        if not isinstance(self.num_blocks, int) or self.num_blocks < 0:
            raise ILFError(f"cache num_blocks must be an int >= 0, got {self.num_blocks!r}")
        if not isinstance(self.refresh_every, int) or self.refresh_every < 1:
            raise ILFError(f"refresh_every must be an int >= 1 (1 = refresh every step), got {self.refresh_every!r}")

    def block_indices(self, num_blocks: int) -> tuple[int, ...]:
        """The cacheable block indices for a model of `num_blocks` blocks."""
        n, c = num_blocks, self.num_blocks
        if c > n:
            raise LoopRangeError(f"cannot cache {c} blocks of a {n}-block model; choose num_blocks <= {n}")
        if self.location == "first":
            idx = range(c)
        elif self.location == "last":
            idx = range(n - c, n)
        elif self.location == "outer":
            head = (c + 1) // 2
            idx = list(range(head)) + list(range(n - (c - head), n))
        elif self.location == "inner":
            start = (n - c) // 2
            idx = range(start, start + c)
        else:  # alternating: c indices spread evenly over the model
            idx = sorted({(j * n) // c for j in range(c)}) if c else []
        return tuple(idx)

    def to_dict(self) -> dict:
        return {"location": self.location, "num_blocks": self.num_blocks, "refresh_every": self.refresh_every}
