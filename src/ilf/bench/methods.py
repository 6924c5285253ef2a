"""The methods a benchmark compares: the registry of families and the parser of method strings.

`parse_method("ilf:10,plan=outer:2")` gives a `MethodSpec` (grammar in `grammar`); `get_family(spec.family)`
prepares it. The families, in table order: `plain` (family_plain), `paper-cache` (family_paper_cache), `ilf`
(family_ilf), diffusers' hooks fbc, taylorseer, magcache, pab, fastercache (peers) and `cache-dit` (cachedit).
Importing this module imports no torch: the families import their heavy dependencies when they prepare.
`@NAME` preset lists and `expand_methods` are in `presets`.
"""

from __future__ import annotations

from .family_cachedit import CacheDiTFamily
from .errors import MethodSpecError
from .family import Family
from .family_corrector import CorrectorFamily
from .family_ilf import ILFFamily
from .family_paper_cache import PaperCacheFamily
from .family_plain import PlainFamily
from .grammar import GRAMMAR, MethodSpec, format_value, parse_spec
from .family_diffusers import PEER_FAMILIES

_FAMILIES: dict[str, Family] = {
    fam.name: fam for fam in (PlainFamily(), PaperCacheFamily(), ILFFamily(), CorrectorFamily(), *PEER_FAMILIES, CacheDiTFamily())
}


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise MethodSpecError(f"unknown method family {name!r}; families: {', '.join(_FAMILIES)}; grammar: {GRAMMAR}")
    return _FAMILIES[name]


def families() -> dict[str, Family]:
    return dict(_FAMILIES)


def parse_method(text: str) -> MethodSpec:
    """Parse one method string (`grammar`'s module docstring). Raises `MethodSpecError` naming the fix."""
    return parse_spec(text, get_family)


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
