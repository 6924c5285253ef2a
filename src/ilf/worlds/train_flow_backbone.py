"""Train the shapes-flow world's backbone: a tiny `SD3Transformer2DModel` by rectified flow, shipped as fp16.

    python -m ilf.worlds.train_flow_backbone --run-dir runs/shapes-flow          # the shipped run's defaults
    python -m ilf.worlds.train_flow_backbone --run-dir runs/shapes-flow --tune   # pick guidance / shift

Model: 12 joint (MM-DiT) blocks, 3 heads × 32 = inner dim 96, patch 2 on the 8×8×4 latents of the shipped VAE
(4×4 = 16 image tokens) beside 16 MiniLM caption tokens (joint_attention_dim 384) and the pooled MiniLM vector
(pooled_projection_dim 384): see `text_encoder.joint_context`. pos_embed_max_size = 4 covers exactly the 4×4 grid.

Objective, as diffusers trains SD3 (the `FlowMatchEulerDiscreteScheduler` convention): x_t = (1 − σ)·x0 + σ·ε,
the model is called with timestep = σ·1000 and regresses the velocity v = ε − x0 (MSE); sampling integrates
dx/dσ = v from σ = 1 (noise) to 0 with Euler steps. σ is drawn from a logit-normal density, σ = sigmoid(n),
n ~ N(0, 1), the sampler SD3 adopted (Esser et al. 2024, "Scaling Rectified Flow Transformers", §3.1, where
rf/lognorm(0, 1) ranks best): it spends the training signal on mid-range σ, where the velocity is hardest to
predict and the layout of a scene is decided, whereas at the two ends the optimal velocity is close to a mean (of
the data near σ = 1, of the noise near σ = 0). `--density uniform` is the plain alternative. 10% of captions are
dropped to "" (classifier-free guidance); EMA weights ship.

Data, optimizer, EMA, checkpoints and export are those of `train_backbone` (its pool of rendered shapes scenes,
encoded once: 50k by default, half the PixArt world's, ~6 min to build; AdamW with warm-up and cosine decay, peak
1e-3; resumable: rerun the same command). The shipped model: the defaults, 3800 steps of 64, 2736 s of one CPU
thread (3879 s wall on a shared machine) after the pool. Every --save-every steps the EMA is exported with
save_pretrained (fp16) to --out, and its held-out alignment (the shapes evaluator on 20-step samples of held-out
*tuning* prompts, never the test prompts `shapes.eval_prompts()`) is logged to log.jsonl with the training seconds
(wall and CPU) spent so far.
"""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from PIL import Image
from tqdm import tqdm

from ilf.worlds import run_state as ckpt
from ilf.worlds import evaluators, paths, registry, shapes, text_encoder
from ilf.worlds.train_backbone import (
    PREVIEW_PROMPTS,
    common_parser,
    epoch_rows,
    init_like_dit,
    load_or_build_pool,
    pool_batch,
    warmup_cosine,
)

WORLD = "shapes-flow"
NUM_LAYERS = 12
HEADS, HEAD_DIM = 3, 32  # inner dim 96: 4.0M parameters, 8 MB in fp16
PATCH = 2


def make_transformer(latent_size: int = 8) -> SD3Transformer2DModel:
    """A freshly initialised shapes-flow backbone: every joint block starts as the identity (`init_like_dit`)."""
    if latent_size % PATCH:
        raise ValueError(f"latent size {latent_size} is not a multiple of the patch size {PATCH}")
    model = SD3Transformer2DModel(
        sample_size=latent_size, patch_size=PATCH, in_channels=4, out_channels=4, num_layers=NUM_LAYERS,
        attention_head_dim=HEAD_DIM, num_attention_heads=HEADS,
        joint_attention_dim=text_encoder.WIDTH,  # MiniLM token states [B, L, 384] -> context_embedder -> 96
        caption_projection_dim=HEADS * HEAD_DIM,  # the context stream runs at the inner dim, like SD3's
        pooled_projection_dim=text_encoder.WIDTH,  # pooled MiniLM [B, 384] -> added to the timestep embedding
        pos_embed_max_size=latent_size // PATCH,  # the sin-cos table is this grid, cropped to the input's (4×4)
    )
    return init_like_dit(model)


def sample_sigmas(n: int, gen: torch.Generator, density: str = "logit-normal") -> torch.Tensor:
    """[n] noise levels σ in (0, 1): logit-normal (sigmoid of N(0, 1)) or uniform."""
    if density == "uniform":
        return torch.rand(n, generator=gen)
    if density == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=gen))
    raise ValueError(f"density must be 'logit-normal' or 'uniform', got {density!r}")


def flow_batch(pool: dict, rows: torch.Tensor, gen: torch.Generator, drop: float):
    """Clean latents x0 [B, 4, 8, 8] and the SD3 caption inputs for pool rows, `drop` of them captioned ""."""
    b = pool_batch("shapes", pool, rows, gen, drop)  # MiniLM states [B, 16, 384] + mask [B, 16], dropout applied
    cond = b["cond"]
    states, pooled = text_encoder.joint_context(cond["encoder_hidden_states"], cond["encoder_attention_mask"])
    return b["x0"], {"encoder_hidden_states": states, "pooled_projections": pooled}


def flow_loss(model, x0: torch.Tensor, cond: dict, gen: torch.Generator, density: str) -> torch.Tensor:
    """Rectified-flow MSE: predict v = ε − x0 at x_t = (1 − σ)·x0 + σ·ε, called with timestep σ·1000."""
    noise = torch.randn(x0.shape, generator=gen)  # ε [B, 4, 8, 8]
    sigma = sample_sigmas(len(x0), gen, density)  # [B]
    s = sigma.view(-1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise  # FlowMatchEulerDiscreteScheduler.scale_noise
    v = model(xt, timestep=sigma * 1000, **cond).sample  # [B, 4, 8, 8]
    return F.mse_loss(v, noise - x0)


# ------------------------------------------------------------------------------------------------ evaluation


def tuning_prompts(n: int = 64) -> list[str]:
    """Held-out prompts for choosing guidance and shift, disjoint from the test prompts `shapes.eval_prompts()`.

    About 3:7 single:relation; no count prompts, because the test prompts already use all 6 held-out ones.
    """
    test = set(shapes.eval_prompts())
    rest = [s for s in shapes.all_scenes() if s.split == "heldout" and s.caption not in test]
    rng = np.random.default_rng(99)
    out = []
    for kind, k in (("single", round(0.3 * n)), ("relation", n - round(0.3 * n))):
        pool = [s.caption for s in rest if s.kind == kind]
        out += [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]
    return out


@torch.no_grad()
def sample(pipe, prompts: list[str], seed: int = 0, **call) -> list[Image.Image]:
    """Images for string prompts through the stock SD3 pipeline (CALL_KWARGS["shapes-flow"] unless overridden)."""
    kw = {**registry.CALL_KWARGS[WORLD], **call}
    return pipe(**registry.prompt_kwargs(WORLD, prompts), generator=torch.Generator().manual_seed(seed), **kw).images


def alignment(pipe, evaluator, prompts: list[str], seed: int = 0, **call) -> dict[str, float]:
    """Mean shapes-evaluator score of samples against their prompts, and against shuffled prompts (the control)."""
    images = sample(pipe, prompts, seed, **call)
    shuffled = prompts[1:] + prompts[:1]  # each image scored against another prompt (mostly of the same kind)
    return {"align": float(evaluator.score(images, prompts).mean()),
            "align_shuffled": float(evaluator.score(images, shuffled).mean())}


def preview(pipe, out_png: Path, seed: int = 0) -> None:
    """4 samples per preview prompt (rows), 3× nearest-neighbour enlarged."""
    ims = sample(pipe, [p for p in PREVIEW_PROMPTS for _ in range(4)], seed)
    grid = Image.new("RGB", (4 * 32, len(PREVIEW_PROMPTS) * 32))
    for i, im in enumerate(ims):
        grid.paste(im, ((i % 4) * 32, (i // 4) * 32))
    grid.resize((grid.width * 3, grid.height * 3), Image.Resampling.NEAREST).save(out_png)


def tune(pipe, evaluator, steps=(5, 10, 20), guidance=(1.5, 2.0, 3.0, 4.5), shifts=(1.0, 3.0)) -> list[dict]:
    """For each (steps, guidance scale, scheduler shift): alignment of 2 samples per tuning prompt, and the Fréchet
    distance of their evaluator features to 4 real renders per prompt (128 vs 256 images in 128 dimensions: biased,
    so only for comparing settings with each other). Returns the rows, best alignment first."""
    from ilf.eval.metrics.frechet import frechet_distance

    def stats(images) -> tuple[np.ndarray, np.ndarray]:
        f = evaluator.features(images).double().numpy()  # [N, 128]
        return f.mean(0), np.cov(f, rowvar=False)

    prompts = tuning_prompts()
    real = stats([shapes.render(shapes.place(shapes.parse_caption(p), seed)) for seed in range(4) for p in prompts])
    rows = []
    for n, g, s in itertools.product(steps, guidance, shifts):
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=s)
        images = sample(pipe, prompts * 2, 0, num_inference_steps=n, guidance_scale=g)
        rows.append({"steps": n, "guidance_scale": g, "shift": s,
                     "align": round(float(evaluator.score(images, prompts * 2).mean()), 4),
                     "fd": round(frechet_distance(*stats(images), *real), 2)})
        print(rows[-1], flush=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=registry.FLOW_SHIFT)
    return sorted(rows, key=lambda r: (-r["align"], r["fd"]))


# ------------------------------------------------------------------------------------------------ main


def parser():
    p = common_parser(__doc__)
    p.set_defaults(steps=3800, warmup=300, pool_size=50_000, save_every=475, preview_every=950)  # as shipped
    p.add_argument("--density", default="logit-normal", choices=("logit-normal", "uniform"),
                   help="distribution of the training noise level sigma (see the module docstring)")
    p.add_argument("--tune", action="store_true",
                   help="do not train: sweep steps, guidance scale and scheduler shift of the model in --out, log them")
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    run = Path(a.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) if a.out else paths.transformer(WORLD)
    vae = AutoencoderKL.from_pretrained(a.vae).eval()
    evaluator = evaluators.load_evaluator("shapes")
    if a.tune:
        model = SD3Transformer2DModel.from_pretrained(out).float().eval()
        for r in tune(registry.build_pipeline(WORLD, model, vae), evaluator):
            ckpt.log(run, {"tune": r})
        return

    pool = load_or_build_pool("shapes", run, a.pool_size, vae)  # the shapes world's pool: same data, same cache
    n = len(pool["latents"])
    torch.manual_seed(a.seed)
    model = make_transformer(latent_size=pool["latents"].shape[-1]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    ema = ckpt.EMA(model, a.ema)
    start = ckpt.resume(run, model, opt, ema)
    info = ckpt.state_info(run)  # wall and CPU seconds spent training by earlier runs of this run dir
    spent, spent_cpu = info.get("train_sec", 0.0), info.get("train_cpu_sec", 0.0)
    print(f"{WORLD}: {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params, pool {n}, from step {start}")
    pipe = registry.build_pipeline(WORLD, ema.model, vae)  # the EMA model, sampled in place while it trains

    t0, c0, losses = time.time(), time.process_time(), []
    for step in tqdm(range(start, a.steps), initial=start, total=a.steps, desc=WORLD, mininterval=60):
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        x0, cond = flow_batch(pool, epoch_rows(step, a.batch_size, n, a.seed), gen, a.cond_dropout)
        loss = flow_loss(model, x0, cond, gen, a.density)
        gnorm = ckpt.optimizer_step(model, opt, loss, warmup_cosine(step, a.lr, a.warmup, a.steps, a.min_lr_frac),
                                    ema=ema, step=step)
        losses.append(loss.item())
        done = step + 1
        if done % a.save_every == 0 or done == a.steps:
            metrics = alignment(pipe, evaluator, tuning_prompts(32))  # counted in the training time
            sec, cpu = spent + time.time() - t0, spent_cpu + time.process_time() - c0
            ckpt.save(run, done, model, opt, ema, {**vars(a), "train_sec": sec, "train_cpu_sec": cpu})
            copy.deepcopy(ema.model).half().save_pretrained(out, safe_serialization=True)  # keep the EMA fp32
            ckpt.log(run, {"step": done, "loss": sum(losses) / len(losses), "grad_norm": float(gnorm),
                           "lr": opt.param_groups[0]["lr"], "train_sec": round(sec), "train_cpu_sec": round(cpu),
                           **metrics})
            losses = []
        if a.preview_every and (done % a.preview_every == 0 or done == a.steps):
            preview(pipe, run / f"preview_{done:06d}.png")
    print(f"trained to step {a.steps}: {spent + time.time() - t0:.0f} s wall, "
          f"{spent_cpu + time.process_time() - c0:.0f} s CPU of training")


if __name__ == "__main__":
    main()
