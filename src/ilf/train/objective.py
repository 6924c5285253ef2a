"""Fast Approximate Distillation (paper §3.2) and the two ablations of Fig. 11.

For clean latents x0, noise ε and per-sample timesteps t from the backbone's training noise schedule:

    student = backbone with ILF on x_t at t                     (only F and the scales learn)
    fad       teacher = backbone without ILF on x_{t/2} at t/2  (same x0, same ε; one forward, no grad)
    multistep teacher = the ε that one DDIM step would need to land where `teacher_steps` DDIM steps of the
                        backbone without ILF take x_t (from t to t/2) — standard multi-step distillation
    none      no teacher
    loss = w_d · diffusion_loss(student) + w_s · MSE(student, teacher)

The diffusion loss is the backbone's own: MSE to ε (epsilon prediction) or to v (v prediction). For
learned-sigma backbones (PixArt, DiT: out channels = 2 × in) only the first half — the noise prediction —
enters both terms: the variance half is discarded by the DPM-Solver++ sampling both pipelines use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..schedule import post_timestep


@dataclass
class LossTerms:
    total: torch.Tensor
    diffusion: torch.Tensor
    distill: torch.Tensor


def prediction_part(output: torch.Tensor, channels: int) -> torch.Tensor:
    """The noise/velocity prediction of a model output ([B, C or 2C, H, W] → [B, C, H, W])."""
    return output[:, :channels]


def _abar(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(like.device)[t.long().clamp(0, len(alphas_cumprod) - 1)].to(like.dtype)
    return a.view(-1, *([1] * (like.ndim - 1)))  # [B, 1, 1, 1]


def to_eps_x0(pred, x, t, alphas_cumprod, prediction_type):
    """(ε̂, x̂0) from a model prediction at (x, t), for epsilon or v prediction."""
    a = _abar(alphas_cumprod, t, x)
    if prediction_type == "epsilon":
        eps = pred
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    elif prediction_type == "v_prediction":
        x0 = a.sqrt() * x - (1 - a).sqrt() * pred
        eps = (1 - a).sqrt() * x + a.sqrt() * pred
    else:
        raise ValueError(f"prediction_type {prediction_type!r} is not supported (epsilon, v_prediction)")
    return eps, x0


def ddim_step(pred, x, t, t_next, alphas_cumprod, prediction_type):
    """One deterministic DDIM step from t to t_next, per sample.

    Written out because diffusers' schedulers step one shared timestep per batch, while distillation draws
    a timestep per sample.
    """
    eps, x0 = to_eps_x0(pred, x, t, alphas_cumprod, prediction_type)
    a_next = _abar(alphas_cumprod, t_next, x)
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def one_step_target(x_t, x_s, t, s, alphas_cumprod, prediction_type):
    """The prediction at (x_t, t) whose single DDIM step lands on x_s at s (progressive-distillation target)."""
    a_t, a_s = _abar(alphas_cumprod, t, x_t), _abar(alphas_cumprod, s, x_t)
    # x_t = √a_t x0 + √(1−a_t) ε and x_s = √a_s x0 + √(1−a_s) ε, solved for ε and x0
    eps = (a_s.sqrt() * x_t - a_t.sqrt() * x_s) / (a_s.sqrt() * (1 - a_t).sqrt() - a_t.sqrt() * (1 - a_s).sqrt())
    if prediction_type == "epsilon":
        return eps
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_t.sqrt() * eps - (1 - a_t).sqrt() * x0  # v = √a ε − √(1−a) x0


def ilf_loss(
    model,
    cond: dict,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    noise_scheduler,
    *,
    distill: str = "fad",
    teacher_steps: int = 8,
    diffusion_weight: float = 1.0,
    distill_weight: float = 1.0,
    t_post: str = "none",
    loop_ratio: float = 0.5,
) -> LossTerms:
    """The training loss of one batch; `model` is the transformer with ILF attached (maybe DDP-wrapped).

    x0, noise: [B, C, H, W]; t: [B] integer timesteps; cond: the model's conditioning keyword arguments.
    """
    channels = x0.shape[1]
    ptype = noise_scheduler.config.prediction_type
    acp = noise_scheduler.alphas_cumprod
    x_t = noise_scheduler.add_noise(x0, noise, t)
    s = t // 2
    with torch.no_grad():
        if distill == "fad":
            x_s = noise_scheduler.add_noise(x0, noise, s)
            teacher = prediction_part(model(x_s, timestep=s, ilf_feedback=False, **cond).sample, channels)
        elif distill == "multistep":
            x = x_t
            grid = [t - (t - s) * j // teacher_steps for j in range(teacher_steps + 1)]  # t = grid[0] … s
            for cur, nxt in zip(grid[:-1], grid[1:]):
                pred = prediction_part(model(x, timestep=cur, ilf_feedback=False, **cond).sample, channels)
                x = ddim_step(pred.float(), x.float(), cur, nxt, acp, ptype).to(x_t.dtype)
            teacher = one_step_target(x_t.float(), x.float(), t, s, acp, ptype).to(x_t.dtype)
        else:
            teacher = None
    # The student's post-feedback timestep; gap = the distance to the teacher's timestep t/2.
    tp = post_timestep(t_post, t.float(), (t - s).float(), k=loop_ratio).to(x0.device)
    student = prediction_part(model(x_t, timestep=t, ilf_t_post=tp, **cond).sample, channels).float()
    target = noise if ptype == "epsilon" else noise_scheduler.get_velocity(x0, noise, t)
    diffusion = F.mse_loss(student, target.float())
    distill_term = F.mse_loss(student, teacher.float()) if teacher is not None else torch.zeros_like(diffusion)
    total = diffusion_weight * diffusion + (distill_weight * distill_term if teacher is not None else 0.0)
    return LossTerms(total=total, diffusion=diffusion.detach(), distill=distill_term.detach())
