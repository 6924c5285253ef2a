"""`ilf bench` end to end on a tiny PixArt: every output, and each number checked against an independent
computation from the saved images (PSNR), the paper's counting rule (block forwards) or a fresh generation."""

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ilf.bench.methods import parse_method
from ilf.cli import main
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

METHODS = ["plain:20", "plain:10", "paper-cache:20,blocks=4,refresh=3", "ilf:10,feedback=untrained,plan=outer:2",
           "fbc:20,threshold=1e9"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--tiny", "pixart", "--tiny-layers", "6", "--threads", "1", "--methods", *METHODS,
                 "--num-images", "3", "--batch-size", "2", "--repeats", "2", "--warmup", "1", "--diagnostics",
                 "--grid-items", "2", "--out", str(out), "--no-progress"]) == 0
    assert torch.is_grad_enabled()  # in-process runs leave no global state behind (the training tests need grads)
    return out, json.loads((out / "results.json").read_text())


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def test_every_output_is_written(run):
    out, res = run
    for name in ("results.json", "table.md", "pareto.png", "grid.png", "diagnostics/time_change.png",
                 "diagnostics/block_change.png", "diagnostics/feature_dynamics.json"):
        assert (out / name).is_file(), name
    assert [r["method"]["spec"] for r in res["rows"]] == [parse_method(m).name for m in METHODS]
    assert res["rows"][0]["reference"] and not any(r["reference"] for r in res["rows"][1:])


def test_block_forwards_per_call(run):
    _, res = run
    # 3 images in calls of 2 and 1; a 6-block model: plain 6/step; cache: 4 inner blocks skipped on 13 of 20
    # steps; ILF: 10 steps + (3 loop blocks + feedback) on 4 feedback steps; FBC: block 0 only after step 0
    expected = {"plain:20": 120, "plain:10": 60, "paper-cache:20,blocks=4,refresh=3": 120 - 13 * 4,
                "ilf:10,feedback=untrained,plan=outer:2": 60 + 4 * 4, "fbc:20,threshold=1e+09": 6 + 19}
    for row in res["rows"]:
        assert row["block_forwards_per_call"] == [expected[row["method"]["spec"]]] * 2
        if row["predicted_block_forwards"] is not None:
            assert row["predicted_block_forwards"] == expected[row["method"]["spec"]]


def test_psnr_against_the_reference_pngs(run):
    out, res = run
    ref = res["rows"][0]
    for row in res["rows"][1:]:
        per_image = []
        for it in res["items"]:
            a = _png(out / row["images"] / f"{it['id']}.png")
            b = _png(out / ref["images"] / f"{it['id']}.png")
            per_image.append(10 * math.log10(1.0 / np.mean((a - b) ** 2)))
        assert row["metrics"]["psnr"] == pytest.approx(np.mean(per_image), rel=1e-4)
        assert 0 < row["metrics"]["ssim"] <= 1


def test_reference_images_are_the_seeded_stock_pipeline(run):
    out, res = run
    assert [it["seed"] for it in res["items"]] == [0, 1, 2]
    pipe = tiny_pipeline("pixart-alpha", num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    it = res["items"][1]
    img = pipe(it["prompt"], num_inference_steps=20, generator=torch.Generator().manual_seed(it["seed"]),
               output_type="np", **pixart_call_kwargs()).images[0]
    assert np.array_equal(np.round(np.clip(img, 0, 1) * 255), _png(out / "images/plain-20" / f"{it['id']}.png") * 255)


def test_timing_rows_hold_real_measurements(run):
    _, res = run
    for row in res["rows"]:
        assert len(row["times"]) == 2 and all(t > 0 for t in row["times"])
        assert row["peak_memory"]["peak_mib"] > 0


def test_timing_interleaves_rounds_after_warmups_and_divides_by_the_batch(tmp_path, monkeypatch):
    # a scripted clock: the k-th timed call (warm-ups included) takes k seconds, so each row's times say which
    # calls were kept (warm-ups dropped), in which order the methods ran, and that a call of 2 images counts half
    import ilf.bench.runner as runner

    calls = []

    def scripted(fn, device):
        calls.append(len(calls) + 1)
        return float(calls[-1])

    monkeypatch.setattr(runner, "time_call", scripted)
    methods = ["plain:20", "plain:10", "paper-cache:20,blocks=1,refresh=3"]
    assert main(["bench", "--tiny", "pixart", "--tiny-layers", "2", "--threads", "1", "--methods", *methods,
                 "--num-images", "2", "--repeats", "3", "--warmup", "2", "--time-batch", "2", "--grid-items", "0",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(calls) == 3 * (2 + 3)
    # warm-ups: calls 1-6 (two per method, method by method); rounds: 7-9, 10-12, 13-15 (one per method each)
    for i, row in enumerate(rows):
        assert row["times"] == [(7 + i) / 2, (10 + i) / 2, (13 + i) / 2]
        assert row["seconds_per_image"] == (10 + i) / 2
        assert row["speedup"] == pytest.approx(10 / (10 + i))


def test_table_bolds_the_best_psnr(run):
    out, res = run
    table = (out / "table.md").read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(lines) == len(METHODS)
    psnr_col = table.splitlines()[0].split("|").index(" PSNR ")
    best = max(range(1, len(METHODS)), key=lambda i: res["rows"][i]["metrics"]["psnr"])
    cells = [ln.split("|")[psnr_col].strip() for ln in lines]
    assert cells[best].startswith("**") and sum(c.startswith("**") for c in cells) == 1
    assert "(reference)" in lines[0]


def test_grid_layout(run):
    out, res = run
    from ilf.bench.grids import HEADER_HEIGHT, LABEL_WIDTH

    w, h = Image.open(out / "grid.png").size
    cell = 128  # 16 px images are shown at 128 px
    assert (w, h) == (LABEL_WIDTH + 2 * 3 * cell, HEADER_HEIGHT + len(METHODS) * cell)  # image, zoom, error map


def test_diagnostics_maps(run):
    out, _ = run
    data = json.loads((out / "diagnostics/feature_dynamics.json").read_text())
    for m in data["methods"]:
        t, b = np.array(m["time_change"], dtype=float), np.array(m["block_change"], dtype=float)
        steps = 10 if m["method"].startswith(("plain:10", "ilf")) else 20
        assert t.shape == b.shape == (6, steps)
        assert np.all(t[:, 0] == 0) and np.all(b[0, :] == 0)  # the first step / the first block: no change
    assert re.search(r"\d", json.dumps(data["normalisers"]))
