"""PixArt-α / PixArt-Σ (`PixArtTransformer2DModel`): one shared adaLN-single time embedding.

`adaln_single(t)` returns the per-block modulation (passed to every block as `timestep`, [B, 6·D]) and the
embedded timestep used by the output layer ([B, D]). With feedback, a hook on `adaln_single` also computes
both for t_post: blocks after the feedback get the t_post modulation, and the model's output layer receives
the t_post embedding in place of the t one (the blocks before the feedback keep t's modulation).
"""

from __future__ import annotations

from diffusers import PixArtTransformer2DModel
from diffusers.hooks import ModelHook
from diffusers.models.attention import BasicTransformerBlock

from ..hooks import ILF_TIME_HOOK, ArgBinder, register
from .base import BackboneAdapter, as_float_timestep, basic_block_kwargs, register_adapter


class _PixArtTimeHook(ModelHook):
    def __init__(self, runtime, binder: ArgBinder):
        super().__init__()
        self.runtime = runtime
        self.binder = binder  # AdaLayerNormSingle.forward's signature, read at attach

    def new_forward(self, module, *args, **kwargs):
        cond, embedded = self.fn_ref.original_forward(*args, **kwargs)  # [B, 6D], [B, D] at t
        st = self.runtime.state
        if st is None or not st.feedback_on:
            return cond, embedded
        t_post = as_float_timestep(st.t_post, self.binder.get(args, kwargs, "timestep"))
        post_args, post_kwargs = self.binder.replace(args, kwargs, "timestep", t_post)
        cond_post, embedded_post = self.fn_ref.original_forward(*post_args, **post_kwargs)
        st.post_block_kwargs = {"timestep": cond_post}
        return cond, embedded_post


class PixArtAdapter(BackboneAdapter):
    model_cls = PixArtTransformer2DModel
    family = "pixart"
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
        "cross_attention_dim", "caption_channels", "num_embeds_ada_norm", "norm_type", "activation_fn",
        "attention_bias", "norm_elementwise_affine", "attention_type",
    )

    def build_block(self, model):
        c = model.config
        return BasicTransformerBlock(
            **basic_block_kwargs(c), cross_attention_dim=c.cross_attention_dim, attention_type=c.attention_type
        )

    def install_time_hooks(self, model, runtime):
        hook = _PixArtTimeHook(runtime, ArgBinder(type(model.adaln_single).forward, first="timestep"))
        return [register(model.adaln_single, hook, ILF_TIME_HOOK)]

    def post_block_kwargs(self, model, state):
        return state.post_block_kwargs  # filled by the adaln_single hook of this call


register_adapter(PixArtAdapter())
