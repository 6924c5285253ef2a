"""Errors of the benchmark harness; each names the problem and the fix."""

from ilf.errors import ILFError


class BenchError(ILFError):
    """A benchmark cannot run as asked (bad method spec, missing input, a pipeline left modified)."""


class MethodSpecError(BenchError):
    """A method string does not follow the grammar, or names an unknown family or option."""


class MethodRefused(BenchError):
    """A method that cannot run on this pipeline, with the reason (a hook that does not know the model's block
    class, a cache whose state the pipeline's CFG layout would mix up); the benchmark skips its row."""
