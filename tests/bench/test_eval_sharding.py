"""Generation sharded over two processes (torchrun, gloo on CPU) writes exactly what one process writes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ilf.cli import main

ARGS = ["eval", "--tiny", "pixart", "--tiny-layers", "2", "--threads", "1", "--num-images", "5", "--batch-size", "2",
        "--method", "paper-cache:6,blocks=1,refresh=2", "--no-progress"]


TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun (installed with torch) is not found")
def test_two_processes_write_what_one_writes(tmp_path):
    torchrun = TORCHRUN
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "ilf.cli", *ARGS, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["num_processes"] == 2
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    one = sorted(p.name for p in (tmp_path / "one" / "images").iterdir())
    two = sorted(p.name for p in (tmp_path / "two" / "images").iterdir())
    assert one == two and len(one) == 5
    for name in one:
        a = np.asarray(Image.open(tmp_path / "one" / "images" / name))
        b = np.asarray(Image.open(tmp_path / "two" / "images" / name))
        assert np.array_equal(a, b), name
