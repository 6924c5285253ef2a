"""What `ilf train` writes follows the umask, like any other tool's output (issue 25: folders came out 700 and
files 600, from the atomic writers' temporary names)."""

import os
import stat

import pytest

from ilf.io import atomic_dir, atomic_write_text
from ilf.train.config import TrainConfig
from ilf.train.trainer import train


@pytest.fixture
def umask():
    def set_(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_
    os.umask(old)


def _modes(root):
    found = {root: stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        found[p] = stat.S_IMODE(p.lstat().st_mode)
    return found


def test_atomic_writers_respect_the_umask(tmp_path, umask):
    for mask, folder_mode, file_mode in ((0o022, 0o755, 0o644), (0o027, 0o750, 0o640), (0o077, 0o700, 0o600)):
        umask(mask)
        with atomic_dir(tmp_path / f"d{mask:o}") as d:
            (d / "inner.txt").write_text("x")
        atomic_write_text(tmp_path / f"f{mask:o}.txt", "x")
        assert stat.S_IMODE((tmp_path / f"d{mask:o}").stat().st_mode) == folder_mode
        assert stat.S_IMODE((tmp_path / f"d{mask:o}" / "inner.txt").stat().st_mode) == file_mode
        assert stat.S_IMODE((tmp_path / f"f{mask:o}.txt").stat().st_mode) == file_mode


def test_a_training_run_writes_folders_755_and_files_644_under_umask_022(tiny_world, tmp_path, umask):
    umask(0o022)
    out = tmp_path / "run"
    train(TrainConfig(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), data=tiny_world / "captions",
                      distill="fad", loop=(2, 4), lr=1e-3, batch_size=4, max_steps=2, checkpoint_every=1,
                      log_every=1, max_sequence_length=16, progress=False))
    modes = _modes(out)
    assert (out / "feedback").is_dir() and any(p.name.startswith("checkpoint") for p in out.iterdir())
    wrong = {str(p.relative_to(tmp_path)): oct(m) for p, m in modes.items()
             if m != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong
