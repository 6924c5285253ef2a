"""Training checkpoints through `accelerator.save_state`, holding only what trains.

A checkpoint folder `checkpoints/step-XXXXXXXX/` holds accelerate's state (optimizer, LR scheduler, RNG of
every process), `feedback.safetensors` (F and the scales; the frozen backbone is not saved), the EMA copy
if any, and `trainer_state.json` (step, data position, skipped samples, the ILF config and the backbone's
fingerprint). It is written to a temporary folder and renamed into place, so a killed run leaves either
the complete checkpoint or none; `--resume latest` takes the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import FeedbackMismatchError, ILFError
from ..io import publish_modes

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
FEEDBACK_FILE = "feedback.safetensors"
EMA_FILE = "ema.safetensors"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.name.startswith("step-") and (p / STATE_FILE).is_file():
            found.append((int(p.name[5:]), p))
    return sorted(found)


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None  # nothing yet: a fresh start
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ILFError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE})")
    return path


def read_state(path: Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def check_resumable(state: dict, ilf_config: dict, fingerprint: dict, path: Path) -> None:
    """Refuse, before any step, a checkpoint trained for another loop (or corrector) or backbone."""
    if "loop" not in ilf_config or "loop" not in state["ilf_config"]:  # a corrector: its whole config must match
        if state["ilf_config"] != ilf_config:
            diff = sorted(k for k in set(state["ilf_config"]) | set(ilf_config)
                          if state["ilf_config"].get(k) != ilf_config.get(k))
            raise FeedbackMismatchError(
                f"the checkpoint {path} trains another feedback (differs in {diff}); resume with the same "
                "settings, or use a new --output-dir"
            )
    elif list(want_loop := state["ilf_config"]["loop"]) != list(have_loop := ilf_config["loop"]):
        raise FeedbackMismatchError(
            f"the checkpoint {path} trains loop {tuple(want_loop)} but this run asks for {tuple(have_loop)}; "
            "use the same --loop, or a new --output-dir for a new loop"
        )
    if state["fingerprint"] != fingerprint:
        diff = sorted(k for k in set(state["fingerprint"]) | set(fingerprint)
                      if state["fingerprint"].get(k) != fingerprint.get(k))
        raise FeedbackMismatchError(
            f"the checkpoint {path} was trained on another backbone (differs in {diff}); resume with the "
            "same --pipeline/--world, or use a new --output-dir"
        )


class CheckpointHooks:
    """accelerate save/load pre-hooks: the feedback (and EMA) are saved as safetensors, the backbone not."""

    def __init__(self, accelerator, feedback, ema=None):
        self.accelerator, self.feedback, self.ema = accelerator, feedback, ema
        accelerator.register_save_state_pre_hook(self.save)
        accelerator.register_load_state_pre_hook(self.load)

    def save(self, models, weights, output_dir):
        weights.clear()  # the prepared transformer: only its feedback is ours to save
        if self.accelerator.is_main_process:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.feedback.state_dict().items()}
            save_file(tensors, os.path.join(output_dir, FEEDBACK_FILE))
            if self.ema is not None:
                ema = self.ema.state_dict()
                shadow = {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.pop("shadow_params"))}
                save_file(shadow, os.path.join(output_dir, EMA_FILE), metadata={"ema": json.dumps(ema)})

    def load(self, models, input_dir):
        models.clear()
        device = next(self.feedback.parameters()).device
        self.feedback.load_state_dict(load_file(os.path.join(input_dir, FEEDBACK_FILE), device=str(device)))
        if self.ema is not None:
            path = os.path.join(input_dir, EMA_FILE)
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                meta = json.loads(f.metadata()["ema"])
                shadow = [f.get_tensor(f"shadow.{i}").to(device) for i in range(len(f.keys()))]
            self.ema.load_state_dict({**meta, "shadow_params": shadow})


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int, write_extra=None) -> Path:
    """All processes call this. Writes `step-…` atomically and keeps the newest `keep` checkpoints.

    `write_extra(folder)` (main process) adds the objective's own files, e.g. the rollout buffer."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # last: marks the folder complete
        publish_modes(tmp)  # safetensors writes 0600: the umask's modes, like every other output
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def rank_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    """The random stream of one micro-batch of one process: a pure function of its position, so noise,
    timesteps and dropout after a resume are those an uninterrupted run would have drawn."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 131 + micro) * 8191 + rank)
