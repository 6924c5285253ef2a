"""The `ilf` family: Inner Loop Feedback with a trained feedback folder (or `feedback=untrained`, smoke runs).

Options override the feedback's saved schedule (`plan`, `t_post`, `ratio`); the loop is the feedback's own
(read from its ilf_config.json without loading tensors), or `loop=B-E` for an untrained one.
"""

from __future__ import annotations

import dataclasses
import sys

from .errors import MethodSpecError
from .family import Attachment, Family, Prepared
from ilf.choices import T_POST_RATIOS, T_POST_STRATEGIES

from .grammar import UNTRAINED, Option, parse_choice, parse_pair, parse_str


def parse_loop(v: str) -> tuple[int, int]:
    """"8-19" -> (8, 19)."""
    b, e = parse_pair(v)
    if b != int(b) or e != int(e) or b < 0 or e < b:
        raise ValueError("write B-E with 0 <= B <= E, e.g. 8-19")
    return int(b), int(e)


def parse_plan_value(v: str) -> str | tuple[int, ...]:
    """A feedback plan: a named plan ("outer:2") or explicit steps in brackets ("[0,1,-2,-1]")."""
    from ilf.schedule import parse_plan

    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
        steps = tuple(int(s) for s in v.split(",") if s.strip())
        parse_plan(steps)
        return steps
    parse_plan(v)
    return v


def default_loop(num_blocks: int) -> tuple[int, int]:
    """The paper's loop (8, 19) of 28 blocks, scaled to other depths (`ilf.config.paper_loop`)."""
    from ilf.config import paper_loop

    return paper_loop(num_blocks)


def feedback_config(path: str) -> dict:
    """A saved feedback's verified ilf_config.json (`ilf.feedback.read_feedback_config`; no tensors loaded).

    `path`: a feedback folder or a Hub repo id (only its ilf_config.json is fetched)."""
    from ilf.errors import CorruptFeedbackError, FeedbackNotFoundError
    from ilf.feedback import CONFIG_NAME, read_feedback_config
    from ilf.hub import resolve_feedback_folder

    try:
        return read_feedback_config(resolve_feedback_folder(path, [CONFIG_NAME]))
    except (CorruptFeedbackError, FeedbackNotFoundError) as err:
        raise MethodSpecError(
            f"feedback {path!r}: {err} (pass feedback=PATH of a folder written by `ilf train` / save_feedback, "
            "or feedback=untrained for a smoke run)"
        ) from None


def paper_feedback_config(path: str) -> dict:
    """`feedback_config` of a paper-mode (inner loop) feedback; a corrector folder is refused with the fix."""
    meta = feedback_config(path)
    if meta.get("mode", "ilf") != "ilf":
        raise MethodSpecError(f"feedback {path!r} is a {meta['mode']} (ilf's corrector of TaylorSeer), not an inner-"
                              f"loop feedback; run it as `corrector:20,feedback={path}`")
    return meta


def feedback_loop(path: str) -> tuple[int, int]:
    """The loop a saved feedback was trained for."""
    b, e = paper_feedback_config(path)["loop"]
    return int(b), int(e)


def schedule_source(steps: int, config, saved, overrides: dict) -> tuple[str, bool]:
    """In words, the schedule an ILF row runs and where each part comes from (the feedback's recorded schedule or
    the method string), and whether it departs from what a trained feedback recorded."""
    parts, differs = [], False
    for key, flag in (("feedback_steps", "plan"), ("t_post", "t_post")):
        value = getattr(config, key)
        if saved is None:
            parts.append(f"{flag} {value} ({'method string' if key in overrides else 'default'}; untrained feedback)")
        elif key in overrides and getattr(saved, key) != value:
            parts.append(f"{flag} {value} from the method string, not the feedback's recorded {getattr(saved, key)}")
            differs = True
        else:
            parts.append(f"{flag} {value} (the feedback's recorded)")
    trained_steps = getattr(saved, "num_inference_steps", None)
    if trained_steps is not None and trained_steps != steps:
        parts.append(f"{steps} steps, not the {trained_steps} the feedback was trained for")
        differs = True
    elif trained_steps is not None:
        parts.append(f"{steps} steps (as trained)")
    return "; ".join(parts), differs


class ILFFamily(Family):
    name = "ilf"
    summary = "Inner Loop Feedback with a trained feedback (feedback=PATH, default --feedback)"
    default_steps = 10
    options = {
        "feedback": Option(parse_str, "a feedback folder from `ilf train`, or 'untrained' (zero scales, smoke runs: "
                           "the plain output only with t_post=none)"),
        "plan": Option(parse_plan_value, "feedback steps: all, none, outer:K, first:K, last:K, skip-inner:K, ..., "
                       "alternating or [i,j,...] (default: the feedback's own, else outer:2)"),
        "t_post": Option(parse_choice(*T_POST_STRATEGIES),
                         "post-feedback timestep (default: the feedback's own, else rescale)"),
        "ratio": Option(parse_choice(*T_POST_RATIOS), "k of eq. 4-5 (default: the feedback's own, else m/n)"),
        "loop": Option(parse_loop, "B-E, only with feedback=untrained (default: 8-19 of 28, scaled)"),
    }

    def validate(self, spec):
        if spec.get("loop") is not None and spec.get("feedback") not in (None, UNTRAINED):
            raise MethodSpecError(
                f"{spec.name!r}: loop= only applies to feedback=untrained; a trained feedback has its own loop"
            )
        plan = spec.get("plan")
        if plan is not None:  # the plan may name only steps this row has
            from ilf.argtypes import check_plan_fits
            from ilf.errors import ScheduleError

            try:
                check_plan_fits(tuple(plan) if isinstance(plan, list) else plan, spec.steps, flag="plan",
                                steps_flag=None)
            except ScheduleError as err:
                raise MethodSpecError(f"{spec.name!r}: {err}") from None

    def feedback_of(self, spec, default):
        """The row's feedback: its feedback=, else `default` (--feedback); raises when there is none."""
        fb = spec.get("feedback", default)
        if fb is None:
            raise MethodSpecError(
                f"{spec.name!r} needs a feedback: add feedback=PATH (a folder from `ilf train`) or pass --feedback "
                "PATH; feedback=untrained runs an untrained feedback (zero scales) for smoke tests"
            )
        return fb

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        from ilf.schedule import predicted_block_forwards

        fb = self.feedback_of(spec, feedback)
        if fb == UNTRAINED:
            loop, saved = spec.get("loop") or default_loop(num_blocks), {}
        else:  # one read of the verified ilf_config.json: its loop and its saved schedule
            meta = paper_feedback_config(fb)
            loop, saved = tuple(int(v) for v in meta["loop"]), meta.get("config", {})
        plan = spec.get("plan")
        if plan is None:
            plan = saved.get("feedback_steps", "outer:2")
        plan = tuple(plan) if isinstance(plan, list) else plan
        return predicted_block_forwards(num_blocks, spec.steps, loop=loop, feedback_plan=plan)

    def prepare(self, spec, ctx):
        from ilf.config import ILFConfig
        from ilf.feedback import load_feedback
        from ilf.pipeline import apply_ilf, remove_ilf
        from ilf.feedback import build_feedback
        from ilf.runtime.attached import resolve_target

        model, _ = resolve_target(ctx.pipe)
        fb_path = self.feedback_of(spec, ctx.feedback)
        overrides = {k: v for k, v in (("feedback_steps", spec.get("plan")), ("t_post", spec.get("t_post")),
                                       ("t_post_ratio", spec.get("ratio"))) if v is not None}
        if fb_path == UNTRAINED:
            config = ILFConfig(loop=spec.get("loop") or default_loop(ctx.num_blocks), **overrides)
            feedback, saved = build_feedback(model, config), None
        else:
            paper_feedback_config(fb_path)  # a corrector folder is refused here, with the fix
            feedback, saved = load_feedback(fb_path, model)
            config = dataclasses.replace(saved, **overrides)
        schedule, differs = schedule_source(spec.steps, config, saved, overrides)
        if differs:  # a recipe or method string that runs a feedback off the schedule it was trained for
            print(f"ilf bench: warning: {spec.name}: {schedule}", file=sys.stderr)

        def attach(pipe):
            apply_ilf(pipe, config, feedback=feedback)
            return Attachment(lambda: remove_ilf(pipe))

        return Prepared(spec, attach, {"feedback": fb_path, "ilf_config": config.to_dict(), "schedule": schedule,
                                       "scales": [round(float(s), 6) for s in feedback.scales.detach().flatten()]})
