"""Wan 2.x text-to-video (`WanTransformer3DModel`, `WanPipeline`): one list of blocks, one image stream.

Block contract: one list, `blocks` of `WanTransformerBlock(hidden_states, encoder_hidden_states, temb,
rotary_emb)` returning `hidden_states` ([B, F'·H'·W', D] video tokens; the caption is cross-attention
conditioning, as in PixArt), counted by `norm1`. Video latents are `[B, C, F, H, W]`; the model patchifies them
(patch (1, 2, 2)) into one token sequence, so nothing downstream sees the frame axis.

Time: `condition_embedder(timestep, encoder_hidden_states, ...)` returns `(temb, timestep_proj, text, image)`;
the blocks take `timestep_proj` reshaped to [B, 6, D] (their `temb` argument), the output layer adds `temb`
to its own `scale_shift_table` inside the model's forward (no module of its own to hook). Neither shared
time hook fits (a 4-tuple whose block part the model reshapes after the embedder returns), so ILF's t_post is
refused for Wan: attach ILF with `t_post="none"` (the blocks after the feedback then run at t, which needs no
hook), or use the corrector (`apply_corrector`), which never changes the time conditioning. Timestep units:
the pipeline passes the scheduler's t as is (UniPC with flow sigmas: t = σ·1000); noise: flow (velocity).

Classifier-free guidance is two model calls per step, cond then uncond (each under its own
`cache_context`); both calls see the same step, as with Flux's true CFG.

Wan 2.2 (A14B) pipelines carry two transformers: `transformer` (the high-noise expert, steps with t ≥
`boundary_ratio`·1000) and `transformer_2` (the low-noise expert, the rest). Each is its own model with its
own weights: `apply_ilf(pipe, ...)` / `apply_corrector(pipe, ...)` attach to `pipe.transformer` only, so the
low-noise steps run stock. A corrector is trained for one transformer and its steps; to accelerate both,
attach a second one, trained on `transformer_2`'s steps, with `apply_corrector(pipe.transformer_2, ...,
scheduler=pipe.scheduler)`. A pipeline whose `transformer` is None (only `transformer_2`) is refused by
`apply_ilf` / `apply_corrector`, which need `pipe.transformer`: attach to `pipe.transformer_2` as above.
"""

from __future__ import annotations

from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

from ..errors import ILFError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack

T_POST_REFUSAL = (
    "ILF's t_post is not supported on Wan (WanTransformer3DModel): its time embedding returns the blocks' and "
    "the output layer's conditioning as a tuple the model reshapes itself, which ilf cannot re-embed at t_post; "
    "attach ILF with t_post=\"none\", or use the corrector (apply_corrector), which keeps the time conditioning"
)


class WanAdapter(BackboneAdapter):
    model_cls = WanTransformer3DModel
    stacks = (BlockStack("blocks"),)
    noise = "flow"
    structure_keys = (
        "patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
        "freq_dim", "ffn_dim", "cross_attn_norm", "qk_norm", "eps", "image_dim", "added_kv_proj_dim",
        "pos_embed_seq_len",
    )

    def build_block(self, model, index):
        c = model.config
        return WanTransformerBlock(
            c.num_attention_heads * c.attention_head_dim, c.ffn_dim, c.num_attention_heads, qk_norm=c.qk_norm,
            cross_attn_norm=c.cross_attn_norm, eps=c.eps, added_kv_proj_dim=c.added_kv_proj_dim,
        )

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "the precomputed-data trainer builds image latents [B, C, H, W], not Wan's video latents; train a "
            "corrector for Wan with ilf.train_corrector, which records the pipeline's own calls"
        )

    def install_time_hooks(self, model, runtime):
        if runtime.config.t_post != "none":
            raise ILFError(T_POST_REFUSAL)
        return []  # t_post = t: the blocks after the feedback keep the call's own conditioning

    def post_block_kwargs(self, model, loop):
        # t_post = t is the call's own timestep object (a schedule-driven call with t_post="none", or
        # `ilf_t_post=` given that very tensor); anything else would need the re-embedding Wan cannot do.
        # An identity check: no device read.
        if loop.t_post is not loop.inputs.get("timestep"):
            raise ILFError(T_POST_REFUSAL)
        return {}


register_adapter(WanAdapter())
