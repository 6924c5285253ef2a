"""The mutation pass (scripts/mutation_pass.py) stays runnable: each planted bug's text is in the code once."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_mutant_applies_to_exactly_one_place():
    spec = importlib.util.spec_from_file_location("mutation_pass", ROOT / "scripts" / "mutation_pass.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    assert len(mp.MUTANTS) >= 20
    for name, what, old, new in mp.MUTANTS:
        text = (ROOT / "src" / "ilf" / name).read_text()
        assert text.count(old) == 1, f"{name}: {what!r} matches {text.count(old)} places; update the mutant"
        assert new != old
    for test in mp.CORE_TESTS:
        assert (ROOT / test).is_file(), test
