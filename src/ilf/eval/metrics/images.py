"""Image folders <-> float tensors, the one image convention every metric here shares.

Convention: RGB, float32 in [0, 1], shape [B, 3, H, W] (a single image is [3, H, W]).
PNGs written by `save_images` round-trip exactly: `load_images(save_images(x))` equals
`to_uint8(x) / 255`, because 8-bit quantisation is the only lossy step.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import MetricError

# MJHQ-30K and other reference sets ship JPEGs; generations are written as PNG.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

PathLike = str | os.PathLike
# What the streaming helpers accept: a folder, explicit files, a [N,3,H,W] tensor, or batches.
ImageSource = PathLike | Sequence[PathLike] | torch.Tensor | Iterable[torch.Tensor]


def list_images(folder: PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files directly inside `folder`, sorted by name (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricError(f"image folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise MetricError(f"no images ({', '.join(suffixes)}) in {str(folder)!r}")
    return files


def read_image(path: PathLike) -> torch.Tensor:
    """One file -> [3, H, W] float32 in [0, 1]; grey/alpha/palette images are converted to RGB."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # [3, H, W]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 in [0, 255] (clamped, rounded to nearest), same shape."""
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def save_images(images: torch.Tensor, folder: PathLike, names: Sequence[str]) -> list[Path]:
    """Write [B, 3, H, W] images in [0, 1] as 8-bit PNGs `folder/name` (".png" added if missing)."""
    from PIL import Image

    if images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
    if len(names) != images.shape[0]:
        raise MetricError(f"{images.shape[0]} images but {len(names)} names")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    u8 = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # [B, H, W, 3]
    paths = []
    for arr, name in zip(u8, names):
        path = folder / (name if name.lower().endswith(".png") else f"{name}.png")
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def _stack(images: list[torch.Tensor], names: list[str], ragged_ok: bool) -> torch.Tensor | list[torch.Tensor]:
    """Stack same-size images into [B, 3, H, W]; images of different sizes stay a list (if allowed)."""
    if all(im.shape == images[0].shape for im in images):
        return torch.stack(images)
    if ragged_ok:
        return images
    sizes = {n: tuple(im.shape[1:]) for n, im in zip(names, images)}
    raise MetricError(f"images differ in size and cannot be batched: {sizes}")


def load_images(source: PathLike | Sequence[PathLike]) -> torch.Tensor:
    """A folder (or list of files) of equally sized images -> [N, 3, H, W] float32 in [0, 1]."""
    paths = list_images(source) if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    if not paths:
        raise MetricError("no image files given")
    return _stack([read_image(p) for p in paths], [str(p) for p in paths], ragged_ok=False)


def iter_image_batches(
    source: ImageSource, batch_size: int = 50, *, ragged_ok: bool = False
) -> Iterator[torch.Tensor | list[torch.Tensor]]:
    """Stream `source` in batches of at most `batch_size` images, never holding the whole set.

    `source` is a folder, a list of files, a [N, 3, H, W] tensor, or an iterable of [b, 3, H, W]
    tensors (passed through as they are). Files are read lazily. A batch whose files differ in
    size is yielded as a list of [3, H, W] tensors when `ragged_ok`, else it is an error.
    """
    if batch_size < 1:
        raise MetricError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(source, torch.Tensor):
        if source.ndim != 4 or source.shape[1] != 3:
            raise MetricError(f"expected images of shape [N, 3, H, W], got {tuple(source.shape)}")
        for start in range(0, source.shape[0], batch_size):
            yield source[start : start + batch_size]
        return
    if isinstance(source, (str, os.PathLike)):
        paths: list[Path] | None = list_images(source)
    else:
        source = list(source) if not isinstance(source, Iterator) else source
        is_paths = isinstance(source, list) and all(isinstance(p, (str, os.PathLike)) for p in source)
        paths = [Path(p) for p in source] if is_paths else None
    if paths is None:  # an iterable of ready batches
        for batch in source:
            yield batch
        return
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        yield _stack([read_image(p) for p in chunk], [str(p) for p in chunk], ragged_ok)
