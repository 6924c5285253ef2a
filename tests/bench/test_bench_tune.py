"""Schedule auto-tune: the candidate set against the budget (by ilf's block-count rule), and the pick."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import write_feedback_config
from ilf import feedback_steps
from ilf.bench.errors import BenchError
from ilf.bench.tune import TuneSpace, candidates
from ilf.cli import main


def test_candidates_fit_the_budget_and_are_distinct(tmp_path):
    fb = str(write_feedback_config(tmp_path / "fb", (8, 19)))
    space = TuneSpace([fb], steps=[10], plans=["outer", "skip-inner", "all"], t_posts=["rescale", "none"],
                      ratios=["m/n", "n/m"])
    specs = candidates(space, 28, budget=332)
    names = [s.name for s in specs]
    # outer:2 at 10 steps = 4 feedback steps = 280 + 4 * 13 = 332: in; outer:3 (6 steps, 358) and all: out
    assert f"ilf:10,feedback={fb},plan=outer:2,t_post=rescale,ratio=m/n" in names
    assert not any("outer:3" in n or "plan=all" in n for n in names)
    # skip-inner:6 switches on the same steps as outer:2: one candidate, not two
    assert not any("skip-inner:6" in n for n in names)
    sets = {(feedback_steps(s.get("plan"), 10), s.get("t_post"), s.get("ratio")) for s in specs}
    assert len(sets) == len(specs)
    # ratio only varies where it matters; 'none' appears once per plan
    assert sum(1 for s in specs if s.get("t_post") == "none") == len({feedback_steps(s.get("plan"), 10) for s in specs})
    under = candidates(space, 28, budget=331)  # outer:2 costs 332: out; outer:1 (306) stays in
    assert under and all("outer:2" not in s.name for s in under) and any("outer:1" in s.name for s in under)
    kept = candidates(space, 28, budget=400, max_configs=3)
    assert len(kept) == 3 and all("outer:2" in s.name or "skip-inner:" in s.name for s in kept)
    with pytest.raises(BenchError, match="raise --budget"):
        candidates(space, 28, budget=100)


def test_tune_picks_the_best_scored_candidate(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--tiny", "pixart", "--tiny-layers", "6", "--threads", "1", "--feedback", "untrained",
                 "--budget", "80", "--steps", "10", "--plans", "outer", "--t-post", "rescale", "none",
                 "--num-images", "1", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "tune.json").read_text())
    # the scores, recomputed from the saved PNGs (PSNR against the reference's, per image, then the mean)
    rows = {r["method"]["spec"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    ref = next(r for r in rows.values() if r["reference"])

    def png(folder, name):
        return np.asarray(Image.open(out / folder / name).convert("RGB"), dtype=np.float64) / 255.0

    def psnr(row):
        names = sorted(f.name for f in (out / ref["images"]).glob("*.png"))
        return float(np.mean([10 * math.log10(1.0 / np.mean((png(row["images"], n) - png(ref["images"], n)) ** 2))
                              for n in names]))

    independent = {t["method"]: psnr(rows[t["method"]]) for t in res["tried"]}
    assert [t["score"] for t in res["tried"]] == pytest.approx(list(independent.values()), rel=1e-4)
    assert res["best"]["method"] == max(independent, key=independent.get)
    assert list(independent.values()) == sorted(independent.values(), reverse=True)
    assert all(t["block_forwards"] <= 80 for t in res["tried"])
    assert res["num_candidates"] == len(res["tried"]) == 4  # outer:1, outer:2 x rescale, none (loop 2-4: 60+4k)
    assert res["best"]["method"] in capsys.readouterr().out


@pytest.mark.parametrize("metric,order", [("fid", ["b", "a", "failed"]), ("psnr", ["a", "b", "failed"])])
def test_ranking_puts_a_failed_candidate_last_in_either_direction(metric, order):
    from ilf.bench.tune import rank_tried

    def row(name, score, reference=False):
        return {"method": {"spec": name}, "reference": reference, "metrics": {} if score is None else {metric: score}}

    rows = [row("ref", 99.0, reference=True), row("failed", None), row("a", 30.0), row("b", 10.0)]
    assert [r["method"]["spec"] for r in rank_tried(rows, metric)] == order  # fid: lower first; psnr: higher
