"""argparse types that check counts and ranges where they are parsed.

A bad value stops the command with argparse's own message, which names the flag, before anything is loaded or
written: `ilf generate: error: argument --steps: must be an integer >= 1, got -5`. Exit status 2, no traceback.
Imports nothing heavy, so `ilf --help` stays fast.
"""

from __future__ import annotations

import argparse
import math


def _range_words(lo, hi) -> str:
    if hi is None:
        return f">= {lo}"
    return f"in {lo}..{hi}"


def int_range(lo: int = 1, hi: int | None = None):
    """An integer in `lo..hi` (inclusive; `hi=None`: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {_range_words(lo, hi)}, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_range_words(lo, hi)}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its 'invalid int value' fallback
    return parse


def positive_float(text: str) -> float:
    """A float > 0 (learning rates, epochs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0 (guidance scales, loss weights, weight decay): nan, inf and negatives are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


guidance_scale = non_negative_float  # classifier-free guidance (diffusers' pipelines turn CFG off at <= 1)


def fraction(text: str) -> float:
    """A probability in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in 0..1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in 0..1, got {text}")
    return value


def full_steps_arg(text: str) -> list[int]:
    """A step mask: distinct step indices >= 0 separated by commas, e.g. '0,1,2,4,6,9' (the run length and step 0
    are checked against --student-steps once it is known)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be step indices >= 0 separated by commas, e.g. 0,1,2,4,6,9; got {text!r}")
    steps = [int(p) for p in parts]
    if len(set(steps)) != len(steps):
        raise argparse.ArgumentTypeError(f"names a step twice: {text!r}")
    return steps


COUNT = int_range(1)  # steps, images, iterations, batch sizes, repeats, threads
INDEX = int_range(0)  # seeds, block indices, class ids, intervals where 0 means "off"


class LoopAction(argparse.Action):
    """`--loop B E`: two block indices with 0 <= B <= E (the model's depth is checked once the model is loaded)."""

    def __call__(self, parser, namespace, values, option_string=None):
        b, e = values
        if b > e:
            parser.error(f"argument {option_string}: the first loop block B must not exceed the last E "
                         f"(0 <= B <= E < the model's number of blocks), got {b} {e}")
        setattr(namespace, self.dest, (b, e))


def add_loop_arg(p, help: str, **kwargs) -> None:
    p.add_argument("--loop", nargs=2, type=INDEX, metavar=("B", "E"), action=LoopAction, help=help, **kwargs)


def add_threads_arg(p) -> None:
    p.add_argument("--threads", type=COUNT, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 is fastest for small models on a shared machine)")


def set_threads(n: int | None) -> None:
    """Apply `--threads` (imports torch: call it inside a command, not while building parsers)."""
    if n:
        import torch

        torch.set_num_threads(n)


def check_plan_fits(plan, num_steps: int, flag: str = "--feedback-steps", steps_flag: str | None = "--steps") -> None:
    """A feedback plan may only name steps that a `num_steps` run has: K of a named plan <= the step count,
    explicit indices in -N..N-1. Raises ScheduleError naming the flags and the allowed range. `steps_flag`: the flag
    that set the step count (None: no flag, e.g. a bench method string's own step count)."""
    where = f" ({steps_flag} {num_steps})" if steps_flag else ""
    from .errors import ScheduleError
    from .schedule import feedback_steps, parse_plan

    if plan is None:
        return
    parsed = parse_plan(plan)
    if parsed and isinstance(parsed[0], str):
        name, k = parsed
        if name in ("all", "none", "alternating"):
            return
        if not 0 <= k <= num_steps:
            raise ScheduleError(f"{flag} {plan}: K must be in 0..{num_steps} for a {num_steps}-step run{where}, "
                                f"got {k}")
        return
    try:
        feedback_steps(parsed, num_steps)
    except ScheduleError as err:
        raise ScheduleError(f"{flag} {plan}: {err}{where}") from None
