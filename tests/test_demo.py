"""`ilf demo --quick` end to end on the shapes world (the corrector, the default mode) and on digits (the paper's
mode with the shipped feedback, and the shipped corrector): the report's structure and its numbers agree."""

import json
import re

import pytest
from PIL import Image

from ilf.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_outputs_exist(demo):
    for name in ("report.md", "results.json", "grid.png", "pareto.png", "table.md"):
        assert (demo / name).is_file(), name
    assert Image.open(demo / "grid.png").size[0] > 200 and Image.open(demo / "pareto.png").size[0] > 200


def test_block_forwards_follow_the_configurations(demo):
    rows = {r["display"]: r for r in json.loads((demo / "results.json").read_text())["rows"]}
    n, (b, e) = 12, (1, 10)  # the shipped shapes backbone's depth and its paper-mode feedback's loop
    m, c = e - b + 1, round(2 * n / 3)
    expected = {
        "plain:20": 20 * n, "plain:10": 10 * n,
        "paper cache ~1.5x": 20 * n - 10 * c,  # 10 of 20 steps cached
        "paper cache ~1.8x": 20 * n - 13 * c,  # steps 0, 3, …, 18 refresh: 13 cached
        "ILF paper mode": 10 * n + 1 * (m + 1),  # 10 steps, feedback on the last one (its trained schedule)
        "corrector": 11 * n,  # TaylorSeer's full steps; its forecasts cost no block (the learned forecast)
        "plain:11": 11 * n,  # the corrector's rival: the fewest plain steps with at least its 132 block forwards
        "TaylorSeer (diffusers)": 11 * n,  # full steps 0, 1, 2, 4, 6, ..., 18 (interval 2 after 3 warm-up)
        "corrector fast": 7 * n,  # the shipped fast tier: 7 full steps of its shorter run, forecasts free
        "plain:7": 7 * n,  # its rival: the fewest plain steps with at least its 84 block forwards
        "TaylorSeer fast (diffusers)": 7 * n,  # TaylorSeer tuned within 85: 11 steps, full 0, 1, 3, 5, 7, 9, 10
    }
    assert {k: rows[k]["block_forwards"] for k in expected} == expected


def test_report_table_has_the_papers_columns_and_consistent_speedups(demo):
    report = (demo / "report.md").read_text()
    assert report.startswith("# ilf demo — the shapes world")
    header = next(line for line in report.splitlines() if line.startswith("| Method"))
    for col in ("# Steps", "# Blocks", "s / img", "Alignment", "FD", "PSNR", "SSIM"):
        assert col in header
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert len(rows) == 11
    ref_s = None
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        blocks = re.match(r"(\d+)(?: \((\d+\.\d)x\))?", cells[2])
        secs = re.match(r"([\d.]+)(?: \(([\d.]+)x\))?", cells[3])
        if ref_s is None:
            ref_blocks, ref_s = int(blocks.group(1)), float(secs.group(1))
            continue
        assert float(blocks.group(2)) == pytest.approx(ref_blocks / int(blocks.group(1)), abs=0.051)
        speedup = ref_s / float(secs.group(1))
        if secs.group(2) is None:  # the table leaves out ratios within 1.00 ± 0.05 (a busy machine can time so)
            assert speedup == pytest.approx(1.0, abs=0.051)
        else:
            assert float(secs.group(2)) == pytest.approx(speedup, rel=0.06, abs=0.051)
    assert "## Verdict" in report and ("it wins" in report or "it LOSES" in report or "it ties" in report)
    assert "Corrector: trained here (`--distill corrector`" in report
    assert "**corrector** (132 block forwards) vs **plain:11** (132, the fewest plain steps" in report


def test_verdict_compares_with_the_fair_rival_and_agrees_with_the_table(demo):
    results = json.loads((demo / "results.json").read_text())
    verdicts = {(f["ilf"], f["rival_kind"]): f for f in results["demo"]["verdict"]}
    assert set(verdicts) == {(a, b) for a in ("ILF paper mode", "corrector", "corrector fast")
                             for b in ("plain", "cache")}
    fast, fast_cache = verdicts["corrector fast", "plain"], verdicts["corrector fast", "cache"]
    assert (fast["rival"], fast["ilf_blocks"], fast["rival_blocks"]) == ("plain:7", 84, 84)
    assert (fast_cache["rival"], fast_cache["rival_blocks"]) == ("TaylorSeer fast (diffusers)", 84)
    found, cache = verdicts["corrector", "plain"], verdicts["corrector", "cache"]
    assert (found["rival"], found["ilf_blocks"], found["rival_blocks"]) == ("plain:11", 132, 132)
    assert (cache["rival"], cache["rival_blocks"]) == ("TaylorSeer (diffusers)", 132)
    assert verdicts["ILF paper mode", "plain"]["ilf_blocks"] == 131  # loop 1-10 and F on the last of 10 steps
    rows = {r["display"]: r for r in results["rows"]}
    for f in (found, cache):
        c = f["comparisons"]
        for k in ("psnr", "ssim", "alignment"):  # per-item means from the image folders = the table's means
            assert c[k]["mean_a"] == pytest.approx(rows["corrector"]["metrics"][k], rel=1e-4, abs=1e-4)
            assert c[k]["mean_b"] == pytest.approx(rows[f["rival"]]["metrics"][k], rel=1e-4, abs=1e-4)
            assert c[k]["ci95"][0] <= c[k]["diff"] <= c[k]["ci95"][1]
    report = (demo / "report.md").read_text()
    assert "vs **TaylorSeer (diffusers)** (132, a training-free cache at about the same budget)" in report


def test_verdict_words_follow_the_intervals():
    from ilf.demo import verdict

    def comp(diff, lo, hi):
        return {"mean_a": 1.0 + diff, "mean_b": 1.0, "diff": diff, "ci95": [lo, hi], "seed_wins": 3, "num_seeds": 4}

    found = {"ilf": "ILF", "rival": "plain:12", "ilf_blocks": 134, "rival_blocks": 144,
             "comparisons": {"psnr": comp(0.9, 0.4, 1.4), "accuracy": comp(0.0, -0.02, 0.02)}}
    (line,) = verdict([found])
    assert "it wins" in line and "better psnr" in line and "equal (within noise) accuracy" in line
    found["comparisons"]["accuracy"] = comp(-0.05, -0.09, -0.01)
    (line,) = verdict([found])
    assert "it LOSES" in line and "worse accuracy" in line


def test_paper_mode_digits_demo_with_the_shipped_feedback(tmp_path):
    out = tmp_path / "digits"
    assert main(["demo", "--world", "digits", "--mode", "ilf", "--quick", "--pretrained-feedback", "--out", str(out),
                 "--threads", "1", "--num-images", "12"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# ilf demo — the digits world")
    assert "Feedback: the shipped one" in report and "t_post = none" in report
    assert "feedback-run" not in {p.name for p in out.iterdir()}  # nothing was trained
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["display"] for r in rows][-1] == "ILF"
    # the verdict re-reads the image folders (sorted names: d0_0, d10_0, d11_0, d1_0, …): its per-item accuracy
    # must pair each image with its own class, so its means equal the table's
    by = {r["display"]: r for r in rows}
    found, cache = json.loads((out / "results.json").read_text())["demo"]["verdict"]
    assert (found["rival"], cache["rival"]) == ("plain:11", "TaylorSeer (diffusers)")
    for name, side in ((found["ilf"], "mean_a"), (found["rival"], "mean_b")):
        assert found["comparisons"]["accuracy"][side] == pytest.approx(by[name]["metrics"]["accuracy"])
        assert by[name]["metrics"]["accuracy"] > 0.5
    assert all("accuracy" in r["metrics"] for r in rows)


def test_shipped_corrector_demo_and_paper_flags_refused_in_corrector_mode(tmp_path, capsys):
    out = tmp_path / "digits"
    assert main(["demo", "--world", "digits", "--quick", "--pretrained-feedback", "--out", str(out),
                 "--threads", "1", "--num-images", "4"]) == 0
    report = (out / "report.md").read_text()
    assert "Corrector: the shipped one" in report and "feedback-run" not in {p.name for p in out.iterdir()}
    rows = {r["display"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["corrector"]["block_forwards"] == rows["TaylorSeer (diffusers)"]["block_forwards"] == 132
    assert main(["demo", "--loop", "2", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--loop set the paper's inner loop: add --mode ilf" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
