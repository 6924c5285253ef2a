"""Training batches for latent diffusion in the worlds: clean latents plus conditioning, from sample indices.

`make_batch(world, indices)` is what a training loop (backbone or ILF feedback) consumes:

    shapes: {"latents": [B, 4, 8, 8], "encoder_hidden_states": [B, L, 384], "encoder_attention_mask": [B, L],
             "captions": list[str]}
    shapes-flow: {"latents": [B, 4, 8, 8], "encoder_hidden_states": [B, L, 384], "pooled_projections": [B, 384],
                  "captions": list[str]}   (the SD3 transformer's keyword arguments; see text_encoder.joint_context)
    digits: {"latents": [B, 4, 8, 8], "class_labels": [B]}

Latents are the VAE posterior means times `vae.config.scaling_factor` (unit variance, what the transformer
denoises), so a batch is a pure function of (world, indices, split, seed).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from diffusers import AutoencoderKL

from ilf.worlds import digits, registry, shapes, text_encoder


@lru_cache(maxsize=1)
def _shared_vae() -> AutoencoderKL:
    return registry.load_vae()


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Images [B, 3, 32, 32] in [-1, 1] -> scaled latents [B, 4, 8, 8] (posterior mean · scaling_factor)."""
    p = next(vae.parameters())
    out = [vae.encode(x.to(p.device, p.dtype)).latent_dist.mode() for x in images.split(chunk)]
    return torch.cat(out) * vae.config.scaling_factor


def make_batch(world: str, indices, split: str = "train", *, seed: int = 0, vae: AutoencoderKL | None = None,
               max_length: int = text_encoder.MAX_LENGTH) -> dict:
    """The batch of samples `indices` of `split`. `vae` defaults to the shipped one (loaded once, CPU, fp32).

    Digit indices wrap around the split (1437 train / 360 held-out images); shapes indices are unlimited.
    No caption/class dropout is applied here: that is the training loop's choice.
    """
    vae = vae if vae is not None else _shared_vae()
    if world in ("shapes", "shapes-flow"):
        images, captions, _ = shapes.batch(indices, split, seed)
        states, mask = text_encoder.encode(captions, max_length)
        if world == "shapes-flow":
            states, pooled = text_encoder.joint_context(states, mask)
            return {"latents": encode_images(vae, images), "encoder_hidden_states": states,
                    "pooled_projections": pooled, "captions": captions}
        return {"latents": encode_images(vae, images), "encoder_hidden_states": states,
                "encoder_attention_mask": mask, "captions": captions}
    if world == "digits":
        images, labels = digits.batch(indices, split)
        return {"latents": encode_images(vae, images), "class_labels": labels}
    raise ValueError(f"world must be 'shapes', 'shapes-flow' or 'digits', got {world!r}")
