"""Training configuration: one dataclass, the paper's presets, validation with clear errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..choices import DTYPE_NAMES, MIXED_PRECISION
from ..errors import ILFError

# Paper §4.1 — the documented defaults for real checkpoints.
PRESETS = {
    "paper-t2i": dict(lr=1e-6, batch_size=2048, epochs=5),  # PixArt-α/Σ, 2M image-text pairs
    "paper-c2i": dict(lr=5e-6, batch_size=8192, epochs=10),  # DiT-XL/2, ImageNet
    # The embedded worlds: small backbones learn fast; a few hundred steps on a CPU.
    "world": dict(lr=1e-4, batch_size=32, max_steps=300),
}
# The embedded worlds with the corrector (the default objective; bench/corrector_study.py's recipe, that of the
# shipped correctors: ~1 min of one CPU thread per world; lr, batch and steps are also a pipeline's corrector
# defaults without --preset, as in ilf.train_corrector) ...
WORLD_CORRECTOR = dict(lr=3e-3, batch_size=32, max_steps=600, rollout_size=128)
# ... and with trajectory distillation (the paper's inner loop): the recipe of the shipped paper-mode feedbacks.
WORLD_TRAJECTORY = dict(lr=1e-3, batch_size=32, max_steps=1000)
# Per inner-loop objective, the inference schedule stored with the feedback when --feedback-steps /
# --inference-t-post are not given: trajectory's is the measured best (feedback on the last step, t_post none;
# docs/results.md), FAD's the paper's (outer 2+2, eq. 4's rescale). The corrector stores its cache's schedule.
SCHEDULE_DEFAULTS = {"trajectory": dict(feedback_steps="last:1", inference_t_post="none")}
PAPER_SCHEDULE = dict(feedback_steps="outer:2", inference_t_post="rescale")
DISTILL_MODES = ("fad", "trajectory", "multistep", "none", "corrector")
RECORDED = ("corrector", "trajectory")  # objectives trained on recordings of the pipeline (train/native.py)
# Prompts per recorded pipeline call. A training batch is made of whole recorded calls, so small calls keep it
# diverse: on digits (report seeds, vs the retired trainer's row-sampled batches) 4 gave -0.12 dB [-0.47, +0.25],
# 16 gave -1.22 [-1.38, -1.06], 32 gave -2.94 (bench/native_equivalence.py, docs/native-equivalence).
RECORD_BATCH = 4
DEFAULT_DISTILL = "corrector"  # the measured winner (README verdict, docs/corrector-study.md)
ROLLOUT_NOISES = ("fixed", "fresh")


@dataclass
class TrainConfig:
    output_dir: Path
    # backbone and data
    pipeline: str | None = None  # a diffusers pipeline folder or hub id
    world: str | None = None  # an embedded world (worlds.paths.BACKBONE_WORLDS): the offline default
    data: Path | None = None
    prompts: Path | None = None  # corrector / trajectory: a text file, one prompt (or class id) per line
    call_kwargs: dict = field(default_factory=dict)  # corrector / trajectory: every pipeline call's kwargs
    data_type: str = "auto"  # auto | captions | classes | shards
    resolution: int | None = None  # image side for raw folders; default: the backbone's
    max_sequence_length: int | None = None
    # ILF
    loop: tuple[int, int] | None = None  # None: the paper's 8-19 of 28 blocks scaled to the backbone's depth
    init: str = "copy"
    init_block: int | None = None
    t_post: str = "none"  # student's post-feedback conditioning in training (gap = t − t/2)
    feedback_steps: str | None = None  # inference schedule written into the adapter (default: per objective)
    inference_t_post: str | None = None
    rerun_loop: bool = True  # False: the same-size control without an inner loop
    feed_text: bool = False  # MMDiT: feed F's text stream back too
    # objective
    distill: str = DEFAULT_DISTILL  # the corrector; "trajectory" trains the paper's inner loop, "fad" is the paper's
    teacher_steps: int | None = None  # multistep: 8; trajectory: 2 × student_steps (or the next aligned count)
    student_steps: int | None = None  # the inference step count trained for (trajectory: 10, corrector: 20)
    guidance_scale: float | None = None  # trajectory: default the world's / the pipeline's own
    scheduler: str | None = None  # a diffusers scheduler class replacing the pipeline's (same noise schedule)
    rollout_every: int = 100
    rollout_size: int | None = None  # default 256 (the world recipe of --distill corrector: 128)
    rollout_noise: str = "fixed"  # fixed: one set of noises; fresh: new noises (and teacher paths) every rollout
    record_batch: int | None = None  # prompts per recorded pipeline call (default: min(RECORD_BATCH, per-device batch))
    # corrector (--distill corrector): the TaylorSeer cache it stacks on, and what runs fresh
    cache_interval: int = 2
    cache_warmup: int = 3
    cache_order: int = 1
    cache_full_steps: list[int] | None = None  # an explicit full-step mask (replaces interval/warm-up)
    fresh_blocks: int = 0
    corrector_tail: int | None = None  # blocks run fresh after the correction (None: SD3's textless last block)
    corrector_feed: str = "innovation"
    corrector_forecast: str = "output"
    correct_steps: str = "none"  # the forecast steps F runs on ("none": only the learned per-step forecast)
    learned_forecast: bool = True  # learn per-step weights correcting the Taylor forecast (no block cost)
    mix_per_channel: bool = False  # ... one per feature channel
    diffusion_weight: float = 1.0
    distill_weight: float = 1.0
    caption_dropout: float = 0.1
    class_dropout: float = 0.1
    # optimisation
    preset: str | None = None
    lr: float | None = None
    batch_size: int | None = None  # global: per-device × processes × accumulation
    per_device_batch: int | None = None
    epochs: float | None = None
    max_steps: int | None = None
    weight_decay: float = 0.0
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    ema_decay: float | None = None
    # engine
    mixed_precision: str = "no"
    backbone_dtype: str = "fp32"
    gradient_checkpointing: bool = False
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    log_every: int = 10
    report_to: str = "none"  # none | tensorboard | wandb | all (accelerate trackers)
    validate_every: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    progress: bool = True
    dump_rank_weights: bool = False

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if (self.pipeline is None) == (self.world is None):
            raise ILFError("give exactly one backbone: --pipeline PATH_OR_ID (a diffusers pipeline) or --world NAME")
        from ..worlds.paths import BACKBONE_WORLDS

        if self.world is not None and self.world not in BACKBONE_WORLDS:
            raise ILFError(f"--world must be one of {BACKBONE_WORLDS}, got {self.world!r}")
        if self.distill not in DISTILL_MODES:
            raise ILFError(f"--distill must be one of {DISTILL_MODES}, got {self.distill!r}")
        recorded = self.distill in RECORDED  # trained on recordings of the pipeline's own sampling (native.py)
        if self.pipeline is not None and self.data is None and not recorded:
            raise ILFError(f"--pipeline with --distill {self.distill} needs --data (an image folder, class folders, or "
                           "shards from `ilf precompute`); --distill corrector and trajectory need only --prompts")
        if recorded and self.data is not None:
            raise ILFError(f"--distill {self.distill} records the pipeline's own sampling and reads no --data; give "
                           "--prompts FILE (or --world NAME) instead")
        if (self.prompts is not None or self.call_kwargs) and not recorded:
            raise ILFError("--prompts and --call-kwargs are for --distill corrector and trajectory; the other "
                           "objectives read --data")
        if self.rollout_noise == "fresh" and recorded:
            raise ILFError(f"--rollout-noise fresh is not available with --distill {self.distill} (its recordings are "
                           "of one noise per prompt); give more prompts instead")
        if self.distill == "corrector":
            self._refuse_inner_loop_flags()
        if self.student_steps is None:
            self.student_steps = 20 if self.distill == "corrector" else 10
        if self.cache_full_steps is not None:
            self._check_full_steps()
        if self.rollout_noise not in ROLLOUT_NOISES:
            raise ILFError(f"--rollout-noise must be one of {ROLLOUT_NOISES}, got {self.rollout_noise!r}")
        if self.distill == "corrector" and self.teacher_steps is not None and self.teacher_steps < self.student_steps:
            raise ILFError(f"--teacher-steps {self.teacher_steps} must be at least --student-steps "
                           f"{self.student_steps} for --distill corrector (default: equal, plain N steps)")
        if self.teacher_steps is None and self.distill == "multistep":
            self.teacher_steps = 8
        if self.teacher_steps is not None and self.teacher_steps < 1:
            raise ILFError("--teacher-steps must be >= 1")
        for flag, value, lo in (("--student-steps", self.student_steps, 1), ("--rollout-every", self.rollout_every, 1),
                                ("--rollout-size", self.rollout_size, 1), ("--max-steps", self.max_steps, 1),
                                ("--record-batch", self.record_batch, 1),
                                ("--batch-size", self.batch_size, 1), ("--per-device-batch", self.per_device_batch, 1),
                                ("--checkpoint-every", self.checkpoint_every, 0),
                                ("--keep-checkpoints", self.keep_checkpoints, 1), ("--log-every", self.log_every, 1),
                                ("--validate-every", self.validate_every, 0), ("--warmup-steps", self.warmup_steps, 0),
                                ("--seed", self.seed, 0)):
            if value is not None and value < lo:
                raise ILFError(f"{flag} must be an integer >= {lo}, got {value}")
        if self.epochs is not None and not self.epochs > 0:
            raise ILFError(f"--epochs must be a number > 0, got {self.epochs}")
        schedule = {} if self.distill == "corrector" else SCHEDULE_DEFAULTS.get(self.distill, PAPER_SCHEDULE)
        for k, v in schedule.items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.distill == "trajectory":  # the plan may name only steps the trained schedule has
            from ..argtypes import check_plan_fits

            check_plan_fits(self.feedback_steps, self.student_steps, steps_flag="--student-steps")
        if self.distill == "trajectory" and self.teacher_steps is not None and self.teacher_steps <= self.student_steps:
            raise ILFError(f"--teacher-steps {self.teacher_steps} must exceed --student-steps {self.student_steps}: "
                           "the teacher is the finer-grid path (default 2 × student steps)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ILFError(f"--mixed-precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.backbone_dtype not in DTYPE_NAMES:
            raise ILFError(f"--backbone-dtype must be one of {DTYPE_NAMES}, got {self.backbone_dtype!r}")
        self.loop = None if self.loop is None else tuple(self.loop)
        if self.loop is not None and not 0 <= self.loop[0] <= self.loop[1]:
            raise ILFError(f"--loop {self.loop[0]} {self.loop[1]}: need 0 <= B <= E < the backbone's number of blocks")
        preset = self.preset or ("world" if self.world else None)
        if preset is not None:
            if preset not in PRESETS:
                raise ILFError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
            world_recipe = {"trajectory": WORLD_TRAJECTORY, "corrector": WORLD_CORRECTOR}.get(self.distill)
            values = world_recipe if preset == "world" and world_recipe else PRESETS[preset]
            for k, v in values.items():
                if getattr(self, k) is None:
                    setattr(self, k, v)
        if self.distill == "corrector" and preset is None:  # a pipeline's corrector: the recipe train_corrector uses
            for k in ("lr", "batch_size") + (("max_steps",) if self.epochs is None else ()):
                if getattr(self, k) is None:
                    setattr(self, k, WORLD_CORRECTOR[k])
        if self.lr is None or self.batch_size is None:
            raise ILFError(
                "no --lr/--batch-size given and no preset; use --preset paper-t2i (PixArt), --preset paper-c2i "
                "(DiT), or give --lr and --batch-size"
            )
        if self.epochs is None and self.max_steps is None:
            raise ILFError("give --max-steps or --epochs")
        if self.rollout_size is None:
            self.rollout_size = 256

    def _check_full_steps(self) -> None:
        """--cache-full-steps: the corrector's full-step mask for --student-steps, checked before anything runs."""
        from ..corrector_config import check_full_steps
        from ..errors import ScheduleError

        if self.distill != "corrector":
            raise ILFError(f"--cache-full-steps is a corrector flag; it does nothing with --distill {self.distill}")
        try:
            self.cache_full_steps = list(check_full_steps(self.cache_full_steps, self.student_steps))
        except ScheduleError as err:
            raise ILFError(f"--cache-full-steps: {err}") from None

    def _refuse_inner_loop_flags(self) -> None:
        """The corrector has no inner loop: a loop, a feedback plan or a post-feedback time given with it would
        do nothing, so each is refused with the fix instead of being silently dropped."""
        given = [flag for flag, value in (("--loop", self.loop is not None), ("--feedback-steps",
                 self.feedback_steps is not None), ("--inference-t-post", self.inference_t_post is not None),
                 ("--t-post", self.t_post != "none"), ("--init-block", self.init_block is not None),
                 ("--feedback-mode once", not self.rerun_loop), ("--feed-text", self.feed_text)) if value]
        if given:
            raise ILFError(f"{given[0]} is an inner-loop (ILF) flag and does nothing with --distill corrector (the "
                           f"default objective); add --distill trajectory to train ILF, or drop {given[0]}")

    def accumulation(self, num_processes: int) -> int:
        per_device = self.per_device_batch or max(1, self.batch_size // num_processes)
        per_step = per_device * num_processes
        if self.batch_size % per_step:
            raise ILFError(
                f"--batch-size {self.batch_size} is not a multiple of --per-device-batch {per_device} × "
                f"{num_processes} processes; choose sizes that divide"
            )
        return self.batch_size // per_step

    def total_steps(self, dataset_size: int | None) -> int:
        if self.max_steps is not None:
            return self.max_steps
        if dataset_size is None:
            raise ILFError("an unbounded data source needs --max-steps")
        return max(1, math.ceil(self.epochs * dataset_size / self.batch_size))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["data"] = None if self.data is None else str(self.data)
        d["prompts"] = None if self.prompts is None else str(self.prompts)
        d["loop"] = None if self.loop is None else list(self.loop)
        return d
