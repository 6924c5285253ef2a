"""Tiny real pipelines on disk and tiny data sets, shared by the training tests."""

import numpy as np
import pytest
from PIL import Image

from ilf.tiny import tiny_pipeline

WORDS = ["red cat", "blue dog", "small square", "large circle"]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-world")
    for kind in ("pixart-alpha", "dit", "sd3"):
        tiny_pipeline(kind, num_layers=6).save_pretrained(root / kind)
    rng = np.random.default_rng(0)
    cap = root / "captions"
    cap.mkdir()
    for i in range(16):
        # smooth random images: blocks of colour, upsampled (a VAE sees structure, not white noise)
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((16, 16), Image.BICUBIC).save(cap / f"img{i:02d}.png")
        (cap / f"img{i:02d}.txt").write_text("a " + WORDS[i % 4])
    # prompts for --distill corrector, which records the pipeline's own sampling instead of reading data
    (root / "prompts.txt").write_text("\n".join(f"a {w}" for w in WORDS * 2) + "\n")
    for c in ("3", "7"):
        d = root / "classes" / c
        d.mkdir(parents=True)
        for i in range(6):
            small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(small).resize((16, 16), Image.BICUBIC).save(d / f"{i}.png")
    return root
