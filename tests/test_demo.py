"""`ilf demo --quick` end to end on the shapes world: the report's structure and its numbers agree."""

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
    n, (b, e) = 12, (3, 8)  # the shipped shapes backbone's depth and the demo's loop
    m, c = e - b + 1, round(2 * n / 3)
    expected = {
        "plain:20": 20 * n, "plain:12": 12 * n, "plain:10": 10 * n,
        "paper cache ~1.5x": 20 * n - 10 * c,  # 10 of 20 steps cached
        "paper cache ~1.8x": 20 * n - 13 * c,  # steps 0, 3, …, 18 refresh: 13 cached
        "ILF ~1.5x": 12 * n + 4 * (m + 1),  # 12 steps, feedback on the first 2 and last 2
        "ILF ~1.8x": 10 * n + 4 * (m + 1),
    }
    assert {k: rows[k]["block_forwards"] for k in expected} == expected


def test_report_table_has_the_papers_columns_and_consistent_speedups(demo):
    report = (demo / "report.md").read_text()
    assert report.startswith("# ilf demo — the shapes world")
    header = next(line for line in report.splitlines() if line.startswith("| Method"))
    for col in ("# Steps", "# Blocks", "s / img", "Alignment", "FD", "PSNR", "SSIM"):
        assert col in header
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert len(rows) == 7
    ref_s = None
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        blocks = re.match(r"(\d+)(?: \((\d+\.\d)x\))?", cells[2])
        secs = re.match(r"([\d.]+)(?: \(([\d.]+)x\))?", cells[3])
        if ref_s is None:
            ref_blocks, ref_s = int(blocks.group(1)), float(secs.group(1))
            continue
        assert float(blocks.group(2)) == pytest.approx(ref_blocks / int(blocks.group(1)), abs=0.051)
        assert float(secs.group(2)) == pytest.approx(ref_s / float(secs.group(1)), rel=0.06, abs=0.051)
    assert "## Verdict" in report and ("ILF wins" in report or "ILF LOSES" in report or "ILF ties" in report)
    assert "Feedback: trained here with Fast Approximate Distillation" in report


def test_verdict_calls_noise_a_tie_and_says_when_ilf_loses():
    from ilf.demo import verdict

    def row(name, blocks, **metrics):
        return {"display": name, "block_forwards": blocks, "metrics": metrics}

    rows = [row("plain:12", 144, accuracy=0.95, world_fd=197.2, psnr=39.7),
            row("ILF ~1.8x", 148, accuracy=0.95, world_fd=195.3, psnr=33.6)]
    (line,) = verdict(rows, "accuracy")
    assert "ILF LOSES" in line and "within noise" in line  # a 1 % FD gap is noise; 6 dB PSNR is not
    rows[1]["metrics"].update(world_fd=150.0, psnr=39.6, accuracy=0.99)
    (line,) = verdict(rows, "accuracy")
    assert "ILF wins" in line and "better world_fd" in line and "equal psnr" in line


def test_digits_demo_with_the_shipped_feedback(tmp_path):
    out = tmp_path / "digits"
    assert main(["demo", "--world", "digits", "--quick", "--pretrained-feedback", "--out", str(out),
                 "--threads", "1"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# ilf demo — the digits world")
    assert "Feedback: the shipped one" in report and "t_post = none" in report
    assert "feedback-run" not in {p.name for p in out.iterdir()}  # nothing was trained
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["display"] for r in rows][-2:] == ["ILF ~1.5x", "ILF ~1.8x"]
    assert all("accuracy" in r["metrics"] for r in rows)
