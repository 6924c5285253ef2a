"""ImageReward orchestration: our side writes the manifest, runs a given python on the worker
script and aggregates. A fake "python" stands in for the ImageReward venv; the real worker script
is also run against stub `ImageReward` / `torch` packages."""

import json
import math
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from ilf.eval.metrics import ImageRewardError, MetricError, run_imagereward, save_images, score_imagereward
from ilf.eval.metrics.imagereward import WORKER_PATH

PROMPTS = [
    {"id": "000001-0001", "prompt": "a cute cat"},
    {"id": "000002-0002", "prompt": "a red car on the beach"},
    {"id": "000003-0003", "prompt": "technology"},
]
COUNTS = {"000001-0001": 2, "000002-0002": 3, "000003-0003": 1}  # unequal: mean of means != mean of all


def _hand_reward(prompt, k):
    return len(prompt) / 10 + k  # what the fake ImageReward gives image k of a prompt


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "gens"
    for p in PROMPTS:
        save_images(torch.rand(COUNTS[p["id"]], 3, 8, 8), folder, [f"{p['id']}_{k}" for k in range(COUNTS[p["id"]])])
    return folder


def _fake_python(tmp_path, body):
    """An executable standing in for the ImageReward venv's python: runs `body` with argv of the worker call."""
    path = tmp_path / "fake-python"
    path.write_text(f"#!{sys.executable}\nimport json, sys\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


SCORING_BODY = """
assert sys.argv[1].endswith("imagereward_worker.py"), sys.argv
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
manifest = json.load(open(args["--manifest"]))
results = [{"id": it["id"], "rewards": [len(it["prompt"]) / 10 + k for k in range(len(it["images"]))]}
           for it in manifest["items"]]
json.dump({"model": manifest["model"], "results": results}, open(args["--output"], "w"))
"""


def test_score_is_mean_over_prompts_of_mean_rewards(tmp_path, image_dir):
    res = run_imagereward(image_dir, PROMPTS, python=_fake_python(tmp_path, SCORING_BODY))
    per_prompt = [[_hand_reward(p["prompt"], k) for k in range(COUNTS[p["id"]])] for p in PROMPTS]
    hand = sum(sum(r) / len(r) for r in per_prompt) / len(per_prompt)
    assert res.score == pytest.approx(hand, abs=1e-12)
    mean_over_images = sum(map(sum, per_prompt)) / sum(map(len, per_prompt))
    assert abs(res.score - mean_over_images) > 0.1  # the other aggregation would differ
    assert [p.rewards for p in res.per_prompt] == [tuple(r) for r in per_prompt]
    assert res.model == "ImageReward-v1.0"


def test_prompts_file_and_in_memory_images(tmp_path):
    prompts_file = tmp_path / "benchmark-prompts.json"
    prompts_file.write_text(json.dumps(PROMPTS))
    images = {p["id"]: torch.rand(COUNTS[p["id"]], 3, 8, 8) for p in PROMPTS}
    res = score_imagereward(
        images, prompts_file, python=_fake_python(tmp_path, SCORING_BODY), workdir=tmp_path / "written"
    )
    assert sorted(f.name for f in (tmp_path / "written").iterdir()) == sorted(
        f"{p['id']}_{k}.png" for p in PROMPTS for k in range(COUNTS[p["id"]])
    )
    assert [len(p.rewards) for p in res.per_prompt] == [2, 3, 1]


def test_worker_failure_surfaces_its_stderr(tmp_path, image_dir):
    crash = _fake_python(tmp_path, 'sys.stderr.write("RuntimeError: CUDA out of memory\\n"); sys.exit(1)')
    with pytest.raises(ImageRewardError, match="exit code 1") as err:
        run_imagereward(image_dir, PROMPTS, python=crash)
    assert "CUDA out of memory" in str(err.value)


def test_missing_python_names_the_install(tmp_path, image_dir):
    with pytest.raises(ImageRewardError, match="pip install image-reward"):
        run_imagereward(image_dir, PROMPTS, python=tmp_path / "no-venv" / "bin" / "python")


def test_wrong_number_of_rewards_is_caught(tmp_path, image_dir):
    short = SCORING_BODY.replace('for k in range(len(it["images"]))', "for k in range(1)")
    with pytest.raises(ImageRewardError, match=r"\[1\.0\] for prompt '000001-0001' \(2 images\)"):
        run_imagereward(image_dir, PROMPTS, python=_fake_python(tmp_path, short))


def test_missing_images_fail_before_running(tmp_path, image_dir):
    (image_dir / "000002-0002_0.png").unlink()
    with pytest.raises(MetricError, match="000002-0002"):
        run_imagereward(image_dir, PROMPTS, python=_fake_python(tmp_path, "raise SystemExit('must not run')"))
    with pytest.raises(MetricError, match="need 10"):
        run_imagereward(image_dir, PROMPTS[:1], python=sys.executable, images_per_prompt=10)


# --- the real worker script, with stand-ins for the packages of the ImageReward venv ----------------

STUB_IMAGEREWARD = """
def load(name, device=None, download_root=None):
    if name.endswith("missing.pt"):
        raise FileNotFoundError(name)
    return _Model()

class _Model:
    def score(self, prompt, image_path):
        assert isinstance(image_path, list)
        rewards = [len(prompt) / 10 + k for k in range(len(image_path))]
        return rewards if len(rewards) > 1 else rewards[0]  # as ImageReward: one image -> a float
"""
STUB_TORCH = """
import contextlib
no_grad = contextlib.nullcontext
class cuda:
    @staticmethod
    def is_available():
        return False
"""


def _stub_env(tmp_path, with_imagereward=True):
    site = tmp_path / "stub-site"
    (site / "torch").mkdir(parents=True, exist_ok=True)
    (site / "torch" / "__init__.py").write_text(STUB_TORCH)
    if with_imagereward:
        (site / "ImageReward").mkdir(exist_ok=True)
        (site / "ImageReward" / "__init__.py").write_text(STUB_IMAGEREWARD)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_real_worker_scores_with_the_imagereward_api(tmp_path, image_dir):
    res = run_imagereward(image_dir, PROMPTS, python=sys.executable, env=_stub_env(tmp_path))
    for p in res.per_prompt:
        prompt = next(q["prompt"] for q in PROMPTS if q["id"] == p.id)
        assert p.rewards == tuple(_hand_reward(prompt, k) for k in range(COUNTS[p.id]))  # incl. the 1-image float case
    assert math.isfinite(res.score)


def test_real_worker_reports_missing_package_and_weights(tmp_path, image_dir):
    with pytest.raises(ImageRewardError, match="pip install image-reward") as err:
        run_imagereward(image_dir, PROMPTS, python=sys.executable, env=_stub_env(tmp_path, with_imagereward=False))
    assert "exit code 3" in str(err.value)
    with pytest.raises(ImageRewardError, match="huggingface.co/THUDM/ImageReward") as err:
        run_imagereward(image_dir, PROMPTS, python=sys.executable, model="/x/missing.pt", env=_stub_env(tmp_path))
    assert "exit code 4" in str(err.value)


def test_worker_script_is_standalone():
    """It must run in another venv: only the standard library at import time, no ilf."""
    src = WORKER_PATH.read_text()
    assert "import ilf" not in src and "from ilf" not in src
    proc = subprocess.run([sys.executable, "-I", str(WORKER_PATH), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--manifest" in proc.stdout
