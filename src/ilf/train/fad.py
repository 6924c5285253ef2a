"""The data-driven objectives (`fad`, `multistep`, `none`): one micro-batch of clean latents → `ilf_loss`
(DDPM ε/v backbones) or `flow_loss` (flow-matching backbones), as the adapter's noise family says."""

from __future__ import annotations

import torch

from .checkpoint import rank_generator
from .data import read_batch
from .encode import drop_conditions, model_kwargs, stack_encoded
from .flow import flow_loss
from .objective import LossTerms, ilf_loss


class DataObjective:
    """Draws (x0, ε, t) for a micro-batch as a pure function of (seed, step, micro, rank) and scores it."""

    def __init__(self, *, cfg, model, source, sampler, encoder, noise_scheduler, null_text, null_class,
                 loop_ratio: float, accelerator, skipped: list[int], noise: str = "ddpm", units: float = 1.0):
        self.cfg, self.model, self.source, self.sampler, self.encoder = cfg, model, source, sampler, encoder
        self.noise_scheduler, self.null_text, self.null_class = noise_scheduler, null_text, null_class
        self.k, self.acc, self.skipped = loop_ratio, accelerator, skipped
        self.horizon = noise_scheduler.config.num_train_timesteps
        self.noise, self.units = noise, units  # the adapter's noise family; model timestep per scheduler one

    def prepare(self) -> dict:
        return {}

    def refresh(self, step: int) -> None:
        return None

    def batch(self, step: int, micro: int) -> dict:
        cfg, dev = self.cfg, self.acc.device
        samples = read_batch(self.source, self.sampler.micro_batch(step, micro), self.skipped)
        batch = stack_encoded(samples, dev) if self.source.encoded else self.encoder.encode(samples)
        g = rank_generator(cfg.seed, step, micro, self.acc.process_index)
        p = cfg.caption_dropout if self.source.kind == "text" else cfg.class_dropout
        batch = drop_conditions(batch, p, g, self.null_text, self.null_class)
        x0 = batch["latents"].float()
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        t = torch.randint(1, self.horizon, (x0.shape[0],), generator=g).to(x0.device)
        return dict(cond=model_kwargs(self.model, batch), x0=x0, noise=noise, t=t)

    def loss(self, ddp_model, step: int, micro: int) -> tuple[LossTerms, int]:
        cfg, b = self.cfg, self.batch(step, micro)
        if self.noise == "flow":
            terms = flow_loss(ddp_model, b["cond"], b["x0"], b["noise"], b["t"], horizon=self.horizon,
                              units=self.units, distill=cfg.distill, teacher_steps=cfg.teacher_steps or 8,
                              diffusion_weight=cfg.diffusion_weight, distill_weight=cfg.distill_weight,
                              t_post=cfg.t_post, loop_ratio=self.k)
            return terms, int(b["x0"].shape[0])
        terms = ilf_loss(ddp_model, b["cond"], b["x0"], b["noise"], b["t"], self.noise_scheduler,
                         distill=cfg.distill, teacher_steps=cfg.teacher_steps or 8,
                         diffusion_weight=cfg.diffusion_weight, distill_weight=cfg.distill_weight,
                         t_post=cfg.t_post, loop_ratio=self.k)
        return terms, int(b["x0"].shape[0])

    def save(self, folder) -> None:
        return None

    def restore(self, folder) -> None:
        return None
