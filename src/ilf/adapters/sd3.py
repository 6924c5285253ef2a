"""Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`): MMDiT joint blocks, one `temb` for all blocks.

Block contract: one list, `transformer_blocks` of `JointTransformerBlock(hidden_states,
encoder_hidden_states, temb, joint_attention_kwargs)`, each returning `(encoder_hidden_states,
hidden_states)`; the last block is `context_pre_only` and returns `(None, hidden_states)` (it updates no
text stream, since no block follows it). Time: `time_text_embed(timestep, pooled_projections)` → temb
([B, D]) for every block and `norm_out`; t_post reaches both through `install_temb_hooks`. SD3 is trained
with flow matching; the pipeline calls the model with the scheduler's timestep (σ·1000) as is.

A loop may include the `context_pre_only` last block: F is then built `context_pre_only` like it and gets
the text stream that block was given (the block returns none to pass on). SD3.5's dual-attention blocks
(`dual_attention_layers`) are built with the setting of the block they copy.
"""

from __future__ import annotations

from diffusers import SD3Transformer2DModel
from diffusers.models.attention import JointTransformerBlock

from ..errors import ILFError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack
from .time_hooks import install_temb_hooks

MMDIT_OUTPUTS = ("encoder_hidden_states", "hidden_states")  # SD3 and Flux blocks return (text, image)


class SD3Adapter(BackboneAdapter):
    model_cls = SD3Transformer2DModel
    stacks = (BlockStack("transformer_blocks", outputs=MMDIT_OUTPUTS),)
    noise = "flow"
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
        "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "pos_embed_max_size",
        "dual_attention_layers", "qk_norm",
    )

    def build_block(self, model, index):
        c, like = model.config, self.blocks(model)[index]
        return JointTransformerBlock(
            dim=c.num_attention_heads * c.attention_head_dim, num_attention_heads=c.num_attention_heads,
            attention_head_dim=c.attention_head_dim, context_pre_only=like.context_pre_only, qk_norm=c.qk_norm,
            use_dual_attention=like.use_dual_attention,
        )

    def encode_text(self, pipe, captions, device, max_sequence_length):
        if getattr(pipe, "text_encoder_3", None) is None and getattr(pipe, "text_encoder", None) is None:
            raise ILFError("captions need the pipeline's text encoders; precompute shards with `ilf precompute`")
        embeds, _, pooled, _ = pipe.encode_prompt(
            captions, None, None, device=device, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}  # [B, L, D], [B, P]

    def install_time_hooks(self, model, runtime):
        return install_temb_hooks(model, runtime)


register_adapter(SD3Adapter())
