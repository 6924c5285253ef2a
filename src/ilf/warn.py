"""ilf's warnings, said where the user can see them: attributed to the user's own line, not to a frame inside
torch (a hook runs under `torch.nn.Module.__call__`, `torch._dynamo`'s wrappers, diffusers' pipeline), and
never glued to the end of a progress bar.

    warn_user("this corrector was built for 20 steps; ...")

`warnings.warn(..., stacklevel=N)` cannot say it: the depth between the user's call and a hook differs with
torch's version, compilation and the pipeline. Here the frame is found by walking out of the libraries, and an
active tqdm bar (diffusers' and ilf's own) is cleared while the warning is written, then redrawn.
"""

from __future__ import annotations

import os
import sys
import warnings

import ilf

# Packages whose frames are never "the user's": a warning raised inside a forward hook is reported at the first
# frame outside all of them.
_LIBRARY_ROOTS = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep
    for m in (ilf, warnings) if getattr(m, "__file__", None)
)
_LIBRARY_NAMES = ("torch", "diffusers", "accelerate", "transformers", "tqdm")


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string> from exec: not a user file either
        return filename.startswith("<frozen")
    path = os.path.abspath(filename)
    if path.startswith(_LIBRARY_ROOTS):
        return True
    parts = path.split(os.sep)
    return any(name in parts for name in _LIBRARY_NAMES)


def user_frame():
    """The innermost frame of the call stack that is outside ilf, torch, diffusers and the other libraries it
    runs under; the outermost frame if every frame is a library's."""
    frame = sys._getframe(1)
    last = frame
    while frame is not None:
        if not _is_library(frame.f_code.co_filename):
            return frame
        last, frame = frame, frame.f_back
    return last


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue `message` as a warning attributed to the user's frame, written clear of any tqdm bar."""
    frame = user_frame()
    module_globals = frame.f_globals
    registry = module_globals.setdefault("__warningregistry__", {})
    try:
        from tqdm import tqdm

        clear = tqdm.external_write_mode(file=sys.stderr) if getattr(tqdm, "_instances", None) else None
    except ImportError:  # pragma: no cover - tqdm comes with diffusers
        clear = None
    kwargs = dict(filename=frame.f_code.co_filename, lineno=frame.f_lineno,
                  module=module_globals.get("__name__", "__main__"), registry=registry,
                  module_globals=module_globals)
    if clear is None:
        warnings.warn_explicit(message, category, **kwargs)
        return
    with clear:
        warnings.warn_explicit(message, category, **kwargs)
