"""Paper recipes: TOML presets of `ilf bench` settings, shipped with the package (ilf/bench/recipes/*.toml).

A recipe holds the same settings as the command line (keys are the long option names with `_`, e.g.
`num_images`, `pipeline`, `methods`), plus `description` and optional `[[part]]` tables: each part is one
benchmark run (its own prompts, metrics, image count) over the same methods, written to `OUT/<part name>/`,
and the parts' tables are merged into `OUT/table.md` (latency from the first part). `${NAME}` in any string is
replaced from `--set NAME=VALUE` or the environment (`${NAME:-default}` has a default; `${RECIPE_DIR}` is the
recipe's folder), so paths (checkpoints, MJHQ-30K, feedbacks) stay out of the file. Values given on the command
line win over the recipe's; a pipeline given on the command line replaces the recipe's.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from .errors import BenchError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")  # ${NAME} or ${NAME:-default}
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"  # package data: `--recipe NAME` works from any install


def _expand(value, variables: dict[str, str], where: str):
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in variables:
                return variables[name]
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise BenchError(f"recipe {where}: ${{{name}}} is not set; pass --set {name}=VALUE (or export {name})")

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, where) for k, v in value.items()}
    return value


def missing_variables(value, variables: dict[str, str]) -> list[str]:
    """Every `${NAME}` (without a default) in `value` that neither `variables` nor the environment sets, in order."""
    if isinstance(value, str):
        return [m.group(1) for m in _VAR.finditer(value)
                if m.group(2) is None and m.group(1) not in variables and m.group(1) not in os.environ]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [name for v in items for name in missing_variables(v, variables)]


def shipped_recipes() -> list[str]:
    """The names of the recipes shipped with ilf."""
    return sorted(q.stem for q in RECIPE_DIR.glob("*.toml")) if RECIPE_DIR.is_dir() else []


def find_recipe(name: str) -> Path:
    """A recipe path, or the name of one shipped in ilf/bench/recipes/ (with or without .toml)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (RECIPE_DIR / name, RECIPE_DIR / f"{name}.toml"):
        if cand.is_file():
            return cand
    shipped = shipped_recipes()
    choices = f" or one of: {', '.join(shipped)}" if shipped else ""
    raise BenchError(f"recipe {name!r} not found; pass a .toml path{choices}")


def load_recipe(
    name: str, variables: dict[str, str] | None = None, allowed: set[str] | None = None
) -> list[tuple[str | None, dict]]:
    """[(part name or None, settings)] of a recipe, `${VAR}` expanded, keys checked against `allowed`."""
    path = find_recipe(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise BenchError(f"recipe {path} is not valid TOML: {err}") from None
    variables = {"RECIPE_DIR": str(path.resolve().parent), **(variables or {})}
    missing = list(dict.fromkeys(missing_variables(data, variables)))  # all of them at once, not one per run
    if missing:
        raise BenchError(f"recipe {path.name}: {len(missing)} value(s) not set: {', '.join(missing)}; pass "
                         + " ".join(f"--set {n}=VALUE" for n in missing) + " (or export them)")
    data.pop("description", None)
    parts = data.pop("part", None)
    base = data
    if allowed is not None:
        tables = [("top level", base)] + [(f"part {p.get('name', i)}", p) for i, p in enumerate(parts or [])]
        for where, table in tables:
            unknown = set(table) - allowed - {"name"}
            if unknown:
                raise BenchError(f"recipe {path} ({where}): unknown keys {sorted(unknown)}; keys are the long options "
                                 "of `ilf bench` with '_' for '-'")
    if not parts:
        return [(None, _expand(base, variables, str(path)))]
    out = []
    for i, part in enumerate(parts):
        name = part.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BenchError(f"recipe {path}: part {i} needs a name made of letters, digits, '.', '_' or '-'")
        merged = {**base, **{k: v for k, v in part.items() if k != "name"}}
        out.append((name, _expand(merged, variables, f"{path} part {name}")))
    return out


def parse_sets(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, eq, val = v.partition("=")
        if not eq or not key:
            raise BenchError(f"--set {v!r}: write NAME=VALUE")
        out[key] = val
    return out
