"""The corrector's forecast step against a hand-written reference on a bare DiT transformer: TaylorSeer's
first-order forecast of block e's output from the last two full steps, the learned per-step weights over
(h₁, h₁ − h₀, h₀ − h₋₁, δ_a), and F's correction, computed from the stock model's own recorded features
(forward hooks on a stock model; nothing of ilf's runtime)."""

import torch

from ilf import remove_ilf
from ilf.runtime.corrector import apply_corrector
from ilf.corrector_config import CorrectorConfig
from ilf.tiny import tiny_dit

N, A = 6, 1  # blocks; fresh leading blocks (block a = 1 is the first forecast one), e = 5


def _inputs(seed, t):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g), timestep=torch.tensor([t, t]),
                class_labels=torch.tensor([3, 7]))


def test_forecast_step_equals_the_written_out_learned_forecast_and_correction():
    model = tiny_dit(num_layers=N).eval()
    steps = [(0, 900.0), (1, 800.0), (2, 700.0)]  # 5-step schedule, interval 2, warm-up 2: full 0, 1; forecast 2
    calls = [_inputs(10 + k, t) for k, t in steps]
    cfg = CorrectorConfig(interval=2, warmup=2, fresh=A, correct_steps="all", num_inference_steps=5)
    rt = apply_corrector(model, cfg)
    with torch.no_grad():
        rt.feedback.scales.fill_(0.7)
        rt.feedback.mix[2] = torch.tensor([0.1, -0.3, 0.2, 0.5])
        got = [model(**c, ilf_cache_step=(k, 5)).sample for (k, _), c in zip(steps, calls)]
    feedback = remove_ilf(model)

    # the reference: the stock model, block 1's input and block 5's output recorded on the full steps
    blocks, rec = model.transformer_blocks, {"x": [], "h": []}
    h1 = blocks[A].register_forward_pre_hook(lambda m, a, kw: rec["x"].append(kw.get("hidden_states", a[0] if a else None)),
                                             with_kwargs=True)
    h2 = blocks[N - 1].register_forward_hook(lambda m, a, kw, out: rec["h"].append(out), with_kwargs=True)
    with torch.no_grad():
        for c in calls[:2]:
            model(**c)
    h1.remove(), h2.remove()
    (x0, x1), (o0, o1) = rec["x"], rec["h"]
    taylor, x_hat = o1 + (o1 - o0), x1 + (x1 - x0)  # order 1, one step past the last full step
    m = torch.tensor([0.1, -0.3, 0.2, 0.5])
    seen = {}

    def keep_xa(module, args, kwargs):
        seen["x_a"], seen["kw"] = kwargs.get("hidden_states", args[0] if args else None), kwargs

    def replace_out(module, args, kwargs, out):
        delta = seen["x_a"] - x_hat
        base = taylor + m[0] * o1 + m[1] * (o1 - o0) + m[3] * delta  # no third full step: the h₀ − h₋₁ term is 0
        z = base + delta  # forecast="output", feed="innovation"
        cond = {k: v for k, v in seen["kw"].items() if k != "hidden_states"}
        return base + 0.7 * (feedback.block(z, **cond) - z)

    h1 = blocks[A].register_forward_pre_hook(keep_xa, with_kwargs=True)
    h2 = blocks[N - 1].register_forward_hook(replace_out, with_kwargs=True)
    with torch.no_grad():
        want = model(**calls[2]).sample
    h1.remove(), h2.remove()
    torch.testing.assert_close(got[2], want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(got[0], model(**calls[0]).sample, rtol=0, atol=0)  # full steps are stock
    assert (got[2] - model(**calls[2]).sample).abs().max() > 1e-3  # the forecast step is not


def test_per_channel_weights_of_one_value_equal_the_per_term_weight_and_a_channel_acts_alone():
    model = tiny_dit(num_layers=N).eval()
    calls = [(k, _inputs(20 + k, t)) for k, t in [(0, 900.0), (1, 800.0), (2, 700.0)]]

    def run(per_channel, fill):
        cfg = CorrectorConfig(interval=2, warmup=2, num_inference_steps=5, mix_per_channel=per_channel)
        rt = apply_corrector(model, cfg)
        with torch.no_grad():
            fill(rt.feedback.mix)
            out = [model(**c, ilf_cache_step=(k, 5)).sample for k, c in calls][-1]
        remove_ilf(model)
        return out

    def one_column(mix):
        mix[2, 1] = 0.4

    scalar, channel = run(False, one_column), run(True, one_column)
    assert channel is not None and scalar.shape == channel.shape
    torch.testing.assert_close(channel, scalar, rtol=0, atol=0)

    def one_channel(mix):
        mix[2, 1, 5] = 0.4

    base, single = run(True, lambda m: None), run(True, one_channel)
    assert (single - base).abs().max() > 0 and (single - scalar).abs().max() > 0
