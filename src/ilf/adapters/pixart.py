"""PixArt-α / PixArt-Σ (`PixArtTransformer2DModel`): one shared adaLN-single time embedding.

`adaln_single(t)` returns the per-block modulation (passed to every block as `timestep`, [B, 6·D]) and the
embedded timestep used by the output layer ([B, D]); `AdaLNSingleTimeHook` switches both to t_post after
the feedback (the blocks before the feedback keep t's modulation).
"""

from __future__ import annotations

import torch
from diffusers import PixArtTransformer2DModel
from diffusers.models.attention import BasicTransformerBlock

from ..hooks import ILF_TIME_HOOK, ArgBinder, register
from .base import BackboneAdapter, basic_block_kwargs, register_adapter
from .time_hooks import AdaLNSingleTimeHook


class PixArtAdapter(BackboneAdapter):
    model_cls = PixArtTransformer2DModel
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
        "cross_attention_dim", "caption_channels", "num_embeds_ada_norm", "norm_type", "activation_fn",
        "attention_bias", "norm_elementwise_affine", "attention_type",
    )

    def build_block(self, model, index):
        c = model.config
        return BasicTransformerBlock(
            **basic_block_kwargs(c), cross_attention_dim=c.cross_attention_dim, attention_type=c.attention_type
        )

    def extra_call_kwargs(self, model, latents):
        if not getattr(model, "use_additional_conditions", False):
            return {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
        n, _, h, w = latents.shape  # PixArt-α 1024: image size and aspect ratio, in pixels (VAE scale 8)
        size = torch.tensor([[h * 8.0, w * 8.0]], device=latents.device).expand(n, 2)
        return {"added_cond_kwargs": {"resolution": size, "aspect_ratio": size[:, :1] / size[:, 1:]}}

    def install_time_hooks(self, model, runtime):
        hook = AdaLNSingleTimeHook(runtime, ArgBinder(type(model.adaln_single).forward, first="timestep"))
        return [register(model.adaln_single, hook, ILF_TIME_HOOK)]


register_adapter(PixArtAdapter())
