"""What differs between backbone families, as data plus a few small functions.

An adapter never copies a model's `forward`: the ILF runtime hooks the model's own blocks, and the adapter
only says

1. the block contract (see `blocks.py`): the model's block lists in execution order, each block's outputs
   by stream name and its compute marker; the image stream the feedback adds to;
2. how to build one more block like block `index` (same class and settings) from the model's config;
3. how the time conditioning after the feedback is switched to t_post (hooks on the model's own time
   embedding, `time_hooks.py`), and in which units the model takes its timestep;
4. its noise family: `"ddpm"` (ε or v on a β schedule) or `"flow"` (velocity on x_t = (1−σ)·x0 + σ·ε);
5. which config fields identify the architecture.

Adapters are registered by class; adding a family is one file in this folder.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..errors import ILFError, UnsupportedModelError
from ..hooks import ArgBinder, binder_for
from .blocks import IMAGE_STREAM, BlockSite, BlockStack, block_sites
from .time_hooks import as_float_timestep

__all__ = ["BackboneAdapter", "as_float_timestep", "basic_block_kwargs", "get_adapter", "register_adapter"]


class BackboneAdapter:
    model_cls: ClassVar[type]
    # The model's block lists in the order its forward runs them (global block indices run across them).
    stacks: ClassVar[tuple[BlockStack, ...]] = (BlockStack("transformer_blocks"),)
    # The stream the feedback output is added to (eq. 2-3): the image tokens.
    image_stream: ClassVar[str] = IMAGE_STREAM
    # The model multiplies its `timestep` argument by this before embedding it (Flux: 1000).
    embed_scale: ClassVar[float] = 1.0
    noise: ClassVar[str] = "ddpm"
    conditioning: ClassVar[str] = "text"  # what the backbone is conditioned on: "text" (captions) or "class"
    # Config fields that must match for a feedback to fit a backbone.
    structure_keys: ClassVar[tuple[str, ...]] = ()

    # ---- structure ----
    def sites(self, model: nn.Module) -> list[BlockSite]:
        """Every block with its global index and stack, in execution order."""
        return block_sites(model, self.stacks)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return [s.module for s in self.sites(model)]

    def stack_of(self, model: nn.Module, index: int) -> BlockStack:
        return self.sites(model)[index].stack

    def build_block(self, model: nn.Module, index: int) -> nn.Module:
        """A new, freshly initialised block of block `index`'s class and settings."""
        raise NotImplementedError

    def check_loop(self, model: nn.Module, loop: tuple[int, int]) -> None:
        """Refuse a loop this family cannot run (with the reason); the default accepts every loop."""

    def width(self, model: nn.Module) -> int:
        """D, the width of the blocks' image stream: heads × head size (Z-Image names it `dim`)."""
        c = model.config
        return int(c.num_attention_heads * c.attention_head_dim)

    def timestep_units(self, model: nn.Module) -> float:
        """The model's `timestep` argument = the scheduler's timestep × this (Flux: 1/1000)."""
        return 1.0

    def to_scheduler_units(self, model: nn.Module, t):
        """A timestep in the model's units (what it was called with) → the scheduler's (what the clock reads)."""
        u = self.timestep_units(model)
        return t if u == 1.0 else torch.as_tensor(t).double() / u

    def to_model_units(self, model: nn.Module, t):
        """A timestep in the scheduler's units → the model's (what `timestep=` / `ilf_t_post=` take)."""
        u = self.timestep_units(model)
        return t if u == 1.0 else t * u

    def fingerprint(self, model: nn.Module) -> dict:
        cfg = model.config
        fp = {"class": type(model).__name__, "num_blocks": len(self.blocks(model))}
        fp.update({k: _jsonable(cfg.get(k)) for k in self.structure_keys})
        return fp

    def digest(self, model: nn.Module) -> list[float]:
        """A fingerprint of the weights that survives dtype casts: fixed ±1 projections of (a sample of)
        the first and last block's weights, each normalised by the sample's norm, so ~N(0, 1) per value
        for unrelated checkpoints and equal to ~1e-3 for the same weights in fp16/bf16."""
        out = []
        blocks = self.blocks(model)
        for block in (blocks[0], blocks[-1]):
            w = torch.cat([p.detach().flatten()[:4096].float().cpu() for p in block.parameters()])[:16384]
            g = torch.Generator().manual_seed(1234)
            for _ in range(2):
                r = torch.randint(0, 2, w.shape, generator=g).float() * 2 - 1
                out.append(float((w * r).sum() / (w.norm() + 1e-12)))
        return out

    # ---- calls ----
    def call_inputs(self, model: nn.Module, args: tuple, kwargs: dict, binder: ArgBinder | None = None) -> dict:
        """The model call's arguments by name (timestep, class labels, …); `binder`: the signature at attach."""
        return (binder or binder_for(type(model).forward)).bind(args, kwargs)

    # ---- training inputs ----
    def encode_text(self, pipe, captions: list[str], device, max_sequence_length: int) -> dict:
        """Captions → the transformer's text conditioning, through the pipeline's own `encode_prompt`
        (PixArt-α/Σ and Sana return embeddings and their attention mask)."""
        if getattr(pipe, "text_encoder", None) is None:
            raise ILFError("captions need the pipeline's text encoder; precompute shards with `ilf precompute`")
        embeds, mask, _, _ = pipe.encode_prompt(
            captions, do_classifier_free_guidance=False, device=device, max_sequence_length=max_sequence_length,
            clean_caption=False,
        )
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}

    def extra_call_kwargs(self, model: nn.Module, latents: torch.Tensor) -> dict:
        """Keyword arguments the family's pipeline derives from the latents rather than the prompt."""
        return {}

    def install_time_hooks(self, model: nn.Module, runtime) -> list:
        """Hook whatever computes the output layer's time conditioning so it uses t_post; returns the
        `HookHandle`s."""
        raise NotImplementedError

    def post_block_kwargs(self, model: nn.Module, loop) -> dict:
        """Block keyword arguments that carry t_post for the blocks after the feedback (`loop`: the feedback
        call's `FeedbackLoop`)."""
        return loop.post_block_kwargs  # set by the time-embedding hook of this call


def basic_block_kwargs(c) -> dict:
    """Constructor arguments of a `BasicTransformerBlock`, as DiT and PixArt build theirs from their config."""
    return dict(
        dim=c.num_attention_heads * c.attention_head_dim,
        num_attention_heads=c.num_attention_heads,
        attention_head_dim=c.attention_head_dim,
        dropout=c.dropout,
        activation_fn=c.activation_fn,
        num_embeds_ada_norm=c.num_embeds_ada_norm,
        attention_bias=c.attention_bias,
        upcast_attention=c.upcast_attention,
        norm_type=c.norm_type,
        norm_elementwise_affine=c.norm_elementwise_affine,
        norm_eps=c.norm_eps,
    )


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    return v


_REGISTRY: dict[type, BackboneAdapter] = {}


def register_adapter(adapter: BackboneAdapter) -> BackboneAdapter:
    _REGISTRY[adapter.model_cls] = adapter
    return adapter


def supported_classes() -> list[str]:
    return sorted(cls.__name__ for cls in _REGISTRY)


def get_adapter(model: nn.Module) -> BackboneAdapter:
    for cls in type(model).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    raise UnsupportedModelError(
        f"{type(model).__name__} is not supported by ilf. Supported backbone classes: "
        f"{', '.join(supported_classes())}. Pass a pipeline whose `.transformer` is one of them, or the "
        "transformer itself; a new family needs an adapter in ilf/adapters/."
    )
