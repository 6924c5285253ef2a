"""The "digits" world: scikit-learn's bundled handwritten digits (1797 images, 8×8, classes 0–9) as 32×32 RGB.

Images are bicubically upsampled (smooth strokes), grey replicated to three channels, light ink on black,
values in [-1, 1]. The split is fixed and needs no random state: every fifth image (index % 5 == 0) is
held out (360 images), the rest (1437) train.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

IMAGE_SIZE = 32
NUM_CLASSES = 10
ID2LABEL = {i: str(i) for i in range(NUM_CLASSES)}  # for DiTPipeline(id2label=...): pipe.get_label_ids(["7"])
SPLITS = ("train", "heldout")


@lru_cache(maxsize=1)
def _all() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x * 2 - 1).expand(-1, 3, -1, -1).contiguous()  # [1797, 3, 32, 32] in [-1, 1]
    return x, torch.from_numpy(d.target.astype(np.int64))


def split_indices(split: str) -> np.ndarray:
    """Indices into the 1797 digits belonging to `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    idx = np.arange(len(_all()[1]))
    return idx[idx % 5 == 0] if split == "heldout" else idx[idx % 5 != 0]


def size(split: str) -> int:
    return len(split_indices(split))


def sample(index: int, split: str = "train") -> tuple[torch.Tensor, int]:
    """Image `index` of `split` (wrapping around): ([3, 32, 32] in [-1, 1], label)."""
    images, labels = batch([index], split)
    return images[0], int(labels[0])


def batch(indices, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B, 3, 32, 32] in [-1, 1] and labels [B] for split-relative indices (taken modulo the split size)."""
    sel = split_indices(split)
    rows = torch.as_tensor(sel[np.asarray(indices, dtype=np.int64) % len(sel)])
    images, labels = _all()
    return images[rows], labels[rows]
