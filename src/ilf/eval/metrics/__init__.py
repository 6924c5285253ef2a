"""Evaluation metrics of the ILF paper (§4.1), each a small function over image tensors
([B, 3, H, W] float in [0, 1]) or folders of images.

- fidelity to the full-step reference of the same seed: `psnr`, `ssim`, `fidelity`, `fidelity_folders`
- Fréchet distance / FID: `frechet_distance`, `compute_statistics`, `FeatureStatistics`, with
  `CleanFIDInception` (the FID Inception network + clean-fid preprocessing; weights are user-supplied)
- `CLIPMetrics`: CLIP score and CLIP-IQA (Good / Noisy / Colorful / Natural)
- ImageReward in its own venv: `run_imagereward`, `score_imagereward`

Heavy imports (torchmetrics, scipy, transformers, PIL) happen inside the functions that need them.
"""

from .clip import CLIP_IQA_PROMPTS, CLIPMetrics
from .errors import ImageRewardError, MetricError, MissingExtraError, MissingWeightsError
from .fidelity import FidelityScores, fidelity, fidelity_folders, psnr, ssim
from .frechet import (
    FeatureStatistics,
    compute_statistics,
    extract_features,
    frechet_distance,
    frechet_distance_between,
)
from .images import iter_image_batches, list_images, load_images, read_image, save_images, to_uint8
from .imagereward import (
    ImageRewardResult,
    PromptRewards,
    aggregate_rewards,
    load_prompts,
    run_imagereward,
    score_imagereward,
)
from .inception import (
    CleanFIDInception,
    FIDInceptionV3,
    clean_preprocess,
    clean_resize,
    convert_weights_to_safetensors,
    load_fid_inception,
)

__all__ = [
    "CLIP_IQA_PROMPTS",
    "CLIPMetrics",
    "CleanFIDInception",
    "FIDInceptionV3",
    "FeatureStatistics",
    "FidelityScores",
    "ImageRewardError",
    "ImageRewardResult",
    "MetricError",
    "MissingExtraError",
    "MissingWeightsError",
    "PromptRewards",
    "aggregate_rewards",
    "clean_preprocess",
    "clean_resize",
    "compute_statistics",
    "convert_weights_to_safetensors",
    "extract_features",
    "fidelity",
    "fidelity_folders",
    "frechet_distance",
    "frechet_distance_between",
    "iter_image_batches",
    "list_images",
    "load_fid_inception",
    "load_images",
    "load_prompts",
    "psnr",
    "read_image",
    "run_imagereward",
    "save_images",
    "score_imagereward",
    "ssim",
    "to_uint8",
]
