"""Solver-exact, on-path trajectory distillation: train a feedback *for an inference schedule*.

The schedule is N student steps of the pipeline's scheduler, a feedback plan and a guidance scale. For a fixed
set of S noises and conditions:

    teacher   = the frozen backbone's guided path on a finer grid (T = 2N steps by default), computed once;
                target_k = its state at the student's grid point k+1 (the last target: its final sample)
    rollout   = the student's own guided N-step path with ILF on the plan's steps, re-run every K iterations
                (the inputs the feedback will actually see at inference)
    loss      = MSE(scheduler.step(ε̂_student(x_k), t_k, x_k | history of the rollout), target_k)

over the plan's steps k. The update is the scheduler's own `step`, replayed from the rollout's recorded history
(`paths.replay`), so DPM-Solver++'s multistep history and lower-order last step are exact.

Resume: the teacher targets are regenerated deterministically; the rollout buffer is saved with every
checkpoint (`rollout.safetensors`) and restored, so a resumed run ends bit-identical.
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
    Conditions,
    guided_prediction,
    grid_targets,
    default_teacher_steps,
    model_input,
    new_scheduler,
    replay,
    sample_paths,
    sharded,
    step_info,
)

ROLLOUT_FILE = "rollout.safetensors"


class TrajectoryObjective:
    """The trajectory loss of one micro-batch, with the teacher targets and the rollout buffer it reads."""

    def __init__(self, *, model, adapter, runtime, template, conds: Conditions, noise: torch.Tensor,
                 student_steps: int, teacher_steps: int, plan: frozenset[int], guidance_scale: float,
                 rollout_every: int, per_device: int, accelerator, seed: int, chunk: int = 64):
        if not plan:
            raise ILFError("the feedback plan has no step in a "
                           f"{student_steps}-step schedule: nothing to train; choose --feedback-steps")
        world = accelerator.num_processes
        if noise.shape[0] % world:
            raise ILFError(f"--rollout-size {noise.shape[0]} must be a multiple of the {world} processes")
        self.model, self.adapter, self.runtime, self.template = model, adapter, runtime, template
        self.conds, self.noise, self.plan = conds, noise, sorted(plan)
        self.n, self.teacher_steps, self.guidance = student_steps, teacher_steps, guidance_scale
        self.rollout_every, self.per_device, self.acc, self.seed = rollout_every, per_device, accelerator, seed
        self.chunk = chunk
        self.targets = None  # [S, N, C, H, W]
        self.states = self.outputs = None  # the rollout buffer: [S, N, C, H, W] each
        self.rollout_step = -1  # the iteration whose weights made the buffer
        self.cost = {}

    # ---- the fixed teacher and the refreshed rollout, each computed in shards over the processes (`sharded`) ----
    def prepare(self) -> dict:
        """Teacher targets (once, unless precomputed); returns their cost for the log."""
        if self.targets is not None:
            return {"teacher_paths": int(self.noise.shape[0]), "teacher_precomputed": True}
        start = time.process_time()
        student = new_scheduler(self.template, self.n)
        teacher = new_scheduler(self.template, self.teacher_steps)

        def run(noise, conds):
            path = sample_paths(self.model, self.adapter, self.template, noise, conds, self.teacher_steps,
                                self.guidance, runtime=self.runtime, batch_size=self.chunk)
            return (grid_targets(student, teacher, path),)

        (self.targets,) = sharded(self.acc, run, self.noise, self.conds)
        self.cost["teacher_seconds"] = time.process_time() - start
        return {"teacher_seconds": self.cost["teacher_seconds"], "teacher_paths": int(self.noise.shape[0])}

    def refresh(self, step: int) -> dict | None:
        """Re-run the student's own sampler every `rollout_every` iterations (and when no buffer exists)."""
        if self.states is not None and step % self.rollout_every:
            return None
        start = time.process_time()
        plan = frozenset(self.plan)

        def run(noise, conds):
            path = sample_paths(self.model, self.adapter, self.template, noise, conds, self.n, self.guidance,
                                runtime=self.runtime, plan=plan, batch_size=self.chunk)
            return path.states, path.outputs

        self.states, self.outputs = sharded(self.acc, run, self.noise, self.conds)
        self.rollout_step = step
        seconds = time.process_time() - start
        self.cost["rollout_seconds"] = self.cost.get("rollout_seconds", 0.0) + seconds
        return {"rollout_step": step, "rollout_seconds": seconds}

    # ---- the loss ----
    def loss(self, ddp_model, step: int, micro: int) -> tuple[LossTerms, int]:
        g = rank_generator(self.seed, step, micro, self.acc.process_index)
        k = self.plan[int(torch.randint(len(self.plan), (1,), generator=g))]
        idx = torch.randint(self.noise.shape[0], (self.per_device,), generator=g)
        states, outputs = self.states[idx], self.outputs[idx]  # [B, N, C, H, W]
        sched = replay(self.template, self.n, k, states, outputs)
        t, x_k = sched.timesteps[k], states[:, k]
        xin = model_input(sched, x_k, t)
        t_post = self.runtime.model_t_post(step_info(sched, k))
        eps = guided_prediction(ddp_model, self.adapter, xin, t, self.conds.take(idx), self.guidance,
                                x_k.shape[1], ilf_feedback=True, ilf_t_post=t_post)
        x_next = sched.step(eps, t, x_k).prev_sample
        distill = F.mse_loss(x_next.float(), self.targets[idx, k].float())
        zero = torch.zeros((), device=distill.device)
        return LossTerms(total=distill, diffusion=zero, distill=distill.detach()), int(idx.numel())

    # ---- checkpoints ----
    def save(self, folder: Path) -> None:
        save_file({"states": self.states.cpu().contiguous(), "outputs": self.outputs.cpu().contiguous(),
                   "rollout_step": torch.tensor(self.rollout_step)}, str(Path(folder) / ROLLOUT_FILE))

    def restore(self, folder: Path) -> None:
        path = Path(folder) / ROLLOUT_FILE
        if not path.is_file():
            raise ILFError(f"{folder} has no {ROLLOUT_FILE}: it was not written by a trajectory run; resume it "
                           "with the objective it was trained with, or start a new --output-dir")
        t = load_file(str(path), device=str(self.noise.device))
        self.states, self.outputs, self.rollout_step = t["states"], t["outputs"], int(t["rollout_step"])


def trajectory_conditions(source, encoder, size: int, seed: int, null_text, null_class: int, skipped: list[int],
                          device) -> Conditions:
    """`size` conditions drawn once from the training data (captions, class ids or shard rows)."""
    from .data import read_batch
    from .encode import stack_encoded

    g = torch.Generator().manual_seed(seed * 7919 + 1)
    if getattr(source, "bounded", True):
        order = torch.randperm(len(source), generator=g)
        indices = [int(order[i % len(order)]) for i in range(size)]
    else:
        indices = list(range(size))
    samples = read_batch(source, indices, skipped)
    if source.encoded:
        rows = stack_encoded(samples, device)
        cond = {k: v for k, v in rows.items() if k != "latents"}
    elif source.kind == "text":
        cond = encoder.text([s["caption"] for s in samples])
    else:
        cond = {"class_labels": torch.tensor([s["label"] for s in samples], device=device)}
    if "class_labels" in cond:
        null = {"class_labels": torch.tensor([null_class], device=device)}
    else:
        null = {k: v.to(device) for k, v in null_text.items()}
    return Conditions(cond, null)


def fixed_noise(model, size: int, seed: int, device) -> torch.Tensor:
    """The run's fixed noises [S, C, H, W]: a pure function of the seed (precomputed paths draw the same)."""
    g = torch.Generator().manual_seed(seed * 7919 + 2)
    c, s = model.config.in_channels, model.config.sample_size
    return torch.randn((size, c, s, s), generator=g).to(device)


def build_trajectory(cfg, pipe, model, adapter, runtime, source, encoder, null_text, null_class, accelerator,
                     per_device: int, guidance_scale: float, skipped: list[int]) -> TrajectoryObjective:
    from ..schedule import feedback_steps
    from .teacher_paths import TeacherPaths

    device = accelerator.device
    teacher_steps = cfg.teacher_steps or default_teacher_steps(pipe.scheduler, cfg.student_steps)
    if isinstance(source, TeacherPaths):  # precomputed: noises, conditions and targets come from the folder
        source.check(student_steps=cfg.student_steps, teacher_steps=teacher_steps,
                     scheduler=type(pipe.scheduler).__name__, guidance_scale=guidance_scale,
                     fingerprint=adapter.fingerprint(model))
        conds, noise = source.conds.to(device), source.noise.to(device)
    else:
        conds = trajectory_conditions(source, encoder, cfg.rollout_size, cfg.seed, null_text, null_class, skipped,
                                      device)
        noise = fixed_noise(model, cfg.rollout_size, cfg.seed, device)
    objective = TrajectoryObjective(
        model=model, adapter=adapter, runtime=runtime, template=pipe.scheduler, conds=conds, noise=noise,
        student_steps=cfg.student_steps, teacher_steps=teacher_steps,
        plan=feedback_steps(cfg.feedback_steps, cfg.student_steps), guidance_scale=guidance_scale,
        rollout_every=cfg.rollout_every, per_device=per_device, accelerator=accelerator, seed=cfg.seed,
    )
    if isinstance(source, TeacherPaths):
        objective.targets = source.targets.to(device)
    return objective
