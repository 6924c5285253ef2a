"""Evaluation: what to generate (`prompts`), from which pipeline (`sources`), generation sharded over processes
(`generate`), scoring a folder with every metric that applies (`score`), ADM-evaluator sample files (`adm`), and
the metrics themselves (`metrics`)."""

from .generate import generate, get_state, item_files
from .prompts import Item, load_prompt_file, make_items
from .score import METRICS, Scorer, WorldJudge, build_scorer
from .sources import Source, default_conditions, load_pipeline_source, load_tiny_source, load_world_source

__all__ = ["METRICS", "Item", "Scorer", "Source", "WorldJudge", "build_scorer", "default_conditions", "generate",
           "get_state", "item_files", "load_pipeline_source", "load_prompt_file", "load_tiny_source",
           "load_world_source", "make_items"]
