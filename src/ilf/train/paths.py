"""Guided sampling paths driven by the pipeline's own scheduler: what trajectory distillation trains on.

A *path* is one guided N-step run of a diffusers scheduler from a fixed noise, batched the way PixArt and DiT
pipelines batch classifier-free guidance (cond and uncond in one model call). It records, for every step k,
the state `x_k` the scheduler held before the step and the guided model output `eps_k` it was given:

    states:  [S, N, C, H, W]   x_0 (= noise · init_noise_sigma) … x_{N-1}
    outputs: [S, N, C, H, W]   the guided prediction passed to `scheduler.step` at step k
    final:   [S, C, H, W]      the scheduler's last `prev_sample` (the latents the pipeline decodes)

`replay(...)` rebuilds a fresh scheduler's state just before step k from the recorded (state, output) pairs,
so that one more `scheduler.step` — with a prediction that carries gradients — is the solver's exact update,
multistep history and lower-order first/last steps included. No solver coefficient is written here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..clock import StepInfo
from ..errors import ILFError
from .encode import model_kwargs
from .objective import prediction_part


@dataclass
class Conditions:
    """Per-sample conditioning in the transformer's keyword names, plus the unconditional one.

    cond: {"class_labels": [S]} or {"encoder_hidden_states": [S, L, D], "encoder_attention_mask": [S, L]};
    null: the same keys with batch 1 (DiT's null class, PixArt's empty-caption embedding).
    """

    cond: dict
    null: dict

    def __len__(self) -> int:
        return next(iter(self.cond.values())).shape[0]

    def take(self, index) -> "Conditions":
        return Conditions({k: v[index] for k, v in self.cond.items()}, self.null)

    def to(self, device) -> "Conditions":
        return Conditions({k: v.to(device) for k, v in self.cond.items()},
                          {k: v.to(device) for k, v in self.null.items()})


def sharded(accelerator, fn, noise: torch.Tensor, conds: Conditions) -> tuple:
    """`fn(noise, conds)` on this process's contiguous shard of the S paths, gathered back to all S on every process.

    fn returns a tuple of tensors [s, ...] or of dicts of them (the corrector's recorded forecasts); each comes
    back as [S, ...] in the order of `noise` (rank r holds rows r·S/W … (r+1)·S/W − 1; S is a multiple of W).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    size = noise.shape[0] // world
    sl = slice(rank * size, (rank + 1) * size)
    out = fn(noise[sl], conds.take(sl))
    if world == 1:
        return out
    gather = lambda t: accelerator.gather(t.contiguous())  # noqa: E731
    return tuple({k: gather(v) for k, v in o.items()} if isinstance(o, dict) else gather(o) for o in out)


def guided_call_kwargs(model, adapter, x: torch.Tensor, conds: Conditions, guidance_scale: float):
    """(model input [2B or B, C, H, W], conditioning kwargs) batched as the family's pipeline batches CFG."""
    if guidance_scale <= 1.0:
        return x, model_kwargs(model, {"latents": x, **conds.cond})
    n = x.shape[0]
    null = {k: v.expand(n, *v.shape[1:]) for k, v in conds.null.items()}
    pair = (null, conds.cond) if adapter.cfg_uncond_first else (conds.cond, null)
    both = {k: torch.cat([pair[0][k], pair[1][k]]) for k in conds.cond}
    x2 = torch.cat([x, x])
    return x2, model_kwargs(model, {"latents": x2, **both})


def guided_prediction(model, adapter, x, t, conds: Conditions, guidance_scale: float, channels: int,
                      **ilf_kwargs) -> torch.Tensor:
    """The guided prediction [B, C, H, W] (noise, or velocity) the pipeline passes to `scheduler.step` at
    scheduler timestep t."""
    xin, kwargs = guided_call_kwargs(model, adapter, x, conds, guidance_scale)
    timestep = adapter.to_model_units(model, torch.as_tensor(t, device=x.device))  # Flux: t / 1000
    timestep = timestep.reshape(1).expand(xin.shape[0])
    dtype = next(model.parameters()).dtype  # the backbone's (a bf16 backbone takes bf16 latents, as in its pipeline)
    out = model(xin.to(dtype), timestep=timestep, **kwargs, **ilf_kwargs).sample
    out = prediction_part(out, channels).to(x.dtype)
    if guidance_scale <= 1.0:
        return out
    first, second = out.chunk(2)
    uncond, cond = (first, second) if adapter.cfg_uncond_first else (second, first)
    return uncond + guidance_scale * (cond - uncond)


def new_scheduler(template, num_steps: int, device=None):
    """A fresh scheduler of the template's class and config, with `num_steps` timesteps set."""
    if getattr(template, "order", 1) != 1:
        raise ILFError(
            f"{type(template).__name__} calls the model {template.order} times per step; trajectory "
            "distillation needs one model call per step (DPM-Solver++, UniPC, DDIM, Euler, …): pass "
            "--scheduler DPMSolverMultistepScheduler or train with the pipeline's default scheduler"
        )
    sched = type(template).from_config(template.config)
    sched.set_timesteps(num_steps, device=device)
    return sched


def model_input(sched, x: torch.Tensor, t) -> torch.Tensor:
    """`sched.scale_model_input(x, t)` where the scheduler has it (flow-matching schedulers take x as is)."""
    scale = getattr(sched, "scale_model_input", None)
    return scale(x, t) if scale is not None else x


def step_info(sched, k: int) -> StepInfo:
    """The schedule position of step k, as the runtime's clock reports it during inference."""
    ts = sched.timesteps
    n = len(ts)
    return StepInfo(index=k, num_steps=n, t=float(ts[k]), t_next=float(ts[k + 1]) if k + 1 < n else 0.0,
                    num_train_timesteps=int(sched.config.num_train_timesteps))


def ilf_call_kwargs(runtime, sched, k: int, plan: frozenset[int]) -> dict:
    """Explicit ILF control for step k: feedback and t_post as inference would choose them, or the stock forward."""
    if runtime is None or k not in plan:
        return {"ilf_feedback": False} if runtime is not None else {}
    return {"ilf_feedback": True, "ilf_t_post": runtime.model_t_post(step_info(sched, k))}


@dataclass
class SamplePath:
    states: torch.Tensor  # [S, N, C, H, W]
    outputs: torch.Tensor  # [S, N, C, H, W]
    final: torch.Tensor  # [S, C, H, W]


@torch.no_grad()
def sample_paths(model, adapter, template, noise: torch.Tensor, conds: Conditions, num_steps: int,
                 guidance_scale: float, *, runtime=None, plan: frozenset[int] = frozenset(),
                 batch_size: int = 64) -> SamplePath:
    """Guided `num_steps` runs from `noise` [S, C, H, W]; feedback on the `plan` steps when `runtime` is set."""
    channels = noise.shape[1]
    parts = []
    for lo in range(0, noise.shape[0], batch_size):
        sl = slice(lo, lo + batch_size)
        sched = new_scheduler(template, num_steps, noise.device)
        x = noise[sl] * getattr(sched, "init_noise_sigma", 1.0)  # flow matching starts at the noise itself
        cb = conds.take(sl)
        states, outputs = [], []
        for k, t in enumerate(sched.timesteps):
            xin = model_input(sched, x, t)
            eps = guided_prediction(model, adapter, xin, t, cb, guidance_scale, channels,
                                    **ilf_call_kwargs(runtime, sched, k, plan))
            states.append(x)
            outputs.append(eps)
            x = sched.step(eps, t, x).prev_sample
        parts.append((torch.stack(states, 1), torch.stack(outputs, 1), x))
    return SamplePath(*(torch.cat([p[i] for p in parts]) for i in range(3)))


def replay(template, num_steps: int, k: int, states: torch.Tensor, outputs: torch.Tensor):
    """A fresh scheduler whose state is the recorded path's just before step k.

    states, outputs: [B, ≥k, C, H, W] (the path's first k steps). Replaying through `scheduler.step` itself
    rebuilds whatever the solver keeps (DPM-Solver++'s previous x0 predictions, UniPC's corrector sample,
    Euler's step index) for any single-call scheduler class.
    """
    sched = new_scheduler(template, num_steps, states.device)
    for j in range(k):
        t = sched.timesteps[j]
        model_input(sched, states[:, j], t)
        sched.step(outputs[:, j], t, states[:, j])
    return sched


def grid_indices(student, teacher) -> list[int] | None:
    """Where each student timestep after the first sits on the teacher's grid (None: one does not)."""
    st, tt = student.timesteps.double().cpu(), teacher.timesteps.double().cpu()
    idx = []
    for k in range(1, len(st)):
        hit = torch.nonzero(torch.abs(tt - st[k]) < 1e-3).flatten()
        if len(hit) == 0:
            return None
        idx.append(int(hit[0]))
    return idx


def aligned_teacher_steps(template, student_steps: int, upto: int = 8) -> list[int]:
    """Teacher step counts (up to `upto` × the student's) whose grid holds the student's grid: multiples of
    N for DDPM-style `linspace` spacing, k·(N − 1) + 1 for grids that include both ends (FlowMatchEuler)."""
    student = new_scheduler(template, student_steps)
    return [m for m in range(student_steps + 1, upto * student_steps + 1)
            if grid_indices(student, new_scheduler(template, m)) is not None]


def default_teacher_steps(template, student_steps: int) -> int:
    """The smallest aligned teacher step count of at least twice the student's (2N where that aligns)."""
    fits = [m for m in aligned_teacher_steps(template, student_steps) if m >= 2 * student_steps]
    return fits[0] if fits else 2 * student_steps


def grid_targets(student, teacher, teacher_path: SamplePath) -> torch.Tensor:
    """The teacher's state at each student step's *next* grid point: [S, N, C, H, W].

    Target k is the teacher state at the student's timestep k+1; the last target is the teacher's final sample.
    The student's timesteps must lie on the teacher's grid (see `aligned_teacher_steps`).
    """
    idx = grid_indices(student, teacher)
    if idx is None:
        n, fits = len(student.timesteps), aligned_teacher_steps(student, len(student.timesteps))
        raise ILFError(
            f"the student's {n}-step grid of {type(student).__name__} does not lie on the teacher's "
            f"{len(teacher.timesteps)}-step grid; choose --teacher-steps from {fits[:6]} (or leave it unset)"
        )
    picked = [teacher_path.states[:, i] for i in idx] + [teacher_path.final]
    return torch.stack(picked, 1)
