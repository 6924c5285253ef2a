"""Feedback-aware inference scheduling (paper §3.3): pure functions of (step, timesteps).

* which steps of an N-step schedule get feedback (the "skipping" plans of Fig. 10 and 15);
* the post-feedback timestep `t_post` (eq. 4 "rescale", eq. 5 "anneal", "uniform", "none");
* which steps refresh the caching baseline;
* the block-forward count a configuration predicts (the paper's latency proxy).

The scheduler itself always steps with the sigmas of t; only the backbone's time conditioning after the
feedback block changes.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from .choices import T_POST_STRATEGIES
from .errors import ScheduleError

_NAMED = re.compile(r"^(outer|first|last|skip-inner|skip-first|skip-last|skip-outer):(\d+)$")
_PLAN_HELP = (
    "use 'all', 'none', 'alternating', 'outer:K', 'first:K', 'last:K', 'skip-inner:K', 'skip-first:K', "
    "'skip-last:K', 'skip-outer:K', a comma list like '0,1,-2,-1' or a list of step indices"
)


def parse_plan(plan: str | Sequence[int]) -> tuple[str, int] | tuple[int, ...]:
    """Validate a feedback plan; returns `(name, K)` for named plans or a tuple of step indices."""
    if isinstance(plan, str):
        p = plan.strip().lower()
        if p in ("all", "none", "alternating", "skip-alternating"):
            return ("alternating" if p == "skip-alternating" else p, 0)
        m = _NAMED.match(p)
        if m:
            return (m.group(1), int(m.group(2)))
        if re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*", p):
            return tuple(int(v) for v in p.split(","))
        raise ScheduleError(f"feedback plan {plan!r} is not understood; {_PLAN_HELP}")
    try:
        steps = tuple(plan)
    except TypeError:
        raise ScheduleError(f"feedback plan {plan!r} is not understood; {_PLAN_HELP}") from None
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ScheduleError(f"explicit feedback steps must be integers, got {plan!r}")
    return steps


def feedback_steps(plan: str | Sequence[int], num_steps: int) -> frozenset[int]:
    """The step indices (0 = first, noisiest) that use feedback in a `num_steps` schedule."""
    parsed = parse_plan(plan)
    n = num_steps
    all_steps = set(range(n))
    if parsed and isinstance(parsed[0], str):
        name, k = parsed
        k = min(k, n)
        if name == "all":
            on = all_steps
        elif name == "none":
            on = set()
        elif name == "alternating":
            on = set(range(0, n, 2))
        elif name == "outer":
            on = set(range(k)) | set(range(n - k, n))
        elif name == "first":
            on = set(range(k))
        elif name == "last":
            on = set(range(n - k, n))
        elif name == "skip-first":
            on = all_steps - set(range(k))
        elif name == "skip-last":
            on = all_steps - set(range(n - k, n))
        elif name == "skip-outer":
            on = all_steps - set(range(k)) - set(range(n - k, n))
        else:  # skip-inner: the middle k steps; an odd remainder keeps the extra feedback step at the start
            start = (n - k + 1) // 2
            on = all_steps - set(range(start, start + k))
        return frozenset(on)
    on = set()
    for s in parsed:
        if not -n <= s < n:
            raise ScheduleError(
                f"feedback step {s} does not exist in a {n}-step schedule (valid: 0..{n - 1} or -{n}..-1)"
            )
        on.add(s % n)
    return frozenset(on)


def loop_ratio(loop_len: int, num_blocks: int, ratio: str) -> float:
    """k of eq. 4–5: `m/n` (loop blocks / model blocks) or the paper's literal `n/m`."""
    if ratio == "m/n":
        return loop_len / num_blocks
    if ratio == "n/m":
        return num_blocks / loop_len
    raise ScheduleError(f"t_post_ratio={ratio!r} is unknown; choose 'm/n' or 'n/m'")


def post_timestep(
    strategy: str,
    t: torch.Tensor | float,
    gap: torch.Tensor | float,
    *,
    k: float,
    first_step: bool = False,
    num_train_timesteps: int = 1000,
    floor: float = 10.0,
) -> torch.Tensor:
    """t_post for timestep(s) `t` whose scheduler gap to the next timestep is `gap` (i in the paper).

    `none`: t; `uniform`: t − i/2; `rescale` (eq. 4): t − i·k; `anneal` (eq. 5): eq. 4 on the first step,
    then t − max(i·k·t/T, floor) with T the training horizon. Clamped at 0 (no timestep below the data).
    Works elementwise on tensors (training, per-sample t) and on floats (inference).
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    gap = torch.as_tensor(gap, dtype=torch.float32, device=t.device)
    if strategy == "none":
        shift = torch.zeros_like(t)
    elif strategy == "uniform":
        shift = gap / 2
    elif strategy == "rescale" or (strategy == "anneal" and first_step):
        shift = gap * k
    elif strategy == "anneal":
        shift = torch.clamp(gap * k * t / num_train_timesteps, min=floor)
    else:
        raise ScheduleError(f"t_post strategy {strategy!r} is unknown; choose one of {T_POST_STRATEGIES}")
    return torch.clamp(t - shift, min=0.0)


def cache_refresh_steps(num_steps: int, refresh_every: int) -> frozenset[int]:
    """Steps on which the caching baseline recomputes every block (0, k, 2k, …)."""
    return frozenset(range(0, num_steps, refresh_every))


def predicted_block_forwards(
    num_blocks: int,
    num_steps: int,
    *,
    loop: tuple[int, int] | None = None,
    feedback_plan: str | Sequence[int] = "none",
    cached_blocks: int = 0,
    refresh_every: int = 1,
    rerun_loop: bool = True,
) -> int:
    """Block forwards a configuration costs (paper §4.2): the latency proxy of Tables 1–3 and 6.

    A plain step costs N. A feedback step adds the loop (e − b + 1) and the feedback block (1); the no-loop
    control (`rerun_loop=False`) adds the feedback block only. A cached step of the caching baseline skips
    its `cached_blocks`.
    """
    total = num_blocks * num_steps
    if loop is not None:
        m = loop[1] - loop[0] + 1 if rerun_loop else 0
        total += len(feedback_steps(feedback_plan, num_steps)) * (m + 1)
    if cached_blocks:
        cached_steps = num_steps - len(cache_refresh_steps(num_steps, refresh_every))
        total -= cached_steps * cached_blocks
    return total
