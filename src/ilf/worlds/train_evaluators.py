"""Train the worlds' evaluators (shapes attribute reader, digits classifier) and ship them as fp16 safetensors.

    python -m ilf.worlds.train_evaluators --world shapes --run-dir runs/eval_shapes
    python -m ilf.worlds.train_evaluators --world digits --run-dir runs/eval_digits

The shapes reader trains on renderings of *both* splits drawn with seed 1 (an evaluator may know every composition;
it is the backbone that must not), and is tested on the seed-0 renderings that backbones and metrics use.
The digits classifier trains on the 1437 training digits with random affine jitter and is tested on the 360
held-out digits. Both see blur, noise and brightness jitter, so they also read imperfect generated images.
Test accuracies (clean and through a VAE round trip) are printed and stored in the evaluator's json.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ilf.worlds import run_state as ckpt
from ilf.worlds import digits, paths, registry, shapes
from ilf.worlds.evaluators import IGNORE, DigitsEvaluator, ShapesEvaluator, ShapesTargets, shapes_head_accuracy

TRAIN_SEED = 1  # renderings the reader learns from; seed 0 (the default everywhere else) is for testing


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur, 5×5 kernel; x [B, 3, H, W], sigma [B]."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(-1, keepdim=True)  # [B, 5]
    b, c, h, w = x.shape
    y = x.reshape(1, b * c, h, w)
    kx = k.repeat_interleave(c, 0)[:, None, None, :]  # [B·3, 1, 1, 5]
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), kx, groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), kx.transpose(-1, -2), groups=b * c)
    return y.reshape(b, c, h, w)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Generator-like imperfections on [0, 1] images: blur (half the images), noise, brightness jitter."""
    b = len(x)
    sigma = 0.3 + 0.6 * torch.rand(b, generator=gen)
    blurred = _blur(x, sigma)
    x = torch.where((torch.rand(b, generator=gen) < 0.5)[:, None, None, None], blurred, x)
    x = x * (0.9 + 0.2 * torch.rand(b, 1, 1, 1, generator=gen))
    x = x + torch.randn(x.shape, generator=gen) * 0.04 * torch.rand(b, 1, 1, 1, generator=gen)
    return x.clamp(0, 1)


def affine_jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Digits only: shift ±2 px, rotate ±10°, scale 0.9–1.1; black fill. x [B, 3, 32, 32] in [0, 1]."""
    b = len(x)
    ang = (torch.rand(b, generator=gen) - 0.5) * math.radians(20)
    sc = 0.9 + 0.2 * torch.rand(b, generator=gen)
    sh = (torch.rand(b, 2, generator=gen) - 0.5) * (4 / 16)  # ±2 px in normalised coordinates
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, sh[:, 0]], 1), torch.stack([sin, cos, sh[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@torch.no_grad()
def vae_roundtrip(x01: torch.Tensor) -> torch.Tensor:
    vae = registry.load_vae()
    out = [vae.decode(vae.encode(c * 2 - 1).latent_dist.mode()).sample for c in x01.split(256)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def shapes_pool(n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n renderings, 80% training-split and 20% held-out-split compositions, seed TRAIN_SEED: uint8 + targets."""
    n_held = n // 5
    xs, scenes = [], []
    for split, count in (("train", n - n_held), ("heldout", n_held)):
        for start in tqdm(range(0, count, 2000), desc=f"render {split}"):
            x, _, sc = shapes.batch(range(start, min(start + 2000, count)), split, TRAIN_SEED)
            xs.append(((x + 1) * 127.5).round().to(torch.uint8))
            scenes += sc
    return torch.cat(xs), ShapesTargets.from_scenes(scenes).labels


def evaluate(world: str, ev) -> dict:
    """Accuracy on seed-0 test images: clean and after a VAE round trip (what generated images go through)."""
    ev.eval()
    out = {}
    if world == "shapes":
        for split in ("heldout", "train"):
            x, _, scenes = shapes.batch(range(1000), split)
            x01 = (x + 1) / 2
            out[f"{split}_clean"] = shapes_head_accuracy(ev, x01, scenes)
            out[f"{split}_vae"] = shapes_head_accuracy(ev, vae_roundtrip(x01), scenes)
            out[f"{split}_alignment_clean"] = float(ev.score(x01, [s.caption for s in scenes]).mean())
    else:
        x, y = digits.batch(range(digits.size("heldout")), "heldout")
        x01 = (x + 1) / 2
        out["heldout_clean"] = float(ev.score(x01, y).mean())
        out["heldout_vae"] = float(ev.score(vae_roundtrip(x01), y).mean())
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", required=True, choices=("shapes", "digits"), help="which evaluator to train")
    p.add_argument("--run-dir", required=True, help="checkpoints and log.jsonl; an existing run resumes")
    p.add_argument("--out", default=str(paths.EVALUATORS), help="folder for <world>.safetensors + <world>.json")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (cosine decay to 0)")
    p.add_argument("--pool-size", type=int, default=60_000, help="shapes: rendered training images")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0, help="seed of init weights, data order and augmentation")
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ev = (ShapesEvaluator() if a.world == "shapes" else DigitsEvaluator()).train()
    opt = torch.optim.AdamW(ev.parameters(), lr=a.lr, weight_decay=1e-4)
    start = ckpt.resume(a.run_dir, ev, opt)
    if a.world == "shapes":
        pool_x, pool_y = shapes_pool(a.pool_size)
    else:
        x, y = digits.batch(range(digits.size("train")), "train")
        pool_x, pool_y = ((x + 1) * 127.5).round().to(torch.uint8), {"digit": y}
    n = len(pool_x)

    t0 = time.time()
    for step in tqdm(range(start, a.steps), initial=start, total=a.steps, desc=f"eval-{a.world}", mininterval=60):
        epoch, pos = divmod(step * a.batch_size, n)
        perm = torch.from_numpy(np.random.default_rng([a.seed, epoch]).permutation(n))
        rows = perm[torch.arange(pos, pos + a.batch_size) % n]
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        x = pool_x[rows].float() / 255.0  # [B, 3, 32, 32] in [0, 1]
        if a.world == "digits":
            x = affine_jitter(x, gen)
        x = degrade(x, gen)
        logits = ev.logits(x)
        loss = sum(F.cross_entropy(logits[k], pool_y[k][rows], ignore_index=IGNORE) for k in logits)
        lr = a.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        ckpt.optimizer_step(ev, opt, loss, lr, clip=None)
        if (step + 1) % a.save_every == 0 or step + 1 == a.steps:
            ckpt.save(a.run_dir, step + 1, ev, opt, info=vars(a))
            ckpt.log(a.run_dir, {"step": step + 1, "loss": loss.item(), "sec": round(time.time() - t0)})

    metrics = evaluate(a.world, ev)
    ev.save(a.out, metrics)
    ckpt.log(a.run_dir, {"saved": a.out, "metrics": metrics, "sec": round(time.time() - t0)})


if __name__ == "__main__":
    main()
