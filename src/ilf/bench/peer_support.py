"""Which of diffusers' cache hooks a model family takes, and what they must know about its blocks.

Everything here is read from the adapter's block contract (`get_adapter(model).sites(model)`: every block
with its global index and its `BlockStack`), not from one family's attribute names:

* the block lists diffusers' hooks find by name (`transformer_blocks`, Flux's `single_transformer_blocks`),
  as regexes of block module names (TaylorSeer's identifiers);
* the blocks that return no text stream: SD3's last block (`context_pre_only`) returns
  `(None, hidden_states)`. FirstBlockCache's tail block subtracts the text stream it returns, TaylorSeer records
  every output's dtype: both fail on `None` (diffusers runs neither on SD3: SD3 has no `CacheMixin`). They are
  applied to the other blocks, and such a block always runs (it is counted);
* refusals, each with its reason: FirstBlockCache and MagCache read a block's outputs by the return order that
  diffusers' `TransformerBlockRegistry` records per block class (Flux's and SD3's blocks are registered, both
  `(encoder_hidden_states, hidden_states)`; Sana's `SanaTransformerBlock` is not), and PAB and FasterCache keep
  one state per hooked module, not per cache context, so with two transformer calls per step (Flux's true CFG)
  the unconditional call would reuse or extrapolate the conditional call's attention.
"""

from __future__ import annotations

import torch
from torch import nn

from ilf.adapters import get_adapter
from ilf.hooks import bind_arguments

from .errors import MethodRefused
from .family import TWO_CALLS



def textless_blocks(model: nn.Module) -> list[int]:
    """Global indices of the blocks of a two-stream stack that return no text stream (SD3's last block)."""
    return [s.index for s in get_adapter(model).sites(model)
            if len(s.stack.outputs) > 1 and getattr(s.module, "context_pre_only", False)]


def block_patterns(model: nn.Module, exclude: list[int] = ()) -> list[str]:
    """Regexes (`re.fullmatch` on module names) of every block but `exclude`, one per block list."""
    kept: dict[str, list[str]] = {}  # block list -> the indices in it to match
    for s in get_adapter(model).sites(model):
        local = kept.setdefault(s.stack.attr, [])
        local.append(None if s.index in exclude else str(len(local)))
    out = []
    for attr, idx in kept.items():
        if None not in idx:
            out.append(rf"{attr}\.\d+")
        elif any(idx):
            out.append(rf"{attr}\.({'|'.join(i for i in idx if i is not None)})")
    return out


def blocks_view(model: nn.Module, exclude: list[int]) -> nn.Module:
    """A stand-in module whose block lists (under the stacks' names) hold the model's own blocks but `exclude`:
    a hook applied to it hooks those blocks of the model and no other."""
    view = nn.Module()
    for s in get_adapter(model).sites(model):
        if not hasattr(view, s.stack.attr):
            setattr(view, s.stack.attr, nn.ModuleList())
        if s.index not in exclude:
            getattr(view, s.stack.attr).append(s.module)
    return view


def check_two_calls(family: str, cfg_batch: str | None) -> None:
    """PAB and FasterCache cannot tell the CFG branches apart when they are separate calls."""
    if cfg_batch == TWO_CALLS:
        raise MethodRefused(
            f"{family}: the pipeline runs classifier-free guidance as two transformer calls per step (Flux's true "
            "CFG: cond, then uncond), but diffusers' hook keeps one state per attention module, not per cache "
            "context, so the unconditional call would reuse (PAB) or extrapolate (FasterCache) the conditional "
            "call's attention; run it without true CFG (no negative_prompt, or true_cfg_scale=1)"
        )


def refuse_unless_it_applies(family: str, pipe, attach) -> None:
    """Attach and detach once; a hook diffusers cannot apply to this model is refused with its reason."""
    try:
        attach(pipe).detach()
    except ValueError as err:
        model = pipe.transformer
        classes = sorted({type(s.module).__name__ for s in get_adapter(model).sites(model)})
        why = (f" (diffusers' TransformerBlockRegistry records the return order of the block classes its hooks "
               f"support; {', '.join(classes)} is not among them)") if "not registered" in str(err) else ""
        raise MethodRefused(f"{family} cannot be applied to {type(model).__name__}: {err}{why}") from None


def raw_image_latents(module: nn.Module, args: tuple, kwargs: dict) -> list[torch.Tensor] | None:
    """SeaCache's `raw_vision_callback` for image models: each sample's noisy latent as a one-frame video
    [C, 1, H, W] (SeaCache's layout (C, T, H, W)), from the transformer call's `hidden_states`: [B, C, H, W]
    (PixArt, DiT, SD3, Sana), or Flux's packed tokens [B, L, D] put back on their grid by `img_ids` [L, 3]
    (row, column in columns 1, 2) as [D, 1, h, w]. None (SeaCache then runs the call in full) for anything else."""
    bound = bind_arguments(type(module).forward, args, kwargs)
    x = bound.get("hidden_states")
    if not torch.is_tensor(x):
        return None
    if x.ndim == 4:
        return [v.unsqueeze(1) for v in x.unbind(0)]
    ids = bound.get("img_ids")
    if x.ndim != 3 or not torch.is_tensor(ids):
        return None
    ids = ids.reshape(-1, ids.shape[-1])[-x.shape[1]:].long()  # [L, 3]; a batched [B, L, 3] is one grid repeated
    rows, cols = ids[:, 1], ids[:, 2]
    grid = x.new_zeros(x.shape[0], x.shape[2], int(rows.max()) + 1, int(cols.max()) + 1)  # [B, D, h, w]
    grid[:, :, rows, cols] = x.transpose(1, 2)
    return [v.unsqueeze(1) for v in grid.unbind(0)]
