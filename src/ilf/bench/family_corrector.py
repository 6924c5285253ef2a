"""The `corrector` family: a trained feedback that corrects diffusers' TaylorSeer forecast (ilf's corrector mode).

`corrector:20,feedback=PATH` runs a folder from `ilf train --distill corrector` at its recorded cache schedule
(`interval`/`warmup` or a step mask `full=0+1+2+5+9` override it); `feedback=untrained` builds one with zero scale, whose output is the cache
alone (TaylorSeer at the same schedule, plus `fresh` leading blocks that run but are not used yet): the
same-schedule control of a trained corrector.
"""

from __future__ import annotations

from ..errors import ILFError
from .errors import MethodSpecError
from .family import Attachment, Family, Prepared
from .family_ilf import feedback_config
from .grammar import UNTRAINED, Option, parse_choice, parse_int, parse_pos_int, parse_str

_SCHEDULE = ("interval", "warmup", "full")
_BUILD = ("fresh", "feed", "forecast", "tail")


def parse_steps(v: str) -> tuple[int, ...]:
    """'0+1+2+5+9' or '[0,1,2,5,9]' (the spec's list form) -> (0, 1, 2, 5, 9): a step mask in a method spec."""
    parts = v.strip("[]").replace(",", "+").split("+")
    if not all(p.strip().isdigit() for p in parts):
        raise ValueError("must be step indices joined by '+', e.g. 0+1+2+5+9")
    return tuple(int(p) for p in parts)


class CorrectorFamily(Family):
    name = "corrector"
    summary = ("ilf's cache corrector: TaylorSeer forecasts, a few fresh blocks and a trained block correcting the "
               "forecast (feedback=PATH from `ilf train --distill corrector`)")
    options = {
        "feedback": Option(parse_str, "a corrector folder from `ilf train --distill corrector`, or 'untrained' (zero "
                           "scale: the cache's own output)"),
        "interval": Option(parse_pos_int, "a full step every INTERVAL steps after the warm-up (default: recorded)"),
        "warmup": Option(parse_pos_int, "the first WARMUP steps always compute (default: recorded)"),
        "full": Option(parse_steps, "an explicit full-step mask: steps joined by '+' or a list (0+1+2+5+9 or [0,1,2,5,9]; must hold 0), "
                       "replacing interval/warmup (default: recorded)"),
        "fresh": Option(parse_int, "leading blocks run fresh on forecast steps; only with feedback=untrained"),
        "tail": Option(parse_int, "trailing blocks run fresh after the correction (default: SD3's textless last block, "
                       "else 0); only with feedback=untrained"),
        "feed": Option(parse_choice("innovation", "forecast"), "what F sees; only with feedback=untrained"),
        "forecast": Option(parse_choice("output", "residual"), "the cache: output (diffusers' TaylorSeer) or residual "
                           "(DBCache + TaylorSeer: fresh first blocks, the rest's residual forecast); only with "
                           "feedback=untrained"),
    }

    def validate(self, spec):
        fb = spec.get("feedback")
        if fb is None:
            raise MethodSpecError(f"{spec.name!r} needs feedback=PATH (a folder from `ilf train --distill corrector`) "
                                  "or feedback=untrained")
        if fb != UNTRAINED and any(spec.get(k) is not None for k in _BUILD):
            raise MethodSpecError(f"{spec.name!r}: fresh=, tail=, feed= and forecast= only apply to feedback=untrained; a trained "
                                  "corrector keeps the blocks it was trained with")

    def config_of(self, spec):
        from ilf.corrector_config import CorrectorConfig

        fb = spec.get("feedback")
        if fb == UNTRAINED:  # built for the spec's run length (its step mask applies there)
            base = CorrectorConfig(**{k: spec.get(k) for k in _BUILD if spec.get(k) is not None},
                                   num_inference_steps=spec.steps)
        else:
            meta = feedback_config(fb)
            if meta.get("mode") != CorrectorConfig.mode:
                raise MethodSpecError(f"feedback {fb!r} is not a corrector (mode {meta.get('mode', 'ilf')!r}); run it "
                                      "as an `ilf:` method, or pass a folder from `ilf train --distill corrector`")
            base = CorrectorConfig.from_dict(meta["config"])
        given = {k: spec.get(k) for k in _SCHEDULE if spec.get(k) is not None}
        if "full" in given:
            given["full_steps"] = given.pop("full")
        elif given:  # a spread schedule given: it replaces a recorded step mask
            given["full_steps"] = None
        try:
            return base.__class__(**{**base.to_dict(), **given})
        except ILFError as err:
            raise MethodSpecError(f"{spec.name!r}: {err}") from None

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return self.config_of(spec).block_forwards(spec.steps, num_blocks)

    def prepare(self, spec, ctx):
        from ilf.runtime.attached import resolve_target
        from ilf.runtime.corrector import apply_corrector, build_corrector_feedback
        from ilf.adapters import get_adapter
        from ilf.feedback import load_feedback
        from ilf.pipeline import remove_ilf

        model, _ = resolve_target(ctx.pipe)
        config = self.config_of(spec)
        fb = spec.get("feedback")
        feedback = (build_corrector_feedback(model, config, get_adapter(model)) if fb == UNTRAINED
                    else load_feedback(fb, model)[0])

        def attach(pipe):
            rt = apply_corrector(pipe, config, feedback=feedback)
            return Attachment(lambda: remove_ilf(pipe), before_call=rt.reset)

        return Prepared(spec, attach, {"feedback": fb, "corrector_config": config.to_dict(),
                                       "scale": round(float(feedback.scales.detach().flatten()[0]), 6),
                                       "compute_steps": sorted(config.compute_steps(spec.steps))})
