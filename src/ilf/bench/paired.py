"""Paired, per-sample comparisons on an embedded world: the measurement behind the quality-per-block study
(`bench/quality_per_block.py`) and the demo's verdict.

Every method generates the same items — (condition, seed) pairs: the ten digit classes or held-out shapes
prompts, each with a list of seeds — so two methods' images of one item share their initial noise. Per item
we keep PSNR/SSIM to the reference method's image (plain:20) and the world evaluator's score (digit accuracy,
prompt alignment). Two methods are compared by the paired bootstrap of the per-item difference (95% CI) and
by seed-level win counts (per seed, the mean difference over its conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Method:
    """plain `steps`, or ILF with a trained `feedback` folder at `steps` (plan / t_post default to the file's)."""

    name: str
    steps: int
    feedback: str | None = None
    plan: str | None = None
    t_post: str | None = None


@dataclass
class Items:
    conditions: list  # class ids (digits) or prompts (shapes), one per item
    seeds: list[int]  # one per item

    def __len__(self) -> int:
        return len(self.seeds)


def world_items(world: str, seeds, num_prompts: int = 16) -> Items:
    """Every condition × every seed: digits' ten classes, or `num_prompts` held-out shapes prompts (shapes,
    shapes-flow)."""
    if world == "digits":
        conds = list(range(10))
    else:
        from ..worlds import shapes

        conds = shapes.eval_prompts(num_prompts)
    return Items([c for s in seeds for c in conds], [int(s) for s in seeds for _ in conds])


@dataclass
class Generated:
    images: torch.Tensor  # [n, 3, H, W] in [0, 1]
    block_forwards: int  # per image (one pipeline call's count: a batch shares its forwards)


@torch.no_grad()
def generate(pipe, world: str, method: Method, items: Items, batch_size: int = 50) -> Generated:
    """The method's images of `items` through the world's ordinary pipeline; ILF is detached afterwards."""
    from ..runtime.counting import count_block_forwards
    from ..pipeline import apply_ilf, remove_ilf
    from ..worlds.paths import FLOW_WORLDS
    from ..worlds.registry import CALL_KWARGS, prompt_kwargs

    call = dict(CALL_KWARGS[world], num_inference_steps=method.steps, output_type="np")
    if method.feedback:
        overrides = {k: v for k, v in (("feedback_steps", method.plan), ("t_post", method.t_post)) if v}
        apply_ilf(pipe, method.feedback, **overrides)
    out, blocks = [], None
    try:
        for lo in range(0, len(items), batch_size):
            conds = items.conditions[lo:lo + batch_size]
            gens = [torch.Generator().manual_seed(s) for s in items.seeds[lo:lo + batch_size]]
            with count_block_forwards(pipe) as counter:
                if world == "digits":
                    images = pipe(class_labels=conds, generator=gens, **call).images
                elif world in FLOW_WORLDS:  # an encoder-less pipeline: the prompts come in as embeddings
                    images = pipe(**prompt_kwargs(world, conds), generator=gens, **call).images
                else:
                    images = pipe(conds, generator=gens, **call).images
            blocks = counter.total if blocks is None else blocks
            out.append(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float())
    finally:
        if method.feedback:
            remove_ilf(pipe)
    return Generated(torch.cat(out), int(blocks))


def per_item_scores(world: str, images: torch.Tensor, items: Items, reference: torch.Tensor | None,
                    evaluator) -> dict[str, np.ndarray]:
    """{"psnr", "ssim"} to the reference images (absent for the reference itself) and the world's score."""
    from ..eval.metrics import psnr, ssim

    scores = {}
    if reference is not None:
        scores["psnr"] = psnr(images, reference).numpy().astype(np.float64)
        scores["ssim"] = ssim(images, reference).numpy().astype(np.float64)
    key = "accuracy" if world == "digits" else "alignment"
    scores[key] = evaluator.score(images, items.conditions).numpy().astype(np.float64)
    return scores


@dataclass
class Comparison:
    metric: str
    mean_a: float
    mean_b: float
    diff: float  # mean(a − b)
    ci: tuple[float, float]  # paired-bootstrap 95% interval of the mean difference
    seed_wins: int  # seeds where a's mean beats b's
    seed_losses: int
    num_seeds: int

    def to_dict(self) -> dict:
        return {"metric": self.metric, "mean_a": self.mean_a, "mean_b": self.mean_b, "diff": self.diff,
                "ci95": list(self.ci), "seed_wins": self.seed_wins, "seed_losses": self.seed_losses,
                "num_seeds": self.num_seeds}


def compare(a: np.ndarray, b: np.ndarray, seeds, metric: str, *, n_boot: int = 2000, rng_seed: int = 0) -> Comparison:
    """Paired comparison of per-item scores `a` and `b` (same items, same order)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(rng_seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    seeds = np.asarray(seeds)
    per_seed = np.array([d[seeds == s].mean() for s in np.unique(seeds)])
    return Comparison(metric, float(np.mean(a)), float(np.mean(b)), float(d.mean()), (float(lo), float(hi)),
                      int((per_seed > 0).sum()), int((per_seed < 0).sum()), len(per_seed))


def fair_plain_steps(num_blocks: int, blocks: int) -> int:
    """The smallest plain step count whose block forwards (num_blocks per step) are at least `blocks`."""
    return -(-int(blocks) // num_blocks)
