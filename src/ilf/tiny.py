"""Tiny stand-in pipelines (PixArt-α/Σ, DiT): real diffusers classes at tiny configs with random weights, and
the real-size architectures with random weights.

Used by `ilf bench --tiny` / `ilf.eval.sources` (smoke runs of every code path), the tests and the benchmarks:
they build real diffusers objects (`PixArtAlphaPipeline`, `PixArtSigmaPipeline`,
`DiTPipeline`, their transformers, a `T5EncoderModel`, an `AutoencoderKL`) offline from these, so every
code path a real checkpoint takes is exercised without downloading weights.
"""

from __future__ import annotations

import torch
from diffusers import (
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
)

from .tiny_parts import cast_eval, tiny_t5, tiny_tokenizer, tiny_vae

# The kinds `tiny_pipeline` builds: here (PixArt, DiT), in `tiny_mmdit` (SD3, FLUX.1, Sana), `tiny_image`
# (Qwen-Image, FLUX.2, Z-Image) and `tiny_video` (Wan 2.x, HunyuanVideo 1.5: latents [B, C, F, H, W]).
IMAGE_KINDS = ("qwen-image", "flux2", "z-image")
VIDEO_KINDS = ("wan", "hunyuan-video-1.5")
ALL_KINDS = ("pixart-alpha", "pixart-sigma", "dit", "sd3", "flux", "flux-dev", "sana") + IMAGE_KINDS + VIDEO_KINDS


def tiny_dit(num_layers: int = 6, heads: int = 2, head_dim: int = 8, sample_size: int = 8, seed: int = 0):
    """A DiT with learned-sigma output (out = 2 × in channels) and the 1000-class label table of DiT-XL/2."""
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=8,
        num_layers=num_layers, sample_size=sample_size, patch_size=2, num_embeds_ada_norm=1000,
        norm_num_groups=1,
    ).eval()


def tiny_pixart(
    num_layers: int = 6, heads: int = 2, head_dim: int = 8, sample_size: int = 8, caption_channels: int = 32, seed: int = 0
):
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4, out_channels=8,
        num_layers=num_layers, sample_size=sample_size, patch_size=2, cross_attention_dim=heads * head_dim,
        caption_channels=caption_channels, norm_num_groups=1,
    ).eval()


def pixart_xl_2(sample_size: int = 32, seed: int = 0, dtype=torch.float32):
    """The PixArt-XL-2 architecture (28 blocks, 16×72 heads, T5 width 4096) with random weights.

    `sample_size` is the latent size: 32 = 256 px, 64 = 512 px, 128 = 1024 px.
    """
    torch.manual_seed(seed)
    return cast_eval(PixArtTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
        sample_size=sample_size, patch_size=2, cross_attention_dim=1152, caption_channels=4096,
    ), dtype)


def dit_xl_2(sample_size: int = 32, seed: int = 0, dtype=torch.float32):
    """The DiT-XL/2 architecture (28 blocks, 16×72 heads, 1000 classes) with random weights."""
    torch.manual_seed(seed)
    return cast_eval(DiTTransformer2DModel(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
        sample_size=sample_size, patch_size=2, num_embeds_ada_norm=1000,
    ), dtype)


def tiny_pipeline(kind: str = "pixart-alpha", num_layers: int | None = None, seed: int = 0, **transformer_kwargs):
    """A real diffusers pipeline assembled offline from tiny parts.

    `kind`: "pixart-alpha", "pixart-sigma" or "dit" (6 blocks by default, `DPMSolverMultistepScheduler`); call
    PixArt pipelines with `use_resolution_binning=False, clean_caption=False, max_sequence_length=16`.
    "sd3", "flux", "flux-dev" or "sana": `ilf.tiny_mmdit.tiny_mmdit_pipeline` (their stock schedulers;
    call them with `ilf.tiny_mmdit.mmdit_call_kwargs(kind)`).
    """
    if kind in IMAGE_KINDS:  # imported here: they load more diffusers pipelines
        from .tiny_image import tiny_image_pipeline

        return tiny_image_pipeline(kind, num_layers=num_layers, seed=seed, **transformer_kwargs)
    if kind in VIDEO_KINDS:
        from .tiny_video import tiny_video_pipeline

        return tiny_video_pipeline(kind, num_layers=num_layers, seed=seed, **transformer_kwargs)
    if kind not in ("pixart-alpha", "pixart-sigma", "dit"):
        from .tiny_mmdit import tiny_mmdit_pipeline

        return tiny_mmdit_pipeline(kind, num_layers=num_layers, seed=seed, **transformer_kwargs)
    num_layers = 6 if num_layers is None else num_layers
    scheduler = DPMSolverMultistepScheduler()
    if kind == "dit":
        return DiTPipeline(
            transformer=tiny_dit(num_layers=num_layers, seed=seed, **transformer_kwargs),
            vae=tiny_vae(seed), scheduler=scheduler,
        )
    cls = {"pixart-alpha": PixArtAlphaPipeline, "pixart-sigma": PixArtSigmaPipeline}[kind]
    return cls(
        tokenizer=tiny_tokenizer(), text_encoder=tiny_t5(seed=seed), vae=tiny_vae(seed),
        transformer=tiny_pixart(num_layers=num_layers, seed=seed, **transformer_kwargs), scheduler=scheduler,
    )


def call_kwargs(kind: str, **overrides) -> dict:
    """Keyword arguments of a small call of `tiny_pipeline(kind)`: size (and frames), guidance, sequence length.

    The call takes prompt strings (DiT: `class_labels=`) and accepts `output_type="latent"`; `overrides` win.
    """
    if kind in ("pixart-alpha", "pixart-sigma"):
        return pixart_call_kwargs(**{"height": 16, "width": 16, **overrides})
    if kind == "dit":
        return dict(overrides)
    if kind in IMAGE_KINDS:
        from .tiny_image import image_call_kwargs

        return image_call_kwargs(kind, **overrides)
    if kind in VIDEO_KINDS:
        from .tiny_video import video_call_kwargs

        return video_call_kwargs(kind, **overrides)
    from .tiny_mmdit import KINDS, mmdit_call_kwargs

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {ALL_KINDS}")
    return mmdit_call_kwargs(kind, **overrides)


def pixart_call_kwargs(**overrides) -> dict:
    """Keyword arguments that make a PixArt pipeline work on tiny, offline parts."""
    kw = dict(use_resolution_binning=False, clean_caption=False, max_sequence_length=16)
    kw.update(overrides)
    return kw
