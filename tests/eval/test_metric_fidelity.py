"""PSNR / SSIM against the full-step reference, checked against hand-written formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ilf.eval.metrics import MetricError, fidelity, fidelity_folders, psnr, save_images, ssim


def _pair(seed=0, b=3, h=24, w=20):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64)
    noise = torch.randn(b, 3, h, w, generator=g, dtype=torch.float64) * torch.tensor([0.02, 0.1, 0.3]).view(b, 1, 1, 1)
    return (ref + noise).clamp(0, 1), ref  # three different noise levels


def _hand_ssim_map(x, y):
    """Wang et al. SSIM map, Gaussian window 11 / sigma 1.5, data range 1, inputs reflect-padded by 5."""
    i = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(i**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)  # one window per channel
    x, y = (F.pad(t, (5, 5, 5, 5), mode="reflect") for t in (x, y))

    def blur(t):
        return F.conv2d(t, win, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))  # [B, 3, H, W]


def test_ssim_matches_hand_formula_with_stated_window():
    x, y = _pair()
    smap = _hand_ssim_map(x, y)
    torch.testing.assert_close(ssim(x, y).double(), smap.flatten(1).mean(1), atol=2e-5, rtol=0)
    torch.testing.assert_close(
        ssim(x, y, border="valid").double(), smap[..., 5:-5, 5:-5].flatten(1).mean(1), atol=2e-5, rtol=0
    )
    # more noise, less similar: the three images are really scored separately
    s = ssim(x, y)
    assert s[0] > s[1] > s[2]


def test_valid_ssim_equals_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _pair(seed=1)
    ours = ssim(x, y, border="valid")
    for b in range(x.shape[0]):
        ref = skm.structural_similarity(
            x[b].numpy(), y[b].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=0,
        )
        assert ours[b].item() == pytest.approx(ref, abs=2e-5)


def test_psnr_is_per_image_not_pooled():
    x, y = _pair(seed=2)
    mse = ((x - y) ** 2).flatten(1).mean(1)  # [B]
    hand = 10 * torch.log10(1.0 / mse)
    got = psnr(x, y)
    torch.testing.assert_close(got.double(), hand, atol=1e-4, rtol=0)
    pooled = 10 * math.log10(1.0 / mse.mean().item())
    scores = fidelity(x, y)
    assert scores.psnr_mean == pytest.approx(hand.mean().item(), abs=1e-4)
    assert abs(scores.psnr_mean - pooled) > 0.5  # the pooled number would be a different metric
    assert scores.ssim_mean == pytest.approx(ssim(x, y).double().mean().item())


def test_identical_images_score_perfectly():
    x, _ = _pair(seed=3)
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(3), atol=1e-6, rtol=0)


def test_folders_pair_by_file_name(tmp_path):
    x, y = _pair(seed=4)
    names = ["seed_2", "seed_0", "seed_1"]
    save_images(x, tmp_path / "gen", names)
    save_images(y, tmp_path / "ref", names)
    res = fidelity_folders(tmp_path / "gen", tmp_path / "ref", batch_size=2)
    assert res.names == ("seed_0.png", "seed_1.png", "seed_2.png")
    q = lambda t: torch.from_numpy(np.round(t.numpy() * 255) / 255)  # what the PNGs hold
    order = [1, 2, 0]  # file-name order of the saved images
    mse = ((q(x) - q(y)) ** 2).flatten(1).mean(1)[order]
    torch.testing.assert_close(res.psnr.double(), 10 * torch.log10(1 / mse), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        res.ssim.double(), _hand_ssim_map(q(x), q(y)).flatten(1).mean(1)[order], atol=2e-5, rtol=0
    )
    (tmp_path / "gen" / "seed_2.png").rename(tmp_path / "gen" / "seed_9.png")
    with pytest.raises(MetricError, match="seed_9"):
        fidelity_folders(tmp_path / "gen", tmp_path / "ref")


def test_mismatched_shapes_are_refused():
    with pytest.raises(MetricError, match="one shape"):
        psnr(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 17))
    with pytest.raises(MetricError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
