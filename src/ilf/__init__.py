"""ilf: Inner Loop Feedback for pretrained diffusion transformers in diffusers (PixArt-α/Σ, DiT, SD3, Flux,
Sana).

    from ilf import ILFConfig, apply_ilf, remove_ilf
    apply_ilf(pipe, "path/to/feedback")                  # or ILFConfig(loop=(8, 19)) for a new one
    images = pipe(prompt, num_inference_steps=10).images
    remove_ilf(pipe)

The public names load on first use (PEP 562), so `import ilf` and `ilf --help` do not import torch or
diffusers.
"""

from __future__ import annotations

from .lazy import lazy_exports

from .version import __version__

_EXPORTS = {
    "apply_cache": "runtime.paper_cache", "remove_cache": "runtime.paper_cache",
    "CacheConfig": "config", "ILFConfig": "config",
    "count_block_forwards": "runtime.counting",
    "CorrectorConfig": "corrector_config", "apply_corrector": "runtime.corrector",
    "CorruptFeedbackError": "errors", "FeedbackMismatchError": "errors", "FeedbackNotFoundError": "errors",
    "ILFError": "errors", "LoopRangeError": "errors", "ScheduleError": "errors", "UnsupportedModelError": "errors",
    "FeedbackModule": "feedback", "load_feedback": "feedback",
    "apply_ilf": "pipeline", "remove_ilf": "pipeline", "save_feedback": "pipeline",
    "feedback_steps": "schedule", "predicted_block_forwards": "schedule",
    "train_corrector": "train.train_corrector",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
