"""bench/record_cost.py: the recording's bytes, extrapolated from a short schedule to the 20-step recipe, equal
what the trainer writes when it records the 20-step recipe itself (tiny widths, every family the doc reports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("record_cost", ROOT / "bench" / "record_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke():
    return load().main(["--smoke", "--repeats", "1"])


@pytest.mark.parametrize("model", ["pixart-alpha-512", "flux1-dev-1024", "wan2.1-t2v-1.3b-480p"])
def test_the_extrapolated_record_equals_the_recorded_20_step_recipe(smoke, model):
    r = smoke["models"][model]
    e, d = r["direct_extrapolated"], r["direct"]
    assert e["teacher"] == d["teacher"] and e["rollout"] == d["rollout"]  # tensor bytes, exactly
    for k in ("teacher_file", "rollout_file"):  # the files: + their JSON headers, scaled by their entries
        assert abs(e[k] / d[k] - 1) < 0.02, (k, e[k], d[k])
    assert d["rollout"] > d["teacher"] > 0


def test_the_schedule_counts_are_the_shipped_recipes():
    n = load().counts(num_inference_steps=20, interval=2, warmup=3)
    assert (n["full_steps"], n["forecast_steps"]) == (11, 9)  # full 0, 1, 2, 4, …, 18; forecast 3, 5, …, 19
    assert n["rollout"] == dict(solver=20, call=9, full=11, after=1)  # the last forecast step is 19
    assert n["teacher"] == dict(x0=1, target=9)


def test_a_part_that_is_not_affine_in_the_frames_is_refused():
    mod = load()
    point = lambda each: {"rollout": {"parts": {"full": {"each": each, "fixed": 0, "n": 2}}}}  # noqa: E731
    assert mod.affine({1: point(10), 2: point(20), 3: point(30)}, 21)["rollout"]["parts"]["full"]["each"] == 210
    with pytest.raises(AssertionError):
        mod.affine({1: point(10), 2: point(20), 3: point(31)}, 21)
