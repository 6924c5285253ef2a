"""The cache-corrector mode's configuration: which training-free cache it stacks on, which blocks run fresh
on the steps the cache forecasts, and what the feedback block sees.

The cache is diffusers' TaylorSeer (`TaylorSeerCacheConfig`): full steps on a fixed schedule (a warm-up, then
one every `interval` steps), and between them each cached feature is a Taylor extrapolation (order `order`,
in step units) of its values on the last full steps. `order=0` is plain reuse (FirstBlockCache/DBCache-style
reuse of the last full step's features).

On a forecast step the corrector runs blocks `0 … fresh−1` fresh, forecasts the output of block
`e = N − 1 − tail`, corrects that forecast with the feedback block F and runs blocks `e+1 … N−1` (the tail) and
the output layer fresh on it:

    x_a    = input of block a = fresh  (computed this step)                       [B, L, D]
    ĥ_e    = Taylor forecast of block e's output streams                           [B, L, D] (+ text, MMDiT)
    x̂_a    = the same forecast of x_a;   δ_a = x_a − x̂_a  (the innovation: what the fresh blocks saw that the
             forecast did not)
    base   = ĥ_e                 forecast="output": diffusers' TaylorSeer (every block predicted)
           = ĥ_e + δ_a = x_a + Taylor(h_e − x_a)
                                 forecast="residual": cache-dit's DBCache + TaylorSeer (fresh first blocks, the
                                 rest's residual predicted)
    z      = base (+ δ_a with forecast="output" and feed="innovation")
    h_e    = base + s · (F(z) − z)                                   s: one scalar, zero-initialised

and, before that, the forecast itself is learned (`learned_forecast`, L2P's per-step linear weights): on step k

    ĥ_e    = Taylor(h_e) + m_k0·h₁ + m_k1·(h₁ − h₀) + m_k2·(h₀ − h₋₁) + m_k3·δ_a       m: [steps, 4], zero at first

(h₁, h₀, h₋₁: block e's outputs on the last three full steps). Untrained (s = 0, m = 0) the corrector returns
exactly the cache's own output; the learned forecast costs no block forward, F one per corrected step. A
forecast step costs `fresh + tail` block forwards (+1 where F runs), a full step N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from .errors import ILFError, LoopRangeError, ScheduleError
from .schedule import feedback_steps, parse_plan
from .warn import warn_user

CACHES = ("taylorseer",)
# What may change when a trained corrector is attached: the cache's step plan (off the trained one, it warns).
CORRECTOR_INFERENCE_FIELDS = frozenset({"interval", "warmup", "cooldown", "full_steps"})
FEEDS = ("innovation", "forecast")
FORECASTS = ("output", "residual")


def taylor_compute_steps(num_steps: int, interval: int, warmup: int, cooldown: int | None = None) -> list[int]:
    """The steps on which TaylorSeer computes every block, as diffusers' `TaylorSeerCacheHook` decides
    (`_measure_should_compute`: step < warm-up, or (step − warm-up − 1) % interval == 0, or step ≥ cooldown);
    the others are forecast. A test holds this to diffusers' hook."""
    return [s for s in range(num_steps)
            if s < warmup or (s - warmup - 1) % interval == 0 or (cooldown is not None and s >= cooldown)]


def taylor_schedule_of(steps, num_steps: int) -> tuple[int, int, int | None] | None:
    """(interval, warmup, cooldown) of diffusers' TaylorSeer that computes exactly `steps` of a `num_steps` run
    (the fewest warm-up steps first), or None when no TaylorSeer setting does: a step mask's TaylorSeer twin."""
    want = sorted(steps)
    for warmup in range(1, num_steps + 1):
        for cooldown in (None, *range(warmup, num_steps)):
            for interval in range(1, num_steps + 1):
                if taylor_compute_steps(num_steps, interval, warmup, cooldown) == want:
                    return interval, warmup, cooldown
    return None


def check_full_steps(steps, num_steps: int) -> tuple[int, ...]:
    """An explicit full-step mask as a sorted tuple; refused unless it is distinct ints in [0, num_steps) that
    include step 0 (a forecast needs one full step before it) and leave at least one step to forecast."""
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise ScheduleError(f"full_steps must be a list of step indices, got {steps!r}")
    steps = list(steps)
    if any(not isinstance(s, int) or isinstance(s, bool) for s in steps):
        raise ScheduleError(f"full_steps must hold ints, got {steps!r}")
    bad = [s for s in steps if not 0 <= s < num_steps]
    if bad or len(set(steps)) != len(steps):
        raise ScheduleError(f"full_steps {steps} must be distinct steps in 0..{num_steps - 1} of the "
                            f"{num_steps}-step run (num_inference_steps)")
    if 0 not in steps:
        raise ScheduleError(f"full_steps {steps} must include step 0: the first forecast needs a full step before it")
    if len(steps) == num_steps:
        raise ScheduleError(f"full_steps computes all {num_steps} steps: nothing is forecast; drop some steps")
    return tuple(sorted(steps))


@dataclass(frozen=True)
class CorrectorConfig:
    """A trained feedback on top of a training-free cache.

    Args:
        cache: the training-free cache the corrector stacks on: `"taylorseer"` (diffusers' TaylorSeer).
        interval, warmup, cooldown, order: the cache's settings, as `TaylorSeerCacheConfig`'s
            `cache_interval`, `disable_cache_before_step`, `disable_cache_after_step`, `max_order`.
        full_steps: an explicit set of full steps for the `num_inference_steps` run (a step mask, as cache-dit's
            `steps_mask`; step 0 must be one), replacing interval/warm-up/cool-down there; None: TaylorSeer's
            evenly spread schedule. A run of another length falls back to interval/warm-up.
        fresh: a = the number of leading blocks that run fresh on a forecast step (0: none; the patch
            embedding still runs, so F still sees this step's input).
        tail: blocks at the end that run fresh after the correction (None: the blocks that return no text
            stream, SD3's last block; else 0).
        forecast: the cache: `"output"` (diffusers' TaylorSeer: block e's output extrapolated) or `"residual"`
            (DBCache + TaylorSeer: this step's fresh x_a plus the extrapolated residual of blocks a … e).
        feed: with forecast="output", what F sees: `"innovation"` (the forecast plus how far this step's fresh features x_a are from
            their own forecast) or `"forecast"` (the forecast alone).
        correct_steps: the forecast steps on which F runs (a plan as `ILFConfig.feedback_steps` takes: "all",
            "none", "last:K", …); on the others the (learned) forecast is used as it is, and F costs nothing.
        learned_forecast: learn per-step weights (`CorrectorModule.mix`, zero at first) that correct the Taylor
            forecast from the last full steps' features and this step's innovation; False keeps TaylorSeer's own.
        mix_per_channel: one weight per feature channel of each basis term (`mix` [steps, 4, D]) instead of one
            per term ([steps, 4]).
        init: F starts as a copy of block e (`"copy"`) or freshly initialised (`"fresh"`).
        num_inference_steps: the run length the corrector is built for: its per-step forecast weights (`mix`)
            have one row per step; a run of another length uses TaylorSeer's own forecast (with a warning).
        scheduler, guidance_scale: the schedule it was trained for (recorded by training).
    """

    mode: ClassVar[str] = "corrector"  # what the adapter file records (ILF's own configs are "ilf")

    cache: str = "taylorseer"
    interval: int = 2
    warmup: int = 3
    cooldown: int | None = None
    full_steps: tuple[int, ...] | None = None
    order: int = 1
    fresh: int = 0
    tail: int | None = None
    forecast: str = "output"
    feed: str = "innovation"
    correct_steps: str = "none"
    learned_forecast: bool = True
    mix_per_channel: bool = False
    init: str = "copy"
    num_inference_steps: int = 20
    scheduler: str | None = None
    guidance_scale: float | None = None

    def __post_init__(self):
        if self.cache not in CACHES:
            raise ILFError(f"cache={self.cache!r} is unknown; choose one of {CACHES}")
        for name, low in (("interval", 1), ("warmup", 1), ("order", 0), ("fresh", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ScheduleError(f"{name} must be an int >= {low}, got {v!r}")
        n = self.num_inference_steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ScheduleError(f"num_inference_steps must be an int >= 1 (the schedule the corrector is built for), "
                                f"got {n!r}")
        parse_plan(self.correct_steps)  # raises ScheduleError on a bad plan
        if self.full_steps is not None:
            object.__setattr__(self, "full_steps", check_full_steps(self.full_steps, n))  # JSON gives a list
        for name in ("cooldown", "tail"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ScheduleError(f"{name} must be an int >= 0 or None, got {v!r}")
        if self.forecast not in FORECASTS:
            raise ILFError(f"forecast={self.forecast!r} is unknown; choose one of {FORECASTS}")
        if not isinstance(self.mix_per_channel, bool):
            raise ILFError(f"mix_per_channel must be True or False, got {self.mix_per_channel!r}")
        if not isinstance(self.learned_forecast, bool):
            raise ILFError(f"learned_forecast must be True or False, got {self.learned_forecast!r}")
        if self.feed not in FEEDS:
            raise ILFError(f"feed={self.feed!r} is unknown; choose one of {FEEDS}")
        if self.init not in ("copy", "fresh"):
            raise ILFError(f"init={self.init!r} is unknown; choose 'copy' or 'fresh'")

    @property
    def uses_feedback_block(self) -> bool:
        """Whether F ever runs (`correct_steps` other than "none"); a corrector whose F never runs is saved
        without F's weights (its file holds the scale and the learned forecast only)."""
        return parse_plan(self.correct_steps) != ("none", 0)

    @property
    def uses_fresh_forecast(self) -> bool:
        """Whether x_a is forecast too (the residual cache, or the innovation F sees)."""
        return self.forecast == "residual" or self.feed == "innovation"

    def mix_shape(self, width: int) -> tuple[int, ...]:
        """The learned forecast's weights: [steps, 4], or [steps, 4, width] per channel (width: the model's D)."""
        return (self.num_inference_steps, 4, width) if self.mix_per_channel else (self.num_inference_steps, 4)

    def compute_steps(self, num_steps: int) -> frozenset[int]:
        """The full steps of a `num_steps` run: the explicit mask on the run length it was made for, else
        TaylorSeer's schedule."""
        if self.full_steps is not None and num_steps == self.num_inference_steps:
            return frozenset(self.full_steps)
        return frozenset(taylor_compute_steps(num_steps, self.interval, self.warmup, self.cooldown))

    def corrected_steps(self, num_steps: int) -> frozenset[int]:
        """The forecast steps on which F runs."""
        return feedback_steps(self.correct_steps, num_steps) - self.compute_steps(num_steps)

    def span(self, num_blocks: int, textless_tail: int = 0) -> tuple[int, int]:
        """(a, e): the first block not run fresh on a forecast step and the block whose output is forecast."""
        tail = textless_tail if self.tail is None else self.tail
        a, e = self.fresh, num_blocks - 1 - tail
        if not 0 <= a <= e:
            raise LoopRangeError(
                f"fresh={self.fresh} and tail={tail} leave no block to forecast in a {num_blocks}-block model; "
                f"choose fresh + tail <= {num_blocks - 1}"
            )
        return a, e

    def block_forwards(self, num_steps: int, num_blocks: int, textless_tail: int = 0) -> int:
        """Block forwards of one `num_steps` run per model call: N per full step, fresh + tail per forecast step,
        and one more (F) on each corrected one."""
        a, e = self.span(num_blocks, textless_tail)
        full = len(self.compute_steps(num_steps))
        return (full * num_blocks + (num_steps - full) * (a + num_blocks - 1 - e)
                + len(self.corrected_steps(num_steps)))

    def to_dict(self) -> dict:
        """JSON-ready: as it reads back from an adapter file or a checkpoint (the mask as a list)."""
        d = asdict(self)
        if d["full_steps"] is not None:
            d["full_steps"] = list(d["full_steps"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CorrectorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            warn_user(f"ignoring CorrectorConfig fields {sorted(unknown)} that this ilf does not know; "
                      "upgrade ilf to use them")
        return cls(**{k: v for k, v in d.items() if k in known})
