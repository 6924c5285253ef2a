"""Paths as records should hold them: relative to the output, the working directory or the package.

A results file, a report or a training record is read on other machines; an absolute path of the machine that
wrote it (a scratch folder's `.../run-3/feedback`, a home folder) means nothing there. Every writer records paths through
`portable_path` / `portable_text`: a path inside the output folder relative to it, one inside the working
directory (a repository checkout, usually) relative to that, one inside the installed package as `ilf/...`,
one under the home folder as `~/...`; anything else is kept as the user gave it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent  # .../ilf


def _roots(base: str | os.PathLike | None) -> list[tuple[str, str]]:
    """(absolute prefix, what replaces it), most specific first, each root as written and as resolved. The
    replacement stands for the prefix: "" means the rest of the path is relative to that root."""
    roots = []
    if base is not None:
        roots += [(os.path.abspath(base), ""), (str(Path(base).resolve()), "")]
    roots += [(os.getcwd(), ""), (str(Path.cwd().resolve()), ""), (str(_PACKAGE), "ilf")]
    home = os.path.expanduser("~")
    if home not in ("", os.sep, "~"):
        roots += [(home, "~"), (str(Path(home).resolve()), "~")]
    seen, unique = set(), []
    for prefix, repl in roots:
        prefix = prefix.rstrip(os.sep)
        if prefix and prefix not in seen:
            seen.add(prefix)
            unique.append((prefix, repl))
    return sorted(unique, key=lambda pr: len(pr[0]), reverse=True)


def portable_path(path: str | os.PathLike | None, base: str | os.PathLike | None = None) -> str | None:
    """`path` as a record should hold it (see the module doc); `base` is the output folder the record lives in.
    A relative path is returned as given; the base itself is ".", a folder inside it `sub/dir`."""
    if path is None:
        return None
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    for candidate in (os.path.abspath(text), str(Path(text).resolve())):
        for prefix, repl in _roots(base):
            if candidate == prefix:
                return repl or "."
            if candidate.startswith(prefix + os.sep):
                rest = candidate[len(prefix) + 1:]
                return f"{repl}/{rest}" if repl else rest
    return text


def portable_text(text: str, base: str | os.PathLike | None = None) -> str:
    """Every occurrence of an absolute path under one of the roots inside `text` (a method spec such as
    `corrector:20,feedback=OUT/x/feedback` with OUT absolute) rewritten as `portable_path` would."""
    for prefix, repl in _roots(base):
        pattern = re.compile(r"(?<![\w.~-])" + re.escape(prefix) + r"(?P<rest>/[^\s,\"'=)]*)?(?![\w.-])")

        def sub(m: re.Match, repl=repl) -> str:
            rest = (m.group("rest") or "")[1:]
            if not rest:
                return repl or "."
            return f"{repl}/{rest}" if repl else rest

        text = pattern.sub(sub, text)
    return text


def portable_argv(argv: list[str], base: str | os.PathLike | None = None) -> list[str]:
    """A command line as a record: the program by its name (`ilf`, not its absolute path in a venv), every
    argument through `portable_text`; the output folder itself by its name."""
    if not argv:
        return list(argv)
    out = [Path(argv[0]).name]
    resolved_base = str(Path(base).resolve()) if base is not None else None
    for arg in argv[1:]:
        if resolved_base is not None and os.path.isabs(arg) and str(Path(arg).resolve()) == resolved_base:
            out.append(Path(arg).name)
        else:
            out.append(portable_text(arg, base))
    return out


def portable_tree(obj, base: str | os.PathLike | None = None):
    """`portable_text` applied to every string of a JSON-shaped value (dicts, lists, strings)."""
    if isinstance(obj, str):
        return portable_text(obj, base)
    if isinstance(obj, dict):
        return {k: portable_tree(v, base) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_tree(v, base) for v in obj]
    return obj
