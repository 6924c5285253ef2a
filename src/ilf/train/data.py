"""Training data: image folders with captions, class folders, precomputed shards, the embedded worlds.

Every source yields *samples*; an `Encoder` (the backbone pipeline's frozen VAE and text encoder) turns a
list of raw samples into a training batch in the model's own keyword names:

    text-to-image:  {"latents": [B, C, h, w], "encoder_hidden_states": [B, L, D], "encoder_attention_mask": [B, L]}
    class-to-image: {"latents": [B, C, h, w], "class_labels": [B]}

Shards (written by `ilf precompute`) already hold latents and embeddings: the fast path for real runs.
A sample that cannot be read is reported, counted and replaced by the next readable one; a run never dies
on one bad file, and never skips silently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from ..errors import ILFError

logger = logging.getLogger("ilf.train")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
SHARD_META = "shards.json"
NULL_TEXT = "null_text.safetensors"
MAX_REPLACEMENTS = 16


def load_image(path: Path, size: int) -> torch.Tensor:
    """RGB image → [3, size, size] in [-1, 1]: shorter side resized to `size` (bicubic), centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def cast_float_tensors(tensors: dict, dtype) -> dict:
    """A flat dict's floating tensors in `dtype` (`None`: unchanged); integer ones (labels, masks) as they are.
    (Not `adapters.blocks.cast_floats`, which recurses through a call's nested arguments.)"""
    if dtype is None:
        return tensors
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


class Source:
    """A random-access collection of raw samples; `None` from `read` marks an unreadable sample."""

    kind: str  # "text" or "class"
    encoded = False  # True when samples already hold latents/embeddings
    float_dtype = None  # encoded sources: the dtype their floating tensors are read in (the backbone's)

    def stored_dtypes(self) -> set:
        """The floating dtypes the precomputed data were written in (empty for raw images)."""
        return set()

    def set_float_dtype(self, dtype) -> None:
        """Read every floating tensor in `dtype` from now on, whatever dtype it was precomputed in."""
        self.float_dtype = dtype

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int):
        raise NotImplementedError


class CaptionFolder(Source):
    """Images with same-name `.txt` captions (`cat.png` + `cat.txt`), searched recursively."""

    kind = "text"

    def __init__(self, root: Path, resolution: int):
        self.root, self.resolution = Path(root), resolution
        self.items = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.items:
            raise ILFError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {self.root}")

    def __len__(self):
        return len(self.items)

    def read(self, index):
        path = self.items[index]
        try:
            caption = path.with_suffix(".txt").read_text().strip()
            return {"image": load_image(path, self.resolution), "caption": caption}
        except (OSError, ValueError, UnicodeDecodeError, Image.DecompressionBombError) as err:
            logger.warning("skipping unreadable sample %s (%s)", path, err)
            return None


class ClassFolders(Source):
    """ImageFolder layout: `root/<class>/<image>`. Folder names that are all integers are the class ids
    (e.g. ImageNet indices for DiT); otherwise classes are numbered in sorted order."""

    kind = "class"

    def __init__(self, root: Path, resolution: int):
        self.root, self.resolution = Path(root), resolution
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not classes:
            raise ILFError(f"no class folders under {self.root}")
        if all(c.isdigit() for c in classes):
            self.class_ids = {c: int(c) for c in classes}
        else:
            self.class_ids = {c: i for i, c in enumerate(classes)}
        self.items = [
            (p, self.class_ids[c]) for c in classes for p in sorted((self.root / c).rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.items:
            raise ILFError(f"no images in the class folders under {self.root}")

    def __len__(self):
        return len(self.items)

    def read(self, index):
        path, label = self.items[index]
        try:
            return {"image": load_image(path, self.resolution), "label": label}
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            logger.warning("skipping unreadable sample %s (%s)", path, err)
            return None


class Shards(Source):
    """Safetensors shards written by `ilf precompute`: rows of latents and embeddings or labels."""

    encoded = True

    def __init__(self, root: Path):
        self.root = Path(root)
        meta_file = self.root / SHARD_META
        if not meta_file.is_file():
            raise ILFError(f"{self.root} has no {SHARD_META}; write shards with `ilf precompute`")
        self.meta = json.loads(meta_file.read_text())
        self.kind = self.meta["kind"]
        self.shards = [(self.root / s["file"], s["rows"]) for s in self.meta["shards"]]
        self.offsets = np.cumsum([0] + [rows for _, rows in self.shards])
        self._open = {}

    def __len__(self):
        return int(self.offsets[-1])

    def null_text(self) -> dict:
        with safe_open(str(self.root / NULL_TEXT), framework="pt") as f:
            return cast_float_tensors({k: f.get_tensor(k) for k in f.keys()}, self.float_dtype)

    def stored_dtypes(self) -> set:
        with safe_open(str(self.shards[0][0]), framework="pt") as f:
            return {d for d in (str(f.get_slice(k).get_dtype()) for k in f.keys()) if d.startswith(("F", "BF"))}

    def read(self, index):
        s = int(np.searchsorted(self.offsets, index, side="right") - 1)
        path, _ = self.shards[s]
        try:
            if s not in self._open:
                self._open[s] = safe_open(str(path), framework="pt")
            f, row = self._open[s], index - int(self.offsets[s])
            return cast_float_tensors({k: f.get_slice(k)[row : row + 1][0] for k in f.keys()}, self.float_dtype)
        except Exception as err:  # noqa: BLE001 — a damaged shard must not end the run
            logger.warning("skipping unreadable row %d of %s (%s)", index, path, err)
            return None


class WorldSource(Source):
    """An embedded world, generated on the fly (unbounded for the shapes data, which shapes-flow shares)."""

    def __init__(self, world: str, seed: int = 0):
        from ..worlds import digits, paths, shapes

        self.world, self.seed = world, seed
        self.data = paths.DATA_OF[world]  # "shapes" or "digits"
        self.kind = "text" if self.data == "shapes" else "class"
        self._module = shapes if self.data == "shapes" else digits
        self._len = None if self.data == "shapes" else digits.size("train")

    def __len__(self):
        if self._len is None:
            raise TypeError(f"the {self.world} world is unbounded")
        return self._len

    @property
    def bounded(self) -> bool:
        return self._len is not None

    def read(self, index):
        if self.data == "shapes":
            image, caption, _ = self._module.sample(index, "train", self.seed)
            return {"image": self._module.to_tensor(image)[0], "caption": caption}
        image, label = self._module.sample(index, "train")
        return {"image": image, "label": int(label)}


def world_text_fn(world: str | None):
    """Captions → transformer kwargs for a world whose pipeline has no text encoder (shapes-flow: MiniLM token
    states and pooled MiniLM, as its backbone was trained); None for the others (the pipeline encodes)."""
    from ..worlds import paths, text_encoder

    if world is None or world not in paths.FLOW_WORLDS:
        return None

    def encode(captions: list[str]) -> dict:
        embeds, pooled = text_encoder.joint_context(*text_encoder.encode(captions))  # [B, L, 384], [B, 384]
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    return encode


def open_source(data: Path | None, data_type: str, resolution: int | None, world: str | None, seed: int) -> Source:
    if world is not None and data is None:
        return WorldSource(world, seed)
    data = Path(data)
    if not data.exists():
        raise ILFError(f"--data {data} does not exist")
    if data_type == "auto":
        if (data / SHARD_META).is_file():
            data_type = "shards"
        elif any(p.suffix == ".txt" for p in data.rglob("*.txt")):
            data_type = "captions"
        else:
            data_type = "classes"
    if data_type == "shards":
        return Shards(data)
    if data_type == "captions":
        return CaptionFolder(data, resolution)
    if data_type == "classes":
        return ClassFolders(data, resolution)
    raise ILFError(f"--data-type must be auto, captions, classes or shards, got {data_type!r}")


@dataclass
class StepSampler:
    """Which samples each rank reads at each optimizer step — a pure function of (seed, step).

    A global batch of G = per_device × processes × accumulation samples per optimizer step; micro-batch a
    of rank r reads global positions step·G + (a·processes + r)·per_device + [0, per_device). Position p of a
    finite source maps through a seeded permutation of epoch p // N, so resuming at a step needs no sampler
    state and every rank sees distinct samples.
    """

    size: int | None  # None: unbounded (a world that generates by index)
    per_device: int
    processes: int
    rank: int
    accumulation: int
    seed: int
    _perms: dict = field(default_factory=dict, repr=False)

    @property
    def global_batch(self) -> int:
        return self.per_device * self.processes * self.accumulation

    def position_index(self, p: int) -> int:
        if self.size is None:
            return p
        epoch, i = divmod(p, self.size)
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))}
        return int(self._perms[epoch][i])

    def micro_batch(self, step: int, micro: int) -> list[int]:
        start = step * self.global_batch + (micro * self.processes + self.rank) * self.per_device
        return [self.position_index(p) for p in range(start, start + self.per_device)]


def read_batch(source: Source, indices: list[int], skipped: list[int]) -> list[dict]:
    """The samples at `indices`, each unreadable one replaced by the next readable index (counted)."""
    out = []
    n = len(source) if getattr(source, "bounded", True) else None
    for idx in indices:
        for k in range(MAX_REPLACEMENTS):
            sample = source.read(idx + k if n is None else (idx + k) % n)
            if sample is not None:
                out.append(sample)
                break
            skipped[0] += 1
        else:
            raise ILFError(f"{MAX_REPLACEMENTS} consecutive unreadable samples from index {idx}; check the data")
    return out
