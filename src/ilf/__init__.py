"""ilf: Inner Loop Feedback for pretrained diffusion transformers (DiT, PixArt-α/Σ in diffusers).

    from ilf import ILFConfig, apply_ilf, remove_ilf
    apply_ilf(pipe, "path/to/feedback")                  # or ILFConfig(loop=(8, 19)) for a new one
    images = pipe(prompt, num_inference_steps=10).images
    remove_ilf(pipe)
"""

__version__ = "0.1.0"

from .caching import apply_cache, remove_cache  # noqa: E402
from .config import CacheConfig, ILFConfig  # noqa: E402
from .counting import count_block_forwards  # noqa: E402
from .errors import (  # noqa: E402
    CorruptFeedbackError,
    FeedbackMismatchError,
    FeedbackNotFoundError,
    ILFError,
    LoopRangeError,
    ScheduleError,
    UnsupportedModelError,
)
from .feedback import FeedbackModule, load_feedback  # noqa: E402
from .pipeline import apply_ilf, remove_ilf, save_feedback  # noqa: E402
from .schedule import feedback_steps, predicted_block_forwards  # noqa: E402

__all__ = [
    "ILFConfig", "CacheConfig", "apply_ilf", "remove_ilf", "apply_cache", "remove_cache",
    "count_block_forwards", "save_feedback", "load_feedback", "FeedbackModule", "feedback_steps",
    "predicted_block_forwards", "ILFError", "UnsupportedModelError", "LoopRangeError",
    "FeedbackMismatchError", "FeedbackNotFoundError", "CorruptFeedbackError", "ScheduleError",
]
