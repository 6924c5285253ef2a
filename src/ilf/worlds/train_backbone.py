"""Train a world's tiny diffusion backbone (12 blocks) on CPU and ship it as fp16 safetensors.

    python -m ilf.worlds.train_backbone --world shapes --run-dir runs/shapes --steps 12000
    python -m ilf.worlds.train_backbone --world digits --run-dir runs/digits --steps 5000

shapes: `PixArtTransformer2DModel` (ada_norm_single, cross-attention to MiniLM token states, caption_channels 384).
digits: `DiTTransformer2DModel` (ada_norm_zero, num_embeds_ada_norm=1000 because `DiTPipeline` hard-codes the null
class id 1000: the label table has 1001 rows, 0–9 used, 1000 = null).

Both: 8×8×4 VAE latents, patch 2 (4×4 = 16 tokens of 16 latent values), inner dim 128, standard ε-prediction MSE on `DDPMScheduler()`'s
default linear 1000-step schedule, uniform timesteps, 10% condition dropout (caption -> "" / label -> 1000) for
classifier-free guidance, AdamW with warm-up and cosine decay, EMA weights shipped.

Training data is a fixed pool encoded once with the shipped VAE (cached in the run dir as pool.safetensors):
shapes renderings with their caption ids + a table of MiniLM states per unique caption; digits: every training
digit at 9 shifts of {-2, 0, 2} px. Every --save-every steps the run is checkpointed (resumable: rerun the same
command) and the EMA weights are exported with save_pretrained (fp16) to --out, so a run can be sampled while
it trains; --preview-every writes a grid of 20-step DPM-Solver++ samples through the real pipeline.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiTTransformer2DModel,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
)
from diffusers.models.embeddings import LabelEmbedding, TimestepEmbedding
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ilf.worlds import run_state as ckpt
from ilf.worlds import digits, paths, registry, shapes, text_encoder
from ilf.worlds.batches import encode_images

NUM_LAYERS = 12
HEADS, HEAD_DIM = 4, 32  # inner dim 128


def make_transformer(world: str, latent_size: int = 8):
    """A freshly initialised 12-block backbone of the world's class (see init_like_dit), 4×4 tokens."""
    common = dict(num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=4, out_channels=4,
                  num_layers=NUM_LAYERS, sample_size=latent_size, patch_size=latent_size // 4,
                  num_embeds_ada_norm=1000)
    if world == "shapes":
        model = PixArtTransformer2DModel(**common, norm_type="ada_norm_single", caption_channels=text_encoder.WIDTH,
                                         cross_attention_dim=HEADS * HEAD_DIM, use_additional_conditions=False)
    elif world == "digits":
        model = DiTTransformer2DModel(**common, norm_type="ada_norm_zero")
    else:
        raise ValueError(f"unknown world {world!r}")
    return init_like_dit(model)


@torch.no_grad()
def init_like_dit(model):
    """The DiT / PixArt papers' initialisation; diffusers constructs with PyTorch defaults (it expects checkpoints).

    Xavier-uniform linears and patch projection, N(0, 0.02) timestep/label/caption embeddings, and zeros where a
    block or the output should start silent: the adaLN-Zero modulation of each DiT block, the cross-attention
    output of each PixArt block, the final projection(s). Every block then starts as the identity.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    w = model.pos_embed.proj.weight  # conv patchify = a linear map of each flattened patch
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.pos_embed.proj.bias)
    for m in model.modules():
        if isinstance(m, TimestepEmbedding):
            nn.init.normal_(m.linear_1.weight, std=0.02)
            nn.init.normal_(m.linear_2.weight, std=0.02)
        if isinstance(m, LabelEmbedding):
            nn.init.normal_(m.embedding_table.weight, std=0.02)
    if isinstance(model, DiTTransformer2DModel):
        silent = [b.norm1.linear for b in model.transformer_blocks] + [model.proj_out_1, model.proj_out_2]
    elif isinstance(model, SD3Transformer2DModel):  # both streams' adaLN-Zero, the final adaLN and projection
        silent = [n.linear for b in model.transformer_blocks for n in (b.norm1, b.norm1_context)]
        silent += [model.norm_out.linear, model.proj_out]
        nn.init.normal_(model.time_text_embed.text_embedder.linear_1.weight, std=0.02)  # pooled text -> temb
        nn.init.normal_(model.time_text_embed.text_embedder.linear_2.weight, std=0.02)
    else:
        silent = [b.attn2.to_out[0] for b in model.transformer_blocks] + [model.proj_out]
        nn.init.normal_(model.adaln_single.linear.weight, std=0.02)
        nn.init.normal_(model.caption_projection.linear_1.weight, std=0.02)
        nn.init.normal_(model.caption_projection.linear_2.weight, std=0.02)
    for lin in silent:
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    return model


# ------------------------------------------------------------------------------------------------ data pools


def _shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate [B, 3, H, W] images by (dx, dy) px, filling with black (-1)."""
    padded = F.pad(images, (2, 2, 2, 2), value=-1.0)
    h, w = images.shape[-2:]
    return padded[..., 2 - dy: 2 - dy + h, 2 - dx: 2 - dx + w]


def build_pool(world: str, size: int, vae) -> dict[str, torch.Tensor]:
    """Encode the training pool once. shapes: latents [N,4,8,8], caption_ids [N], states [U,L,384], mask [U,L]."""
    if world == "digits":
        x, y = digits.batch(range(digits.size("train")), "train")
        xs = torch.cat([_shift(x, dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2)])  # [9·1437, 3, 32, 32]
        return {"latents": encode_images(vae, xs).half(), "labels": y.repeat(9)}
    latents, caption_ids, table = [], [], {}
    for start in tqdm(range(0, size, 1000), desc="render+encode pool"):
        x, caps, _ = shapes.batch(range(start, min(start + 1000, size)), "train")
        latents.append(encode_images(vae, x).half())
        caption_ids += [table.setdefault(c, len(table)) for c in caps]
    captions = list(table)
    states, masks = zip(*[text_encoder.encode(captions[i:i + 512]) for i in tqdm(range(0, len(captions), 512),
                                                                                 desc="encode captions")])
    null_states, null_mask = text_encoder.encode([""])  # the pipeline's negative prompt; used for dropout
    return {"latents": torch.cat(latents), "caption_ids": torch.tensor(caption_ids),
            "states": torch.cat(states).half(), "mask": torch.cat(masks),
            "null_states": null_states.half(), "null_mask": null_mask}


def load_or_build_pool(world: str, run_dir: Path, size: int, vae) -> dict[str, torch.Tensor]:
    f = run_dir / "pool.safetensors"
    if f.exists():
        return load_file(str(f))
    pool = build_pool(world, size, vae)
    save_file({k: v.contiguous() for k, v in pool.items()}, str(f))
    return pool


def pool_batch(world: str, pool: dict, rows: torch.Tensor, gen: torch.Generator, drop: float) -> dict:
    """Model inputs for pool rows, with condition dropout (caption -> "" / label -> null id 1000)."""
    x0 = pool["latents"][rows].float()
    dropped = torch.rand(len(rows), generator=gen) < drop
    if world == "digits":
        labels = torch.where(dropped, 1000, pool["labels"][rows])
        return {"x0": x0, "cond": {"class_labels": labels}}
    ids = pool["caption_ids"][rows]
    states = torch.where(dropped[:, None, None], pool["null_states"], pool["states"][ids]).float()
    mask = torch.where(dropped[:, None], pool["null_mask"], pool["mask"][ids])
    return {"x0": x0, "cond": {"encoder_hidden_states": states, "encoder_attention_mask": mask,
                               "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}}


# ------------------------------------------------------------------------------------------------ previews


PREVIEW_PROMPTS = [
    "a large red circle in the center", "a small blue square in the top left", "two large green triangles",
    "three small yellow crosses", "a small red circle above a large blue square",
    "a large white triangle to the left of a small purple circle", "a large purple square at the bottom",
    "a small green cross to the right of a large yellow circle",
]


@torch.no_grad()
def preview(world: str, model, vae, out_png: Path, seed: int = 0) -> None:
    """4 samples per condition (rows) through the real pipeline with 20 DPM-Solver++ steps."""
    pipe = registry.build_pipeline(world, model.eval(), vae)
    g = torch.Generator().manual_seed(seed)
    if world == "shapes":
        ims = pipe(PREVIEW_PROMPTS, num_images_per_prompt=4, generator=g, **registry.CALL_KWARGS["shapes"]).images
        rows = len(PREVIEW_PROMPTS)
    else:
        ims = pipe(class_labels=[c for c in range(10) for _ in range(4)], generator=g,
                   **registry.CALL_KWARGS["digits"]).images
        rows = 10
    grid = Image.new("RGB", (4 * 32, rows * 32))
    for i, im in enumerate(ims):
        grid.paste(im, ((i % 4) * 32, (i // 4) * 32))
    grid.resize((grid.width * 3, grid.height * 3), Image.Resampling.NEAREST).save(out_png)


# ------------------------------------------------------------------------------------------------ main


def common_parser(description: str) -> argparse.ArgumentParser:
    """The flags every backbone trainer shares (this one and `train_flow_backbone`): run dir, export, optimizer,
    schedule, EMA, data pool, checkpoints, threads, seed."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="checkpoints, pool cache, log.jsonl, previews; resumes if present")
    p.add_argument("--out", default=None, help="save_pretrained folder (default: the package's assets/<world>/transformer)")
    p.add_argument("--vae", default=str(paths.VAE), help="save_pretrained folder of the VAE that makes the latents")
    p.add_argument("--steps", type=int, default=12000, help="optimizer steps in total (a resumed run continues)")
    p.add_argument("--batch-size", type=int, default=64, help="latents per step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine decay ends at this fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    p.add_argument("--cond-dropout", type=float, default=0.1, help="share of samples trained unconditionally (CFG)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights")
    p.add_argument("--pool-size", type=int, default=100_000, help="shapes: rendered training images encoded once")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint + export every N steps")
    p.add_argument("--preview-every", type=int, default=2000, help="sample grid every N steps (0: never)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    p.add_argument("--seed", type=int, default=0, help="seed of init weights, data order, noise and dropout")
    return p


def parser() -> argparse.ArgumentParser:
    p = common_parser(__doc__)
    p.add_argument("--world", required=True, choices=("shapes", "digits"), help="which backbone to train")
    return p


def warmup_cosine(step: int, peak: float, warmup: int, total: int, min_frac: float) -> float:
    """Learning rate at `step`: linear warm-up over `warmup` steps, then cosine decay to `min_frac · peak`."""
    warm = min(1.0, (step + 1) / warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    return peak * warm * (min_frac + (1 - min_frac) * cos)


def epoch_rows(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Pool rows of batch `step`: a fixed permutation of the n rows per epoch (a resumed run sees the same data)."""
    epoch, pos = divmod(step * batch_size, n)
    perm = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
    return perm[torch.arange(pos, pos + batch_size) % n]


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)

    torch.set_num_threads(a.threads)
    run = Path(a.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else paths.transformer(a.world)
    vae = AutoencoderKL.from_pretrained(a.vae).eval()
    pool = load_or_build_pool(a.world, run, a.pool_size, vae)
    n = len(pool["latents"])

    torch.manual_seed(a.seed)
    model = make_transformer(a.world, latent_size=pool["latents"].shape[-1]).train()
    for m in model.modules():  # DiT's label tables drop labels themselves, independently in each block; we drop
        if isinstance(m, LabelEmbedding):  # once per sample in pool_batch instead (the table keeps its null row)
            m.dropout_prob = 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    ema = ckpt.EMA(model, a.ema)
    start = ckpt.resume(run, model, opt, ema)
    sched = DDPMScheduler()  # linear betas 1e-4..2e-2, 1000 steps, ε-prediction: what DiT/PixArt train with
    print(f"{a.world}: {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params, pool {n}, from step {start}")

    def lr_at(step: int) -> float:
        return warmup_cosine(step, a.lr, a.warmup, a.steps, a.min_lr_frac)

    t0, losses = time.time(), []
    for step in tqdm(range(start, a.steps), initial=start, total=a.steps, desc=a.world, mininterval=60):
        rows = epoch_rows(step, a.batch_size, n, a.seed)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        b = pool_batch(a.world, pool, rows, gen, a.cond_dropout)
        x0 = b["x0"]  # [B, 4, 8, 8]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
        xt = sched.add_noise(x0, noise, t)
        pred = model(xt, timestep=t, **b["cond"]).sample  # [B, 4, 8, 8] ε-prediction
        loss = F.mse_loss(pred, noise)
        gnorm = ckpt.optimizer_step(model, opt, loss, lr_at(step), ema=ema, step=step)
        losses.append(loss.item())
        done = step + 1
        if done % a.save_every == 0 or done == a.steps:
            ckpt.save(run, done, model, opt, ema, {k: v for k, v in vars(a).items()})
            copy.deepcopy(ema.model).half().save_pretrained(out, safe_serialization=True)  # keep the EMA fp32
            ckpt.log(run, {"step": done, "loss": float(np.mean(losses)), "grad_norm": float(gnorm),
                           "lr": lr_at(step), "sec": round(time.time() - t0)})
            losses = []
        if a.preview_every and (done % a.preview_every == 0 or done == a.steps):
            preview(a.world, ema.model, vae, run / f"preview_{done:06d}.png")


if __name__ == "__main__":
    main()
