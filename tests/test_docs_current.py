"""The core's own descriptions keep up with it (issue 25): every executor that attaches through the planner is
named where the planner and the layout are described, and apply_ilf's docstring does not list a subset of the
families."""

import re
from pathlib import Path

import ilf

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(ilf.__file__).resolve().parent
ORDINAL = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}
NUMBER = {2: "two", 3: "three", 4: "four", 5: "five"}


def _executors():
    """Modules of the inference runtime (not the planner itself) that attach an executor to the planner; none
    outside it (the bench's cache-context hook locates calls, it attaches no executor)."""
    found = sorted(p for p in PACKAGE.rglob("*.py") if p.stem != "planner" and "attach_planner(" in p.read_text())
    assert all(p.parent == PACKAGE / "runtime" for p in found), found
    return [p.stem for p in found]


def test_the_planner_and_the_layout_name_every_executor():
    from ilf.runtime import planner

    executors = _executors()
    assert "corrector" in executors and "ilf_loop" in executors and "paper_cache" in executors
    for name in executors:
        assert f"`{name}.py`" in planner.__doc__, name
    assert f"The {NUMBER[len(executors)]} executors" in planner.__doc__
    arch = " ".join((ROOT / "docs" / "architecture.md").read_text().split())
    # the corrector is the newest executor: its ordinal must be the count
    said = re.findall(r"the planner's (\w+) executor", arch)
    assert said == [ORDINAL[len(executors)]], said


def test_the_trainer_names_every_objective_module():
    from ilf.train import trainer

    doc = " ".join(trainer.__doc__.split())
    assert "corrector" in doc and "trajectory" in doc and "`native.py`" in doc and "`fad.py`" in doc


def test_apply_ilf_docstring_names_the_families_without_a_closed_list():
    from ilf.pipeline import apply_ilf

    doc = " ".join(apply_ilf.__doc__.split())
    assert "supported_classes()" in doc and "CorrectorConfig" in doc
    assert "`DiTPipeline` (anything with" not in doc  # the old PixArt/DiT-only wording


def test_ilf_config_has_no_unread_properties_and_old_files_load():
    from ilf import ILFConfig

    assert not hasattr(ILFConfig, "extra_blocks")  # computed, never read: removed
    old = {"loop": [3, 8], "feedback_steps": "last:1", "t_post": "none"}  # a config as older versions wrote it
    assert ILFConfig.from_dict(old).loop == (3, 8)


def test_every_adapter_class_attribute_is_read_somewhere():
    """A BackboneAdapter setting that no code reads is dead data every new family copies (issue 25: `time_arg`
    was set in eight adapters and read nowhere)."""
    base = (ROOT / "src" / "ilf" / "adapters" / "base.py").read_text()
    names = re.findall(r"^    (\w+): ClassVar\[", base, re.M)
    assert "image_stream" in names and "embed_scale" in names
    code = "\n".join(p.read_text() for p in sorted((ROOT / "src" / "ilf").rglob("*.py")))
    unread = [n for n in names if not re.search(rf"\.{n}\b|getattr\(\w+, \"{n}\"", code)]
    assert unread == [], unread


def test_every_executor_class_keeps_its_docstring():
    """A class attribute written above the docstring turns it into a dead string (`__doc__` None)."""
    from ilf.runtime.corrector import CacheCorrector
    from ilf.runtime.ilf_loop import ILFRuntime
    from ilf.runtime.paper_cache import PaperCache

    for cls in (ILFRuntime, PaperCache, CacheCorrector):
        assert cls.__doc__ and cls.__doc__.strip(), cls.__name__
