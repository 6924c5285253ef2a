"""Qwen-Image (`QwenImageTransformer2DModel`, `QwenImagePipeline`): MMDiT blocks, one `temb` for all blocks.

Block contract: one list, `transformer_blocks` of `QwenImageTransformerBlock(hidden_states,
encoder_hidden_states, encoder_hidden_states_mask, temb, image_rotary_emb, joint_attention_kwargs,
modulate_index)`, each returning `(encoder_hidden_states, hidden_states)` as SD3's and FLUX.1's blocks do
(text [B, T, D], image [B, L, D]); counted by `img_mod`, the image modulation every computing block calls
first. Qwen-Image has 60 of them.

Time: `time_text_embed(timestep, hidden_states, addition_t_cond)` → temb [B, D] for every block and for
`norm_out` (an `AdaLayerNormContinuous`), so the shared temb hooks carry t_post to both. The pipeline calls the
model with t/1000 in the latents' dtype and the embedding scales it back inside (`Timesteps(scale=1000)`), so
the model's timestep is in units of 1/1000 of the scheduler's and t_post is handed to the embedding as is.
Flow matching. True CFG (`negative_prompt=`, `true_cfg_scale > 1`) is two calls per step, cond then uncond,
each under its own `cache_context`; both calls see the same step. The edit variant's `zero_cond_t` (a second,
t = 0 half of temb for the reference-image tokens) has no t_post re-embedding here: ILF's t_post is refused
for it, `t_post="none"` and the corrector work.
"""

from __future__ import annotations

from diffusers import QwenImageTransformer2DModel
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock

from ..errors import ILFError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack
from .sd3 import MMDIT_OUTPUTS
from .time_hooks import NoTPostReembedding, install_temb_hooks

ZERO_COND_REFUSAL = (
    "ILF's t_post is not supported on Qwen-Image models with zero_cond_t (the edit variants: temb carries a "
    "second, t = 0 half for the reference image, which ilf does not re-embed); attach ILF with t_post=\"none\", "
    "or use the corrector (apply_corrector), which keeps the time conditioning"
)


class QwenImageAdapter(BackboneAdapter):
    model_cls = QwenImageTransformer2DModel
    stacks = (BlockStack("transformer_blocks", outputs=MMDIT_OUTPUTS, marker="img_mod"),)
    noise = "flow"
    structure_keys = (
        "patch_size", "in_channels", "out_channels", "num_layers", "attention_head_dim", "num_attention_heads",
        "joint_attention_dim", "guidance_embeds", "axes_dims_rope", "zero_cond_t", "use_additional_t_cond",
        "use_layer3d_rope",
    )

    def timestep_units(self, model):
        return 1.0 / 1000.0

    def build_block(self, model, index):
        c = model.config
        return QwenImageTransformerBlock(dim=c.num_attention_heads * c.attention_head_dim,
                                         num_attention_heads=c.num_attention_heads,
                                         attention_head_dim=c.attention_head_dim, zero_cond_t=c.zero_cond_t)

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "the precomputed-data trainer does not build Qwen-Image's packed latents and image shapes; train a "
            "corrector for Qwen-Image with ilf.train_corrector, which records the pipeline's own calls"
        )

    def install_time_hooks(self, model, runtime):
        if model.config.zero_cond_t:
            return _ZeroCond.install_time_hooks(self, model, runtime)
        return install_temb_hooks(model, runtime)

    def post_block_kwargs(self, model, loop):
        if model.config.zero_cond_t:
            return _ZeroCond.post_block_kwargs(self, model, loop)
        return loop.post_block_kwargs


class _ZeroCond(NoTPostReembedding):
    t_post_refusal = ZERO_COND_REFUSAL


register_adapter(QwenImageAdapter())
