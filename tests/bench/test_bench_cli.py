"""`ilf eval` (generate + score, or score a folder), clear errors, and --help text for every option."""

import argparse
import json

import pytest

from ilf.cli import build_parser, main


def test_every_option_of_bench_eval_tune_is_documented():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("bench", "eval", "tune"):
        for action in sub.choices[name]._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings}"


def test_eval_generates_and_scores_then_scores_a_folder(tmp_path, capsys):
    base = ["--tiny", "pixart", "--tiny-layers", "6", "--threads", "1", "--num-images", "2", "--no-progress"]
    assert main(["eval", *base, "--method", "plain:20", "--out", str(tmp_path / "ref")]) == 0
    assert main(["eval", *base, "--method", "paper-cache:20,blocks=4", "--reference", str(tmp_path / "ref/images"),
                 "--out", str(tmp_path / "cache"), "--npz"]) == 0
    gen = json.loads((tmp_path / "cache/metrics.json").read_text())
    assert gen["info"]["cached_blocks"] == [1, 2, 3, 4] and gen["npz"] == "images.npz"
    assert 20 < gen["metrics"]["psnr"] < 100
    capsys.readouterr()
    assert main(["eval", "--images", str(tmp_path / "cache/images"), "--reference", str(tmp_path / "ref/images"),
                 "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again/metrics.json").read_text())
    assert again["metrics"]["psnr"] == pytest.approx(gen["metrics"]["psnr"])
    assert "psnr" in capsys.readouterr().out


def test_errors_name_the_fix(tmp_path, capsys):
    assert main(["bench", "--tiny", "pixart", "--methods", "plain:20", "nope:3", "--out", str(tmp_path)]) == 2
    assert "unknown method family 'nope'" in capsys.readouterr().err
    assert main(["bench", "--methods", "plain:20", "--out", str(tmp_path)]) == 2
    assert "--world shapes|digits, --pipeline PATH_OR_ID, or --tiny" in capsys.readouterr().err
    assert main(["bench", "--tiny", "pixart", "--clip", "/nonexistent", "--metrics", "clip", "--out",
                 str(tmp_path)]) == 2
    assert "--clip '/nonexistent' is neither a folder nor a hub id" in capsys.readouterr().err
    assert main(["bench", "--tiny", "pixart", "--metrics", "fid", "--inception", str(tmp_path / "nope.pth"),
                 "--fid-ref", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--inception" in capsys.readouterr().err and not (tmp_path / "images").exists()  # before generating


def test_list_methods(capsys):
    assert main(["bench", "--list-methods"]) == 0
    out = capsys.readouterr().out
    for fam in ("plain:20", "paper-cache:20", "ilf:10", "fbc:20", "taylorseer:20", "magcache:20", "pab:20",
                "fastercache:20", "cache-dit:20", "@table1"):
        assert fam in out
