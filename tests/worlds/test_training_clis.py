"""The training CLIs document every flag, and the checkpoint helper resumes exactly where a run stopped."""

import math

import pytest
import torch

from ilf.worlds import registry, run_state, train_backbone, train_evaluators, train_flow_backbone, train_vae
from ilf.worlds.train_backbone import make_transformer


@pytest.mark.parametrize("module", [train_vae, train_backbone, train_flow_backbone, train_evaluators])
def test_every_flag_has_help(module):
    p = module.parser()
    assert p.description and len(p.description) > 100
    for action in p._actions:
        assert action.help and len(action.help) > 10, action.dest


def test_checkpoint_resume_restores_model_optimizer_ema_and_step(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = run_state.EMA(model, 0.9)
    for step in range(3):
        model(torch.randn(2, 4)).pow(2).sum().backward()
        opt.step()
        ema.update(model, step)
    run_state.save(tmp_path, 3, model, opt, ema)

    model2 = torch.nn.Linear(4, 4)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    ema2 = run_state.EMA(model2, 0.9)
    assert run_state.resume(tmp_path, model2, opt2, ema2) == 3
    assert torch.equal(model2.weight, model.weight) and torch.equal(ema2.model.weight, ema.model.weight)
    assert not torch.equal(ema.model.weight, model.weight)  # the EMA really is a separate average
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert run_state.resume(tmp_path / "none", model2, opt2) == 0


def test_optimizer_step_is_plain_sgd_with_clipping_then_ema():
    # SGD makes the update checkable by hand: w <- w - lr * clip(grad); the EMA then moves by 1 - d of the gap
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False)
    w0 = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=123.0)  # overwritten by optimizer_step
    ema = run_state.EMA(model, 0.9)
    x = torch.tensor([[3.0, 0.0, 4.0]])
    loss = (model(x) - 100.0).sum()  # d loss / d w = x, norm 5
    norm = run_state.optimizer_step(model, opt, loss, 0.5, ema=ema, step=0, clip=1.0)
    assert norm == pytest.approx(5.0)
    assert opt.param_groups[0]["lr"] == 0.5
    assert torch.allclose(model.weight, w0 - 0.5 * x / 5.0)  # clipped to unit norm
    d = min(0.9, 1 / 10)  # the EMA's warm-up at step 0
    assert torch.allclose(ema.model.weight, w0 + (1 - d) * (model.weight - w0))
    loss = (model(x) - 100.0).sum()
    assert math.isnan(run_state.optimizer_step(model, opt, loss, 0.1, clip=None))  # unclipped, no EMA
    assert torch.allclose(model.weight, w0 - 0.5 * x / 5.0 - 0.1 * x)


def test_a_save_killed_halfway_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run_state.save(tmp_path, 3, model, opt)
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)

    def die(*args, **kwargs):  # the weights are written, then the process dies before the optimizer state
        raise KeyboardInterrupt

    monkeypatch.setattr(run_state.torch, "save", die)
    with pytest.raises(KeyboardInterrupt):
        run_state.save(tmp_path, 4, model, opt)
    monkeypatch.undo()
    model2 = torch.nn.Linear(4, 4)
    assert run_state.resume(tmp_path, model2, torch.optim.AdamW(model2.parameters(), lr=1e-2)) == 3
    assert torch.equal(model2.weight, saved)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no half-written folder left behind


def test_fresh_backbones_start_silent_like_dit():
    """adaLN-Zero style init: every block starts as the identity and the output as zero."""
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    dit = make_transformer("digits")
    assert torch.all(dit(x, timestep=t, class_labels=torch.tensor([1, 2])).sample == 0)
    assert torch.all(dit.transformer_blocks[3].norm1.linear.weight == 0)
    pix = make_transformer("shapes")
    out = pix(x, timestep=t, encoder_hidden_states=torch.randn(2, 16, 384),
              added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    assert torch.all(out == 0) and torch.all(pix.transformer_blocks[5].attn2.to_out[0].weight == 0)
    assert pix.transformer_blocks[0].attn1.to_q.weight.std() > 0.01  # the rest is not zero
    sd3 = train_flow_backbone.make_transformer()
    out = sd3(x, timestep=t.float(), encoder_hidden_states=torch.randn(2, 16, 384),
              pooled_projections=torch.randn(2, 384)).sample
    assert torch.all(out == 0) and all(torch.all(b.norm1_context.linear.weight == 0) for b in sd3.transformer_blocks)
    assert sd3.transformer_blocks[0].attn.add_q_proj.weight.std() > 0.01


def test_digit_backbone_null_class_is_a_real_row_and_matters():
    """DiTPipeline sends class 1000 as the unconditional label: it must index its own (trained) embedding row."""
    model = registry.load_transformer("digits")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([300, 300])
    out = model(x, timestep=t, class_labels=torch.tensor([3, 1000])).sample
    same = model(x, timestep=t, class_labels=torch.tensor([3, 3])).sample
    assert torch.allclose(out[0], same[0]) and not torch.allclose(out[1], same[1])
