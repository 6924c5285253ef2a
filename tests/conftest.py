import os
import sys

# A missing weight must fail at once rather than retry a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# The test models are tiny: one thread avoids thread hand-off overhead that dominates their cost
# (a 20-step, 28-block tiny pipeline: 0.7 s on one thread, 10 s on two busy cores).
torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(__file__))  # shared test helpers (adapter_mixin)


@pytest.fixture(scope="session")
def pipe_dirs(tmp_path_factory):
    """Tiny PixArt-α and DiT pipelines saved with `save_pretrained` (6 blocks each), read-only for the tests."""
    from ilf.tiny import tiny_pipeline

    root = tmp_path_factory.mktemp("pipes")
    for kind in ("pixart-alpha", "dit"):
        tiny_pipeline(kind, num_layers=6).save_pretrained(root / kind)
    return root
