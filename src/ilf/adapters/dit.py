"""DiT (`DiTTransformer2DModel`): class-conditional, adaLN-Zero time+class embedding inside every block.

Blocks take the raw timestep and class labels and embed them themselves; the output layer recomputes the
embedding through `transformer_blocks[0].norm1.emb` and feeds `silu(emb)` to `proj_out_1`. So t_post reaches
the blocks after the feedback as their `timestep` argument, and the output layer through a hook on
`proj_out_1` that swaps in `silu(emb(t_post, class_labels))`.
"""

from __future__ import annotations

import torch.nn.functional as F
from diffusers import DiTTransformer2DModel
from diffusers.hooks import ModelHook
from diffusers.models.attention import BasicTransformerBlock

from ..hooks import ILF_TIME_HOOK, register
from .base import BackboneAdapter, basic_block_kwargs, register_adapter
from .time_hooks import as_float_timestep


class _DiTOutputTimeHook(ModelHook):
    """On `proj_out_1`: its input is silu(emb(t, y)); with feedback it becomes silu(emb(t_post, y))."""

    def __init__(self, runtime, embedder):
        super().__init__()
        self.runtime = runtime
        self.embedder = embedder  # transformer_blocks[0].norm1.emb (CombinedTimestepLabelEmbeddings)

    def pre_forward(self, module, *args, **kwargs):
        st = self.runtime.active  # armed only during a feedback call
        if st is None:
            return args, kwargs
        x = args[0]  # [B, D] = silu(conditioning(t))
        t_post = as_float_timestep(st.t_post, st.inputs["timestep"])
        cond = self.embedder(t_post, st.inputs.get("class_labels"), hidden_dtype=x.dtype)  # [B, D]
        return (F.silu(cond),) + args[1:], kwargs


class DiTAdapter(BackboneAdapter):
    model_cls = DiTTransformer2DModel
    conditioning = "class"
    structure_keys = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
        "num_embeds_ada_norm", "norm_type", "activation_fn", "attention_bias", "norm_elementwise_affine",
    )

    def build_block(self, model, index):
        return BasicTransformerBlock(**basic_block_kwargs(model.config))

    def install_time_hooks(self, model, runtime):
        hook = _DiTOutputTimeHook(runtime, model.transformer_blocks[0].norm1.emb)
        return [register(model.proj_out_1, hook, ILF_TIME_HOOK)]

    def post_block_kwargs(self, model, state):
        return {"timestep": as_float_timestep(state.t_post, state.inputs["timestep"])}


register_adapter(DiTAdapter())
