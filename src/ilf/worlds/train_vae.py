"""Train the worlds' shared VAE: a three-level `AutoencoderKL` (32×32×3 image <-> 8×8×4 latent).

    python -m ilf.worlds.train_vae --run-dir runs/vae --steps 4000

Batches mix shapes renderings (3/4) and digits (1/4). Loss: pixel MSE + kl_weight · KL (both means). At the end
the scaling factor is set to 1/std of sampled latents over training images (so scaled latents have unit variance,
as the pipelines assume), the EMA weights are saved in fp16 with `save_pretrained`, and held-out PSNR is printed.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from diffusers import AutoencoderKL
from tqdm import tqdm

from ilf.worlds import run_state as ckpt
from ilf.worlds import digits, paths, shapes


def make_vae(levels: int = 3) -> AutoencoderKL:
    """`levels` resolution levels (latent scale 2**(levels-1)), one resnet per level, no mid-block attention.

    3 levels (32×32×3 -> 8×8×4, 0.92M parameters) is what we ship: a compressive latent lets a tiny diffusion
    transformer learn far faster than a near-pixel 16×16×4 one (the LDM paper's f=4 vs f=2 finding, seen here too).
    """
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=shapes.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(32, 64, 64)[:levels], layers_per_block=1, norm_num_groups=16,
        mid_block_add_attention=False,
    )


def images_for_step(step: int, batch_size: int, split: str = "train") -> torch.Tensor:
    """[B, 3, 32, 32] in [-1, 1]: a deterministic function of the step, so a resumed run sees the same data."""
    n_dig = batch_size // 4
    n_sh = batch_size - n_dig
    x_sh, _, _ = shapes.batch(range(step * n_sh, (step + 1) * n_sh), split)
    x_dg, _ = digits.batch(range(step * n_dig, (step + 1) * n_dig), split)
    return torch.cat([x_sh, x_dg])


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR (dB) of images in [-1, 1] (peak-to-peak 2)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(4.0 / mse)).mean())


@torch.no_grad()
def heldout_psnr(vae: AutoencoderKL, n_shapes: int = 256) -> dict[str, float]:
    x_sh, _, _ = shapes.batch(range(n_shapes), "heldout")
    x_dg, _ = digits.batch(range(digits.size("heldout")), "heldout")
    out = {}
    for name, x in (("shapes", x_sh), ("digits", x_dg)):
        dtype = next(vae.parameters()).dtype
        rec = vae.decode(vae.encode(x.to(dtype)).latent_dist.mode()).sample.float()
        out[name] = psnr(rec.clamp(-1, 1), x)
    return out


@torch.no_grad()
def latent_std(vae: AutoencoderKL, batches: int = 16, batch_size: int = 128) -> float:
    zs = [vae.encode(images_for_step(10_000 + i, batch_size)).latent_dist.sample() for i in range(batches)]
    return float(torch.cat(zs).std())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="checkpoints and log.jsonl go here; an existing run resumes")
    p.add_argument("--out", default=str(paths.VAE), help="save_pretrained folder for the final fp16 VAE")
    p.add_argument("--levels", type=int, default=3, choices=(2, 3), help="resolution levels: latent 16×16 (2) or 8×8 (3)")
    p.add_argument("--steps", type=int, default=4000, help="optimizer steps in total (a resumed run continues)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (3/4 shapes, 1/4 digits)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine decay to 5%%)")
    p.add_argument("--kl-weight", type=float, default=1e-5, help="weight of the mean KL term against pixel MSE")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and posterior noise")
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    vae = make_vae(a.levels).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, weight_decay=0.0)
    ema = ckpt.EMA(vae, a.ema)
    start = ckpt.resume(a.run_dir, vae, opt, ema)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 100)
        return a.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / a.steps, 1.0))))

    t0 = time.time()
    for step in tqdm(range(start, a.steps), initial=start, total=a.steps, desc="vae", mininterval=30):
        x = images_for_step(step, a.batch_size)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = (rec - x).pow(2).mean()
        kl = post.kl().mean() / post.mean[0].numel()  # per latent element
        loss = mse + a.kl_weight * kl
        ckpt.optimizer_step(vae, opt, loss, lr_at(step), ema=ema, step=step)
        if (step + 1) % a.save_every == 0 or step + 1 == a.steps:
            ckpt.save(a.run_dir, step + 1, vae, opt, ema, vars(a))
            ckpt.log(a.run_dir, {"step": step + 1, "mse": mse.item(), "kl": kl.item(), "lr": lr_at(step),
                                 "psnr_heldout": heldout_psnr(ema.model), "sec": round(time.time() - t0)})

    final = ema.model.eval()
    std = latent_std(final)
    final.register_to_config(scaling_factor=1.0 / std)
    final.to(torch.float16).save_pretrained(a.out, safe_serialization=True)
    final = AutoencoderKL.from_pretrained(a.out, torch_dtype=torch.float32)
    ckpt.log(a.run_dir, {"saved": a.out, "latent_std": std, "scaling_factor": 1.0 / std,
                         "psnr_heldout_fp16": heldout_psnr(final)})


if __name__ == "__main__":
    main()
