"""Public names of a package that load from their home submodule on first use (PEP 562).

`ilf`, `ilf.bench`, `ilf.eval` and `ilf.worlds` export names this way, so that importing them (and building
the CLI's `--help`) imports neither torch nor diffusers.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, homes: dict[str, str | None], namespace: dict):
    """`(__getattr__, __dir__)` for `package`. `homes`: public name → its submodule (None: the name is the
    submodule itself); `namespace`: the package's `globals()`, where each name is cached once loaded."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f".{homes[name] or name}", package)
        value = module if homes[name] is None else getattr(module, name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
