"""The digits world: sklearn's 8×8 digits as smooth 32×32 RGB with a fixed split."""

import numpy as np
import torch
from sklearn.datasets import load_digits

from ilf.worlds import digits


def test_split_is_fixed_disjoint_and_complete():
    tr, he = digits.split_indices("train"), digits.split_indices("heldout")
    assert len(tr) == 1437 and len(he) == 360
    assert not set(tr) & set(he) and len(set(tr) | set(he)) == 1797
    assert np.array_equal(he, np.arange(0, 1797, 5))


def test_images_are_smooth_32px_rgb_in_unit_range():
    x, y = digits.batch(range(10), "heldout")
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey
    # smooth upsampling: many distinct levels, not 17 blocky ones
    assert len(torch.unique(x[0])) > 100


def test_images_and_labels_come_from_sklearn():
    d = load_digits()
    x, y = digits.batch([3], "train")  # 4th training digit = sklearn index 4 (index 0 is held out)
    assert int(y[0]) == d.target[4]
    # block-averaging back to 8×8 recovers the source image (ink bright on black)
    back = torch.nn.functional.avg_pool2d((x[:1, :1] + 1) / 2, 4)[0, 0].numpy() * 16
    assert np.corrcoef(back.ravel(), d.images[4].ravel())[0, 1] > 0.95


def test_sample_matches_batch_and_wraps():
    img, label = digits.sample(5, "heldout")
    xb, yb = digits.batch([5 + 360], "heldout")
    assert torch.equal(img, xb[0]) and label == int(yb[0])
    assert set(digits.batch(range(360), "heldout")[1].tolist()) == set(range(10))
