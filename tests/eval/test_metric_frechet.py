"""Fréchet distance and feature statistics, against closed forms and an eigenvalue formula."""

import numpy as np
import pytest
import torch

from ilf.eval.metrics import (
    FeatureStatistics,
    MetricError,
    compute_statistics,
    extract_features,
    frechet_distance,
    frechet_distance_between,
    load_images,
    save_images,
)


def _spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0 if rank else 0.1 * np.eye(d))


def _fd_by_eigenvalues(mu1, s1, mu2, s2):
    """Independent route: tr((S1 S2)^1/2) = sum of sqrt of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric PSD)."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam)))


def test_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 9.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # = 5.25 + 2.25
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(7.5)


def test_general_covariances_match_eigenvalue_formula():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = _spd(rng, 16), _spd(rng, 16)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(_fd_by_eigenvalues(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    assert got == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)  # symmetric


def test_rank_deficient_covariances_from_few_samples_stay_finite_and_correct():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(6, 20)), rng.normal(size=(6, 20)) + 0.3  # N < D: singular covariances
    s1, s2 = (FeatureStatistics.from_features(f) for f in (f1, f2))
    got = s1.frechet_distance(s2)
    assert np.isfinite(got)
    assert got == pytest.approx(_fd_by_eigenvalues(s1.mu, s1.sigma, s2.mu, s2.sigma), rel=1e-5)


def test_non_finite_sqrtm_retries_with_eps_on_the_diagonals(monkeypatch):
    import scipy.linalg

    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 2.0]), np.diag([3.0, 0.0])
    with pytest.warns(UserWarning, match="adding 0.01"):
        got = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps=1e-2)
    np.testing.assert_allclose(calls[1], (s1 + 0.01 * np.eye(2)) @ (s2 + 0.01 * np.eye(2)))
    expected = 1 + 2 + 3 + 0 - 2 * (np.sqrt(1.01 * 3.01) + np.sqrt(2.01 * 0.01))
    assert got == pytest.approx(expected, rel=1e-10)


def test_large_imaginary_part_is_an_error(monkeypatch):
    import scipy.linalg

    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda a: np.eye(2) * (1 + 1j))
    with pytest.raises(MetricError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))


def test_statistics_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(2).normal(size=(50, 5))
    st = FeatureStatistics.from_features(torch.from_numpy(x).float())
    xc = x - x.sum(0) / 50
    np.testing.assert_allclose(st.mu, x.sum(0) / 50, atol=1e-6)
    np.testing.assert_allclose(st.sigma, xc.T @ xc / 49, atol=1e-5)
    assert st.count == 50


def _channel_moments(batch):
    """A toy feature network: per-channel mean and std -> [B, 6]."""
    if isinstance(batch, list):
        return torch.stack([_channel_moments(im[None])[0] for im in batch])
    return torch.cat([batch.mean((2, 3)), batch.std((2, 3))], 1)


def test_streamed_statistics_of_a_folder_match_hand_computation_and_cache(tmp_path):
    imgs = torch.rand(7, 3, 10, 12, generator=torch.Generator().manual_seed(3))
    save_images(imgs, tmp_path / "imgs", [f"{i:02d}" for i in range(7)])
    cache = tmp_path / "stats" / "ref.npz"
    st = compute_statistics(
        tmp_path / "imgs", _channel_moments, batch_size=3, cache=cache, tag="moments", progress=False
    )
    loaded = load_images(tmp_path / "imgs").double()  # what the PNGs hold
    feats = torch.cat([loaded.mean((2, 3)), loaded.std((2, 3))], 1).numpy()
    np.testing.assert_allclose(st.mu, feats.mean(0), atol=1e-6)
    np.testing.assert_allclose(st.sigma, np.cov(feats, rowvar=False), atol=1e-6)

    with np.load(cache, allow_pickle=False) as f:  # ADM / clean-fid style keys
        assert {"mu", "sigma"} <= set(f.files)
        np.testing.assert_array_equal(f["mu"], st.mu)

    def must_not_run(batch):
        raise AssertionError("cache not used")

    again = compute_statistics(tmp_path / "imgs", must_not_run, cache=cache, tag="moments")
    np.testing.assert_array_equal(again.sigma, st.sigma)
    with pytest.raises(MetricError, match="tag"):
        compute_statistics(tmp_path / "imgs", must_not_run, cache=cache, tag="inception")


def test_adm_style_arr_0_files(tmp_path):
    rng = np.random.default_rng(4)
    acts = rng.normal(size=(30, 4))
    np.savez(tmp_path / "acts.npz", acts)  # positional -> key "arr_0"
    st = FeatureStatistics.load(tmp_path / "acts.npz")
    np.testing.assert_allclose(st.sigma, np.cov(acts, rowvar=False))

    images = rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)  # ADM batch: NHWC uint8
    np.savez(tmp_path / "imgs.npz", images)
    with pytest.raises(MetricError, match="feature_fn"):
        FeatureStatistics.load(tmp_path / "imgs.npz")
    st = FeatureStatistics.load(tmp_path / "imgs.npz", feature_fn=_channel_moments, batch_size=2)
    x = images.astype(np.float64) / 255.0
    feats = np.concatenate([x.mean((1, 2)), x.std((1, 2), ddof=1)], 1)
    np.testing.assert_allclose(st.mu, feats.mean(0), atol=1e-6)

    np.savez(tmp_path / "bad.npz", arr_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MetricError, match="not a plain .npz"):
        FeatureStatistics.load(tmp_path / "bad.npz")  # refused: would need unpickling


def test_feature_fn_with_wrong_output_is_reported():
    with pytest.raises(MetricError, match="returned shape"):
        extract_features(torch.rand(4, 3, 8, 8), lambda b: b.mean((1, 2, 3)), progress=False)


def test_bare_npy_activations_are_read_like_arr_0(tmp_path):
    acts = np.random.default_rng(5).normal(size=(12, 3))
    np.save(tmp_path / "acts.npy", acts)
    st = FeatureStatistics.load(tmp_path / "acts.npy")
    np.testing.assert_allclose(st.mu, acts.mean(0))
    assert st.count == 12


def test_distance_between_two_image_sets_and_tag_guard():
    g = torch.Generator().manual_seed(6)
    a = torch.rand(9, 3, 6, 6, generator=g)
    b = torch.rand(11, 3, 6, 6, generator=g) ** 2  # darker, so the two sets differ
    fa, fb = (_channel_moments(x).double().numpy() for x in (a, b))
    hand = _fd_by_eigenvalues(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    got = frechet_distance_between(a, b, _channel_moments, batch_size=4, progress=False)
    assert got == pytest.approx(hand, rel=1e-5) and got > 0.01
    sa = FeatureStatistics.from_features(fa, tag="net-a")
    with pytest.raises(MetricError, match="different feature extractors"):
        sa.frechet_distance(FeatureStatistics.from_features(fb, tag="net-b"))
