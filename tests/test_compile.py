"""torch.compile over a model with ILF attached: no graph breaks, no per-step recompiles, eager's output.

Graph breaks are counted with `torch._dynamo.explain`, the transformer called exactly as the pipeline calls
it. The numerics run with the `eager` backend (what dynamo captured, run as captured); inductor's numerics
and the speed of compiled ILF against compiled stock are measured by `bench/compile_speed.py` (an inductor
compile of even the tiny model takes about a minute on one core).
"""

import pytest
import torch

from ilf import ILFConfig, apply_ilf
from ilf.tiny import pixart_call_kwargs, tiny_pipeline

LOOP = (2, 4)
KINDS = ["pixart-alpha", "dit"]


def _generate(pipe, kind, steps=6):
    g = torch.Generator().manual_seed(0)
    if kind == "dit":
        out = pipe(class_labels=[1, 7], num_inference_steps=steps, generator=g, output_type="latent")
    else:
        out = pipe(["a red cat", "a dog"], num_inference_steps=steps, generator=g, output_type="latent",
                   height=16, width=16, **pixart_call_kwargs())
    return torch.as_tensor(out.images)


def _pipe(kind, plan="outer:2"):
    pipe = tiny_pipeline(kind, num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps=plan))
    rt.feedback.scales.data.fill_(0.5)  # a "trained" feedback: the loop really changes the output
    return pipe


class GraphCounter:
    """A dynamo backend that runs each captured graph as captured and counts them."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", KINDS)
def test_no_graph_breaks_on_plain_and_feedback_steps(kind):
    pipe = _pipe(kind, plan="first:1")
    calls = []
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, k: calls.append((a, dict(k))), with_kwargs=True)
    _generate(pipe, kind, steps=3)
    handle.remove()
    breaks = {}
    for name, index in (("feedback", 0), ("plain", 1)):
        pipe.scheduler._step_index = index  # the scheduler as it stands when the pipeline makes that call
        args, kwargs = calls[index]
        explained = torch._dynamo.explain(pipe.transformer)(*args, **kwargs)
        breaks[name] = explained.graph_break_count
    assert breaks["plain"] == 0, breaks
    assert breaks["feedback"] <= 2, breaks


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_transformer_matches_eager_without_per_step_recompiles(kind):
    pipe = _pipe(kind)
    eager = _generate(pipe, kind, steps=8)
    counter = GraphCounter()
    pipe.transformer = torch.compile(pipe.transformer, backend=counter)
    torch.testing.assert_close(_generate(pipe, kind, steps=8), eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_generate(pipe, kind, steps=10), _eager_again(pipe, kind, steps=10), rtol=1e-5,
                               atol=1e-5)
    assert counter.graphs == 2  # one graph for plain steps, one for feedback steps, whatever the step count


def _eager_again(pipe, kind, steps):
    compiled, pipe.transformer = pipe.transformer, pipe.transformer._orig_mod
    try:
        return _generate(pipe, kind, steps=steps)
    finally:
        pipe.transformer = compiled


@pytest.mark.parametrize("kind", KINDS)
def test_regional_compilation_with_fullgraph(kind):
    pipe = _pipe(kind)
    eager = _generate(pipe, kind)
    # PixArt and DiT declare no repeated blocks; their blocks are diffusers' BasicTransformerBlock
    pipe.transformer._repeated_blocks = ["BasicTransformerBlock"]
    counter = GraphCounter()
    pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=counter)
    torch.testing.assert_close(_generate(pipe, kind), eager, rtol=1e-5, atol=1e-5)
    assert counter.graphs > 0


def test_ilf_attached_to_an_already_compiled_transformer():
    pipe = tiny_pipeline("pixart-alpha", num_layers=6)
    pipe.set_progress_bar_config(disable=True)
    stock = _generate(pipe, "pixart-alpha")
    pipe.transformer = torch.compile(pipe.transformer, backend=GraphCounter())
    torch.testing.assert_close(_generate(pipe, "pixart-alpha"), stock, rtol=1e-5, atol=1e-5)
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="all"))
    rt.feedback.scales.data.fill_(0.5)
    with_ilf = _generate(pipe, "pixart-alpha")
    assert (with_ilf - stock).abs().max() > 1e-3
    pipe.transformer = pipe.transformer._orig_mod
    torch.testing.assert_close(_generate(pipe, "pixart-alpha"), with_ilf, rtol=1e-5, atol=1e-5)



def _deep_pipe(kind, plan):
    """12 blocks, loop (1, 10): 10 loop blocks, more than dynamo's recompile limit (8) if it guarded an index
    or the number of loop blocks seen so far."""
    pipe = tiny_pipeline(kind, num_layers=12)
    pipe.set_progress_bar_config(disable=True)
    rt = apply_ilf(pipe, ILFConfig(loop=(1, 10), feedback_steps=plan))
    rt.feedback.scales.data.fill_(0.5)
    return pipe


@pytest.mark.parametrize("kind", KINDS)
def test_regional_compilation_compiles_per_block_role_not_per_block(kind):
    """On main the block hook's guards saw the block index and `len(state.loop_calls)`: a graph per block,
    and at 28 blocks dynamo hit `recompile_limit (8)` (here: refused by `fail_on_recompile_limit_hit`)."""
    from torch._dynamo.utils import counters

    pipe = _deep_pipe(kind, "outer:2")
    eager = {n: _generate(pipe, kind, steps=n) for n in (8, 10)}
    pipe.transformer._repeated_blocks = ["BasicTransformerBlock"]
    counter = GraphCounter()
    counters.clear()
    pipe.transformer.compile_repeated_blocks(backend=counter)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for n in (8, 10):
            torch.testing.assert_close(_generate(pipe, kind, steps=n), eager[n], rtol=1e-5, atol=1e-5)
    # one graph per path of the block class: blocks before the loop (no hook), hooked blocks on plain calls,
    # and on feedback calls the roles first (b), middle, last (e, with F and the loop re-run) and after
    assert counter.graphs <= 6, counter.graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("kind", KINDS)
def test_plain_steps_compile_to_one_graph_without_breaks(kind):
    """ILF attached with no feedback step, compiled regionally: one graph for the hooked blocks (b..N-1) and
    one for those before the loop, whatever the number of blocks; no graph break."""
    from torch._dynamo.utils import counters

    pipe = _deep_pipe(kind, "none")
    eager = _generate(pipe, kind)
    pipe.transformer._repeated_blocks = ["BasicTransformerBlock"]
    counter = GraphCounter()
    counters.clear()
    pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=counter)
    torch.testing.assert_close(_generate(pipe, kind), eager, rtol=1e-5, atol=1e-5)
    assert counter.graphs == 2 and not counters["graph_break"]
