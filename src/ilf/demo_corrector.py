"""`ilf demo`'s default mode: train (or take the shipped) corrector of diffusers' TaylorSeer on an embedded world,
and the rows it is measured against — plain 20 / 10 / plain at its budget, the paper cache, TaylorSeer at the
same schedule, and the paper's ILF (the world's shipped paper-mode feedback)."""

from __future__ import annotations

import json
import time
from pathlib import Path

# The shipped recipe (bench/corrector_study.py's training settings): TaylorSeer's standard schedule (a full step
# every 2nd after 3 warm-up steps, 11 of 20) with the learned per-step forecast; ~1 min of one CPU thread. Whether
# its weights are per channel is the world's shipped choice (made on the study's tune seeds), read from the
# shipped corrector.
RECIPE = dict(interval=2, warmup=3, steps=600, quick_steps=6, lr=3e-3, batch=32, rollout_size=128)
CORRECTOR = "corrector"  # the display name of the demo's corrector row (not ILF: no inner loop runs)


def train_corrector(plan) -> tuple[Path, dict]:
    """Train the corrector for 20 steps of the world's scheduler (`ilf train --distill corrector`)."""
    from .train.config import TrainConfig
    from .train.trainer import train

    from .feedback import read_feedback_config
    from .worlds import paths

    shipped = read_feedback_config(paths.feedback(plan.world))["config"]
    run = plan.out / "feedback-run"
    cfg = TrainConfig(output_dir=run, world=plan.world, distill="corrector", lr=plan.lr, batch_size=plan.batch,
                      max_steps=plan.train_steps, checkpoint_every=0, log_every=max(1, plan.train_steps // 20),
                      seed=plan.seed, cache_interval=plan.cache_interval, cache_warmup=plan.cache_warmup,
                      mix_per_channel=bool(shipped.get("mix_per_channel")), rollout_every=100,
                      rollout_size=RECIPE["rollout_size"] if plan.train_steps > 20 else 8)
    start = time.perf_counter()
    result = train(cfg)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss_distill" in r]
    info = {"steps": plan.train_steps, "seconds": time.perf_counter() - start, "lr": plan.lr,
            "batch": plan.batch, "first": losses[0], "last": losses[-1]}
    return result.feedback_dir, info


CORRECTOR_FAST = "corrector fast"  # the shipped fast tier's row (<= 85 block forwards per image)
TAYLORSEER_FAST = "TaylorSeer fast (diffusers)"  # its cache rival
# diffusers' TaylorSeer at its best setting within the fast tier's 85 block forwards, per world: chosen on tune seeds
# by bench/fast_tier_study.py (docs/fast-tier.md) over step counts, warm-ups, cool-downs and orders 1-2.
FAST_TAYLORSEER = {"digits": "taylorseer:12,interval=2,warmup=1,cooldown=11",
                   "shapes": "taylorseer:11,interval=2,warmup=2,cooldown=10",
                   "shapes-flow": "taylorseer:12,interval=2,warmup=1"}


def corrector_methods(num_blocks: int, feedback: Path, world: str | None = None) -> list[str]:
    """The demo's rows in corrector mode; the paper-mode ILF row takes the bench's --feedback (the world's
    shipped paper-mode feedback, at its recorded schedule). With `world`, also the world's shipped fast tier,
    the plain steps at its budget and TaylorSeer tuned within it."""
    from .bench.family_corrector import CorrectorFamily
    from .bench.methods import parse_method
    from .bench.paired import fair_plain_steps

    row = f"corrector:20,feedback={feedback},label={CORRECTOR}"
    blocks = CorrectorFamily().predicted_block_forwards(parse_method(row), num_blocks)
    c = round(2 * num_blocks / 3)
    plain = {20, 10, fair_plain_steps(num_blocks, blocks)}
    fast = []
    if world in FAST_TAYLORSEER:
        from .feedback import read_feedback_config
        from .worlds import paths

        folder = paths.feedback(world, tier="fast")
        steps = read_feedback_config(folder)["config"]["num_inference_steps"]
        fast_row = f"corrector:{steps},feedback={folder},label={CORRECTOR_FAST}"
        plain.add(fair_plain_steps(num_blocks, CorrectorFamily().predicted_block_forwards(parse_method(fast_row),
                                                                                           num_blocks)))
        fast = [f"{FAST_TAYLORSEER[world]},label={TAYLORSEER_FAST}", fast_row]
    return [f"plain:{n}" for n in sorted(plain, reverse=True)] + [
        f"paper-cache:20,location=inner,blocks={c},refresh=2,label=paper cache ~1.5x",
        f"paper-cache:20,location=inner,blocks={c},refresh=3,label=paper cache ~1.8x",
        f"{same_schedule_taylorseer(CorrectorFamily().config_of(parse_method(row)))},label=TaylorSeer (diffusers)",
        "ilf:10,label=ILF paper mode",
        row,
    ] + fast


def same_schedule_taylorseer(cfg) -> str:
    """diffusers' TaylorSeer on the corrector's own 20-step schedule (its step mask, where it has one, as
    interval / warm-up / cool-down; else the untrained corrector on that mask, which is TaylorSeer's forecast)."""
    from .corrector_config import taylor_schedule_of

    found = taylor_schedule_of(cfg.compute_steps(20), 20)
    if found is None:
        return f"corrector:20,feedback=untrained,full=[{','.join(map(str, sorted(cfg.compute_steps(20))))}]"
    interval, warmup, cooldown = found
    return f"taylorseer:20,interval={interval},warmup={warmup}" + ("" if cooldown is None else f",cooldown={cooldown}")


def describe(train_info: dict | None, feedback: Path | str) -> str:
    """The report's line on where the corrector came from (`feedback` as the report should show it: portable)."""
    if not train_info:
        return f"Corrector: the shipped one ({feedback}), at its recorded schedule."
    f, l_ = train_info["first"], train_info["last"]
    return (f"Corrector: trained here (`--distill corrector`: TaylorSeer's schedule, the learned per-step forecast) "
            f"for 20 steps — {train_info['steps']} iterations × batch {train_info['batch']}, lr {train_info['lr']:g}, "
            f"{train_info['seconds']:.0f} s; next-state loss {f['loss_distill']:.3g} (step {f['step']}) → "
            f"{l_['loss_distill']:.3g} (step {l_['step']}).")
