"""ADM-evaluator sample batches: the streamed .npz loads as numpy's own and holds the PNGs in order."""

import numpy as np
import torch

from ilf.eval.adm import write_adm_npz
from ilf.eval.metrics import FeatureStatistics, save_images


def test_npz_round_trip(tmp_path):
    images = torch.rand(5, 3, 12, 10)
    files = save_images(images, tmp_path / "png", [f"{i}" for i in range(5)])
    path = write_adm_npz(files[::-1], tmp_path / "samples.npz")
    with np.load(path) as data:
        arr = data["arr_0"]
    assert arr.shape == (5, 12, 10, 3) and arr.dtype == np.uint8
    expected = images.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()[::-1]
    assert np.array_equal(arr, expected)
    # the metrics read it as an ADM image batch
    stats = FeatureStatistics.load(path, feature_fn=lambda x: x.mean(dim=(2, 3)))
    assert stats.count == 5
