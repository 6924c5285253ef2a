"""One dtype vocabulary for every command: `fp32`, `fp16`, `bf16` (accelerate's mixed-precision names)."""

from __future__ import annotations

from .choices import DTYPE_NAMES

__all__ = ["DTYPE_NAMES", "torch_dtype"]


def torch_dtype(name: str):
    """The torch dtype of a vocabulary name (torch is imported here, not where the CLI is built)."""
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"dtype {name!r} is unknown; choose one of {DTYPE_NAMES}")
    return table[name]
