"""Is this a feedback folder? Answered from the file system alone, before torch or diffusers are imported, so a
mistyped path fails in a fraction of a second (`ilf inspect`, `read_feedback`, `apply_ilf`)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CorruptFeedbackError, FeedbackNotFoundError

WEIGHTS_NAME = "ilf_feedback.safetensors"
CONFIG_NAME = "ilf_config.json"
_WRITTEN_BY = "pass the folder written by save_feedback / `ilf train`"


def check_feedback_folder(path: str | os.PathLike) -> Path:
    """`path` as a Path if it is a folder holding ilf_config.json. Raises `FeedbackNotFoundError` for a missing
    path, `CorruptFeedbackError` for a file (naming its folder when that is a feedback folder) or a folder
    without the config."""
    path = Path(path)
    if not path.exists():
        raise FeedbackNotFoundError(f"feedback folder {path} does not exist; {_WRITTEN_BY} (it holds "
                                    f"{CONFIG_NAME} and {WEIGHTS_NAME})")
    if path.is_file():
        parent = path.parent
        if (parent / CONFIG_NAME).is_file():
            raise CorruptFeedbackError(f"{path} is a file; pass its folder {parent}, which holds the feedback "
                                       f"({CONFIG_NAME} and {WEIGHTS_NAME})")
        raise CorruptFeedbackError(f"{path} is a file, not a feedback folder; {_WRITTEN_BY}")
    if not (path / CONFIG_NAME).is_file():
        raise CorruptFeedbackError(f"{path} is not an ilf feedback folder (no {CONFIG_NAME} in it); {_WRITTEN_BY}")
    return path
