"""Training a cache corrector on the sampler's own path (`ilf train --distill corrector`).

The trajectory objective (`trajectory.py`) with the cache inside the student's rollout. For S fixed noises and
conditions:

    teacher   = the frozen backbone's guided path, plain `teacher_steps` steps (default: the student's N, so the
                target is exactly the image plain:N would give); target_k = its state at student grid point k+1
    rollout   = the student's own guided N-step run with cache + corrector (full steps on the cache's schedule,
                forecasts in between), re-run every K iterations; each forecast step's cache inputs (TaylorSeer's
                forecast, the last full steps' features, x̂_a: what the cache had from the rollout's own full
                steps) are recorded with the states
    loss      = MSE(scheduler.step(ε̂(x_k | recorded forecasts of step k), t_k, x_k | the rollout's history),
                target_k)   over the forecast steps k

so every visited forecast state is trained to land the real solver update on the teacher path. F, its scale
and the per-step forecast weights learn; the cache's features are inputs (what it holds at inference).

Levers: `rollout_noise="fresh"` draws new noises (and their teacher targets) at every rollout instead of
reusing the fixed set. Resume: the buffer (states, outputs, forecasts, and the noises/targets when fresh) is
saved with every checkpoint, so a resumed run ends bit-identical.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import ILFError
from .checkpoint import rank_generator
from .objective import LossTerms
from .paths import (
    Conditions, grid_targets, guided_prediction, model_input, new_scheduler, replay, sample_paths, sharded,
)

BUFFER_FILE = "corrector_rollout.safetensors"


def by_sample(t: torch.Tensor, n: int) -> torch.Tensor:
    """A model-call batch [G·n, ...] (G = 2 with CFG batched: one half per branch) as [n, G, ...]."""
    return t.reshape(t.shape[0] // n, n, *t.shape[1:]).transpose(0, 1)


def by_call(t: torch.Tensor) -> torch.Tensor:
    """The inverse of `by_sample`: [n, G, ...] → [G·n, ...] (the call's batch order)."""
    return t.transpose(0, 1).reshape(t.shape[0] * t.shape[1], *t.shape[2:])


@torch.no_grad()
def corrector_rollout(model, adapter, template, runtime, noise, conds: Conditions, num_steps: int,
                      guidance_scale: float, batch_size: int = 64):
    """The student's guided run with cache + corrector. Returns states, outputs [S, N, C, H, W] and the forecasts
    of each forecast step {"h.<stream>": [S, P, G, L, D], ...} (P forecast steps, in order)."""
    channels = noise.shape[1]
    states, outputs, forecasts = [], [], []
    for lo in range(0, noise.shape[0], batch_size):
        sl = slice(lo, lo + batch_size)
        n = noise[sl].shape[0]
        sched = new_scheduler(template, num_steps, noise.device)
        x = noise[sl] * getattr(sched, "init_noise_sigma", 1.0)
        runtime.reset()
        runtime.record = []
        xs, outs = [], []
        try:
            for k, t in enumerate(sched.timesteps):
                eps = guided_prediction(model, adapter, model_input(sched, x, t), t, conds.take(sl), guidance_scale,
                                        channels, ilf_cache_step=(k, num_steps))
                xs.append(x)
                outs.append(eps)
                x = sched.step(eps, t, x).prev_sample
            recs = runtime.record
        finally:
            runtime.record = None
        states.append(torch.stack(xs, 1))
        outputs.append(torch.stack(outs, 1))
        forecasts.append({key: torch.stack([by_sample(r[key], n) for r in recs], 1) for key in recs[0]})
    return (torch.cat(states), torch.cat(outputs),
            {key: torch.cat([f[key] for f in forecasts]) for key in forecasts[0]})


class CorrectorObjective:
    """The corrector's trajectory loss of one micro-batch, with its teacher targets and rollout buffer."""

    def __init__(self, *, model, adapter, runtime, template, conds: Conditions, noise: torch.Tensor,
                 student_steps: int, teacher_steps: int, guidance_scale: float, rollout_every: int,
                 per_device: int, accelerator, seed: int, rollout_noise: str = "fixed", chunk: int = 64):
        world = accelerator.num_processes
        if noise.shape[0] % world:
            raise ILFError(f"--rollout-size {noise.shape[0]} must be a multiple of the {world} processes")
        self.forecast_steps = sorted(set(range(student_steps)) - runtime.config.compute_steps(student_steps))
        if not self.forecast_steps:
            raise ILFError(f"the cache's schedule computes every one of the {student_steps} steps: nothing to "
                           "correct; choose a larger --cache-interval or fewer --cache-warmup steps")
        self.model, self.adapter, self.runtime, self.template = model, adapter, runtime, template
        self.conds, self.noise, self.n, self.teacher_steps = conds, noise, student_steps, teacher_steps
        self.guidance, self.rollout_every, self.per_device = guidance_scale, rollout_every, per_device
        self.acc, self.seed, self.rollout_noise, self.chunk = accelerator, seed, rollout_noise, chunk
        self.targets = self.states = self.outputs = self.forecasts = None
        self.rollout_step = -1
        self.cost = {}

    def _teacher(self, noise) -> torch.Tensor:
        start = time.process_time()
        student, teacher = new_scheduler(self.template, self.n), new_scheduler(self.template, self.teacher_steps)

        def run(noise, conds):  # the stock model: ilf_feedback=False on every call
            path = sample_paths(self.model, self.adapter, self.template, noise, conds, self.teacher_steps,
                                self.guidance, runtime=self.runtime, batch_size=self.chunk)
            return (grid_targets(student, teacher, path),)

        (targets,) = sharded(self.acc, run, noise, self.conds)
        self.cost["teacher_seconds"] = self.cost.get("teacher_seconds", 0.0) + time.process_time() - start
        return targets

    def prepare(self) -> dict:
        if self.targets is None:
            self.targets = self._teacher(self.noise)
        return {"teacher_seconds": self.cost.get("teacher_seconds", 0.0), "teacher_paths": int(self.noise.shape[0]),
                "forecast_steps": self.forecast_steps}

    def refresh(self, step: int) -> dict | None:
        """Re-run the student's sampler (cache + corrector) every `rollout_every` iterations."""
        if self.states is not None and step % self.rollout_every:
            return None
        if self.rollout_noise == "fresh" and self.states is not None:  # new noises, and their teacher targets
            g = torch.Generator().manual_seed(self.seed * 7919 + 3 + step)
            self.noise = torch.randn(self.noise.shape, generator=g).to(self.noise.device)
            self.targets = self._teacher(self.noise)
        start = time.process_time()

        def run(noise, conds):
            return corrector_rollout(self.model, self.adapter, self.template, self.runtime, noise, conds, self.n,
                                     self.guidance, batch_size=self.chunk)

        self.states, self.outputs, self.forecasts = sharded(self.acc, run, self.noise, self.conds)
        self.rollout_step = step
        seconds = time.process_time() - start
        self.cost["rollout_seconds"] = self.cost.get("rollout_seconds", 0.0) + seconds
        return {"rollout_step": step, "rollout_seconds": seconds}

    def loss(self, ddp_model, step: int, micro: int) -> tuple[LossTerms, int]:
        g = rank_generator(self.seed, step, micro, self.acc.process_index)
        j = int(torch.randint(len(self.forecast_steps), (1,), generator=g))
        k = self.forecast_steps[j]
        idx = torch.randint(self.noise.shape[0], (self.per_device,), generator=g)
        states, outputs = self.states[idx], self.outputs[idx]  # [B, N, C, H, W]
        sched = replay(self.template, self.n, k, states, outputs)
        t, x_k = sched.timesteps[k], states[:, k]
        given = {key: by_call(v[idx, j]) for key, v in self.forecasts.items()}  # [G·B, L, D]
        given["step"] = k  # the row of the per-step forecast weights
        eps = guided_prediction(ddp_model, self.adapter, model_input(sched, x_k, t), t, self.conds.take(idx),
                                self.guidance, x_k.shape[1], ilf_forecast=given)
        x_next = sched.step(eps, t, x_k).prev_sample
        distill = F.mse_loss(x_next.float(), self.targets[idx, k].float())
        zero = torch.zeros((), device=distill.device)
        return LossTerms(total=distill, diffusion=zero, distill=distill.detach()), int(idx.numel())

    # ---- checkpoints ----
    def save(self, folder: Path) -> None:
        tensors = {"states": self.states, "outputs": self.outputs, "rollout_step": torch.tensor(self.rollout_step)}
        tensors |= {f"forecast.{k}": v for k, v in self.forecasts.items()}
        if self.rollout_noise == "fresh":
            tensors |= {"noise": self.noise, "targets": self.targets}
        save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(Path(folder) / BUFFER_FILE))

    def restore(self, folder: Path) -> None:
        path = Path(folder) / BUFFER_FILE
        if not path.is_file():
            raise ILFError(f"{folder} has no {BUFFER_FILE}: it was not written by a corrector run; resume it with "
                           "the objective it was trained with, or start a new --output-dir")
        t = load_file(str(path), device=str(self.noise.device))
        self.states, self.outputs, self.rollout_step = t["states"], t["outputs"], int(t["rollout_step"])
        self.forecasts = {k[9:]: v for k, v in t.items() if k.startswith("forecast.")}
        if "noise" in t:
            self.noise, self.targets = t["noise"], t["targets"]


def build_corrector_objective(cfg, pipe, model, adapter, runtime, source, encoder, null_text, null_class,
                              accelerator, per_device: int, guidance_scale: float,
                              skipped: list[int]) -> CorrectorObjective:
    """The corrector objective of a `TrainConfig` (`--distill corrector`)."""
    from .teacher_paths import TeacherPaths
    from .trajectory import fixed_noise, trajectory_conditions

    if isinstance(source, TeacherPaths):
        raise ILFError("--distill corrector computes its own teacher paths (plain --student-steps steps); pass "
                       "--world, an image folder or `ilf precompute` shards as --data")
    conds = trajectory_conditions(source, encoder, cfg.rollout_size, cfg.seed, null_text, null_class, skipped,
                                  accelerator.device)
    noise = fixed_noise(model, cfg.rollout_size, cfg.seed, accelerator.device)
    return CorrectorObjective(
        model=model, adapter=adapter, runtime=runtime, template=pipe.scheduler, conds=conds, noise=noise,
        student_steps=cfg.student_steps, teacher_steps=cfg.teacher_steps or cfg.student_steps,
        guidance_scale=guidance_scale, rollout_every=cfg.rollout_every, per_device=per_device,
        accelerator=accelerator, seed=cfg.seed, rollout_noise=cfg.rollout_noise,
    )
