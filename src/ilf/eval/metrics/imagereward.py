"""ImageReward (Xu et al. 2023) through the official `image-reward` package, run in its own venv.

`image-reward` needs transformers <= 4.55, which cannot share ilf's environment, so ilf writes a
manifest, runs `imagereward_worker.py` (shipped beside this file, standard library + ImageReward
only) with the interpreter of a venv that has `pip install image-reward`, and reads back JSON.

Official benchmark procedure (THUDM/ImageReward `test-benchmark.py`): the 100 prompts of
`benchmark/benchmark-prompts.json` (a list of {"id", "prompt"}), 10 images per prompt saved as
`{id}_{k}.png`, k = 0..9; each prompt's score is the mean reward of its images and the benchmark
score is the mean of those 100 means.

    res = run_imagereward("gens/", "benchmark-prompts.json", python="~/ir-venv/bin/python")
    res.score  # mean over prompts of the mean reward per prompt
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ImageRewardError, MetricError
from .images import save_images

WORKER_PATH = Path(__file__).with_name("imagereward_worker.py")
INSTALL_HINT = (
    "ImageReward runs in its own venv (it needs transformers<=4.55): python -m venv ir-venv && "
    "ir-venv/bin/pip install image-reward, then pass python='ir-venv/bin/python'"
)
PROMPTS_HINT = "the official prompts are benchmark/benchmark-prompts.json in https://github.com/THUDM/ImageReward"


@dataclass(frozen=True)
class PromptRewards:
    """The rewards of the images of one prompt."""

    id: str
    prompt: str
    rewards: tuple[float, ...]

    @property
    def mean(self) -> float:
        return math.fsum(self.rewards) / len(self.rewards)


@dataclass(frozen=True)
class ImageRewardResult:
    """Per-prompt rewards; `score` is the benchmark number (mean over prompts of per-prompt means)."""

    per_prompt: tuple[PromptRewards, ...]
    model: str = "ImageReward-v1.0"

    @property
    def score(self) -> float:
        return aggregate_rewards(self.per_prompt)


def aggregate_rewards(per_prompt: Sequence[PromptRewards]) -> float:
    """Mean over prompts of each prompt's mean reward (not the mean over all images)."""
    if not per_prompt:
        raise MetricError("no prompts to aggregate")
    return math.fsum(p.mean for p in per_prompt) / len(per_prompt)


def load_prompts(prompts: str | os.PathLike | Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Prompts as [{"id", "prompt"}, ...] from a JSON file in the official format or a sequence of dicts."""
    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts)
        if not path.is_file():
            raise MetricError(f"prompts file {str(path)!r} not found; {PROMPTS_HINT}")
        prompts = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(prompts, Sequence) or not prompts:
        raise MetricError(f"prompts must be a non-empty list of {{'id', 'prompt'}}; {PROMPTS_HINT}")
    out = []
    for item in prompts:
        if not (isinstance(item, Mapping) and isinstance(item.get("id"), str) and isinstance(item.get("prompt"), str)):
            raise MetricError(f"each prompt needs string 'id' and 'prompt', got {item!r:.100}")
        out.append({"id": item["id"], "prompt": item["prompt"]})
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise MetricError("prompt ids are not unique")
    return out


def prompt_image_paths(
    image_dir: str | os.PathLike, prompts: Sequence[Mapping[str, str]], images_per_prompt: int | None = None
) -> dict[str, list[Path]]:
    """The official file naming: prompt `id` owns `{id}_0.png`, `{id}_1.png`, ... in `image_dir`.

    With `images_per_prompt`, exactly k = 0..n-1 must exist; without, k counts up from 0 until a
    file is missing. A prompt without images is an error (it would silently drop out of the mean).
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise MetricError(f"image folder {str(image_dir)!r} does not exist")
    found: dict[str, list[Path]] = {}
    for p in prompts:
        paths = []
        while images_per_prompt is None or len(paths) < images_per_prompt:
            path = image_dir / f"{p['id']}_{len(paths)}.png"
            if not path.is_file():
                break
            paths.append(path.resolve())
        if not paths or (images_per_prompt is not None and len(paths) != images_per_prompt):
            want = images_per_prompt or "at least 1"
            raise MetricError(
                f"prompt {p['id']!r}: found {len(paths)} images named {p['id']}_<k>.png in {str(image_dir)!r}, "
                f"need {want}"
            )
        found[p["id"]] = paths
    return found


def _resolve_python(python: str | os.PathLike) -> str:
    path = Path(os.path.expanduser(str(python)))
    if path.is_file():
        return str(path)
    on_path = shutil.which(str(python))
    if on_path is None:
        raise ImageRewardError(f"ImageReward python {str(python)!r} not found; {INSTALL_HINT}")
    return on_path


def run_imagereward(
    image_dir: str | os.PathLike,
    prompts: str | os.PathLike | Sequence[Mapping[str, str]],
    *,
    python: str | os.PathLike,
    model: str = "ImageReward-v1.0",
    download_root: str | os.PathLike | None = None,
    device: str | None = None,
    images_per_prompt: int | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> ImageRewardResult:
    """Score `image_dir` (official `{id}_{k}.png` naming) against `prompts` with ImageReward run by
    the interpreter `python` (a venv with `image-reward`). `model` is a name ImageReward knows or a
    checkpoint path; `download_root` where its weights are (default ~/.cache/ImageReward)."""
    items = load_prompts(prompts)
    paths = prompt_image_paths(image_dir, items, images_per_prompt)
    exe = _resolve_python(python)
    manifest = {
        "model": model,
        "download_root": None if download_root is None else str(Path(download_root).expanduser().resolve()),
        "device": device,
        "items": [{"id": p["id"], "prompt": p["prompt"], "images": [str(x) for x in paths[p["id"]]]} for p in items],
    }
    with tempfile.TemporaryDirectory(prefix="ilf-imagereward-") as tmp:
        manifest_path, output_path = Path(tmp) / "manifest.json", Path(tmp) / "rewards.json"
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        cmd = [exe, str(WORKER_PATH), "--manifest", str(manifest_path), "--output", str(output_path)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=None if env is None else dict(env)
            )
        except subprocess.TimeoutExpired as exc:
            raise ImageRewardError(f"ImageReward worker ({exe}) did not finish within {timeout} s") from exc
        except OSError as exc:  # not executable, wrong format ...
            raise ImageRewardError(f"cannot run ImageReward python {exe!r}: {exc}; {INSTALL_HINT}") from exc
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
            hint = f"\n{INSTALL_HINT}" if proc.returncode == 3 else ""
            raise ImageRewardError(f"ImageReward worker ({exe}) failed with exit code {proc.returncode}:\n{tail}{hint}")
        try:
            out = json.loads(output_path.read_text(encoding="utf-8"))
            results = {r["id"]: r["rewards"] for r in out["results"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImageRewardError(f"ImageReward worker ({exe}) wrote no readable results: {exc}") from exc

    per_prompt = []
    for p in items:
        rewards = results.get(p["id"])
        n = len(paths[p["id"]])
        if not isinstance(rewards, list) or len(rewards) != n:
            raise ImageRewardError(f"ImageReward worker returned {rewards!r:.80} for prompt {p['id']!r} ({n} images)")
        rewards = tuple(float(r) for r in rewards)
        if not all(math.isfinite(r) for r in rewards):
            raise ImageRewardError(f"ImageReward worker returned non-finite rewards for prompt {p['id']!r}")
        per_prompt.append(PromptRewards(p["id"], p["prompt"], rewards))
    return ImageRewardResult(tuple(per_prompt), str(out.get("model", model)))


def score_imagereward(
    images: Mapping[str, torch.Tensor],
    prompts: str | os.PathLike | Sequence[Mapping[str, str]],
    *,
    python: str | os.PathLike,
    workdir: str | os.PathLike | None = None,
    **kwargs,
) -> ImageRewardResult:
    """Like `run_imagereward` for in-memory images: `images[id]` is [K, 3, H, W] in [0, 1] for that
    prompt. They are written as `{id}_{k}.png` to `workdir` (kept; must be new or empty, so no stale
    image is counted) or to a temporary folder."""
    items = load_prompts(prompts)
    if workdir is not None and Path(workdir).is_dir() and any(Path(workdir).iterdir()):
        raise MetricError(f"workdir {str(workdir)!r} is not empty")
    missing = [p["id"] for p in items if p["id"] not in images]
    if missing:
        raise MetricError(f"no images for prompts {missing[:5]}")

    def write_and_run(folder: Path) -> ImageRewardResult:
        for p in items:
            batch = images[p["id"]]
            save_images(batch, folder, [f"{p['id']}_{k}" for k in range(batch.shape[0])])
        return run_imagereward(folder, items, python=python, **kwargs)

    if workdir is not None:
        return write_and_run(Path(workdir))
    with tempfile.TemporaryDirectory(prefix="ilf-imagereward-images-") as tmp:
        return write_and_run(Path(tmp))
