"""No absolute path of a machine ships (issue 25): not in the package's assets, the docs, the studies or the
scripts, and the writers of results, reports, training records and feedback configs do not write new ones."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ilf.portable import portable_argv, portable_path, portable_text

REPO = Path(__file__).resolve().parents[1]
# /work, /tmp, /home, /root or /Users, then a name: the start of an absolute path on some build machine
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:work|tmp|home|root|Users)/[\w.-]")


def _tracked_text_files():
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "src", "docs", "bench", "scripts", "README.md"], cwd=REPO,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, listed.decode().split("\0")):
        path = REPO / name
        if not path.is_file():
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, weights


def test_no_tracked_file_holds_a_machine_path():
    found = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {text[m.start():m.start() + 60].splitlines()[0]}"
             for name, text in _tracked_text_files() for m in MACHINE_PATH.finditer(text)]
    assert not found, "absolute machine paths in shipped files:\n" + "\n".join(found[:40])


def _abs(*parts):
    return "/" + "/".join(parts)  # built here so that this file holds no machine path itself


def test_the_scan_catches_what_it_should():
    # the pattern itself: a recorded output folder, a venv's program, a home folder; not a URL or a relative path
    assert MACHINE_PATH.search(f'"output_dir": "{_abs("tmp", "demo-new", "x")}"')
    assert MACHINE_PATH.search(_abs("work", "main", ".venv", "bin", "ilf"))
    assert MACHINE_PATH.search(f"({_abs('home', 'me', 'runs')})") and MACHINE_PATH.search(f"feedback={_abs('root', 'fb')},x")
    assert not MACHINE_PATH.search("https://example.org/work/x") and not MACHINE_PATH.search("runs/work/x")
    assert not MACHINE_PATH.search("$HOME/work/x") and not MACHINE_PATH.search("~/work/x")


def test_portable_paths(tmp_path, monkeypatch):
    out, elsewhere = tmp_path / "out", tmp_path / "cwd"
    (out / "run" / "feedback").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert portable_path(out / "run" / "feedback", base=out) == "run/feedback"  # inside the output: relative to it
    assert portable_path(out, base=out) == "."
    assert portable_path(elsewhere / "data" / "x.png") == "data/x.png"  # inside the working directory
    assert portable_path(tmp_path / "home" / "runs" / "fb") == "~/runs/fb"
    import ilf

    shipped = Path(ilf.__file__).resolve().parent / "worlds" / "assets" / "shapes" / "feedback"
    assert portable_path(shipped) == "ilf/worlds/assets/shapes/feedback"  # inside the package, any install
    assert portable_path("runs/x") == "runs/x"  # as given
    assert portable_path(Path("/opt/data/x")) == "/opt/data/x"  # outside every root: the user's own path
    spec = f"corrector:20,feedback={out}/run/feedback,label=corrector"
    assert portable_text(spec, base=out) == "corrector:20,feedback=run/feedback,label=corrector"
    assert portable_text(f"{out}-flow/x", base=out) == f"{out}-flow/x"  # a sibling whose name only starts alike
    argv = ["/opt/venv/bin/ilf", "demo", "--out", str(out), "--feedback", str(out / "run" / "feedback")]
    assert portable_argv(argv, base=out) == ["ilf", "demo", "--out", "out", "--feedback", "run/feedback"]


def test_bench_results_hold_no_absolute_path(tmp_path, monkeypatch):
    from ilf.cli import main

    out = tmp_path / "bench-out"
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--tiny", "pixart", "--tiny-layers", "2", "--threads", "1", "--methods", "plain:3", "plain:2",
            "--num-images", "1", "--batch-size", "1", "--repeats", "1", "--warmup", "0", "--grid-items", "0",
            "--out", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "venv" / "bin" / "ilf"), *argv])
    assert main(argv) == 0
    text = (out / "results.json").read_text()
    assert str(tmp_path) not in text
    assert json.loads(text)["command"][:2] == ["ilf", "bench"]


@pytest.mark.parametrize("world", ["shapes", "digits", "shapes-flow"])
def test_shipped_feedbacks_name_their_world_and_load(world):
    from ilf import load_feedback
    from ilf.worlds import paths
    from ilf.worlds.registry import load_transformer

    model = load_transformer(world)
    for folder in (paths.feedback(world), paths.paper_feedback(world)):
        meta = json.loads((folder / "ilf_config.json").read_text())
        assert meta.get("base_model_name_or_path") in (f"ilf-world:{world}", None)
        module, config = load_feedback(folder, model)  # the portable name does not stand in the way of loading
        assert module is not None and config is not None


def test_saving_from_a_world_pipeline_records_the_world_not_the_folder(tmp_path):
    from ilf import apply_ilf, load_feedback, remove_ilf, save_feedback
    from ilf.worlds import paths
    from ilf.worlds.registry import load_pipeline

    pipe = load_pipeline("digits")
    assert os.path.isabs(pipe.transformer.config["_name_or_path"])  # what diffusers recorded: this machine's folder
    apply_ilf(pipe, paths.feedback("digits"))
    saved = save_feedback(pipe, tmp_path / "fb")
    remove_ilf(pipe)
    meta = json.loads((saved / "ilf_config.json").read_text())
    assert meta["base_model_name_or_path"] == "ilf-world:digits"
    assert not MACHINE_PATH.search(json.dumps(meta)) and str(paths.ASSETS) not in json.dumps(meta)
    load_feedback(saved, pipe.transformer)
    apply_ilf(pipe, saved)
    remove_ilf(pipe)
