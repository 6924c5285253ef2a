"""The block contract as data: which lists of blocks a model runs, what flows through them, what they return.

Modelled on what diffusers' `TransformerBlockRegistry` and cache-dit's block adapters record about a block
(its return order, which arguments are residual streams), but as plain data an adapter declares:

* `BlockStack`: one `nn.ModuleList` of the model, the names of its block's outputs in return order, and the
  submodule a block calls first when it computes (the block-forward counter's marker). Stacks run in the
  order the adapter lists them; blocks get global indices across them (Flux: 19 `transformer_blocks`, then
  38 `single_transformer_blocks` as blocks 19..56).
* streams: the block arguments that carry state from block to block (`hidden_states`; MMDiT blocks also
  `encoder_hidden_states`). Every other block argument is conditioning, fixed within one model call.

A single-stream block (PixArt, DiT, Sana) returns a tensor, `outputs=("hidden_states",)`. SD3 and Flux
blocks return `(encoder_hidden_states, hidden_states)`; SD3's last block (`context_pre_only`) returns
`(None, hidden_states)`: a stream that a block does not return is `None` in its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IMAGE_STREAM = "hidden_states"


@dataclass(frozen=True)
class BlockStack:
    attr: str  # the ModuleList attribute on the model
    outputs: tuple[str, ...] = (IMAGE_STREAM,)  # the block's return, by stream name, in order
    marker: str = "norm1"  # first submodule a computing block calls (a cache-skipped block never does)

    @property
    def streams(self) -> tuple[str, ...]:
        return self.outputs

    def as_streams(self, output) -> dict[str, Any]:
        """A block's return value by stream name ({"hidden_states": [B, L, D], ...}; a missing stream: None)."""
        if len(self.outputs) == 1:
            return {self.outputs[0]: output[0] if isinstance(output, tuple) else output}
        if not isinstance(output, (tuple, list)) or len(output) != len(self.outputs):
            raise TypeError(
                f"a block of `{self.attr}` returned {type(output).__name__}, but its adapter declares the outputs "
                f"{self.outputs}; the adapter does not describe this version of the model"
            )
        return dict(zip(self.outputs, output))

    def as_output(self, streams: dict[str, Any]):
        """Stream values back in the block's return form (the inverse of `as_streams`)."""
        if len(self.outputs) == 1:
            return streams[self.outputs[0]]
        return tuple(streams.get(name) for name in self.outputs)


@dataclass(frozen=True)
class BlockSite:
    """One block of a model under its global index."""

    index: int
    module: nn.Module
    stack: BlockStack


def block_sites(model: nn.Module, stacks: tuple[BlockStack, ...]) -> list[BlockSite]:
    sites = []
    for stack in stacks:
        for block in getattr(model, stack.attr, None) or ():
            sites.append(BlockSite(len(sites), block, stack))
    return sites


def map_tensors(value, fn):
    """`value` with `fn` applied to every tensor, through tuples, lists and dicts (rotary embeddings arrive as a
    (cos, sin) tuple, attention kwargs as a dict, Z-Image's inputs as lists)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def cast_floats(value, dtype: torch.dtype):
    """`value` with every floating tensor cast to `dtype` (`map_tensors`)."""
    return map_tensors(value, lambda t: t.to(dtype) if t.is_floating_point() else t)
