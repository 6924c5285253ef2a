"""Feature dynamics (Fig. 3-4) against a hand recomputation from every block output of every step."""

import numpy as np
import pytest
import torch

from ilf.bench.diagnostics import FeatureDynamics
from ilf.bench.family import MethodContext
from ilf.bench.methods import get_family, parse_method


def _all_outputs(source, items, steps):
    """Every block's outputs, per step, in call order (the conditional CFG half: PixArt batches [uncond, cond])."""
    model = source.pipe.transformer
    record, step = {}, [-1]
    hooks = [model.register_forward_pre_hook(lambda m, a: step.__setitem__(0, step[0] + 1))]
    for i, block in enumerate(model.transformer_blocks):
        hooks.append(block.register_forward_hook(
            lambda m, a, out, i=i: record.setdefault((step[0], i), []).append(out[out.shape[0] // 2:].clone())))
    try:
        source(items, steps)
    finally:
        for h in hooks:
            h.remove()
    return record


def _rms(a, b):
    return float(torch.sqrt(torch.mean((a - b) ** 2)))


@pytest.mark.parametrize("method", ["plain:8", "ilf:8,feedback=untrained,plan=all,loop=1-3"])
def test_maps_equal_hand_computation(pixart6, pixart_items, method):
    spec = parse_method(method)
    prepared = get_family(spec.family).prepare(spec, MethodContext(pixart6.pipe, 6))
    att = prepared.attach(pixart6.pipe)
    if spec.family == "ilf":  # non-zero scales, so the loop's second pass changes the features
        pixart6.pipe.transformer.ilf_feedback.scales.data.fill_(0.5)
    try:
        items = pixart_items[:1]
        with FeatureDynamics(pixart6.pipe.transformer, pixart6.cfg_batch) as fd:
            pixart6(items, spec.steps)
        record = _all_outputs(pixart6, items, spec.steps)
    finally:
        att.detach()
    time_change, block_change = fd.matrices()
    if spec.family == "ilf":  # loop blocks 1..3 ran twice per step; the last output is the one recorded
        assert all(len(record[(s, b)]) == 2 for s in range(8) for b in (1, 2, 3))
    last = {k: v[-1] for k, v in record.items()}
    hand_t = np.array([[_rms(last[(s, b)], last[(0, b)]) for s in range(8)] for b in range(6)])
    hand_b = np.array([[_rms(last[(s, b)], last[(s, 0)]) for s in range(8)] for b in range(6)])
    np.testing.assert_allclose(time_change, hand_t, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(block_change, hand_b, rtol=1e-5, atol=1e-7)
    assert time_change[:, 1:].min() > 0  # the features do move
