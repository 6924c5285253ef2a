"""`ilf bench`, `ilf eval` and `ilf tune`: the command-line faces of ilf.bench and ilf.eval.

Each command is a module (`cmd_bench`, `cmd_eval`, `cmd_tune`) with its parser and its function; the argument
groups they share and the building of a source, items and scorer are in `cli_args`. Heavy imports (torch,
diffusers, metrics) happen inside the command functions, so `ilf --help` stays fast.
"""

from __future__ import annotations

from . import cmd_bench, cmd_eval, cmd_tune


def register(subparsers) -> None:
    cmd_bench.add_parser(subparsers)
    cmd_eval.add_parser(subparsers)
    cmd_tune.add_parser(subparsers)
