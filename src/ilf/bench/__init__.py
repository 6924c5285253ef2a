"""Side-by-side benchmarks: ILF against plain fewer steps, the paper's cache, diffusers' and cache-dit's caches.

    from ilf.bench import Bench, BenchOptions, expand_methods
    from ilf.eval import build_scorer, load_tiny_source, default_conditions, make_items

    source = load_tiny_source("pixart")
    items = make_items(default_conditions(source, 8), num_images=8)
    specs = expand_methods(["plain:20", "plain:10", "paper-cache:20", "ilf:10,feedback=untrained", "@peers"])
    results = Bench(source, items, specs, build_scorer(), BenchOptions(out_dir="bench-out")).run()

`ilf bench`, `ilf eval` and `ilf tune` (cli.py, cmd_*.py) drive the same code. The names below are imported
on first use, so that importing the CLI (`ilf --help`) imports no torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "Bench": "runner", "BenchOptions": "runner",
    "BenchError": "errors", "MethodRefused": "errors", "MethodSpecError": "errors",
    "MethodSpec": "grammar", "families": "methods", "get_family": "methods", "parse_method": "methods",
    "PRESETS": "presets", "expand_methods": "presets",
    "markdown_table": "report", "merge_results": "report",
    "TuneSpace": "tune", "autotune": "tune", "candidates": "tune",
}

__all__ = sorted(_HOMES)

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
