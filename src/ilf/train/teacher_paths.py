"""Teacher paths precomputed once (`ilf precompute --teacher-paths S`): the expensive half of trajectory
distillation on a real checkpoint, written to disk so training runs (and reruns) skip it.

A folder holds `teacher_paths.safetensors` and `teacher_paths.json`:

    noise     [S, C, H, W]     the fixed noises (the same a training run with this seed would draw)
    targets   [S, N, C, H, W]  the teacher's state at each student step's next grid point (paths.grid_targets)
    cond.*    [S, ...]         per-path conditioning (caption embeddings + mask, or class ids)
    null.*    [1, ...]         the unconditional input

The JSON records the schedule (student/teacher steps, scheduler class, guidance) and the backbone's
fingerprint; `ilf train --distill trajectory --data FOLDER` refuses a folder made for anything else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import ILFError
from ..io import atomic_dir
from .paths import Conditions, grid_targets, new_scheduler, sample_paths

META = "teacher_paths.json"
TENSORS = "teacher_paths.safetensors"
FORMAT = "ilf-teacher-paths"


def is_teacher_paths(folder) -> bool:
    return (Path(folder) / META).is_file()


class TeacherPaths:
    """A teacher-path folder, read whole (its rows are the trajectory run's fixed noises and conditions)."""

    encoded = True
    bounded = True

    def __init__(self, root):
        self.root = Path(root)
        self.meta = json.loads((self.root / META).read_text())
        if self.meta.get("format") != FORMAT:
            raise ILFError(f"{self.root / META} is not an ilf teacher-path description")
        self.kind = self.meta["kind"]
        t = load_file(str(self.root / TENSORS))
        self.noise, self.targets = t["noise"], t["targets"]
        self.conds = Conditions({k[5:]: v for k, v in t.items() if k.startswith("cond.")},
                                {k[5:]: v for k, v in t.items() if k.startswith("null.")})

    def __len__(self) -> int:
        return int(self.noise.shape[0])

    def null_text(self) -> dict:
        return dict(self.conds.null)

    def stored_dtypes(self) -> set:
        return {str(t.dtype) for t in (self.noise, self.targets, *self.conds.cond.values()) if t.is_floating_point()}

    def set_float_dtype(self, dtype) -> None:
        """Hold the conditions in `dtype` (the backbone's) and the noise and target states in fp32 (the objective
        casts states into the model itself), whatever dtype they were precomputed in."""
        from .data import cast_floats

        self.noise, self.targets = self.noise.float(), self.targets.float()
        self.conds = Conditions(cast_floats(self.conds.cond, dtype), cast_floats(self.conds.null, dtype))

    def check(self, *, student_steps: int, teacher_steps: int, scheduler: str, guidance_scale: float,
              fingerprint: dict) -> None:
        """Refuse paths made for another schedule or backbone, naming what differs."""
        m = self.meta
        want = {"student_steps": student_steps, "teacher_steps": teacher_steps, "scheduler": scheduler,
                "guidance_scale": float(guidance_scale), "fingerprint": fingerprint}
        diff = [f"{k}: paths {m.get(k)!r} vs run {v!r}" for k, v in want.items() if m.get(k) != v]
        if diff:
            raise ILFError(f"the teacher paths in {self.root} were made for another run ({'; '.join(diff)}); "
                           "train with the settings they record, or precompute paths for these")


@torch.no_grad()
def write_teacher_paths(out, *, model, adapter, template, noise: torch.Tensor, conds: Conditions,
                        student_steps: int, teacher_steps: int, guidance_scale: float, kind: str,
                        fingerprint: dict, batch_size: int = 32, progress: bool = True) -> dict:
    """Run the teacher on every noise (in batches, with a progress bar) and write the folder atomically."""
    student, teacher = new_scheduler(template, student_steps), new_scheduler(template, teacher_steps)
    start, parts = time.process_time(), []
    for lo in tqdm(range(0, noise.shape[0], batch_size), desc="ilf precompute teacher paths", disable=not progress):
        sl = slice(lo, lo + batch_size)
        path = sample_paths(model, adapter, template, noise[sl], conds.take(sl), teacher_steps, guidance_scale,
                            batch_size=batch_size)
        parts.append(grid_targets(student, teacher, path).cpu())
    tensors = {"noise": noise.cpu(), "targets": torch.cat(parts)}
    tensors |= {f"cond.{k}": v.cpu() for k, v in conds.cond.items()}
    tensors |= {f"null.{k}": v.cpu() for k, v in conds.null.items()}
    meta = {"format": FORMAT, "kind": kind, "rows": int(noise.shape[0]), "student_steps": student_steps,
            "teacher_steps": teacher_steps, "scheduler": type(template).__name__,
            "guidance_scale": float(guidance_scale), "fingerprint": fingerprint,
            "teacher_model_calls": int(noise.shape[0]) * teacher_steps,
            "cpu_seconds": round(time.process_time() - start, 2)}
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
