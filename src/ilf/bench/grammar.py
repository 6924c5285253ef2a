"""The method grammar: value parsers, `Option`, `MethodSpec` and the parsing of one method string.

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

A value holding commas goes in brackets (`plan=[0,1,-2,-1]`); `label=TEXT` names the row. The families and
their options are in `methods` (the registry, whose `parse_method` is the public parser); `@NAME` presets are
in `presets`. This module knows no family: `parse_spec` is handed the lookup.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable

from .errors import MethodSpecError

GRAMMAR = "FAMILY[:STEPS][,KEY=VALUE]... (a value with commas in brackets, e.g. plan=[0,1,-2,-1])"

# `feedback=untrained`: an ILF row with an untrained feedback (zero scales), for smoke runs
UNTRAINED = "untrained"


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


def parse_str(v: str) -> str:
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


def split_top_level(text: str) -> list[str]:
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


def parse_spec(text: str, family_of: Callable[[str], Any]) -> MethodSpec:
    """Parse one method string against the family `family_of(name)` returns (a `family.Family`: its name,
    default steps, options and `validate`). Raises `MethodSpecError` naming the fix."""
    text = text.strip()
    if not text:
        raise MethodSpecError(f"empty method string; write {GRAMMAR}")
    head, *rest = split_top_level(text)
    family_name, _, steps_text = head.partition(":")
    family = family_of(family_name.strip())
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
