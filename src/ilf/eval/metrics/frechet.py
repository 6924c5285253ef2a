"""Fréchet distance between Gaussian fits of two feature sets — FID when the features are the
2048-d pool features of the FID Inception network (`inception.py`), but any feature network works.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr( (S1 S2)^(1/2) )

computed as pytorch-fid / clean-fid / ADM do (scipy `sqrtm`, eps on the diagonals when the product
is singular, tiny imaginary parts dropped), so numbers are comparable with theirs given the same
features. Statistics can be cached as `.npz` with arrays `mu`, `sigma` (the keys ADM's evaluator
and clean-fid's stats files use); `arr_0` files (raw activations, or ADM's NHWC uint8 image
batches) are read too. Only compare statistics made with the same network and preprocessing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import MetricError
from .images import ImageSource, iter_image_batches, list_images

# image batch [B, 3, H, W] in [0, 1] (or a list of [3, H, W] when sizes differ) -> features [B, D]
FeatureFn = Callable[[torch.Tensor | list[torch.Tensor]], torch.Tensor]


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); mu [D], sigma [D, D].

    Computed in float64. If `sqrtm(sigma1 @ sigma2)` is not finite (a singular product), `eps` is
    added to both diagonals and it is retried (with a warning); imaginary parts left by round-off
    are dropped, and an error is raised if the diagonal's imaginary part exceeds 1e-3.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise MetricError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2  # [D]
    with warnings.catch_warnings():
        # scipy warns "Matrix is singular ..." on rank-deficient products; finiteness is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)  # [D, D], possibly complex
        if not np.isfinite(covmean).all():
            warnings.warn(f"Fréchet distance: singular covariance product; adding {eps} to the diagonals",
                          stacklevel=2)
            offset = np.eye(mu1.size) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricError(f"Fréchet distance: sqrtm has imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean and covariance of a feature set; `count` vectors, `tag` names the network + preprocessing."""

    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64
    count: int | None = None
    tag: str | None = None

    @classmethod
    def from_features(cls, features: np.ndarray | torch.Tensor, tag: str | None = None) -> "FeatureStatistics":
        """Fit mean and (unbiased, N - 1) covariance to features [N, D], N >= 2."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise MetricError(f"need features of shape [N >= 2, D], got {features.shape}")
        return cls(features.mean(0), np.cov(features, rowvar=False), int(features.shape[0]), tag)

    def frechet_distance(self, other: "FeatureStatistics", eps: float = 1e-6) -> float:
        if self.tag and other.tag and self.tag != other.tag:
            raise MetricError(f"statistics come from different feature extractors: {self.tag!r} vs {other.tag!r}")
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, eps)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `.npz` with arrays `mu`, `sigma` (+ `count`, `tag` when known); no pickled objects."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {}
        if self.count is not None:
            extra["count"] = np.asarray(self.count, dtype=np.int64)
        if self.tag is not None:
            extra["tag"] = np.asarray(self.tag, dtype=np.str_)
        with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
            np.savez(f, mu=self.mu, sigma=self.sigma, **extra)
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, feature_fn: FeatureFn | None = None, batch_size: int = 50
    ) -> "FeatureStatistics":
        """Read `.npz` statistics: `mu` + `sigma`, else `arr_0` holding activations [N, D] or NHWC
        uint8 images [N, H, W, 3] (ADM's batches; these need `feature_fn`); a bare `.npy` counts as
        `arr_0`. Never unpickles."""
        path = Path(path)
        if not path.is_file():
            raise MetricError(f"statistics file {str(path)!r} does not exist")
        try:  # arrays are read lazily, so the refusal of object arrays can come at any access
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a bare .npy: treat it as `arr_0`
                loaded = _NpyAsNpz({"arr_0": loaded})
            with loaded as data:
                keys = set(data.files)
                tag = str(data["tag"]) if "tag" in keys else None
                if {"mu", "sigma"} <= keys:
                    count = int(data["count"]) if "count" in keys else None
                    return cls(data["mu"].astype(np.float64), data["sigma"].astype(np.float64), count, tag)
                if "arr_0" not in keys:
                    raise MetricError(f"{str(path)!r} has neither `mu`/`sigma` nor `arr_0` (keys: {sorted(keys)})")
                arr = data["arr_0"]
        except ValueError as exc:  # e.g. an object array that would need unpickling
            if isinstance(exc, MetricError):
                raise
            raise MetricError(f"{str(path)!r} is not a plain .npz of numeric arrays: {exc}") from exc
        if arr.ndim == 2:  # raw activations [N, D]
            return cls.from_features(arr, tag)
        if arr.ndim == 4 and arr.shape[-1] == 3:  # ADM image batch [N, H, W, 3], uint8 in [0, 255]
            if feature_fn is None:
                raise MetricError(f"{str(path)!r} holds images {arr.shape}; pass feature_fn to compute their features")
            batches = (
                torch.from_numpy(np.ascontiguousarray(arr[i : i + batch_size])).permute(0, 3, 1, 2).float() / 255.0
                for i in range(0, arr.shape[0], batch_size)
            )  # each [b, 3, H, W] in [0, 1]
            return cls.from_features(extract_features(batches, feature_fn, total=arr.shape[0]), tag)
        raise MetricError(f"`arr_0` in {str(path)!r} has shape {arr.shape}; expected [N, D] or [N, H, W, 3]")


class _NpyAsNpz:
    """A bare `.npy` array seen through the NpzFile interface (`files`, `[key]`, context manager)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.files = arrays, list(arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _count(source: ImageSource) -> int | None:
    if isinstance(source, torch.Tensor):
        return int(source.shape[0])
    if isinstance(source, (str, os.PathLike)):
        return len(list_images(source))
    if isinstance(source, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in source):
        return len(source)
    return None  # batches from an iterator: unknown until consumed


def extract_features(
    source: ImageSource,
    feature_fn: FeatureFn,
    batch_size: int = 50,
    *,
    progress: bool = True,
    desc: str = "features",
    total: int | None = None,
) -> np.ndarray:
    """Stream images through `feature_fn` -> features [N, D] float32 (batches of `batch_size`,
    a tqdm bar over images). `source`: a folder, files, a [N, 3, H, W] tensor, or tensor batches."""
    from tqdm.auto import tqdm

    total = total if total is not None else _count(source)
    feats = []
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in iter_image_batches(source, batch_size, ragged_ok=True):
            out = feature_fn(batch)  # [b, D]
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise MetricError(f"feature_fn returned shape {tuple(out.shape)} for a batch of {len(batch)} images")
            feats.append(out.detach().float().cpu().numpy())
            bar.update(len(batch))
    if not feats:
        raise MetricError("no images to extract features from")
    return np.concatenate(feats, axis=0)  # [N, D]


def compute_statistics(
    source: ImageSource,
    feature_fn: FeatureFn,
    batch_size: int = 50,
    *,
    cache: str | os.PathLike | None = None,
    tag: str | None = None,
    progress: bool = True,
) -> FeatureStatistics:
    """Feature statistics of `source`; with `cache`, read them from that `.npz` if it exists,
    else compute and write them there. `tag` (e.g. "clean-fid inception pool3") is stored with
    the statistics and must match a cached file's tag, so a cache from another network is refused."""
    if cache is not None and Path(cache).is_file():
        stats = FeatureStatistics.load(cache)
        if tag is not None and stats.tag != tag:
            raise MetricError(f"cached statistics {str(cache)!r} have tag {stats.tag!r}, expected {tag!r}")
        return stats
    stats = FeatureStatistics.from_features(extract_features(source, feature_fn, batch_size, progress=progress), tag)
    if cache is not None:
        stats.save(cache)
    return stats


def frechet_distance_between(
    source_a: ImageSource | FeatureStatistics,
    source_b: ImageSource | FeatureStatistics,
    feature_fn: FeatureFn,
    batch_size: int = 50,
    *,
    progress: bool = True,
) -> float:
    """Fréchet distance between two image sets (or precomputed statistics) under `feature_fn`."""
    a, b = (
        s if isinstance(s, FeatureStatistics) else compute_statistics(s, feature_fn, batch_size, progress=progress)
        for s in (source_a, source_b)
    )
    return a.frechet_distance(b)
