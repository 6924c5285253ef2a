"""Side-by-side benchmarks: ILF against plain fewer steps, the paper's cache, diffusers' and cache-dit's caches.

    from ilf.bench import Bench, BenchOptions, expand_methods
    from ilf.eval import build_scorer, load_tiny_source, default_conditions, make_items

    source = load_tiny_source("pixart")
    items = make_items(default_conditions(source, 8), num_images=8)
    specs = expand_methods(["plain:20", "plain:10", "paper-cache:20", "ilf:10,feedback=untrained", "@peers"])
    results = Bench(source, items, specs, build_scorer(), BenchOptions(out_dir="bench-out")).run()

`ilf bench`, `ilf eval` and `ilf tune` (cli.py) drive the same code.
"""

from .errors import BenchError, MethodRefused, MethodSpecError
from .methods import PRESETS, MethodSpec, expand_methods, families, get_family, parse_method
from .report import markdown_table, merge_results
from .runner import Bench, BenchOptions
from .tune import TuneSpace, autotune, candidates

__all__ = ["Bench", "BenchOptions", "BenchError", "MethodRefused", "MethodSpec", "MethodSpecError", "PRESETS",
           "TuneSpace", "autotune", "candidates", "expand_methods", "families", "get_family", "markdown_table",
           "merge_results", "parse_method"]
