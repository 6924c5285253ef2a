"""One branch's cache state for the corrector, shared by the runtime (inference) and the pipeline-native
trainer (which rebuilds it from a recording of the full steps).

A *branch* is one model call of a step: a pipeline that batches CFG in one call has one branch per step,
FLUX.1's true CFG and Wan's CFG (cond, then uncond) have two. Each branch keeps

* diffusers' `TaylorSeerState` of block e's output streams (its Taylor factors; `h`), and of x_a, block a's
  input streams, where the config forecasts it (`x`);
* block e's outputs on the last three full steps (the learned forecast's basis, `hist`);
* the stream names, in the order the blocks return them.

`update` is fed on every full step, `forecasts` on every forecast step. Both take the step index: TaylorSeer's
divided differences and its extrapolation are in step units.
"""

from __future__ import annotations

import torch
from diffusers.hooks.taylorseer_cache import TaylorSeerState


class BranchCache:
    def __init__(self, order: int, dtype: torch.dtype, fresh_forecast: bool):
        self.order, self.dtype, self.fresh_forecast = order, dtype, fresh_forecast
        self.h: TaylorSeerState | None = None  # block e's output streams
        self.x: TaylorSeerState | None = None  # x_a's streams (only where the config forecasts x_a)
        self.hist: tuple = ()  # block e's outputs on the last ≤ 3 full steps, oldest first: tuples of [B, L, D]
        self.names: dict[str, tuple[str, ...]] = {"h": (), "x": ()}

    @property
    def ready(self) -> bool:
        """True once a full step was recorded: a forecast needs one."""
        return self.h is not None

    def _state(self) -> TaylorSeerState:
        return TaylorSeerState(taylor_factors_dtype=self.dtype, max_order=self.order)

    @torch.no_grad()
    def update(self, step: int, out_e: dict, x_a: dict) -> None:
        """A full step: block e's output streams {name: [B, L, D]} and block a's input streams x_a."""
        outs = tuple(v.detach() for v in out_e.values())
        self.h = self.h or self._state()
        self.h.current_step = step
        self.h.update(outs)
        self.hist = (self.hist + (outs,))[-3:]
        if self.fresh_forecast:
            self.x = self.x or self._state()
            self.x.current_step = step
            self.x.update(tuple(v.detach() for v in x_a.values()))
        self.names = {"h": tuple(out_e), "x": tuple(x_a)}

    @torch.no_grad()
    def forecasts(self, step: int) -> dict:
        """The forecast step's inputs, per stream k: "t.k" TaylorSeer's forecast of block e's output, "b0.k"
        "b1.k" "b2.k" the learned forecast's basis (h₁, h₁ − h₀, h₀ − h₋₁ of the last full steps; zeros where a
        step is missing), "x.k" x̂_a (fresh forecast only); and "step"."""
        self.h.current_step = step
        out = {"step": step}
        for i, (k, t) in enumerate(zip(self.names["h"], self.h.predict())):
            h = [past[i] for past in self.hist]  # oldest first, up to three [B, L, D]
            zero = torch.zeros_like(t)
            out[f"t.{k}"] = t
            out[f"b0.{k}"] = h[-1].to(t.dtype)
            out[f"b1.{k}"] = (h[-1] - h[-2]).to(t.dtype) if len(h) > 1 else zero
            out[f"b2.{k}"] = (h[-2] - h[-3]).to(t.dtype) if len(h) > 2 else zero
        if self.fresh_forecast:
            self.x.current_step = step
            out |= {f"x.{k}": v for k, v in zip(self.names["x"], self.x.predict())}
        return out
