"""Errors that name the problem and the fix.

All derive from `ILFError` (a `ValueError`), so callers can catch one class.
"""


class ILFError(ValueError):
    """Base class of every error raised by ilf."""


class UnsupportedModelError(ILFError):
    """The backbone's class has no ilf adapter."""


class LoopRangeError(ILFError):
    """The inner loop `(b, e)` does not fit the model."""


class FeedbackMismatchError(ILFError):
    """A saved feedback was trained for another backbone or loop."""


class FeedbackNotFoundError(ILFError):
    """A feedback named by a Hub repo id could not be found (locally, in the cache, or on the Hub)."""


class CorruptFeedbackError(ILFError):
    """A saved feedback file is unreadable, truncated or altered."""


class ScheduleError(ILFError):
    """A feedback plan, t_post strategy or step context is invalid."""
