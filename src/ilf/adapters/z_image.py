"""Z-Image (`ZImageTransformer2DModel`, `ZImagePipeline`): refiner blocks per modality, then one list of
single-stream blocks on the joined sequence.

Block contract: one list, the main `layers` of `ZImageTransformerBlock(x, attn_mask, freqs_cis, adaln_input,
...)`, called positionally and returning `x` (Z-Image-Turbo: 30 blocks), counted by `attention_norm1` (every
computing block calls it once; `adaLN_modulation` runs twice per block for the omni variant's per-token
modulation). Their stream `x` is the joined sequence [B, L_img + L_cap, D] (image tokens first, each part padded
to a multiple of 32); ILF's feedback is added to it, and TaylorSeer forecasts it.

The refiners are left out on purpose: `noise_refiner` (image tokens, time-modulated) and `context_refiner`
(caption tokens, no time) run before the main list on separate, shorter sequences, and the model joins their
outputs in its forward. A contract covering them would have a stream that changes shape and meaning between
blocks (no loop, cache span or forecast could pass it on), so they are conditioning here: they run on every
call, fresh (2 + 2 of 34 blocks in Z-Image-Turbo), and the block counter does not count them.

Time: the model is called with `t` = (1000 − t_sched) / 1000 = 1 − σ, which runs from 0 at noise to 1 at
data, and embeds `t_embedder(t · t_scale)` → `adaln_input` for every modulated block and the output layer.
`call_inputs` names the call's `timestep` as σ = 1 − t, so the clock locates the step as for FLUX.1 (model
units 1/1000 of the scheduler's). Its time embedding feeds blocks and output layer through arguments the
shared hooks do not know (`adaln_input`, the final layer's `c`), so ILF's t_post is refused for Z-Image:
attach ILF with `t_post="none"`, or use the corrector, which never changes the time conditioning. CFG is one
call per step on a batch of lists, [cond..., uncond...] (cond first). Flow matching (the pipeline negates the
model's output before the scheduler step).
"""

from __future__ import annotations

from diffusers import ZImageTransformer2DModel
from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

from ..errors import ILFError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack
from .time_hooks import NoTPostReembedding


class ZImageAdapter(NoTPostReembedding, BackboneAdapter):
    model_cls = ZImageTransformer2DModel
    stacks = (BlockStack("layers", outputs=("x",), marker="attention_norm1"),)
    image_stream = "x"
    noise = "flow"
    structure_keys = (
        "all_patch_size", "all_f_patch_size", "in_channels", "dim", "n_layers", "n_refiner_layers", "n_heads",
        "n_kv_heads", "norm_eps", "qk_norm", "cap_feat_dim", "siglip_feat_dim", "t_scale", "axes_dims", "axes_lens",
    )
    t_post_refusal = (
        "ILF's t_post is not supported on Z-Image (ZImageTransformer2DModel): its time embedding reaches the blocks "
        "and the output layer through arguments ilf does not re-embed at t_post; attach ILF with t_post=\"none\", "
        "or use the corrector (apply_corrector), which keeps the time conditioning"
    )

    def width(self, model):
        return int(model.config.dim)

    def timestep_units(self, model):
        return 1.0 / 1000.0

    def call_inputs(self, model, args, kwargs, binder=None):
        inputs = super().call_inputs(model, args, kwargs, binder)
        t = inputs.get("t")
        if t is not None and "timestep" not in inputs:
            inputs["timestep"] = 1 - t  # σ = t_sched / 1000: a device op, no read
        return inputs

    def build_block(self, model, index):
        c = model.config
        return ZImageTransformerBlock(index, c.dim, c.n_heads, c.n_kv_heads, c.norm_eps, c.qk_norm)

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "the precomputed-data trainer does not build Z-Image's lists of latents and caption features; train a "
            "corrector for Z-Image with ilf.train_corrector, which records the pipeline's own calls"
        )


register_adapter(ZImageAdapter())
