"""Feature dynamics of the paper's Fig. 3-4, for any method (plain, cached, ILF, the peers).

For block b at denoising step s, with f_{b,s} the block's output (the conditional CFG branch only):

    time change  (Fig. 3):  d(f_{b,s}, f_{b,0})   — how far the block's output moved since the first step
    block change (Fig. 4):  d(f_{b,s}, f_{0,s})   — how far it is from the first block's output at that step

with d the root-mean-square difference. Each kind is divided by its maximum over all the methods plotted
("normalized by dividing by the maximum difference across both plots"). A block that runs twice in a step
(the ILF loop) is recorded with its last output, the one the rest of the model sees; a block a cache skips is
recorded with what it returned; a block a cache does not even call (cache-dit) is left blank. Values are
computed on the fly (only step 0's outputs are kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ilf.adapters import get_adapter
from ilf.adapters.blocks import IMAGE_STREAM
from ilf.hooks import bind_arguments
from ilf.io import write_json

from .plots import heatmaps
from .stock import check_stock


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((a.float() - b.float()) ** 2)))


class FeatureDynamics:
    """Records the two difference maps while attached (`with FeatureDynamics(model, cfg_batch) as fd:`)."""

    def __init__(self, model: nn.Module, cfg_batch: str | None):
        self.model, self.cfg_batch = model, cfg_batch
        self.sites = get_adapter(model).sites(model)
        self.step = -1
        self.full_batch = None
        self.first: dict[int, torch.Tensor] = {}
        self.block0: torch.Tensor | None = None
        self.time_change: dict[tuple[int, int], float] = {}
        self.block_change: dict[tuple[int, int], float] = {}
        self._handles = []

    def _cond(self, x: torch.Tensor) -> torch.Tensor:
        """The conditional branch of a CFG batch ([uncond, cond] for PixArt, [cond, uncond] for DiT)."""
        if self.cfg_batch not in ("uncond,cond", "cond,uncond") or x.shape[0] != self.full_batch:
            return x  # no batched CFG (Flux: separate calls), or a call reduced to the conditional half (FasterCache)
        half = x.shape[0] // 2
        return x[half:] if self.cfg_batch == "uncond,cond" else x[:half]

    def __enter__(self):
        def on_call(module, args, kwargs):
            self.step += 1
            x = bind_arguments(type(module).forward, args, kwargs)["hidden_states"]
            self.full_batch = x.shape[0]

        def on_block(index, stack):
            def hook(module, args, output):
                out = stack.as_streams(output)[IMAGE_STREAM]  # [B, L, D]: the image tokens
                f = self._cond(out.detach())
                if self.step == 0:
                    self.first[index] = f.clone()  # the last output of step 0 wins (ILF loop)
                if index == 0:
                    self.block0 = f.clone()
                ref = self.first.get(index)
                self.time_change[(index, self.step)] = 0.0 if ref is None or ref.shape != f.shape else _rms(f, ref)
                b0 = self.block0
                self.block_change[(index, self.step)] = 0.0 if b0 is None or b0.shape != f.shape else _rms(f, b0)

            return hook

        self._handles.append(self.model.register_forward_pre_hook(on_call, with_kwargs=True))
        for site in self.sites:
            self._handles.append(site.module.register_forward_hook(on_block(site.index, site.stack)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.first.clear()
        self.block0 = None
        return False

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(time change, block change), each [num_blocks, num_steps], unnormalised."""
        steps = self.step + 1
        out = []
        for table in (self.time_change, self.block_change):
            m = np.full((len(self.sites), steps), np.nan)  # NaN: the block did not run (a cache skipped its call)
            for (b, s), v in table.items():
                m[b, s] = v
            out.append(m)
        return out[0], out[1]


def _nulls(m: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in m]


def run_diagnostics(bench) -> dict:
    """Record every row of `bench` on its first item; write the heatmaps and the raw maps."""
    src, out = bench.source, Path(bench.out) / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    raw = []
    for row in bench.rows:
        att = row.prepared.attach(src.pipe)
        try:
            att.before_call()
            with FeatureDynamics(src.pipe.transformer, src.cfg_batch) as fd:
                src(bench.items[:1], row.spec.steps)
        finally:
            att.detach()
            check_stock(src.pipe, bench.stock, row.spec.name)
        raw.append((row.spec.display, *fd.matrices()))
    scale_t = max(float(np.nanmax(t)) for _, t, _ in raw) or 1.0
    scale_b = max(float(np.nanmax(b)) for _, _, b in raw) or 1.0
    heatmaps([(n, t / scale_t) for n, t, _ in raw], out / "time_change.png",
             "Change of each block's output from its value at the first step (Fig. 3), / max over all panels")
    heatmaps([(n, b / scale_b) for n, _, b in raw], out / "block_change.png",
             "Change of each block's output from block 0's output at that step (Fig. 4), / max over all panels")
    write_json(out / "feature_dynamics.json", {
        "item": bench.items[0].to_dict(), "distance": "root-mean-square difference, conditional CFG branch",
        "normalisers": {"time_change": scale_t, "block_change": scale_b},
        "not_run": "null: the block was not called at that step (the method skipped it outright)",
        "methods": [{"method": n, "time_change": _nulls(t), "block_change": _nulls(b)} for n, t, b in raw],
    })
    return {"diagnostics": ["diagnostics/time_change.png", "diagnostics/block_change.png",
                            "diagnostics/feature_dynamics.json"]}
