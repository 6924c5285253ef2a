"""`@NAME` preset lists of method strings (the paper's tables, the peers, Pareto sweeps) and `expand_methods`.

Peers use their libraries' defaults except where noted in their family; block counts in the comments are for
28-block PixArt/DiT.
"""

from __future__ import annotations

from .errors import MethodSpecError
from .grammar import MethodSpec
from .methods import parse_method

PRESETS: dict[str, list[str]] = {
    # Table 1 (1.7-1.8x): 20 plain (560), 12 plain (336), paper cache inner 18 / 1 in 3 (326), ILF 10 outer:2 (332)
    "table1": ["plain:20", "plain:12", "paper-cache:20,location=inner,blocks=18,refresh=3",
               "ilf:10,plan=outer:2,t_post=rescale"],
    # Table 4 (1.4-1.5x): paper cache inner 18 every other step (380), ILF 12 skip-inner:8 (388)
    "table4": ["plain:20", "paper-cache:20,location=inner,blocks=18,refresh=2",
               "ilf:12,plan=skip-inner:8,t_post=rescale"],
    # diffusers' hooks and cache-dit, each set near the 1.7-1.8x of Table 1
    "peers": ["fbc:20,threshold=0.05", "taylorseer:20,interval=2,warmup=3", "magcache:20",
              "pab:20,spatial=2,cross=4", "fastercache:20", "seacache:20", "cache-dit:20"],
    # every family once: the default comparison
    "all": ["plain:20", "plain:12", "plain:10", "paper-cache:20", "ilf:10", "@peers"],
    # quality-vs-time curves (Fig. 8): several settings per family
    "pareto": ["plain:20", "plain:16", "plain:12", "plain:10", "plain:8",
               "paper-cache:20,refresh=2", "paper-cache:20,refresh=3", "paper-cache:20,refresh=4",
               "ilf:12,plan=skip-inner:8", "ilf:10,plan=outer:2", "ilf:8,plan=outer:2",
               "fbc:20,threshold=0.05", "fbc:20,threshold=0.1", "taylorseer:20,interval=2,warmup=3",
               "taylorseer:20,interval=3,warmup=3", "magcache:20,threshold=0.06", "magcache:20,threshold=0.12",
               "seacache:20,threshold=0.25", "seacache:20,threshold=0.5"],
}
PRESETS["all"] = [m for item in PRESETS["all"] for m in (PRESETS[item[1:]] if item.startswith("@") else [item])]


def preset(name: str) -> list[str]:
    """The method strings of `@name`."""
    if name not in PRESETS:
        raise MethodSpecError(f"unknown preset @{name}; presets: {', '.join('@' + p for p in PRESETS)}")
    return PRESETS[name]


def expand_methods(items: list[str]) -> list[MethodSpec]:
    """Method strings and `@PRESET` names -> specs, in order, duplicates dropped."""
    specs: list[MethodSpec] = []
    for item in items:
        for part in [item] if not item.startswith("@") else preset(item[1:]):
            spec = parse_method(part)
            if spec not in specs:
                specs.append(spec)
    if not specs:
        raise MethodSpecError("no methods to compare; pass --methods (e.g. plain:20 plain:10 @peers)")
    return specs
