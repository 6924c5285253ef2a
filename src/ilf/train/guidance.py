"""How a pipeline turned its transformer calls of one step into the solver's input: found, checked, replayed.

Every diffusers pipeline combines classifier-free guidance inside its own `__call__`, in its own layout. The
trainer does not copy that code. It finds, per step, the one combination of a small family that reproduces
the recorded solver input y_k from the recorded outputs, and refuses the step if none does:

    O  = the step's call outputs, concatenated along the batch ([R, ...]; Z-Image's lists stacked)
    T  = O cut to y's shape: leading channels / tokens kept (learned-sigma models return 2C channels and the
         pipeline keeps the first C; edit pipelines append condition tokens), a singleton axis squeezed
    y  = sign · T                                  (R = N: no CFG, or FLUX.1-dev's embedded guidance)
    y  = sign · (P + g · (Q − P))                  (R = 2N: P, Q = the two halves; CFG in one batched call or
                                                    two calls, in either order: g = scale or 1 − scale)
    y  = [h; h], h = sign · (P + g · (Q − P))      (DiT: the guided half repeated over both halves)

g is fitted per step (least squares over every element; guidance schedules such as Wan 2.2's two scales or
Z-Image's truncation are then honoured), and the fit must reproduce y within the rounding of its dtype. A
combination outside the family (`guidance_rescale`, norm-rescaled CFG, PAG, skip-layer guidance, a third
branch) leaves a residual and is refused, naming the step and the size of the mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ILFError

REFUSED = ("ilf replays plain outputs or classifier-free guidance u + g·(c − u); guidance_rescale, norm-rescaled "
           "CFG (e.g. Qwen-Image's true CFG), PAG and skip-layer guidance change that combination and are refused")


@dataclass(frozen=True)
class Combination:
    layout: str  # "single" | "cfg" | "cfg-dup"
    sign: float  # +1, or −1 (Z-Image negates the model's prediction)
    g: float = 0.0  # the weight of the second half (cfg layouts)

    def to_dict(self) -> dict:
        return {"layout": self.layout, "sign": self.sign, "g": self.g}

    @classmethod
    def from_dict(cls, d: dict) -> "Combination":
        return cls(d["layout"], float(d["sign"]), float(d["g"]))


def stacked(output) -> torch.Tensor:
    """One call's output as a tensor [n, ...] (a list of per-sample tensors stacked)."""
    return torch.stack(list(output)) if isinstance(output, (list, tuple)) else output


def cut(o: torch.Tensor, shape: tuple) -> torch.Tensor:
    """`o` [R, ...] cut to y's trailing `shape[1:]`: a singleton axis squeezed, leading entries kept."""
    if o.dim() == len(shape) + 1:
        ones = [d for d in range(1, o.dim()) if o.shape[d] == 1]
        for d in ones:
            squeezed = o.squeeze(d)
            if all(a >= b for a, b in zip(squeezed.shape[1:], shape[1:])):
                o = squeezed
                break
    if o.dim() != len(shape):
        return o
    for d in range(1, o.dim()):
        if o.shape[d] > shape[d]:
            o = o.narrow(d, 0, shape[d])
    return o


def combine(outputs: list, shape: tuple, comb: Combination) -> torch.Tensor:
    """The solver input the pipeline would build from these call outputs ([N, ...] = `shape`)."""
    o = cut(torch.cat([stacked(x) for x in outputs]), shape)
    if comb.layout == "single":
        return comb.sign * o
    half = o.shape[0] // 2
    p, q = o[:half], o[half:]
    h = comb.sign * (p + comb.g * (q - p))
    return torch.cat([h, h]) if comb.layout == "cfg-dup" else h


def tolerance(*dtypes: torch.dtype) -> float:
    """Relative RMS mismatch allowed: a few roundings of the coarsest dtype involved (fp32: 1e-5)."""
    eps = max(torch.finfo(d).eps for d in dtypes if d.is_floating_point)
    return max(1e-5, 8 * eps)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS of a − b relative to b's RMS (in fp32)."""
    return float((a - b).float().pow(2).mean().sqrt() / (b.float().pow(2).mean().sqrt() + 1e-12))


def fit(outputs: list, y: torch.Tensor, step: int) -> Combination:
    """The combination that rebuilds the recorded solver input `y` of step `step` from the call outputs."""
    if not outputs:
        raise ILFError(f"step {step}: the scheduler stepped without any call of pipe.transformer (a pipeline with a "
                       "second transformer, e.g. Wan 2.2's low-noise expert, calls another module); ilf trains one "
                       "transformer's corrector on steps that call it")
    o_all = torch.cat([stacked(x) for x in outputs]).detach()
    o = cut(o_all, tuple(y.shape))
    if o.shape[1:] != y.shape[1:]:
        raise ILFError(f"step {step}: the transformer returned {tuple(o_all.shape)} but the scheduler was given "
                       f"{tuple(y.shape)}, which ilf cannot relate; {REFUSED}")
    tol = tolerance(o.dtype, y.dtype)
    yf, of = y.detach().float(), o.float()
    candidates = []
    for sign in (1.0, -1.0):
        if o.shape[0] == y.shape[0]:
            candidates.append(Combination("single", sign))
        pairs = []
        if o.shape[0] == 2 * y.shape[0]:
            pairs.append(("cfg", yf))
        if o.shape[0] == y.shape[0] and y.shape[0] % 2 == 0:
            half = y.shape[0] // 2
            if torch.equal(y[:half], y[half:]):
                pairs.append(("cfg-dup", yf[:half]))
        for layout, target in pairs:
            half = of.shape[0] // 2
            p, q = of[:half], of[half:]
            d = q - p
            den = float(d.pow(2).sum())
            g = float(((sign * target - p) * d).sum()) / den if den > 0 else 0.0
            candidates.append(Combination(layout, sign, g))
    best, best_err = None, float("inf")
    for c in candidates:
        err = relative_error(combine([o], tuple(y.shape), c).float(), yf)
        if err < best_err:
            best, best_err = c, err
    if best is None or best_err > tol:
        raise ILFError(f"step {step}: no combination of the transformer's outputs ({o_all.shape[0]} rows) rebuilds the "
                       f"solver's input ({y.shape[0]} rows; best relative error {best_err:.2g} > {tol:.1g}). "
                       f"{REFUSED}")
    return best
