"""One story of the modes (issue 25): the command's help, the docs and the code agree on what `ilf train` trains by
default, the corrector is named where a newcomer starts, and the demo calls it what it is."""

import dataclasses
import re
from pathlib import Path

from ilf.cli import build_parser
from ilf.train.config import DISTILL_MODES, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"fad": ["--distill fad", "FAD", "Fast Approximate Distillation"], "trajectory": ["--distill trajectory",
         "trajectory distillation"], "corrector": ["--distill corrector", "corrector"], "multistep": ["multistep"],
         "none": ["--distill none"]}


def _subparser(name):
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[name]


def _code_default():
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}["distill"]


def _claims_default(text, objective):
    """Where `text` calls `objective` the default (within one clause)."""
    found = []
    for name in NAMES[objective]:
        clause = r"(?:[^.;#)]|\.\d)"  # within one clause: no sentence end, comment or closing bracket ("§3.2" is fine)
        for pattern in (rf"{re.escape(name)}\b{clause}{{0,40}}\bthe default\b(?! for)",
                        rf"\bdefault objective\b{clause}{{0,30}}{re.escape(name)}\b"):
            found += re.findall(pattern, text)
    return found


def test_help_docs_and_code_agree_on_the_default_objective():
    default = _code_default()
    assert default in DISTILL_MODES
    train = _subparser("train")
    action = next(a for a in train._actions if "--distill" in a.option_strings)
    assert action.default == default  # the command line's default is the dataclass's
    assert f"(default: {default}" in " ".join(action.help.split())
    help_text = " ".join(train.format_help().split())
    docs = " ".join((ROOT / "docs" / "training.md").read_text().split())
    assert f"The default objective is `--distill {default}`" in docs
    for where, text in (("ilf train --help", help_text), ("docs/training.md", docs)):
        for other in set(NAMES) - {default}:
            assert not _claims_default(text, other), (where, other, _claims_default(text, other))


def test_the_default_check_catches_the_old_claim():
    old = "or the paper's Fast Approximate Distillation (§3.2, the default). Runs on one CPU/GPU"
    assert _claims_default(old, "fad")


def test_the_corrector_is_named_where_a_newcomer_starts():
    top = " ".join(build_parser().format_help().split())
    assert "corrector" in top and "--distill corrector" in top
    train = " ".join(_subparser("train").format_help().split())
    assert "--distill corrector" in train and "the shipped, measured-best method" in train
    for cmd in ("train", "generate", "bench"):  # no stale list of families: other families join over time
        pipeline = next(a for a in _subparser(cmd)._actions if "--pipeline" in a.option_strings)
        assert "any supported family (see docs/models.md)" in " ".join(pipeline.help.split()), cmd


def test_the_demo_calls_the_corrector_a_corrector_and_docs_say_what_it_trains():
    from ilf.demo_corrector import CORRECTOR

    assert CORRECTOR == "corrector"
    worlds = " ".join((ROOT / "docs" / "worlds.md").read_text().split())
    assert "`ilf demo` trains the corrector" in worlds
    assert "`ilf demo` trains a feedback with trajectory distillation" not in worlds


def test_demo_times_say_they_assume_one_thread():
    # every quoted demo time sits beside the thread count it was measured with
    for path in ("README.md", "docs/worlds.md"):
        for line in (ROOT / path).read_text().splitlines():
            if line.startswith("ilf demo") and re.search(r"~\s?\d+\s?(s|min)\b", line):
                assert "--threads 1" in line or "one CPU thread" in line, (path, line)
    demo = " ".join(_subparser("demo").description.split())
    assert "About 90 s with --threads 1 (one CPU thread; 50 s with --pretrained-feedback)" in demo
