"""Errors of the evaluation metrics: each names the missing file, extra or step that failed.

All derive from `ilf.errors.ILFError` (a `ValueError`), so callers can catch one class;
the missing-file and missing-package errors also derive from the built-in error a caller
would catch without knowing ilf (`FileNotFoundError`, `ImportError`).
"""

from ilf.errors import ILFError


class MetricError(ILFError):
    """A metric cannot be computed from the inputs it was given."""


class MissingWeightsError(MetricError, FileNotFoundError):
    """A metric's network weights are missing or do not fit the network; the message says where to get them."""


class MissingExtraError(MetricError, ImportError):
    """An optional package a metric needs is not installed; the message names what to install."""


class ImageRewardError(MetricError):
    """The external ImageReward process could not run or failed; the message carries its stderr."""
