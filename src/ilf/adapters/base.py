"""What differs between backbone families, as data plus a few small functions.

An adapter never copies a model's `forward`: the ILF runtime hooks the model's own blocks, and the adapter
only says (1) how to build one more block of the backbone's class from its config, (2) how the time
conditioning after the feedback block is switched to t_post, and (3) which config fields identify the
architecture. Adapters are registered by class.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..hooks import ArgBinder, binder_for


class BackboneAdapter:
    model_cls: ClassVar[type]
    family: ClassVar[str]
    blocks_attr: ClassVar[str] = "transformer_blocks"
    # First submodule a block calls when it actually computes: the block-forward counter hooks it, so a
    # block skipped by a cache (which never enters the block's own forward) is not counted.
    compute_marker: ClassVar[str] = "norm1"
    # Config fields that must match for a feedback to fit a backbone.
    structure_keys: ClassVar[tuple[str, ...]] = ()
    # How the family's pipeline batches classifier-free guidance in one model call: PixArt puts the
    # unconditional half first (`cat([negative, prompt])`), DiT second (`cat([labels, null])`).
    cfg_uncond_first: ClassVar[bool] = True

    # ---- structure ----
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return getattr(model, self.blocks_attr)

    def build_block(self, model: nn.Module) -> nn.Module:
        """A new, freshly initialised block of the backbone's own block class and settings."""
        raise NotImplementedError

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
        for block in (self.blocks(model)[0], self.blocks(model)[-1]):
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

    def install_time_hooks(self, model: nn.Module, runtime) -> list:
        """Hook whatever computes the output layer's time conditioning so it uses t_post; returns the
        `HookHandle`s."""
        raise NotImplementedError

    def post_block_kwargs(self, model: nn.Module, state) -> dict:
        """Block keyword arguments that carry t_post for the blocks after the feedback."""
        raise NotImplementedError


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


def as_float_timestep(t_post: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t_post broadcast to the batch shape of the model's own timestep argument."""
    like = torch.as_tensor(like)
    t_post = t_post.to(device=like.device)
    if like.ndim and t_post.numel() == 1:
        return t_post.reshape(()).expand(like.shape).float()
    return t_post.float()
