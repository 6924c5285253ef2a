"""FLUX.2 (`Flux2Transformer2DModel`, `Flux2Pipeline`): dual-stream blocks, then single-stream blocks on one
joined sequence.

Block contract: two lists run in order, `transformer_blocks` (`Flux2TransformerBlock(hidden_states,
encoder_hidden_states, temb_mod_img, temb_mod_txt, image_rotary_emb, joint_attention_kwargs)`, returning
`(encoder_hidden_states, hidden_states)`, counted by `norm1`) then `single_transformer_blocks`
(`Flux2SingleTransformerBlock(hidden_states, encoder_hidden_states=None, temb_mod, ...)`, counted by `norm`),
with global indices across both (FLUX.2-dev: 8 + 48 = 56). Unlike FLUX.1, the model joins text and image into
one sequence between the lists (`cat([text, image], dim=1)`) and calls each single block with that sequence
alone, which it returns as one tensor: the single blocks' only stream is `hidden_states` [B, T + L, D], text
tokens first, and that is the stream ILF's feedback is added to there. So a loop cannot cross from the dual to
the single blocks (refused by `check_loop`): a loop re-runs blocks on the streams they were given, and the join
happens in the model's forward, between the lists.

Time: `time_guidance_embed(timestep, guidance)` → temb [B, D]; the model then computes three shared
modulations from it (`double_stream_modulation_img` / `_txt`, `single_stream_modulation`) that the blocks take
instead of temb, and `norm_out` takes temb. The shared temb hooks hand blocks a `temb`, which these blocks do not
take, so ILF's t_post is refused for FLUX.2: attach ILF with `t_post="none"`, or use the corrector, which never
changes the time conditioning. The pipeline calls the model with t/1000 in the latents' dtype (the model
multiplies by 1000) and embeds `guidance_scale` (FLUX.2-dev is guidance-distilled; one call per step, no CFG).
Flow matching.

The corrector: its forecast of the last block's output is the joined sequence (text + image). With a
correction block (`correct_steps` other than "none") F is called with block a's conditioning and its
innovation is taken on block a's streams, so block a must be a single-stream block like the last one:
`fresh` >= the number of dual-stream blocks (8 for FLUX.2-dev). The learned forecast alone (the default
`correct_steps="none"`) works at any `fresh`; where block a is a dual-stream block its innovation term
(different stream shapes) is left out.
"""

from __future__ import annotations

from diffusers import Flux2Transformer2DModel
from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock, Flux2TransformerBlock

from ..errors import ILFError, LoopRangeError
from .base import BackboneAdapter, register_adapter
from .blocks import BlockStack
from .sd3 import MMDIT_OUTPUTS
from .time_hooks import NoTPostReembedding


class Flux2Adapter(NoTPostReembedding, BackboneAdapter):
    model_cls = Flux2Transformer2DModel
    stacks = (
        BlockStack("transformer_blocks", outputs=MMDIT_OUTPUTS),
        BlockStack("single_transformer_blocks", outputs=("hidden_states",), marker="norm"),
    )
    embed_scale = 1000.0
    noise = "flow"
    structure_keys = (
        "patch_size", "in_channels", "out_channels", "num_layers", "num_single_layers", "attention_head_dim",
        "num_attention_heads", "joint_attention_dim", "timestep_guidance_channels", "mlp_ratio", "axes_dims_rope",
        "rope_theta", "eps", "guidance_embeds",
    )
    t_post_refusal = (
        "ILF's t_post is not supported on FLUX.2 (Flux2Transformer2DModel): its blocks take modulations the model "
        "computes from temb in its own forward, which ilf cannot re-embed at t_post; attach ILF with "
        "t_post=\"none\", or use the corrector (apply_corrector), which keeps the time conditioning"
    )

    def timestep_units(self, model):
        return 1.0 / 1000.0

    def check_loop(self, model, loop):
        n = len(model.transformer_blocks)
        b, e = loop
        if b < n <= e:
            raise LoopRangeError(
                f"loop {tuple(loop)} crosses FLUX.2's dual/single boundary at block {n}: the model joins the text and "
                f"image streams between the two block lists, so a loop cannot re-run across it; choose a loop "
                f"within blocks 0..{n - 1} or {n}..{n + len(model.single_transformer_blocks) - 1}"
            )

    def build_block(self, model, index):
        c = model.config
        cls = Flux2TransformerBlock if index < len(model.transformer_blocks) else Flux2SingleTransformerBlock
        return cls(dim=c.num_attention_heads * c.attention_head_dim, num_attention_heads=c.num_attention_heads,
                   attention_head_dim=c.attention_head_dim, mlp_ratio=c.mlp_ratio, eps=c.eps, bias=False)

    def encode_text(self, pipe, captions, device, max_sequence_length):
        raise ILFError(
            "the precomputed-data trainer does not build FLUX.2's packed latents and position ids; train a "
            "corrector for FLUX.2 with ilf.train_corrector, which records the pipeline's own calls"
        )


register_adapter(Flux2Adapter())
