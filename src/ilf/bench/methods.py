"""The methods a benchmark compares: one small spec per row, parsed from a string.

Grammar::

    FAMILY[:STEPS][,KEY=VALUE]...

    plain:20                                            the stock pipeline, 20 steps
    paper-cache:20,location=inner,blocks=18,refresh=3   the paper's caching baseline (§2.2, Fig. 6)
    ilf:10,feedback=PATH,plan=outer:2,t_post=rescale    Inner Loop Feedback with a trained feedback
    fbc:20,threshold=0.05                               diffusers FirstBlockCache
    taylorseer:20,interval=2,warmup=3                   diffusers TaylorSeerCache
    magcache:20,threshold=0.06                          diffusers MagCache (calibrated on the first prompt)
    pab:20,spatial=2,cross=4                            diffusers PyramidAttentionBroadcast
    fastercache:20,spatial=2,uncond=5                   diffusers FasterCache
    cache-dit:20,fn=1,bn=0,threshold=0.08               cache-dit DBCache (optional extra `ilf[cache-dit]`)

A value holding commas goes in brackets (`plan=[0,1,-2,-1]`); `label=TEXT` names the row. `@NAME` expands a
preset list (`PRESETS`). A family turns a spec into a `Prepared` method (one-time work: load a feedback,
calibrate MagCache), which attaches to the pipeline and detaches from it again, leaving the stock pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from .errors import MethodSpecError

GRAMMAR = "FAMILY[:STEPS][,KEY=VALUE]... (a value with commas in brackets, e.g. plan=[0,1,-2,-1])"


# ---------------------------------------------------------------------------------------------- values


def parse_int(v: str) -> int:
    return int(v)


def parse_pos_int(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError("must be >= 1")
    return n


def parse_float(v: str) -> float:
    return float(v)


def _str(v: str) -> str:
    return v


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return v

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


_PAIR = re.compile(r"^(-?\d+(?:\.\d+)?)-(-?\d+(?:\.\d+)?)$")


def parse_pair(v: str) -> tuple[float, float]:
    """"100-800" / "-1-681" -> (100.0, 800.0) / (-1.0, 681.0)."""
    m = _PAIR.match(v)
    if not m:
        raise ValueError("write LO-HI, e.g. 100-800")
    return float(m.group(1)), float(m.group(2))


def _loop(v: str) -> tuple[int, int]:
    b, e = parse_pair(v)
    if b != int(b) or e != int(e) or b < 0 or e < b:
        raise ValueError("write B-E with 0 <= B <= E, e.g. 8-19")
    return int(b), int(e)


def _plan(v: str) -> str | tuple[int, ...]:
    from ilf.schedule import parse_plan

    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
        steps = tuple(int(s) for s in v.split(",") if s.strip())
        parse_plan(steps)
        return steps
    parse_plan(v)
    return v


def format_value(v: Any, key: str | None = None) -> str:
    """The spec-string form of a parsed value (parsing it gives the value back)."""
    if key == "loop" or (isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, float) for x in v)):
        return f"{v[0]:g}-{v[1]:g}"
    if isinstance(v, tuple):
        return "[" + ",".join(str(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class Option:
    """One `KEY=VALUE` a family accepts. `default=None` means the family resolves it from the model."""

    parse: Callable[[str], Any]
    help: str
    default: Any = None


# ---------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class MethodSpec:
    """One row of a benchmark: a family, its step count and its options (parsed values)."""

    family: str
    steps: int
    options: tuple[tuple[str, Any], ...] = ()
    label: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def name(self) -> str:
        """The canonical spec string: parsing it gives this spec back."""
        s = f"{self.family}:{self.steps}" + "".join(f",{k}={format_value(v, k)}" for k, v in self.options)
        return s + (f",label={self.label}" if self.label else "")

    @property
    def display(self) -> str:
        """The row's name in tables and plots: the label, else the spec without file paths."""
        if self.label:
            return self.label
        shown = [(k, v) for k, v in self.options if k != "feedback" or v == UNTRAINED]  # paths hidden
        return f"{self.family}:{self.steps}" + "".join(f",{k}={format_value(v, k)}" for k, v in shown)

    @property
    def slug(self) -> str:
        """A file-system-safe, unique-enough folder name for this row's images."""
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.name.replace(":", "-"))[:120]

    def to_dict(self) -> dict:
        return {"family": self.family, "steps": self.steps, "label": self.label, "spec": self.name,
                "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}}

    def replace(self, **changes) -> "MethodSpec":
        return dataclasses.replace(self, **changes)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: "a,plan=[0,1],b" -> ["a", "plan=[0,1]", "b"]."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_method(text: str) -> MethodSpec:
    """Parse one method string (see the module docstring). Raises `MethodSpecError` naming the fix."""
    text = text.strip()
    if not text:
        raise MethodSpecError(f"empty method string; write {GRAMMAR}")
    head, *rest = _split_top_level(text)
    family_name, _, steps_text = head.partition(":")
    family = get_family(family_name.strip())
    try:
        steps = parse_pos_int(steps_text) if steps_text else family.default_steps
    except ValueError:
        raise MethodSpecError(f"{text!r}: steps {steps_text!r} must be a positive integer") from None
    label, options = None, {}
    for part in rest:
        key, eq, value = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not eq or not key:
            raise MethodSpecError(f"{text!r}: {part!r} is not KEY=VALUE; write {GRAMMAR}")
        if key == "label":
            label = value.strip()
            continue
        if key not in family.options:
            known = ", ".join(sorted(family.options)) or "none"
            raise MethodSpecError(f"{text!r}: {family.name} has no option {key!r} (options: {known}, label)")
        try:
            options[key] = family.options[key].parse(value.strip())
        except (ValueError, TypeError) as err:
            raise MethodSpecError(f"{text!r}: {key}={value!r} is invalid ({err}); {family.options[key].help}") from None
    ordered = tuple((k, options[k]) for k in family.options if k in options)  # canonical order
    spec = MethodSpec(family.name, steps, ordered, label)
    family.validate(spec)
    return spec


def expand_methods(items: list[str]) -> list[MethodSpec]:
    """Method strings and `@PRESET` names -> specs, in order, duplicates dropped."""
    specs: list[MethodSpec] = []
    for item in items:
        for part in [item] if not item.startswith("@") else _preset(item[1:]):
            spec = parse_method(part)
            if spec not in specs:
                specs.append(spec)
    if not specs:
        raise MethodSpecError("no methods to compare; pass --methods (e.g. plain:20 plain:10 @peers)")
    return specs


def _preset(name: str) -> list[str]:
    if name not in PRESETS:
        raise MethodSpecError(f"unknown preset @{name}; presets: {', '.join('@' + p for p in PRESETS)}")
    return PRESETS[name]


# Presets. Peers use their libraries' defaults except where noted in their family; block counts in the comments
# are for 28-block PixArt/DiT.
PRESETS: dict[str, list[str]] = {
    # Table 1 (1.7-1.8x): 20 plain (560), 12 plain (336), paper cache inner 18 / 1 in 3 (326), ILF 10 outer:2 (332)
    "table1": ["plain:20", "plain:12", "paper-cache:20,location=inner,blocks=18,refresh=3",
               "ilf:10,plan=outer:2,t_post=rescale"],
    # Table 4 (1.4-1.5x): paper cache inner 18 every other step (380), ILF 12 skip-inner:8 (388)
    "table4": ["plain:20", "paper-cache:20,location=inner,blocks=18,refresh=2",
               "ilf:12,plan=skip-inner:8,t_post=rescale"],
    # diffusers' hooks and cache-dit, each set near the 1.7-1.8x of Table 1
    "peers": ["fbc:20,threshold=0.05", "taylorseer:20,interval=2,warmup=3", "magcache:20",
              "pab:20,spatial=2,cross=4", "fastercache:20", "cache-dit:20"],
    # every family once: the default comparison
    "all": ["plain:20", "plain:12", "plain:10", "paper-cache:20", "ilf:10", "@peers"],
    # quality-vs-time curves (Fig. 8): several settings per family
    "pareto": ["plain:20", "plain:16", "plain:12", "plain:10", "plain:8",
               "paper-cache:20,refresh=2", "paper-cache:20,refresh=3", "paper-cache:20,refresh=4",
               "ilf:12,plan=skip-inner:8", "ilf:10,plan=outer:2", "ilf:8,plan=outer:2",
               "fbc:20,threshold=0.05", "fbc:20,threshold=0.1", "taylorseer:20,interval=2,warmup=3",
               "taylorseer:20,interval=3,warmup=3", "magcache:20,threshold=0.06", "magcache:20,threshold=0.12"],
}
PRESETS["all"] = [m for item in PRESETS["all"] for m in (PRESETS[item[1:]] if item.startswith("@") else [item])]


# ---------------------------------------------------------------------------------------------- families


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
    # CFG layout: "uncond,cond" (PixArt/SD3/Sana), "cond,uncond" (DiT), "cond|uncond" (2 calls: Flux true CFG), None
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

    def prepare(self, spec: MethodSpec, ctx: MethodContext) -> Prepared:
        raise NotImplementedError


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    _load_families()
    if name not in _FAMILIES:
        raise MethodSpecError(f"unknown method family {name!r}; families: {', '.join(_FAMILIES)}; grammar: {GRAMMAR}")
    return _FAMILIES[name]


def families() -> dict[str, Family]:
    _load_families()
    return dict(_FAMILIES)


def _load_families() -> None:
    from . import peers  # noqa: F401  (registration, in this order)
    from . import cachedit  # noqa: F401


def families_help(verbose: bool = False) -> str:
    """One line per family (summary, default steps, options with their defaults); `verbose` adds a line per
    option with its meaning."""
    lines = []
    for fam in families().values():
        opts = ", ".join(
            f"{k}={format_value(o.default, k) if o.default is not None else '<auto>'}" for k, o in fam.options.items()
        )
        lines.append(f"  {fam.name}:{fam.default_steps}  {fam.summary}" + (f" [{opts}]" if opts else ""))
        if verbose:
            lines += [f"      {k}: {o.help}" for k, o in fam.options.items()]
            if fam.unavailable():
                lines.append(f"      (unavailable here: {fam.unavailable()})")
    return "\n".join(lines)


# ---- plain ----


class PlainFamily(Family):
    name = "plain"
    summary = "the stock pipeline with STEPS steps"

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        return num_blocks * spec.steps

    def prepare(self, spec, ctx):
        return Prepared(spec, lambda pipe: Attachment(lambda: None))


# ---- the paper's caching baseline ----


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
        from ilf import CacheConfig

        c = spec.get("blocks", default_cache_blocks(num_blocks))
        return CacheConfig(spec.get("location", "inner"), c, spec.get("refresh", 3))

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        from ilf import predicted_block_forwards

        cfg = self.config(spec, num_blocks)
        return predicted_block_forwards(num_blocks, spec.steps, cached_blocks=cfg.num_blocks,
                                        refresh_every=cfg.refresh_every)

    def prepare(self, spec, ctx):
        from ilf import apply_cache, remove_cache

        cfg = self.config(spec, ctx.num_blocks)
        cfg.block_indices(ctx.num_blocks)  # raises if c exceeds the model

        def attach(pipe):
            apply_cache(pipe, cfg)
            return Attachment(lambda: remove_cache(pipe))

        info = {"cache": cfg.to_dict(), "cached_blocks": list(cfg.block_indices(ctx.num_blocks))}
        return Prepared(spec, attach, info)


# ---- ILF ----

UNTRAINED = "untrained"


def default_loop(num_blocks: int) -> tuple[int, int]:
    """The paper's loop (8, 19) of 28 blocks, scaled to other depths."""
    return round(8 * num_blocks / 28), round(19 * num_blocks / 28)


def feedback_loop(path: str) -> tuple[int, int]:
    """The loop a saved feedback was trained for, read from its ilf_config.json (no tensors loaded)."""
    from ilf.feedback import CONFIG_NAME

    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        raise MethodSpecError(
            f"feedback {path!r} is not a feedback folder (no {CONFIG_NAME}); pass feedback=PATH of a folder "
            "written by `ilf train` / save_feedback, or feedback=untrained for a smoke run"
        )
    return tuple(json.loads(cfg.read_text())["loop"])  # type: ignore[return-value]


class ILFFamily(Family):
    name = "ilf"
    summary = "Inner Loop Feedback with a trained feedback (feedback=PATH, default --feedback)"
    default_steps = 10
    options = {
        "feedback": Option(_str, "a feedback folder from `ilf train`, or 'untrained' (zero scales, smoke runs: the plain "
                           "output only with t_post=none)"),
        "plan": Option(_plan, "feedback steps: all, none, outer:K, first:K, last:K, skip-inner:K, ..., alternating "
                       "or [i,j,...] (default: the feedback's own, else outer:2)"),
        "t_post": Option(parse_choice("none", "uniform", "rescale", "anneal"),
                         "post-feedback timestep (default: the feedback's own, else rescale)"),
        "ratio": Option(parse_choice("m/n", "n/m"), "k of eq. 4-5 (default: the feedback's own, else m/n)"),
        "loop": Option(_loop, "B-E, only with feedback=untrained (default: 8-19 of 28, scaled)"),
    }

    def validate(self, spec):
        if spec.get("loop") is not None and spec.get("feedback") not in (None, UNTRAINED):
            raise MethodSpecError(
                f"{spec.name!r}: loop= only applies to feedback=untrained; a trained feedback has its own loop"
            )

    def _feedback(self, spec, default):
        fb = spec.get("feedback", default)
        if fb is None:
            raise MethodSpecError(
                f"{spec.name!r} needs a feedback: add feedback=PATH (a folder from `ilf train`) or pass --feedback "
                "PATH; feedback=untrained runs an untrained feedback (zero scales) for smoke tests"
            )
        return fb

    def loop(self, spec, num_blocks, default_feedback=None) -> tuple[int, int]:
        fb = self._feedback(spec, default_feedback)
        if fb == UNTRAINED:
            return spec.get("loop") or default_loop(num_blocks)
        return feedback_loop(fb)

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        from ilf import predicted_block_forwards

        fb = self._feedback(spec, feedback)
        loop = self.loop(spec, num_blocks, feedback)  # checks the feedback folder first
        plan = spec.get("plan")
        if plan is None:
            plan = "outer:2" if fb == UNTRAINED else _saved_config(fb).get("feedback_steps", "outer:2")
        plan = tuple(plan) if isinstance(plan, list) else plan
        return predicted_block_forwards(num_blocks, spec.steps, loop=loop, feedback_plan=plan)

    def prepare(self, spec, ctx):
        from ilf import ILFConfig, apply_ilf, load_feedback, remove_ilf
        from ilf.feedback import build_feedback
        from ilf.pipeline import resolve_target

        model, _ = resolve_target(ctx.pipe)
        fb_path = self._feedback(spec, ctx.feedback)
        overrides = {k: v for k, v in (("feedback_steps", spec.get("plan")), ("t_post", spec.get("t_post")),
                                       ("t_post_ratio", spec.get("ratio"))) if v is not None}
        if fb_path == UNTRAINED:
            config = ILFConfig(loop=spec.get("loop") or default_loop(ctx.num_blocks), **overrides)
            feedback = build_feedback(model, config)
        else:
            feedback, saved = load_feedback(fb_path, model)
            config = dataclasses.replace(saved, **overrides)

        def attach(pipe):
            apply_ilf(pipe, config, feedback=feedback)
            return Attachment(lambda: remove_ilf(pipe))

        return Prepared(spec, attach, {"feedback": fb_path, "ilf_config": config.to_dict(),
                                       "scales": [round(float(s), 6) for s in feedback.scales.detach().flatten()]})


def _saved_config(path: str) -> dict:
    from ilf.feedback import CONFIG_NAME

    return json.loads((Path(path) / CONFIG_NAME).read_text()).get("config", {})


register_family(PlainFamily())
register_family(PaperCacheFamily())
register_family(ILFFamily())
