"""Image folder <-> tensor helpers shared by every metric."""

import numpy as np
import pytest
import torch
from PIL import Image

from ilf.eval.metrics import MetricError, iter_image_batches, list_images, load_images, save_images, to_uint8


def test_png_round_trip_is_exact_after_8bit_quantisation(tmp_path):
    x = torch.rand(3, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    save_images(x, tmp_path, ["b", "a", "c.png"])
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png", "c.png"]  # sorted by name
    loaded = load_images([tmp_path / "b.png", tmp_path / "a.png", tmp_path / "c.png"])
    # hand quantisation: nearest of the 256 levels
    expected = torch.from_numpy(np.round(x.numpy() * 255.0) / 255.0).float()
    torch.testing.assert_close(loaded, expected, atol=1e-7, rtol=0)
    assert to_uint8(x).dtype == torch.uint8


def test_pixels_land_where_pil_puts_them(tmp_path):
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[1, 5] = (255, 0, 10)  # row 1, column 5
    Image.fromarray(arr).save(tmp_path / "one.png")
    img = load_images(tmp_path)  # [1, 3, 4, 6]
    assert img.shape == (1, 3, 4, 6)
    assert img[0, :, 1, 5].tolist() == pytest.approx([1.0, 0.0, 10 / 255])
    assert img.sum().item() == pytest.approx(1.0 + 10 / 255)


def test_batches_stream_in_order_and_ragged_sizes_are_explicit(tmp_path):
    save_images(torch.rand(5, 3, 8, 8), tmp_path, [f"{i}" for i in range(5)])
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(tmp_path / "9.png")  # a different size, last by name
    batches = list(iter_image_batches(list_images(tmp_path)[:5], batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    with pytest.raises(MetricError, match="differ in size"):
        list(iter_image_batches(tmp_path, batch_size=6))
    (ragged,) = list(iter_image_batches(tmp_path, batch_size=6, ragged_ok=True))
    assert isinstance(ragged, list) and ragged[-1].shape == (3, 6, 10)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(MetricError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(MetricError, match="does not exist"):
        list_images(tmp_path / "nope")
