"""Errors of the benchmark harness; each names the problem and the fix."""

from ilf.errors import ILFError


class BenchError(ILFError):
    """A benchmark cannot run as asked (bad method spec, missing input, a pipeline left modified)."""


class MethodSpecError(BenchError):
    """A method string does not follow the grammar, or names an unknown family or option."""
