"""`ilf train` and `ilf precompute`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import (COUNT, INDEX, add_loop_arg, add_threads_arg, fraction, full_steps_arg, guidance_scale,
                        non_negative_float, positive_float, set_threads)
from ..choices import DTYPE_NAMES, INIT_MODES, MIXED_PRECISION, T_POST_STRATEGIES
from ..worlds.paths import BACKBONE_WORLDS
from .config import DEFAULT_DISTILL, DISTILL_MODES

TRAIN_EPILOG = """\
examples:
  # the default objective, the shipped, measured-best method: a corrector of diffusers' TaylorSeer, trained on
  # the world pipeline's own 20-step sampling (~1 min on one CPU thread)
  ilf train --world shapes --output-dir runs/shapes-corrector

  # a corrector for your pipeline: its own sampling of your prompts (one a line), with your call's settings
  ilf train --pipeline PixArt-alpha/PixArt-XL-2-512x512 --prompts prompts.txt \
      --call-kwargs '{"guidance_scale": 4.5}' --output-dir runs/pixart-corrector

  # the paper's mode, Inner Loop Feedback, trained by trajectory distillation (~5 min on one CPU thread):
  # 10 DPM-Solver++ steps, feedback on the last one, t_post none, loop 3-8 (8-19 of 28 scaled)
  ilf train --world digits --distill trajectory --output-dir runs/digits-fb

  # ILF with the paper's FAD objective and schedule (outer 2+2, t_post rescale) instead
  ilf train --world shapes --distill fad --output-dir runs/shapes-fad

  # ILF on a real checkpoint on one GPU: encode the data once, then train FAD with the paper's defaults
  ilf precompute --pipeline PixArt-alpha/PixArt-XL-2-512x512 --data my-images/ --out shards/
  ilf train --pipeline PixArt-alpha/PixArt-XL-2-512x512 --data shards/ --distill fad --preset paper-t2i \\
      --per-device-batch 32 --mixed-precision bf16 --gradient-checkpointing --output-dir runs/pixart-fb

  # the same on 8 GPUs (DDP by default; an accelerate config file selects FSDP or DeepSpeed)
  accelerate launch --num_processes 8 -m ilf train --pipeline PixArt-alpha/PixArt-XL-2-512x512 \\
      --data shards/ --distill fad --preset paper-t2i --per-device-batch 32 --mixed-precision bf16 \\
      --output-dir runs/pixart-fb

  # resume after an interruption (the newest complete checkpoint)
  ilf train ... --resume latest
"""


def json_object(text: str) -> dict:
    """--call-kwargs: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}); write an object such as '{{\"height\": 512}}'")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object such as '{\"height\": 512}'")
    return value


def _loop(values):
    return None if values is None else tuple(int(v) for v in values)


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a corrector of TaylorSeer (--distill corrector, the default: the shipped method) or "
        "the paper's inner-loop feedback (--distill trajectory, or the paper's FAD) on a frozen backbone",
        description="Train on a frozen diffusion transformer: a corrector of diffusers' TaylorSeer cache "
        "(--distill corrector, the default objective: the shipped, measured-best method, docs/corrector.md; it "
        "records the pipeline's own sampling of --prompts and needs no --data), or the feedback block and "
        "scales of the paper's Inner Loop Feedback (the paper's mode), by trajectory distillation for an "
        "inference schedule (--distill trajectory) or the paper's Fast Approximate Distillation (--distill "
        "fad, §3.2). Runs on one CPU/GPU or many GPUs through `accelerate launch`. Writes OUTPUT_DIR/feedback "
        "(the adapter folder), periodic checkpoints, train_log.jsonl and optional validation grids.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("backbone and data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--pipeline", help="diffusers pipeline folder or hub id of any supported family (see docs/models.md)")
    src.add_argument("--world", choices=BACKBONE_WORLDS, help="an embedded offline world (tiny shipped backbone, "
                     "data generated on the fly)")
    g.add_argument("--data", type=Path, help="training data: images with same-name .txt captions, class folders "
                   "(ImageFolder layout), or shards from `ilf precompute`, for the data-driven objectives (needed "
                   "with --pipeline and --distill fad/multistep/none; the corrector and trajectory read --prompts)")
    g.add_argument("--prompts", type=Path, help="--distill corrector or trajectory: a text file, one prompt per line (a line of "
                   "digits is a class id); the pipeline's own sampling of them is recorded and trained on, no "
                   "--data (default with --world: --rollout-size prompts of the world's train split)")
    g.add_argument("--call-kwargs", type=json_object, default={},
                   help="--distill corrector or trajectory: JSON of keyword arguments for every pipeline call, as at "
                   "inference, "
                   "e.g. '{\"height\": 1024, \"width\": 1024, \"true_cfg_scale\": 4.0, \"negative_prompt\": \"\"}'")
    g.add_argument("--record-batch", type=COUNT,
                   help="--distill corrector or trajectory: prompts per recorded pipeline call; a training batch "
                   "is made of whole calls, so small calls keep it diverse (default: min(4, per-device batch))")
    g.add_argument("--data-type", default="auto", choices=["auto", "captions", "classes", "shards"],
                   help="how to read --data (default: detect)")
    g.add_argument("--resolution", type=COUNT, help="image side for raw image folders (default: the backbone's)")
    g.add_argument("--max-sequence-length", type=COUNT, help="caption tokens (default: 120 PixArt-α, 300 PixArt-Σ)")
    g = p.add_argument_group("inner loop (ILF: --distill trajectory, fad, multistep, none; the corrector refuses all "
                             "but --init)")
    add_loop_arg(g, help="first and last loop block, inclusive, 0 <= B <= E < the backbone's blocks (default: the "
                 "paper's 8 19 of 28 blocks scaled to the backbone's depth: 3 8 on the 12-block worlds)")
    g.add_argument("--init", choices=INIT_MODES, default="copy",
                   help="feedback block initialisation: a copy of a backbone block's weights, or fresh; the corrector's F "
                   "copies its block e (default: copy)")
    g.add_argument("--init-block", type=INDEX, help="backbone block copied by --init copy (default: E)")
    g.add_argument("--t-post", default="none", choices=T_POST_STRATEGIES,
                   help="the student's post-feedback time conditioning during training, with the gap to the "
                   "teacher's t/2 (default: none — t throughout, rescaling is an inference-time choice)")
    g.add_argument("--feedback-steps",
                   help="default inference schedule stored with the feedback; --distill trajectory trains those steps "
                   "(default: last:1 with trajectory, the measured best; outer:2, the paper's, with the others)")
    g.add_argument("--inference-t-post", choices=T_POST_STRATEGIES,
                   help="default inference t_post stored with the feedback; --distill trajectory also trains with "
                   "it (default: none with trajectory; rescale, the paper's eq. 4, with the others)")
    g.add_argument("--feedback-mode", default="loop", choices=["loop", "once"],
                   help="loop: ILF, re-run blocks B..E with the feedback added; once: the same-size control "
                   "without an inner loop (F's output added once after block E) (default: loop)")
    g = p.add_argument_group("objective")
    g.add_argument("--feed-text", action="store_true",
                   help="MMDiT backbones (SD3): also feed F's text-stream output back into the loop's text stream "
                   "(default: image stream only, as measured in the README)")
    g.add_argument("--distill", default=DEFAULT_DISTILL, choices=DISTILL_MODES,
                   help="corrector: a trained corrector of diffusers' TaylorSeer cache, on the pipeline's own "
                   "sampling (the corrector group below; docs/corrector.md; the shipped, measured-best method); "
                   "the paper's mode, ILF: trajectory: train the inner loop for an inference schedule — the "
                   "student's own guided --student-steps path, each feedback step's solver update matched to a "
                   "--teacher-steps teacher path from the same noise (beats plain steps on digits; see "
                   "docs/results.md); fad: one teacher forward at t/2 (the paper's Fast Approximate "
                   "Distillation); multistep: the teacher target reached by --teacher-steps DDIM steps (standard "
                   "distillation); none: diffusion loss only (default: corrector; trajectory trains ILF, fad "
                   "reproduces the paper)")
    g.add_argument("--teacher-steps", type=COUNT,
                   help="teacher solver steps: multistep's DDIM steps (default: 8); trajectory's finer grid "
                   "(default: 2 × --student-steps, or the next count whose grid holds the student's, e.g. 3N − 2 "
                   "for FlowMatchEuler)")
    g = p.add_argument_group("trajectory distillation (--distill trajectory) and the corrector's sampling")
    g.add_argument("--student-steps", type=COUNT,
                   help="the inference step count the feedback is trained for; recorded in the adapter (default: 20 "
                   "with the corrector; 10 with --distill trajectory)")
    g.add_argument("--guidance-scale", type=guidance_scale,
                   help="classifier-free guidance of the student and teacher paths (default: the world's, else the "
                   "pipeline class's own default: PixArt 4.5, DiT 4.0)")
    g.add_argument("--scheduler",
                   help="a diffusers scheduler class to train (and record) instead of the pipeline's, keeping its "
                   "noise schedule, e.g. UniPCMultistepScheduler (default: the pipeline's, DPM-Solver++ for ours)")
    g.add_argument("--rollout-every", type=COUNT, default=100,
                   help="iterations between re-runs of the student's sampler that refresh its states (default: 100)")
    g.add_argument("--rollout-size", type=COUNT,
                   help="with --world: the number of the world's train prompts recorded, one seeded noise each "
                   "(default: 128 with the corrector, 256 with trajectory)")
    g.add_argument("--diffusion-weight", type=non_negative_float, default=1.0, help="weight of the diffusion loss (default: 1)")
    g.add_argument("--distill-weight", type=non_negative_float, default=1.0, help="weight of the distillation MSE (default: 1)")
    g.add_argument("--caption-dropout", type=fraction, default=0.1, help="probability of the empty caption (default: 0.1)")
    g.add_argument("--class-dropout", type=fraction, default=0.1, help="probability of the null class (default: 0.1)")
    g = p.add_argument_group("corrector (--distill corrector): a trained corrector of diffusers' TaylorSeer cache")
    g.add_argument("--cache-interval", type=COUNT, default=2,
                   help="TaylorSeer: a full step every INTERVAL steps after the warm-up (default: 2)")
    g.add_argument("--cache-warmup", type=COUNT, default=3, help="TaylorSeer: the first WARMUP steps compute (default: 3)")
    g.add_argument("--cache-order", type=INDEX, default=1, help="TaylorSeer's Taylor order (default: 1)")
    g.add_argument("--cache-full-steps", type=full_steps_arg, default=None, metavar="STEPS",
                   help="an explicit full-step mask for the --student-steps run, e.g. 0,1,2,4,6,9 (must include 0); "
                   "replaces --cache-interval/--cache-warmup (default: none, TaylorSeer's evenly spread schedule)")
    g.add_argument("--corrector-tail", type=INDEX, default=None, metavar="N",
                   help="trailing blocks that run fresh after the correction on each forecast step, one block forward "
                   "each (default: SD3's last block, which returns no text stream; 0 elsewhere; 0 forecasts it too)")
    g.add_argument("--fresh-blocks", type=INDEX, default=0,
                   help="leading blocks run fresh on each forecast step, for F to see (default: 0)")
    g.add_argument("--correct-steps", default="none",
                   help="the forecast steps the feedback block F runs on, one block forward each: all, none, last:K, "
                   "… (default: none — only the learned per-step forecast, which costs no block forward)")
    g.add_argument("--corrector-forecast", default="output", choices=["output", "residual"],
                   help="the cache: output (diffusers' TaylorSeer) or residual (DBCache + TaylorSeer) (default: output)")
    g.add_argument("--corrector-feed", default="innovation", choices=["innovation", "forecast"],
                   help="what F sees besides the forecast: the fresh blocks' innovation, or nothing (default: innovation)")
    g.add_argument("--mix-per-channel", action="store_true",
                   help="learn the forecast's per-step weights per feature channel, not one per term")
    g.add_argument("--no-learned-forecast", action="store_true",
                   help="keep TaylorSeer's own forecast (train F alone; the control of the learned forecast)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--preset", choices=["paper-t2i", "paper-c2i", "world"],
                   help="hyper-parameter defaults: paper-t2i (lr 1e-6, batch 2048, 5 epochs), paper-c2i (lr 5e-6, "
                   "batch 8192, 10 epochs), world (the default with --world: lr 3e-3, batch 32, 600 steps with the "
                   "corrector; lr 1e-3, batch 32, 1000 steps with trajectory; lr 1e-4, batch 32, 300 steps with the "
                   "others)")
    g.add_argument("--lr", type=positive_float, help="learning rate (AdamW)")
    g.add_argument("--batch-size", type=COUNT, help="global batch = per-device batch × processes × accumulation")
    g.add_argument("--per-device-batch", type=COUNT, help="micro-batch per process (default: batch size / processes); "
                   "gradient accumulation makes up the rest")
    g.add_argument("--epochs", type=positive_float, help="passes over the data (finite data sets)")
    g.add_argument("--max-steps", type=COUNT, help="optimizer steps (overrides --epochs)")
    g.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="AdamW weight decay (default: 0)")
    g.add_argument("--lr-scheduler", default="constant_with_warmup",
                   help="diffusers LR schedule name (constant, constant_with_warmup, cosine, linear, …)")
    g.add_argument("--warmup-steps", type=INDEX, default=0, help="LR warm-up steps (default: 0)")
    g.add_argument("--max-grad-norm", type=non_negative_float, default=1.0, help="gradient clipping norm, 0 = off (default: 1)")
    g.add_argument("--ema-decay", type=float, help="keep an EMA of the feedback with this decay; saved as the result")
    g = p.add_argument_group("engine")
    g.add_argument("--mixed-precision", default="no", choices=MIXED_PRECISION, help="accelerate autocast (default: no)")
    g.add_argument("--backbone-dtype", default="fp32", choices=DTYPE_NAMES,
                   help="dtype of the frozen backbone, VAE and text encoder; the feedback trains in fp32 (default: fp32)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute the frozen blocks' activations in backward (less memory, ~30%% more compute)")
    g.add_argument("--seed", type=INDEX, default=0, help="seed of data order, noise, timesteps and dropout (default: 0)")
    g = p.add_argument_group("checkpoints and logs")
    g.add_argument("--output-dir", type=Path, required=True, help="where the feedback, checkpoints and logs go")
    g.add_argument("--checkpoint-every", type=INDEX, default=500, help="optimizer steps between checkpoints (default: 500)")
    g.add_argument("--keep-checkpoints", type=COUNT, default=3, help="how many recent checkpoints to keep (default: 3)")
    g.add_argument("--resume", help="'latest' (the newest complete checkpoint in --output-dir, or a fresh start) "
                   "or a checkpoint folder")
    g.add_argument("--log-every", type=COUNT, default=10, help="steps between log records (default: 10)")
    g.add_argument("--report-to", default="none", choices=["none", "tensorboard", "wandb", "all"],
                   help="accelerate trackers for the loss terms and scales (default: none; train_log.jsonl always)")
    g.add_argument("--validate-every", type=INDEX, default=0,
                   help="steps between validation grids (plain 20 / plain 10 / ILF 10, same seeds), 0 = off")
    g.add_argument("--validation-prompts", nargs="*", default=[],
                   help="prompts (or class ids for DiT) of the validation grid")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_arg(g)
    g.add_argument("--dump-rank-weights", action="store_true",
                   help="each process also writes its final feedback (to verify that DDP kept ranks identical)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .config import TrainConfig

    cfg = TrainConfig(
        output_dir=args.output_dir, pipeline=args.pipeline, world=args.world, data=args.data,
        data_type=args.data_type, resolution=args.resolution, max_sequence_length=args.max_sequence_length,
        loop=_loop(args.loop), init=args.init, init_block=args.init_block, t_post=args.t_post,
        feedback_steps=args.feedback_steps, inference_t_post=args.inference_t_post, distill=args.distill,
        rerun_loop=args.feedback_mode == "loop", feed_text=args.feed_text, student_steps=args.student_steps,
        guidance_scale=args.guidance_scale, scheduler=args.scheduler, rollout_every=args.rollout_every,
        rollout_size=args.rollout_size, cache_interval=args.cache_interval,
        prompts=args.prompts, call_kwargs=args.call_kwargs, record_batch=args.record_batch,
        cache_warmup=args.cache_warmup, cache_order=args.cache_order, cache_full_steps=args.cache_full_steps,
        fresh_blocks=args.fresh_blocks, corrector_tail=args.corrector_tail,
        correct_steps=args.correct_steps, corrector_forecast=args.corrector_forecast,
        corrector_feed=args.corrector_feed, learned_forecast=not args.no_learned_forecast,
        mix_per_channel=args.mix_per_channel,
        teacher_steps=args.teacher_steps, diffusion_weight=args.diffusion_weight,
        distill_weight=args.distill_weight, caption_dropout=args.caption_dropout,
        class_dropout=args.class_dropout, preset=args.preset, lr=args.lr, batch_size=args.batch_size,
        per_device_batch=args.per_device_batch, epochs=args.epochs, max_steps=args.max_steps,
        weight_decay=args.weight_decay, lr_scheduler=args.lr_scheduler, warmup_steps=args.warmup_steps,
        max_grad_norm=args.max_grad_norm, ema_decay=args.ema_decay, mixed_precision=args.mixed_precision,
        backbone_dtype=args.backbone_dtype, gradient_checkpointing=args.gradient_checkpointing, seed=args.seed,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        log_every=args.log_every, report_to=args.report_to, validate_every=args.validate_every,
        validation_prompts=args.validation_prompts, progress=not args.no_progress,
        dump_rank_weights=args.dump_rank_weights,
    )
    set_threads(args.threads)
    from .trainer import train

    result = train(cfg)
    if result.is_main_process:
        print(f"feedback saved to {result.feedback_dir} ({result.steps} steps, final loss {result.last_loss})")
    return 0


def add_precompute_parser(sub) -> None:
    p = sub.add_parser(
        "precompute", help="encode a data set once (VAE latents + caption embeddings) into safetensors shards",
        description="Encode images (with .txt captions, or in class folders) with a pipeline's frozen VAE and "
        "text encoder into safetensors shards for `ilf train --distill fad --data SHARDS` (the fast path for real "
        "runs of the data-driven objectives; the corrector and trajectory record the pipeline's own sampling "
        "instead).",
    )
    p.add_argument("--pipeline", required=True, help="diffusers pipeline folder or hub id whose VAE/text encoder encode")
    p.add_argument("--data", type=Path, required=True, help="image folder with .txt captions, or class folders")
    p.add_argument("--out", type=Path, required=True, help="output folder for the shards")
    p.add_argument("--data-type", default="auto", choices=["auto", "captions", "classes"],
                   help="how to read --data (default: detect)")
    p.add_argument("--resolution", type=COUNT, help="image side (default: the backbone's native size)")
    p.add_argument("--batch-size", type=COUNT, default=32, help="images encoded at once (default: 32)")
    p.add_argument("--shard-size", type=COUNT, default=4096, help="rows per shard file (default: 4096)")
    p.add_argument("--max-sequence-length", type=COUNT, help="caption tokens (default: 120 PixArt-α, 300 PixArt-Σ)")
    p.add_argument("--device", help="cuda, cpu, … (default: cuda when available)")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES, help="encoder dtype (default: fp32)")
    add_threads_arg(p)
    p.set_defaults(func=cmd_precompute)


def cmd_precompute(args) -> int:
    set_threads(args.threads)
    from .precompute import precompute

    meta = precompute(args.pipeline, args.data, args.out, data_type=args.data_type, resolution=args.resolution,
                      batch_size=args.batch_size, shard_size=args.shard_size,
                      max_sequence_length=args.max_sequence_length, device=args.device, dtype=args.dtype)
    print(f"wrote {meta['rows']} rows in {len(meta['shards'])} shards to {args.out}")
    return 0


def register(sub) -> None:
    add_train_parser(sub)
    add_precompute_parser(sub)
