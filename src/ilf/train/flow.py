"""FAD and its ablations for flow-matching backbones (SD3, Sana): the same recipe as `objective.py` on the
noise–data line of rectified flow.

With σ = t / T (T = the scheduler's `num_train_timesteps`, 1000) and x_t = (1 − σ)·x0 + σ·ε, the backbone
predicts the velocity v = ε − x0 (what `FlowMatchEulerDiscreteScheduler` and flow DPM-Solver step with):

    student   = backbone with ILF on x_t at t                              (only F and the scales learn)
    fad       teacher = backbone without ILF at t/2 on the same line: x_{t/2} = (1 − σ/2)·x0 + (σ/2)·ε
    multistep teacher = the velocity whose single Euler step from t lands where `teacher_steps` Euler
                        steps of the backbone without ILF take x_t (to t/2)
    none      no teacher
    loss = w_d · MSE(student, ε − x0) + w_s · MSE(student, teacher)

The model is called with the timestep in its own units (`units` × t: Flux-style models take t/1000).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..schedule import post_timestep
from .objective import LossTerms, prediction_part


def on_line(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x0 + σ·ε for per-sample σ [B]."""
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def flow_loss(
    model, cond: dict, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, *, horizon: int = 1000,
    units: float = 1.0, distill: str = "fad", teacher_steps: int = 8, diffusion_weight: float = 1.0,
    distill_weight: float = 1.0, t_post: str = "none", loop_ratio: float = 0.5,
) -> LossTerms:
    """The training loss of one batch for a flow backbone; x0, noise: [B, C, H, W]; t: [B] in 1..horizon−1."""
    channels = x0.shape[1]

    def velocity(x, timestep, **ilf):
        return prediction_part(model(x, timestep=timestep * units, **ilf, **cond).sample, channels)

    t = t.float()
    s = t / 2
    x_t = on_line(x0, noise, t / horizon)
    with torch.no_grad():
        if distill == "fad":
            teacher = velocity(on_line(x0, noise, s / horizon), s, ilf_feedback=False)
        elif distill == "multistep":
            x = x_t
            grid = [t - (t - s) * j / teacher_steps for j in range(teacher_steps + 1)]  # t = grid[0] … s
            for cur, nxt in zip(grid[:-1], grid[1:]):
                d = ((nxt - cur) / horizon).view(-1, *([1] * (x.ndim - 1)))
                x = x + d * velocity(x, cur, ilf_feedback=False).float()  # Euler: dx = (σ' − σ)·v
            teacher = (x - x_t) / ((s - t) / horizon).view(-1, *([1] * (x.ndim - 1)))
        else:
            teacher = None
    tp = post_timestep(t_post, t, t - s, k=loop_ratio).to(x0.device)  # gap = the distance to t/2
    student = velocity(x_t, t, ilf_t_post=tp * units).float()
    diffusion = F.mse_loss(student, (noise - x0).float())
    distill_term = F.mse_loss(student, teacher.float()) if teacher is not None else torch.zeros_like(diffusion)
    total = diffusion_weight * diffusion + (distill_weight * distill_term if teacher is not None else 0.0)
    return LossTerms(total=total, diffusion=diffusion.detach(), distill=distill_term.detach())
