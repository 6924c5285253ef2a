"""Fidelity to the full-step reference: PSNR and SSIM of each generated image against the image
the un-accelerated sampler (e.g. 20 plain DPM-Solver++ steps) draws from the same seed and prompt.

Both are computed per image (never pooled over the batch) and then averaged, so a batch mean
equals the mean of the single-image scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import MetricError
from .images import iter_image_batches, list_images

# SSIM's stated window: Gaussian, 11 x 11, sigma 1.5 (Wang et al. 2004; torchmetrics' default).
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
DATA_RANGE = 1.0


def _check_pair(images: torch.Tensor, references: torch.Tensor) -> None:
    if images.shape != references.shape or images.ndim != 4 or images.shape[1] != 3:
        raise MetricError(
            f"images and references must both be [B, 3, H, W] of one shape, got {tuple(images.shape)} and "
            f"{tuple(references.shape)}"
        )


def psnr(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, `10 log10(1 / MSE)` over all pixels and channels of each image.

    images, references: [B, 3, H, W] float in [0, 1] (data range 1). Returns [B] float32;
    an image identical to its reference scores +inf.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(images, references)
    return peak_signal_noise_ratio(
        images.float(), references.float(), data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3)
    )  # [B]


def ssim(images: torch.Tensor, references: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """Per-image SSIM with a Gaussian window of size 11 and sigma 1.5, data range 1.

    Constants C1 = (0.01 * 1)^2, C2 = (0.03 * 1)^2. The SSIM map comes from torchmetrics'
    `structural_similarity_index_measure` (images reflect-padded by 5 pixels, so the map is H x W),
    then is averaged over channels and positions:

    - `border="reflect"` (default): over every pixel, as torchmetrics >= 1.5 reports it;
    - `border="valid"`: only where the window fits inside the image (the 5-pixel border dropped),
      as Wang et al.'s reference code and scikit-image's `structural_similarity(gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False, data_range=1)` report it.

    Choosing the reduction here keeps the number independent of the torchmetrics version
    (torchmetrics before 1.5 dropped the border, later versions keep it).
    images, references: [B, 3, H, W] float in [0, 1], H and W >= 11. Returns [B] float32.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(images, references)
    if min(images.shape[-2:]) < SSIM_KERNEL_SIZE:
        size = f"{SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE}"
        raise MetricError(f"SSIM needs images of at least {size}, got {tuple(images.shape[-2:])}")
    if border not in ("reflect", "valid"):
        raise MetricError(f"border must be 'reflect' or 'valid', got {border!r}")
    _, ssim_map = structural_similarity_index_measure(
        images.float(),
        references.float(),
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=DATA_RANGE,
        reduction="none",
        return_full_image=True,
    )  # [B, 3, H, W]
    if border == "valid":
        pad = (SSIM_KERNEL_SIZE - 1) // 2
        ssim_map = ssim_map[..., pad:-pad, pad:-pad]  # [B, 3, H - 10, W - 10]
    return ssim_map.flatten(1).mean(1)  # [B]


@dataclass(frozen=True)
class FidelityScores:
    """Per-image PSNR (dB) and SSIM against the reference of the same seed; `names` when from folders."""

    psnr: torch.Tensor  # [N]
    ssim: torch.Tensor  # [N]
    names: tuple[str, ...] | None = None

    @property
    def psnr_mean(self) -> float:
        return float(self.psnr.double().mean())

    @property
    def ssim_mean(self) -> float:
        return float(self.ssim.double().mean())


def fidelity(images: torch.Tensor, references: torch.Tensor, ssim_border: str = "reflect") -> FidelityScores:
    """PSNR and SSIM of each image in `images` against the same index in `references` ([B, 3, H, W], [0, 1])."""
    return FidelityScores(psnr=psnr(images, references), ssim=ssim(images, references, ssim_border))


def fidelity_folders(
    generated: str | os.PathLike,
    references: str | os.PathLike,
    batch_size: int = 16,
    ssim_border: str = "reflect",
) -> FidelityScores:
    """PSNR/SSIM of every image in `generated` against the file of the same name in `references`.

    Both folders must hold exactly the same file names (one file per seed), so a missing or extra
    generation is an error instead of a silently shifted pairing.
    """
    gen_files, ref_files = list_images(generated), list_images(references)
    gen_names, ref_names = [p.name for p in gen_files], [p.name for p in ref_files]
    if gen_names != ref_names:
        only_gen = sorted(set(gen_names) - set(ref_names))[:5]
        only_ref = sorted(set(ref_names) - set(gen_names))[:5]
        raise MetricError(
            f"{generated!s} and {references!s} do not hold the same file names "
            f"(only in generated: {only_gen}, only in references: {only_ref})"
        )
    psnrs, ssims = [], []
    for gen, ref in zip(iter_image_batches(gen_files, batch_size), iter_image_batches(ref_files, batch_size)):
        psnrs.append(psnr(gen, ref))
        ssims.append(ssim(gen, ref, ssim_border))
    return FidelityScores(psnr=torch.cat(psnrs), ssim=torch.cat(ssims), names=tuple(gen_names))
