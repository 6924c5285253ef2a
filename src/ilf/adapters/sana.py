"""Sana (`SanaTransformer2DModel`): linear-attention blocks with cross-attention, adaLN-single time.

Block contract: one list, `transformer_blocks` of `SanaTransformerBlock(hidden_states, attention_mask,
encoder_hidden_states, encoder_attention_mask, timestep, height, width)` returning `hidden_states` (the
caption is conditioning, as in PixArt). Time: `time_embed` (an `AdaLayerNormSingle`, or
`SanaCombinedTimestepGuidanceEmbeddings` for guidance-distilled Sana) returns the block modulation and the
embedding `norm_out` uses, as PixArt's `adaln_single` does. Sana is trained with flow matching; its
pipeline calls the model with the scheduler's timestep × `config.timestep_scale`.
"""

from __future__ import annotations

from diffusers import SanaTransformer2DModel
from diffusers.models.transformers.sana_transformer import SanaTransformerBlock

from ..hooks import ILF_TIME_HOOK, ArgBinder, register
from .base import BackboneAdapter, register_adapter
from .time_hooks import AdaLNSingleTimeHook


class SanaAdapter(BackboneAdapter):
    model_cls = SanaTransformer2DModel
    noise = "flow"
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
        "num_cross_attention_heads", "cross_attention_head_dim", "cross_attention_dim", "caption_channels",
        "mlp_ratio", "attention_bias", "norm_elementwise_affine", "norm_eps", "guidance_embeds", "qk_norm",
    )

    def timestep_units(self, model):
        return float(model.config.get("timestep_scale", 1.0) or 1.0)

    def build_block(self, model, index):
        c = model.config
        return SanaTransformerBlock(
            c.num_attention_heads * c.attention_head_dim, c.num_attention_heads, c.attention_head_dim,
            dropout=c.dropout, num_cross_attention_heads=c.num_cross_attention_heads,
            cross_attention_head_dim=c.cross_attention_head_dim, cross_attention_dim=c.cross_attention_dim,
            attention_bias=c.attention_bias, norm_elementwise_affine=c.norm_elementwise_affine,
            norm_eps=c.norm_eps, mlp_ratio=c.mlp_ratio, qk_norm=c.qk_norm,
        )

    def install_time_hooks(self, model, runtime):
        hook = AdaLNSingleTimeHook(runtime, ArgBinder(type(model.time_embed).forward, first="timestep"))
        return [register(model.time_embed, hook, ILF_TIME_HOOK)]


register_adapter(SanaAdapter())
