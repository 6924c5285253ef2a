"""HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`, `HunyuanVideo15Pipeline`): dual-stream blocks, one
`temb`.

Block contract: one list, `transformer_blocks` of `HunyuanVideo15TransformerBlock(hidden_states,
encoder_hidden_states, temb, attention_mask, freqs_cis)`, each returning `(hidden_states,
encoder_hidden_states)`: image first, unlike SD3 and Flux. The text stream is the refined Qwen2.5-VL prompt, the
ByT5 glyph tokens and the (text-to-video: zero) image tokens, concatenated by the model. Video latents are
`[B, C, F, H, W]`; the pipeline concatenates the latents with conditioning latents and a mask on the channel
axis (2·C + 1 channels) and the model patchifies all frames into one token sequence.

Time: `time_embed(timestep, timestep_r)` → temb ([B, D]) for every block and `norm_out` (an
`AdaLayerNormContinuous`), as in SD3 and Flux: the shared temb hooks carry t_post to the blocks after the
feedback and to the output layer. The token refiner (`context_embedder`) also conditions the text on t;
it runs before the blocks, so the text stream the loop starts from is the one refined at t. The time
embedding runs its linears in the timestep's dtype (the pipeline passes t in the latents' dtype), so t_post
is handed over in that dtype. Timestep units: the scheduler's t as is; noise: flow (velocity).

Classifier-free guidance comes from the pipeline's `guider` (`ClassifierFreeGuidance`): two calls per step,
cond then uncond, under the guider's cache contexts.
"""

from __future__ import annotations

from diffusers import HunyuanVideo15Transformer3DModel
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

from ..errors import ILFError
from ..hooks import ILF_TIME_HOOK, ArgBinder, register
from .base import BackboneAdapter, register_adapter
from .blocks import IMAGE_STREAM, BlockStack
from .time_hooks import OutputNormTimeHook, TembTimeHook

IMAGE_FIRST_OUTPUTS = (IMAGE_STREAM, "encoder_hidden_states")  # the block returns (image, text)


class HunyuanVideo15Adapter(BackboneAdapter):
    model_cls = HunyuanVideo15Transformer3DModel
    stacks = (BlockStack("transformer_blocks", outputs=IMAGE_FIRST_OUTPUTS),)
    noise = "flow"
    structure_keys = (
        "in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "num_refiner_layers",
        "mlp_ratio", "patch_size", "patch_size_t", "qk_norm", "text_embed_dim", "text_embed_2_dim",
        "image_embed_dim", "rope_axes_dim", "use_meanflow",
    )

    def build_block(self, model, index):
        c = model.config
        return HunyuanVideo15TransformerBlock(c.num_attention_heads, c.attention_head_dim, mlp_ratio=c.mlp_ratio,
                                              qk_norm=c.qk_norm)

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "the precomputed-data trainer builds image latents [B, C, H, W], not HunyuanVideo 1.5's video latents; "
            "train a corrector for it with ilf.train_corrector, which records the pipeline's own calls"
        )

    def install_time_hooks(self, model, runtime):
        embed, norm = model.time_embed, model.norm_out
        return [
            register(embed, TembTimeHook(runtime, ArgBinder(type(embed).forward, first="timestep"), like_dtype=True),
                     ILF_TIME_HOOK),
            register(norm, OutputNormTimeHook(runtime, ArgBinder(type(norm).forward)), ILF_TIME_HOOK),
        ]


register_adapter(HunyuanVideo15Adapter())
