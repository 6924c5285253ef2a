"""FLUX.1 (`FluxTransformer2DModel`): dual-stream blocks, then single-stream blocks, one `temb`.

Block contract: two lists run in order, `transformer_blocks` (`FluxTransformerBlock`) then
`single_transformer_blocks` (`FluxSingleTransformerBlock`, counted by its `norm`, it has no `norm1`), with
global indices across both (FLUX.1-dev: 19 + 38 = 57 blocks). Both take `(hidden_states,
encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs)` and return
`(encoder_hidden_states, hidden_states)` (a single block concatenates the two streams inside and splits
them again), so a loop may cross the dual/single boundary: each loop block re-runs as the model ran it, and
F is a new block of the class of the loop's last block.

Time: the pipeline calls the model with t/1000 and the model multiplies by 1000 before
`time_text_embed(timestep, [guidance,] pooled_projections)` → temb; so the model's timestep is in units of
1/1000 of the scheduler's, and t_post is embedded ×1000. FLUX.1-dev's guidance embedding is kept as given
(only the timestep changes after the feedback). True CFG (`true_cfg_scale > 1`) calls the model twice per
step, conditional then unconditional; both calls see the same step.
"""

from __future__ import annotations

from diffusers import FluxTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

from ..errors import ILFError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack
from .sd3 import MMDIT_OUTPUTS
from .time_hooks import install_temb_hooks


class FluxAdapter(BackboneAdapter):
    model_cls = FluxTransformer2DModel
    stacks = (
        BlockStack("transformer_blocks", outputs=MMDIT_OUTPUTS),
        BlockStack("single_transformer_blocks", outputs=MMDIT_OUTPUTS, marker="norm"),
    )
    embed_scale = 1000.0
    noise = "flow"
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size", "num_layers",
        "num_single_layers", "joint_attention_dim", "pooled_projection_dim", "guidance_embeds", "axes_dims_rope",
    )

    def timestep_units(self, model):
        return 1.0 / 1000.0

    def build_block(self, model, index):
        c = model.config
        cls = FluxTransformerBlock if index < len(model.transformer_blocks) else FluxSingleTransformerBlock
        return cls(dim=c.num_attention_heads * c.attention_head_dim, num_attention_heads=c.num_attention_heads,
                   attention_head_dim=c.attention_head_dim)

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "training a feedback for Flux is not supported yet: its model takes packed latents with image and "
            "text position ids, which ilf's trainer does not build. Attach, cache, count and benchmark Flux; "
            "train feedbacks on SD3, Sana, PixArt or DiT backbones"
        )

    def install_time_hooks(self, model, runtime):
        return install_temb_hooks(model, runtime)


register_adapter(FluxAdapter())
