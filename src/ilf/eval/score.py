"""Score a folder of generated images with every metric that applies (paper §4.1, plus the worlds' own).

Metric groups and what they need:

    fidelity     PSNR / SSIM against the reference method's image of the same item     (a reference folder)
    world        the world evaluator's prompt alignment (shapes) or accuracy (digits), and the Fréchet
                 distance of its features to real held-out images                        (--world)
    clip         CLIP score (prompt alignment) and CLIP-IQA good / noisy / colorful / natural   (--clip DIR)
    fid          FID with the clean-fid Inception against reference statistics or images (--inception, --fid-ref)
    imagereward  ImageReward ×100 (as the paper's tables), in its own venv                (--imagereward-python)

Images are read from `{item.id}.png` in item order (the files `ilf.eval.generate` writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ilf.errors import ILFError
from ilf.eval.metrics import (
    CLIPMetrics, CleanFIDInception, FeatureStatistics, compute_statistics, iter_image_batches, run_imagereward,
)
from ilf.eval.metrics.clip import CLIP_HINT
from ilf.eval.metrics.images import IMAGE_SUFFIXES

from .generate import item_files
from .prompts import Item, prompts_by_id


@dataclass(frozen=True)
class MetricInfo:
    label: str  # column title (the paper's where it has one)
    higher_is_better: bool
    group: str


METRICS: dict[str, MetricInfo] = {
    "imagereward": MetricInfo("ImageReward", True, "imagereward"),
    "clip_score": MetricInfo("CLIP", True, "clip"),
    "fid": MetricInfo("FID ↓", False, "fid"),
    "clip_iqa_good": MetricInfo("Good", True, "clip"),
    "clip_iqa_noisy": MetricInfo("Noisy ↓", False, "clip"),
    "clip_iqa_colorful": MetricInfo("Colorful", True, "clip"),
    "clip_iqa_natural": MetricInfo("Natural", True, "clip"),
    "alignment": MetricInfo("Alignment", True, "world"),
    "accuracy": MetricInfo("Accuracy", True, "world"),
    "world_fd": MetricInfo("FD ↓", False, "world"),
    "psnr": MetricInfo("PSNR", True, "fidelity"),
    "ssim": MetricInfo("SSIM", True, "fidelity"),
}
GROUPS = ("fidelity", "world", "clip", "fid", "imagereward")


def find_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively (MJHQ-30K keeps one subfolder per category), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ILFError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ILFError(f"no images under {str(folder)!r}")
    return files


class WorldJudge:
    """A world's evaluator with the feature statistics of real held-out images (computed once)."""

    def __init__(self, world: str, evaluator=None, real_images: torch.Tensor | None = None, num_real: int = 1000):
        if evaluator is None:
            from ilf.worlds.evaluators import load_evaluator

            try:
                evaluator = load_evaluator(world)
            except FileNotFoundError as err:
                raise ILFError(f"the {world!r} world's evaluator is not shipped in this install ({err}); train it "
                               "with `python -m ilf.worlds.train_evaluators`, or leave out --metrics world") from None
        from ilf.worlds.paths import DATA_OF

        # a world on another world's data (shapes-flow: the shapes data) is judged as that world
        world = DATA_OF.get(world, world)
        self.world, self.evaluator = world, evaluator
        if real_images is None:
            real_images = real_heldout_images(world, num_real)
        feats = torch.cat([evaluator.features(b) for b in real_images.split(256)])  # [N, D]
        self.real_stats = FeatureStatistics.from_features(feats, tag=f"{world} evaluator")
        self.num_real = int(real_images.shape[0])

    def score(self, files: list[Path], items: list[Item], batch_size: int) -> dict[str, float]:
        scores, feats = [], []
        for start, batch in zip(range(0, len(files), batch_size), iter_image_batches(files, batch_size)):
            chunk = items[start : start + batch_size]
            conds = [it.prompt for it in chunk] if self.world == "shapes" else [it.class_label for it in chunk]
            scores.append(self.evaluator.score(batch, conds).float())  # [b]
            feats.append(self.evaluator.features(batch).float().cpu())  # [b, D]
        stats = FeatureStatistics.from_features(torch.cat(feats), tag=f"{self.world} evaluator")
        key = "alignment" if self.world == "shapes" else "accuracy"
        return {key: float(torch.cat(scores).mean()), "world_fd": stats.frechet_distance(self.real_stats)}


def real_heldout_images(world: str, n: int) -> torch.Tensor:
    """Real held-out images of a world, [N, 3, 32, 32] in [0, 1] (digits: all 360; shapes: the first n)."""
    if world == "shapes":
        from ilf.worlds import shapes

        images, _, _ = shapes.batch(range(n), "heldout")
    else:
        from ilf.worlds import digits

        images, _ = digits.batch(range(digits.size("heldout")), "heldout")
    return (images + 1) / 2  # [-1, 1] -> [0, 1]


class Scorer:
    """Scores folders of generations; only the metric groups it was built with."""

    def __init__(
        self,
        groups: set[str] | None = None,
        *,
        world: WorldJudge | None = None,
        clip: CLIPMetrics | None = None,
        fid_net: CleanFIDInception | None = None,
        fid_ref: FeatureStatistics | None = None,
        imagereward_python: str | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ):
        self.world, self.clip, self.fid_net, self.fid_ref = world, clip, fid_net, fid_ref
        self.imagereward_python = imagereward_python
        self.batch_size, self.progress = batch_size, progress
        have = {"fidelity"} | {g for g, ok in (("world", world), ("clip", clip), ("fid", fid_net and fid_ref),
                                               ("imagereward", imagereward_python)) if ok}
        self.groups = have if groups is None else set(groups)
        missing = self.groups - have
        if missing:
            need = {"world": "--world (an embedded world)", "clip": "--clip DIR", "fid": "--inception FILE and "
                    "--fid-ref NPZ_OR_FOLDER", "imagereward": "--imagereward-python PYTHON"}
            raise ILFError("metrics " + ", ".join(sorted(missing)) + " need " +
                           "; ".join(need[g] for g in sorted(missing)))

    @property
    def metric_keys(self) -> list[str]:
        keys = [k for k, m in METRICS.items() if m.group in self.groups]
        if self.world is not None:
            keys.remove("accuracy" if self.world.world == "shapes" else "alignment")
        return keys

    def score(self, folder: str | Path, items: list[Item], reference: str | Path | None = None) -> dict[str, Any]:
        """Every metric of this scorer for the images of `items` in `folder` (fidelity only with `reference`)."""
        files = item_files(folder, items)
        out: dict[str, Any] = {}
        if "fidelity" in self.groups and reference is not None and Path(reference) != Path(folder):
            fid = fidelity_files(files, item_files(reference, items), self.batch_size)
            out["psnr"], out["ssim"] = fid.psnr_mean, fid.ssim_mean
        if "world" in self.groups:
            out.update(self.world.score(files, items, self.batch_size))
        if "clip" in self.groups:
            out.update(self._clip(files, items))
        if "fid" in self.groups:
            stats = compute_statistics(files, self.fid_net, self.batch_size, tag=self.fid_net.tag,
                                       progress=self.progress)
            out["fid"] = stats.frechet_distance(self.fid_ref)
        if "imagereward" in self.groups:
            prompts = prompts_by_id(items)
            if not prompts:
                raise ILFError("ImageReward needs text prompts; this run is class-conditional")
            out["imagereward"] = 100.0 * run_imagereward(folder, prompts, python=self.imagereward_python).score
        return out

    def _clip(self, files: list[Path], items: list[Item]) -> dict[str, float]:
        if any(it.prompt is None for it in items):
            raise ILFError("CLIP score needs text prompts; this run is class-conditional (leave out --clip)")
        scores, iqa = [], {}
        for start, batch in zip(range(0, len(files), self.batch_size), iter_image_batches(files, self.batch_size)):
            prompts = [it.prompt for it in items[start : start + self.batch_size]]
            scores.append(self.clip.clip_score(batch, prompts))
            for name, vals in self.clip.clip_iqa(batch).items():
                iqa.setdefault(name, []).append(vals)
        out = {"clip_score": float(torch.cat(scores).double().mean())}
        out.update({f"clip_iqa_{k}": float(torch.cat(v).double().mean()) for k, v in iqa.items()})
        return out


def fidelity_files(files: list[Path], refs: list[Path], batch_size: int = 32):
    """PSNR/SSIM of each file against the reference file at the same position (per image, then averaged)."""
    from ilf.eval.metrics import FidelityScores, psnr, ssim

    ps, ss = [], []
    for gen, ref in zip(iter_image_batches(files, batch_size), iter_image_batches(refs, batch_size)):
        ps.append(psnr(gen, ref))
        ss.append(ssim(gen, ref))
    return FidelityScores(torch.cat(ps), torch.cat(ss))


def load_fid_reference(ref: str | os.PathLike, fid_net: CleanFIDInception, batch_size: int = 50,
                       progress: bool = True) -> FeatureStatistics:
    """FID reference statistics from an `.npz` (mu/sigma, or ADM-style `arr_0` images) or a folder of images
    (e.g. MJHQ-30K; statistics are cached beside it as `<folder>.clean-fid.npz`)."""
    ref = Path(ref)
    if ref.is_file():
        stats = FeatureStatistics.load(ref, feature_fn=fid_net, batch_size=batch_size)
        if stats.tag is not None and stats.tag != fid_net.tag:
            raise ILFError(f"{ref} holds statistics of another network ({stats.tag!r}); FID needs {fid_net.tag!r}")
        return stats
    cache = ref.with_name(ref.name + ".clean-fid.npz")
    return compute_statistics(find_images(ref), fid_net, batch_size, cache=cache, tag=fid_net.tag, progress=progress)


def check_metric_inputs(*, groups=None, world=None, clip=None, inception=None, fid_ref=None,
                        imagereward_python=None) -> set[str] | None:
    """Cheap checks before any generation (a missing file should not surface after hours of sampling): the
    requested groups exist and have their inputs, and the given paths exist. Returns the requested groups."""
    import shutil

    want = set(groups) if groups else None  # None: every group whose inputs were given
    unknown = (want or set()) - set(GROUPS)
    if unknown:
        raise ILFError(f"unknown metric groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")

    def wanted(group: str) -> bool:
        return want is None or group in want

    if bool(inception) != bool(fid_ref) and wanted("fid") and (want is not None or inception or fid_ref):
        raise ILFError("FID needs both --inception (the FID Inception weights) and --fid-ref (statistics or images)")
    need = {"world": (world, "--world (an embedded world)"), "clip": (clip, "--clip DIR"),
            "fid": (inception and fid_ref, "--inception FILE and --fid-ref NPZ_OR_FOLDER"),
            "imagereward": (imagereward_python, "--imagereward-python PYTHON")}
    missing = [need[g][1] for g in sorted(want or ()) if g in need and not need[g][0]]
    if missing:
        raise ILFError(f"metrics {', '.join(sorted(g for g in want if g in need and not need[g][0]))} need "
                       + "; ".join(missing))
    for flag, path, group in (("--inception", inception, "fid"), ("--fid-ref", fid_ref, "fid"),
                              ("--imagereward-python", imagereward_python, "imagereward")):
        if path and wanted(group) and not Path(path).expanduser().exists() and not (
                group == "imagereward" and shutil.which(str(path))):
            raise ILFError(f"{flag} {path!r} does not exist")
    if clip and wanted("clip") and not Path(clip).expanduser().exists() and not _in_hub_cache(str(clip)):
        raise ILFError(f"--clip {clip!r} is neither a folder nor a hub id in the local cache; {CLIP_HINT}")
    return want


def _in_hub_cache(repo_id: str) -> bool:
    """Whether `repo_id` looks like a hub id whose config.json is in the local Hugging Face cache."""
    if repo_id.startswith(("/", ".", "~")) or repo_id.count("/") != 1:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid id is simply not cached
        return False


def build_scorer(
    *,
    groups: list[str] | None = None,
    world: str | None = None,
    clip: str | None = None,
    inception: str | None = None,
    fid_ref: str | None = None,
    imagereward_python: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> Scorer:
    """A `Scorer` from command-line style inputs: loads only what the requested groups need."""
    want = check_metric_inputs(groups=groups, world=world, clip=clip, inception=inception, fid_ref=fid_ref,
                               imagereward_python=imagereward_python)

    def wanted(group: str) -> bool:
        return want is None or group in want

    judge = WorldJudge(world) if world and wanted("world") else None
    clip_m = CLIPMetrics.from_pretrained(clip, device=device) if clip and wanted("clip") else None
    fid_net = fid_stats = None
    if inception and fid_ref and wanted("fid"):
        fid_net = CleanFIDInception.from_weights(inception, device=device)
        fid_stats = load_fid_reference(fid_ref, fid_net, progress=progress)
    ir = imagereward_python if wanted("imagereward") else None
    return Scorer(want, world=judge, clip=clip_m, fid_net=fid_net, fid_ref=fid_stats, imagereward_python=ir,
                  batch_size=batch_size, progress=progress)


def to_jsonable(x):
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and np.isnan(x):
        return None
    return x  # +inf stays (PSNR of an image identical to its reference); json writes it as Infinity
