"""bench/gpu_speed.py's `--smoke` mode: the GPU benchmark's whole path (real pipelines, every row, JSON and
Markdown out) on tiny configs on the CPU, so the script is proven before GPU time is spent on it."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_speed", ROOT / "bench" / "gpu_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_runs_every_row_and_counts_the_paper_s_block_forwards(tmp_path):
    out = tmp_path / "gpu_speed.json"
    _script().main(["--smoke", "--models", "pixart-512,flux-dev-1024", "--modes", "eager,regional",
                    "--warmup-rounds", "1", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["complete"] and results["smoke"]
    pixart = results["models"]["pixart-512"]
    blocks = {k: r["block_forwards"] for k, r in pixart["eager"].items()}
    assert blocks["stock-20"] == 560 and blocks["ilf-20 no feedback step"] == 560  # 28 blocks
    assert blocks["ilf-10 outer:2"] == 332 and blocks["ilf-10 last:1"] == 293  # the paper's 4·41 + 6·28
    assert blocks["paper-cache-20 (inner 18, 1 in 3)"] == 326 and blocks["taylorseer-20"] < 560
    for mode in ("eager", "regional"):
        for row in pixart[mode].values():
            assert row["median_s"] > 0 and row["measured_over_predicted"] > 0
    assert all(r["max_abs_diff_to_eager"] == 0 for r in pixart["regional"].values())  # eager backend
    flux = results["models"]["flux-dev-1024"]["eager"]  # bf16: the rounded timesteps are located
    assert flux["ilf-10 outer:2"]["block_forwards"] == 6 * 10 + 4 * (3 + 1)  # 6 blocks, loop (2, 4)
    assert out.with_suffix(".md").read_text().count("| flux-dev-1024 |") == 18  # 9 rows, 2 modes
