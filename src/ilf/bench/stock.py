"""Is the pipeline stock again? A fingerprint taken before the first method and checked after each detach.

Every method changes the pipeline only through hooks (diffusers' `HookRegistry`, ilf's hooks, cache-dit's
patches). After detaching, the fingerprint must equal the one taken before: no registry, hook, instance
`forward`, attention-processor swap, new attribute, class patch or weight change may remain. A leftover would
silently accelerate (or break) the next method's row, so it is an error naming the method.
"""

from __future__ import annotations

import hashlib
import types

import torch
from torch import nn

from .errors import BenchError

_TORCH_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_load_state_dict_pre_hooks")


def strip_empty_registries(model: nn.Module) -> None:
    """Drop diffusers hook registries that hold no hook, and the instance `forward` they leave behind.

    `HookRegistry.remove_hook` puts the original bound method back as an instance attribute and keeps the
    (empty) registry; `_set_cache_context` creates a registry on the model it is given. Neither changes what
    runs, but both would make the model differ from the stock one. An instance `forward` is dropped only
    when it is the class's own `forward` bound to this module, so nothing else's patch is ever removed.
    """
    for module in model.modules():
        registry = module.__dict__.get("_diffusers_hook")
        if registry is not None and not registry.hooks:
            del module._diffusers_hook
        if "_diffusers_hook" in module.__dict__:
            continue
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, types.MethodType) and fwd.__self__ is module and fwd.__func__ is type(module).forward:
            del module.__dict__["forward"]


def _weights_digest(model: nn.Module) -> str:
    # A cheap content digest: per-tensor sums and shapes (an in-place change of any weight moves its sum),
    # in name order (re-registering a submodule changes the iteration order, not the model).
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(list(model.named_parameters()) + list(model.named_buffers()), key=lambda nt: nt[0]):
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{float(t.detach().double().sum()):.17g};".encode())
    return h.hexdigest()


def fingerprint(pipe, weights: bool = True) -> dict:
    """The structure (and optionally a weight digest) of `pipe.transformer` and the pipeline's class."""
    model = pipe.transformer
    modules = {}
    for name, m in model.named_modules():
        registry = m.__dict__.get("_diffusers_hook")
        empty = registry is not None and not registry.hooks  # as if absent (a pipeline's `cache_context` makes one)
        entry = {
            "class": type(m).__name__,
            "attrs": sorted(k for k in m.__dict__ if not (empty and k == "_diffusers_hook")),
            "forward_patched": "forward" in m.__dict__,
            "torch_hooks": sum(len(getattr(m, d, {}) or {}) for d in _TORCH_HOOK_DICTS),
        }
        proc = getattr(m, "processor", None)
        if proc is not None:
            entry["processor"] = type(proc).__name__
        modules[name] = entry
    out = {
        "pipeline_call": id(type(pipe).__call__),
        "transformer_forward": id(type(model).forward),
        "transformer_class": type(model).__name__,
        "scheduler": (type(pipe.scheduler).__name__, dict(pipe.scheduler.config)),
        "components": {k: id(v) for k, v in pipe.components.items()},
        "modules": modules,
    }
    if weights:
        out["weights"] = _weights_digest(model)
    return out


def _differences(before: dict, after: dict) -> list[str]:
    diffs = []
    for key in before:
        if key == "modules":
            continue
        if before[key] != after.get(key):
            diffs.append(f"{key} changed")
    b, a = before["modules"], after["modules"]
    for name in sorted(set(b) | set(a)):
        if b.get(name) != a.get(name):
            where = name or "<transformer>"
            if name not in a:
                diffs.append(f"{where} was removed")
            elif name not in b:
                diffs.append(f"{where} was added ({a[name]['class']})")
            else:
                changed = [k for k in set(b[name]) | set(a[name]) if b[name].get(k) != a[name].get(k)]
                diffs.append(f"{where}: {', '.join(sorted(changed))} differ ({b[name]} vs {a[name]})")
    return diffs


def check_stock(pipe, before: dict, method: str) -> None:
    """Clean empty registries, then raise `BenchError` if the pipeline is not what `before` recorded."""
    strip_empty_registries(pipe.transformer)
    after = fingerprint(pipe, weights="weights" in before)
    diffs = _differences(before, after)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; … {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise BenchError(
            f"detaching {method!r} did not give the stock pipeline back ({shown}). Rows after it would be "
            "measured on a modified model; this is a bug in that method's detach, please report it"
        )
