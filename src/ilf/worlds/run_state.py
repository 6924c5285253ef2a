"""Resumable training state for the worlds' training CLIs (VAE, backbones, evaluators).

A run directory holds `checkpoint/` with `model.safetensors` (+ `ema.safetensors`), `optimizer.pt` (tensors and
plain numbers only, read back with `torch.load(weights_only=True)`) and `state.json` (step, config). The folder is
written beside the old one and swapped in with one rename (`ilf.io.atomic_dir`), so a run killed mid-save keeps
its previous checkpoint whole — never a model of one step with the optimizer state of another.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_dir

CHECKPOINT = "checkpoint"  # the run directory's sub-folder that holds one complete training state


class EMA:
    """Exponential moving average of a model's parameters (the weights we ship; they sample far better)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))  # warm-up: early averages forget the random init fast
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)


def optimizer_step(model: torch.nn.Module, optimizer, loss: torch.Tensor, lr: float, *, ema: EMA | None = None,
                   step: int = 0, clip: float | None = 1.0) -> float:
    """One update of every world trainer: set the learning rate, backward, clip the gradient norm to `clip`
    (None: no clipping), step, then the EMA. Returns the gradient norm before clipping (nan without clipping)."""
    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)) if clip is not None else float("nan")
    optimizer.step()
    if ema is not None:
        ema.update(model, step)
    return norm


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def save(run_dir: str | Path, step: int, model, optimizer, ema: EMA | None = None, info: dict | None = None) -> None:
    with atomic_dir(Path(run_dir) / CHECKPOINT) as tmp:
        save_file(_state(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(_state(ema.model), str(tmp / "ema.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **(info or {})}, indent=1))


def resume(run_dir: str | Path, model, optimizer, ema: EMA | None = None) -> int:
    """Load the checkpoint in `run_dir` if there is one; returns the step to continue from (0 if none)."""
    run = Path(run_dir) / CHECKPOINT
    if not (run / "state.json").exists():
        return 0
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    if ema is not None and (run / "ema.safetensors").exists():
        ema.model.load_state_dict(load_file(str(run / "ema.safetensors")))
    optimizer.load_state_dict(torch.load(run / "optimizer.pt", weights_only=True))
    return int(json.loads((run / "state.json").read_text())["step"])


def state_info(run_dir: str | Path) -> dict:
    """The `info` (and step) saved with the run's checkpoint, {} if there is none (e.g. time already spent)."""
    f = Path(run_dir) / CHECKPOINT / "state.json"
    return json.loads(f.read_text()) if f.exists() else {}


def log(run_dir: str | Path, record: dict) -> None:
    """Append one JSON line to `run_dir/log.jsonl` and echo it."""
    line = json.dumps(record)
    with open(Path(run_dir) / "log.jsonl", "a") as f:
        f.write(line + "\n")
    print(line, flush=True)
