"""The training loop: a feedback on a frozen backbone, through accelerate.

Shape of the loop (accelerate's nlp_example / PixArt's train.py idiom): `accelerator.accumulate`, clip and
step under `sync_gradients`, `accelerator.gather` for logging, `save_state`/`load_state` for resume. What is
minimised is an *objective* object: the corrector of TaylorSeer or the inner loop's trajectory distillation,
both trained on recordings of the pipeline's own sampling (`native.py`), or the data-driven FAD / multistep /
none (`fad.py`).
Each draws its micro-batch as a pure function of (seed, step, micro, rank) and saves what it needs beside each
checkpoint, so a resumed run ends bit-identical.
"""

from __future__ import annotations

import json
import os
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm.auto import tqdm

from ..adapters import get_adapter
from ..dtypes import torch_dtype
from ..config import ILFConfig
from ..corrector_config import CorrectorConfig
from ..errors import ILFError, LoopRangeError
from ..loading import load_pipeline
from ..feedback import write_feedback
from ..portable import portable_tree
from ..pipeline import apply_ilf
from ..schedule import loop_ratio
from . import checkpoint as ckpt
from .config import RECORD_BATCH, RECORDED, TrainConfig
from .data import StepSampler, open_source, world_text_fn
from .encode import default_resolution, unconditional_inputs

logger = logging.getLogger("ilf.train")


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


def _ilf_config(cfg: TrainConfig, pipe) -> ILFConfig | CorrectorConfig:
    if cfg.distill == "corrector":  # a corrector of TaylorSeer, trained for (and recording) its schedule
        return CorrectorConfig(
            interval=cfg.cache_interval, warmup=cfg.cache_warmup, order=cfg.cache_order, fresh=cfg.fresh_blocks,
            full_steps=cfg.cache_full_steps, tail=cfg.corrector_tail,
            feed=cfg.corrector_feed, forecast=cfg.corrector_forecast,
            correct_steps=cfg.correct_steps, learned_forecast=cfg.learned_forecast,
            mix_per_channel=cfg.mix_per_channel, init=cfg.init, num_inference_steps=cfg.student_steps,
            scheduler=type(pipe.scheduler).__name__,
            guidance_scale=float(resolve_guidance(pipe, cfg.guidance_scale, cfg.world)))
    schedule = {}
    if cfg.distill == "trajectory":  # trained for one inference schedule: record it in the adapter
        schedule = dict(num_inference_steps=cfg.student_steps, scheduler=type(pipe.scheduler).__name__,
                        guidance_scale=float(resolve_guidance(pipe, cfg.guidance_scale, cfg.world)))
    return ILFConfig(loop=cfg.loop, init=cfg.init, init_block=cfg.init_block, rerun_loop=cfg.rerun_loop,
                     feed_text=cfg.feed_text, feedback_steps=cfg.feedback_steps, t_post=cfg.inference_t_post,
                     **schedule)


def use_scheduler(pipe, name: str | None) -> None:
    """Swap the pipeline's scheduler for the diffusers class `name`, keeping its noise schedule."""
    if name is None:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or not name.endswith("Scheduler"):
        raise ILFError(f"--scheduler {name!r} is not a diffusers scheduler class (e.g. DPMSolverMultistepScheduler, "
                       "UniPCMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler)")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


_SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


# Seconds every rank waits, the GIL released, between its last collective and the process group's end. torch's
# gloo backend joins its worker threads in the process group's destructor with the GIL held, and a worker still
# dropping a finished collective's tensors needs the GIL: a destructor that runs right after the last collective
# can deadlock. Seen in 1 of ~12 two-process runs on 2 busy cores (gdb: rank 1's main thread in
# ~ProcessGroupGloo <- ~Reducer joining a worker; that worker in ~AsyncAllgatherWork waiting for the GIL).
GLOO_DRAIN_S = 0.5


def end_processes(accelerator) -> None:
    """End the run: with several processes, after every rank's last collective (a barrier) and a GIL-free pause
    in which gloo's workers release the works they finished (see GLOO_DRAIN_S), so that the process group's
    destructor (run when `train` returns and the DDP wrapper is freed) finds them idle."""
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
        time.sleep(GLOO_DRAIN_S)
    accelerator.end_training()


def check_process_group(num_processes: int) -> None:
    """Stop when a launcher started several processes (WORLD_SIZE > 1) but accelerate joined them into no
    process group: each would train alone and write the same files. On a machine without GPUs that is
    `accelerate launch --multi_gpu --num_processes N` without ACCELERATE_USE_CPU=1."""
    asked = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if asked > 1 and num_processes == 1:
        raise ILFError(
            f"the launcher started {asked} processes (WORLD_SIZE={asked}) but they form no process group, so each "
            "would train alone and write the same output folder. Without GPUs run "
            f"`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {asked} -m ilf train ...` "
            "(gloo over CPU processes), or launch one process")


def resolve_loop(cfg: TrainConfig, model) -> None:
    """`--loop` defaults to the paper's 8-19 of 28 blocks scaled to the backbone's depth; check it fits."""
    from ..config import paper_loop

    adapter = get_adapter(model)
    num_blocks = len(adapter.blocks(model))
    if cfg.loop is None:
        cfg.loop = paper_loop(num_blocks)
    try:
        ILFConfig(loop=cfg.loop).check_model(num_blocks)
        adapter.check_loop(model, cfg.loop)
    except LoopRangeError as err:
        raise LoopRangeError(f"--loop {cfg.loop[0]} {cfg.loop[1]}: {err}") from None


def train(cfg: TrainConfig, pipe=None, prompts: list | None = None, call_kwargs: dict | None = None) -> TrainResult:
    """Train what `cfg` says. The corrector (`--distill corrector`) trains on recordings of the pipeline's own
    sampling (`native.py`): `pipe` (default: loaded from cfg), `prompts` (default: the file cfg.prompts, or the
    world's train prompts) and `call_kwargs`, given to every call (default: the world's). The other objectives
    read cfg.data."""
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(cfg.output_dir), logging_dir=str(cfg.output_dir / "logs")),
    )
    check_process_group(accelerator.num_processes)  # before anything is read or written
    rank, world_size = accelerator.process_index, accelerator.num_processes
    accum = cfg.accumulation(world_size)
    accelerator.gradient_accumulation_steps = accum
    per_device = cfg.batch_size // (world_size * accum)

    source = None
    if cfg.distill in RECORDED:
        from .native_inputs import native_inputs

        pipe, prompts, call_kwargs = native_inputs(cfg, pipe, prompts, call_kwargs)
        if cfg.distill == "trajectory":
            resolve_loop(cfg, pipe.transformer)
    else:
        source = open_source(cfg.data, cfg.data_type, cfg.resolution, cfg.world, cfg.seed)
        pipe = _data_pipeline(cfg, accelerator, source)
    model = pipe.transformer
    pipe.to(accelerator.device)
    model.requires_grad_(False).eval()  # frozen; eval also keeps DiT's label embedding from dropping labels
    adapter = get_adapter(model)
    ilf_cfg = _ilf_config(cfg, pipe)
    fingerprint = adapter.fingerprint(model)

    resume_dir = ckpt.resolve_resume(cfg.output_dir, cfg.resume)
    state = ckpt.read_state(resume_dir) if resume_dir else None
    if state is not None:  # refuse a misfit checkpoint before building anything that trains
        ckpt.check_resumable(state, ilf_cfg.to_dict(), fingerprint, resume_dir)

    runtime = apply_ilf(pipe, ilf_cfg)  # the pipeline clock serves validation runs; training calls are explicit
    feedback = runtime.feedback
    feedback.float().requires_grad_(True)  # trainable in fp32 even on a low-precision backbone
    if cfg.gradient_checkpointing:
        if cfg.distill == "corrector":
            raise ILFError("--gradient-checkpointing has nothing to recompute with --distill corrector (only the "
                           "feedback block runs with gradients); leave it off")
        runtime.enable_gradient_checkpointing()
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(feedback.parameters(), decay=cfg.ema_decay)
    optimizer = torch.optim.AdamW(feedback.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.total_steps(None if source is None or not getattr(source, "bounded", True) else len(source))
    from diffusers.optimization import get_scheduler

    # accelerate steps a prepared scheduler once per process per optimizer step: count in those units
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps * world_size,
                                 num_training_steps=total_steps * world_size)
    ddp_model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ckpt.CheckpointHooks(accelerator, feedback, ema)

    skipped = [0]
    if source is None:  # the corrector or ILF's trajectory, on recordings of the pipeline's own sampling
        from .native import PipelineCorrectorObjective

        objective = PipelineCorrectorObjective(
            pipe=pipe, runtime=runtime, prompts=prompts, call_kwargs=call_kwargs, output_dir=cfg.output_dir,
            num_steps=cfg.student_steps, teacher_steps=cfg.teacher_steps, rollout_every=cfg.rollout_every,
            per_device=per_device, accelerator=accelerator, seed=cfg.seed,
            record_batch=cfg.record_batch or min(RECORD_BATCH, per_device), log=accelerator.print,
            progress=cfg.progress)
    else:
        objective = build_objective(cfg, pipe, model, adapter, runtime, source, accelerator, per_device, accum,
                                    skipped)
    start_step = 0
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        objective.restore(resume_dir)
        start_step, skipped[0] = state["step"], state["skipped_samples"]
        accelerator.print(f"resumed from {resume_dir} at step {start_step}")
    if accelerator.is_main_process:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        record = portable_tree(cfg.to_dict(), cfg.output_dir)  # output_dir "." when given absolute: this folder
        (cfg.output_dir / "train_config.json").write_text(json.dumps(record, indent=2) + "\n")
    if cfg.report_to != "none":
        accelerator.init_trackers("ilf", config={k: v for k, v in cfg.to_dict().items()
                                                 if isinstance(v, (int, float, str, bool))})
    log_path = cfg.output_dir / "train_log.jsonl"

    def write_log(record: dict) -> None:
        if accelerator.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    prep = objective.prepare()  # e.g. the stock run's record: logged with its cost
    if prep:
        write_log({"step": start_step, "event": "prepare", **prep})

    bar = tqdm(total=total_steps, initial=start_step, desc=f"ilf train ({cfg.distill})",
               disable=not (cfg.progress and accelerator.is_local_main_process))
    last, t0, imgs = {}, time.perf_counter(), 0
    for step in range(start_step, total_steps):
        refreshed = objective.refresh(step)  # e.g. the student's rollout buffer, every K iterations
        if refreshed:
            write_log({"step": step, "event": "rollout", **refreshed})
        sums = torch.zeros(3, device=accelerator.device)  # total, diffusion, distill over micro-batches
        for micro in range(accum):
            with accelerator.accumulate(ddp_model):
                with accelerator.autocast():
                    terms, n_images = objective.loss(ddp_model, step, micro)
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
            imgs += n_images * world_size
        if ema is not None:
            ema.step(feedback.parameters())
        done = step + 1
        mean = accelerator.gather(sums.reshape(1, 3)).mean(0)
        last = {"loss": float(mean[0]), "loss_diffusion": float(mean[1]), "loss_distill": float(mean[2])}
        rate = imgs / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{last['loss']:.4g}", distill=f"{last['loss_distill']:.4g}", img_s=f"{rate:.1f}")
        bar.update(1)
        if done % cfg.log_every == 0 or done == total_steps:
            record = {"step": done, **last, "lr": lr_scheduler.get_last_lr()[0], "img_per_s": rate,
                      "skipped_samples": skipped[0],
                      "scales": [round(float(s), 6) for s in feedback.scales.detach().cpu()]}
            if cfg.report_to != "none":
                accelerator.log({k_: v for k_, v in record.items() if k_ != "scales"}
                                | {f"scale/{i}": s for i, s in enumerate(record["scales"])}, step=done)
            write_log(record)
        if cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == total_steps):
            state = {"step": done, "skipped_samples": skipped[0], "ilf_config": ilf_cfg.to_dict(),
                     "fingerprint": fingerprint, "world_size": world_size, "batch_size": cfg.batch_size,
                     "distill": cfg.distill}
            ckpt.save_checkpoint(accelerator, cfg.output_dir, done, state, cfg.keep_checkpoints,
                                 write_extra=objective.save)
        if cfg.validate_every and done % cfg.validate_every == 0 and accelerator.is_main_process:
            from .validation import save_validation_grid

            save_validation_grid(pipe, runtime, cfg, done)
    bar.close()
    accelerator.wait_for_everyone()
    if hasattr(objective, "finish"):  # drop what only the run needed (the corrector's rollout records)
        objective.finish()
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
                           "skipped_samples": skipped[0], **({"cost": objective.cost} if getattr(
                               objective, "cost", None) else {})}}
        write_feedback(feedback_dir, model, feedback, ilf_cfg, extra=extra)
        if ema is not None:
            ema.restore(feedback.parameters())
    end_processes(accelerator)
    return TrainResult(cfg.output_dir, feedback_dir, total_steps, skipped[0], last, accelerator.is_main_process)


def _data_pipeline(cfg: TrainConfig, accelerator, source):
    """The pipeline of a data-driven objective, checked against its data (what it is conditioned on, dtypes)."""
    pipe, _ = load_pipeline(cfg.world, cfg.pipeline, dtype=torch_dtype(cfg.backbone_dtype),
                            skip=("text_encoder", "tokenizer", "vae") if source.encoded else ())
    use_scheduler(pipe, cfg.scheduler)
    resolve_loop(cfg, pipe.transformer)
    if source.encoded:  # precomputed in any dtype (`ilf precompute --dtype bf16`): read in the backbone's
        stored, want = source.stored_dtypes(), torch_dtype(cfg.backbone_dtype)
        source.set_float_dtype(want)
        if stored - {str(want), _SAFETENSORS_NAMES.get(want)}:
            accelerator.print(f"{cfg.data}: precomputed in {', '.join(sorted(stored))}; read as {cfg.backbone_dtype} "
                              "(--backbone-dtype), the frozen backbone's dtype")
    if source.kind != get_adapter(pipe.transformer).conditioning:
        raise ILFError(f"{source.kind}-conditioned data do not fit {type(pipe.transformer).__name__}: captions need a "
                       "text-to-image backbone (PixArt, SD3, Sana), class folders a class-conditional one (DiT)")
    default_resolution(source, pipe)
    return pipe


def build_objective(cfg, pipe, model, adapter, runtime, source, accelerator, per_device, accum, skipped):
    """The data-driven objective the loop minimises: FAD, multistep or none."""
    max_len = cfg.max_sequence_length
    if max_len is None and cfg.world is not None:
        from ..worlds.registry import CALL_KWARGS

        max_len = CALL_KWARGS[cfg.world].get("max_sequence_length")
    encoder, null_text, null_class = unconditional_inputs(pipe, source, max_len, world_text_fn(cfg.world))
    from diffusers import DDPMScheduler

    from .fad import DataObjective

    world_size = accelerator.num_processes
    sampler = StepSampler(size=len(source) if getattr(source, "bounded", True) else None, per_device=per_device,
                          processes=world_size, rank=accelerator.process_index, accumulation=accum, seed=cfg.seed)
    k = loop_ratio(runtime.config.loop_len, len(adapter.blocks(model)), "m/n")
    # the training noise schedule: DDPM's β schedule, or (flow) the scheduler's horizon only
    noise_scheduler = pipe.scheduler if adapter.noise == "flow" else DDPMScheduler.from_config(pipe.scheduler.config)
    return DataObjective(cfg=cfg, model=model, source=source, sampler=sampler, encoder=encoder,
                         noise_scheduler=noise_scheduler, null_text=null_text, null_class=null_class, loop_ratio=k,
                         accelerator=accelerator, skipped=skipped, noise=adapter.noise,
                         units=adapter.timestep_units(model))


def resolve_guidance(pipe, guidance_scale: float | None = None, world: str | None = None) -> float:
    """The guidance given, else the world's, else the pipeline class's own default (PixArt 4.5, DiT 4.0)."""
    if guidance_scale is not None:
        return guidance_scale
    if world is not None:
        from ..worlds.registry import CALL_KWARGS

        return CALL_KWARGS[world]["guidance_scale"]
    import inspect

    param = inspect.signature(type(pipe).__call__).parameters.get("guidance_scale")
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return 1.0  # no guidance argument, or none by default (Qwen-Image: true_cfg_scale guides instead)
    return float(param.default)


def _stop_non_finite(cfg: TrainConfig, step: int, terms) -> None:
    found = ckpt.list_checkpoints(cfg.output_dir)
    where = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was written yet"
    raise NonFiniteLossError(
        f"non-finite loss at step {step + 1} (diffusion {float(terms.diffusion):.4g}, distill "
        f"{float(terms.distill):.4g}); stopped before the update, {where}. Lower --lr, prefer "
        "--mixed-precision bf16 to fp16, or check the data; resume with --resume latest"
    )

