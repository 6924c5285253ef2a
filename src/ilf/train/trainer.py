"""The training loop: Fast Approximate Distillation of a feedback on a frozen backbone, through accelerate.

Shape of the loop (accelerate's nlp_example / PixArt's train.py idiom): `accelerator.accumulate`, clip and
step under `sync_gradients`, `accelerator.gather` for logging, `save_state`/`load_state` for resume.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm.auto import tqdm

from ..adapters import get_adapter
from ..config import ILFConfig
from ..errors import ILFError
from ..feedback import write_feedback
from ..pipeline import apply_ilf
from ..schedule import loop_ratio
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import StepSampler, open_source, read_batch
from .encode import Encoder, drop_conditions, model_kwargs, stack_encoded, vae_scale
from .objective import ilf_loss

logger = logging.getLogger("ilf.train")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteLossError(ILFError):
    """The loss became NaN or infinite; training stopped before the bad step changed anything."""


@dataclass
class TrainResult:
    output_dir: Path
    feedback_dir: Path
    steps: int
    skipped_samples: int
    last_loss: dict
    is_main_process: bool = True


def load_pipeline(cfg: TrainConfig, encoded_data: bool):
    """The backbone's pipeline; without its VAE and text encoder when the data are precomputed."""
    if cfg.world is not None:
        from ..worlds import load_pipeline as load_world

        return load_world(cfg.world)
    from diffusers import DiffusionPipeline

    skip = {}
    if encoded_data:
        components = DiffusionPipeline.load_config(cfg.pipeline)
        skip = {k: None for k in ("text_encoder", "tokenizer", "vae") if k in components}
    return DiffusionPipeline.from_pretrained(cfg.pipeline, dtype=DTYPES[cfg.backbone_dtype], **skip)


def _ilf_config(cfg: TrainConfig) -> ILFConfig:
    return ILFConfig(loop=cfg.loop, init=cfg.init, init_block=cfg.init_block,
                     feedback_steps=cfg.feedback_steps, t_post=cfg.inference_t_post)


def train(cfg: TrainConfig) -> TrainResult:
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(cfg.output_dir), logging_dir=str(cfg.output_dir / "logs")),
    )
    rank, world_size = accelerator.process_index, accelerator.num_processes
    accum = cfg.accumulation(world_size)
    accelerator.gradient_accumulation_steps = accum
    per_device = cfg.batch_size // (world_size * accum)

    source = open_source(cfg.data, cfg.data_type, cfg.resolution, cfg.world, cfg.seed)
    pipe = load_pipeline(cfg, source.encoded)
    model = pipe.transformer
    if (source.kind == "text") != (model.config.get("caption_channels") is not None):
        raise ILFError(f"{source.kind}-conditioned data do not fit {type(model).__name__}: captions need a "
                       "text-to-image backbone (PixArt), class folders a class-conditional one (DiT)")
    if getattr(source, "resolution", 0) is None:  # raw images default to the backbone's native size
        source.resolution = model.config.sample_size * vae_scale(pipe)
    pipe.to(accelerator.device)
    model.requires_grad_(False).eval()  # frozen; eval also keeps DiT's label embedding from dropping labels
    adapter = get_adapter(model)
    ilf_cfg = _ilf_config(cfg)
    fingerprint = adapter.fingerprint(model)

    resume_dir = ckpt.resolve_resume(cfg.output_dir, cfg.resume)
    state = ckpt.read_state(resume_dir) if resume_dir else None
    if state is not None:  # refuse a misfit checkpoint before building anything that trains
        ckpt.check_resumable(state, ilf_cfg.to_dict(), fingerprint, resume_dir)

    runtime = apply_ilf(pipe, ilf_cfg)  # the pipeline clock serves validation runs; training calls are explicit
    feedback = runtime.feedback
    feedback.float().requires_grad_(True)  # trainable in fp32 even on a low-precision backbone
    if cfg.gradient_checkpointing:
        runtime.enable_gradient_checkpointing()
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(feedback.parameters(), decay=cfg.ema_decay)
    optimizer = torch.optim.AdamW(feedback.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.total_steps(len(source) if getattr(source, "bounded", True) else None)
    from diffusers.optimization import get_scheduler

    # accelerate steps a prepared scheduler once per process per optimizer step: count in those units
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps * world_size,
                                 num_training_steps=total_steps * world_size)
    ddp_model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ckpt.CheckpointHooks(accelerator, feedback, ema)

    start_step, skipped = 0, [0]
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        start_step, skipped[0] = state["step"], state["skipped_samples"]
        accelerator.print(f"resumed from {resume_dir} at step {start_step}")
    if accelerator.is_main_process:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        (cfg.output_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    if cfg.report_to != "none":
        accelerator.init_trackers("ilf", config={k: v for k, v in cfg.to_dict().items()
                                                 if isinstance(v, (int, float, str, bool))})

    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the backbone's training schedule
    horizon = noise_scheduler.config.num_train_timesteps
    sampler = StepSampler(size=len(source) if getattr(source, "bounded", True) else None, per_device=per_device,
                          processes=world_size, rank=rank, accumulation=accum, seed=cfg.seed)
    max_len = cfg.max_sequence_length
    if max_len is None and cfg.world is not None:
        from ..worlds.registry import CALL_KWARGS

        max_len = CALL_KWARGS[cfg.world].get("max_sequence_length")
    encoder = None if source.encoded else Encoder(pipe, source.kind, max_len)
    null_text = None
    if source.kind == "text":
        null_text = source.null_text() if source.encoded else encoder.null_text()
    null_class = model.config.get("num_embeds_ada_norm") or 1000
    k = loop_ratio(ilf_cfg.loop_len, len(adapter.blocks(model)), "m/n")
    log_path = cfg.output_dir / "train_log.jsonl"

    def batch_for(step: int, micro: int) -> dict:
        samples = read_batch(source, sampler.micro_batch(step, micro), skipped)
        batch = stack_encoded(samples, accelerator.device) if source.encoded else encoder.encode(samples)
        g = ckpt.rank_generator(cfg.seed, step, micro, rank)
        p = cfg.caption_dropout if source.kind == "text" else cfg.class_dropout
        batch = drop_conditions(batch, p, g, null_text, null_class)
        x0 = batch["latents"].float()
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        t = torch.randint(1, horizon, (x0.shape[0],), generator=g).to(x0.device)
        return dict(cond=model_kwargs(model, batch), x0=x0, noise=noise, t=t)

    bar = tqdm(total=total_steps, initial=start_step, desc="ilf train", disable=not (cfg.progress and accelerator.is_local_main_process))
    last, t0, imgs = {}, time.perf_counter(), 0
    for step in range(start_step, total_steps):
        sums = torch.zeros(3, device=accelerator.device)  # total, diffusion, distill over micro-batches
        for micro in range(accum):
            b = batch_for(step, micro)
            with accelerator.accumulate(ddp_model):
                with accelerator.autocast():
                    terms = ilf_loss(ddp_model, b["cond"], b["x0"], b["noise"], b["t"], noise_scheduler,
                                     distill=cfg.distill, teacher_steps=cfg.teacher_steps,
                                     diffusion_weight=cfg.diffusion_weight, distill_weight=cfg.distill_weight,
                                     t_post=cfg.t_post, loop_ratio=k)
                finite = torch.isfinite(terms.total.detach()).float()
                if accelerator.gather(finite.reshape(1)).min() < 1:  # every rank stops together
                    _stop_non_finite(cfg, step, terms)
                accelerator.backward(terms.total)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(feedback.parameters(), cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            sums += torch.stack([terms.total.detach(), terms.diffusion, terms.distill]) / accum
            imgs += b["x0"].shape[0] * world_size
        if ema is not None:
            ema.step(feedback.parameters())
        done = step + 1
        mean = accelerator.gather(sums.reshape(1, 3)).mean(0)
        last = {"loss": float(mean[0]), "loss_diffusion": float(mean[1]), "loss_distill": float(mean[2])}
        rate = imgs / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{last['loss']:.4f}", distill=f"{last['loss_distill']:.4f}", img_s=f"{rate:.1f}")
        bar.update(1)
        if done % cfg.log_every == 0 or done == total_steps:
            record = {"step": done, **last, "lr": lr_scheduler.get_last_lr()[0], "img_per_s": rate,
                      "skipped_samples": skipped[0],
                      "scales": [round(float(s), 6) for s in feedback.scales.detach().cpu()]}
            if cfg.report_to != "none":
                accelerator.log({k_: v for k_, v in record.items() if k_ != "scales"}
                                | {f"scale/{i}": s for i, s in enumerate(record["scales"])}, step=done)
            if accelerator.is_main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
        if cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == total_steps):
            state = {"step": done, "skipped_samples": skipped[0], "ilf_config": ilf_cfg.to_dict(),
                     "fingerprint": fingerprint, "world_size": world_size, "batch_size": cfg.batch_size}
            ckpt.save_checkpoint(accelerator, cfg.output_dir, done, state, cfg.keep_checkpoints)
        if cfg.validate_every and done % cfg.validate_every == 0 and accelerator.is_main_process:
            from .validation import save_validation_grid

            save_validation_grid(pipe, runtime, cfg, done)
    bar.close()
    if skipped[0]:
        accelerator.print(f"skipped {skipped[0]} unreadable samples (replaced by the next readable ones)")
    feedback_dir = cfg.output_dir / "feedback"
    if cfg.dump_rank_weights:
        from safetensors.torch import save_file

        save_file({k_: v.detach().cpu().contiguous() for k_, v in feedback.state_dict().items()},
                  str(cfg.output_dir / f"rank{rank}_feedback.safetensors"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.store(feedback.parameters())
            ema.copy_to(feedback.parameters())
        extra = {"train": {"steps": total_steps, "distill": cfg.distill, "final_loss": last,
                           "skipped_samples": skipped[0]}}
        write_feedback(feedback_dir, model, feedback, ilf_cfg, extra=extra)
        if ema is not None:
            ema.restore(feedback.parameters())
    accelerator.end_training()
    return TrainResult(cfg.output_dir, feedback_dir, total_steps, skipped[0], last, accelerator.is_main_process)


def _stop_non_finite(cfg: TrainConfig, step: int, terms) -> None:
    found = ckpt.list_checkpoints(cfg.output_dir)
    where = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was written yet"
    raise NonFiniteLossError(
        f"non-finite loss at step {step + 1} (diffusion {float(terms.diffusion):.4g}, distill "
        f"{float(terms.distill):.4g}); stopped before the update, {where}. Lower --lr, prefer "
        "--mixed-precision bf16 to fp16, or check the data; resume with --resume latest"
    )

