"""Evaluation: what to generate (`prompts`), from which pipeline (`sources`), generation sharded over processes
(`generate`), scoring a folder with every metric that applies (`score`), ADM-evaluator sample files (`adm`), and
the metrics themselves (`metrics`).

The names below are imported on first use, so that a light submodule (`ilf.eval.prompts`, which the CLI's
help reads) imports no torch. `ilf.eval.generate` is the submodule (the function is `ilf.eval.generate.generate`):
a lazily re-exported function could not share a submodule's name."""

from __future__ import annotations

from ..lazy import lazy_exports

_HOMES = {
    "get_state": "generate", "item_files": "generate",
    "Item": "prompts", "load_prompt_file": "prompts", "make_items": "prompts",
    "METRICS": "score", "Scorer": "score", "WorldJudge": "score", "build_scorer": "score",
    "Source": "sources", "default_conditions": "sources", "load_pipeline_source": "sources",
    "load_tiny_source": "sources", "load_world_source": "sources",
}

__all__ = ["METRICS", "Item", "Scorer", "Source", "WorldJudge", "build_scorer", "default_conditions",
           "get_state", "item_files", "load_pipeline_source", "load_prompt_file", "load_tiny_source",
           "load_world_source", "make_items"]

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
