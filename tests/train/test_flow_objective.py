"""FAD and multistep distillation for flow-matching backbones (SD3), checked against plain computations."""

import torch
import torch.nn.functional as F

from ilf import ILFConfig, apply_ilf
from ilf.tiny_mmdit import tiny_sd3
from ilf.train.flow import flow_loss, on_line


def _setup():
    model = tiny_sd3(num_layers=4)
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    c = model.config
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    cond = {"encoder_hidden_states": torch.randn(3, 5, c.joint_attention_dim, generator=g),
            "pooled_projections": torch.randn(3, c.pooled_projection_dim, generator=g)}
    t = torch.tensor([900, 500, 40])
    return model, x0, noise, cond, t


def test_the_line_runs_from_data_to_noise():
    x0, noise = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    x = on_line(x0, noise, torch.tensor([0.0, 0.25]))
    assert torch.equal(x[0], x0[0]) and torch.allclose(x[1], torch.full((1, 2, 2), 0.25))


def test_fad_teacher_is_the_backbone_at_half_t_on_the_same_line_with_velocity_targets():
    model, x0, noise, cond, t = _setup()
    with torch.no_grad():
        stock_t = model(on_line(x0, noise, t / 1000), timestep=t.float(), **cond).sample
        stock_s = model(on_line(x0, noise, t / 2000), timestep=t.float() / 2, **cond).sample
    apply_ilf(model, ILFConfig(loop=(1, 2), t_post="none"))  # zero scales: the student is the stock model
    terms = flow_loss(model, cond, x0, noise, t, distill="fad", t_post="none")
    torch.testing.assert_close(terms.diffusion, F.mse_loss(stock_t, noise - x0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.distill, F.mse_loss(stock_t, stock_s), rtol=1e-5, atol=1e-6)
    assert float(terms.distill) > 1e-3


def test_a_one_step_multistep_teacher_is_the_backbone_itself_and_gradients_reach_only_the_feedback():
    model, x0, noise, cond, t = _setup()
    rt = apply_ilf(model, ILFConfig(loop=(1, 2), t_post="none"))
    terms = flow_loss(model, cond, x0, noise, t, distill="multistep", teacher_steps=1, t_post="none")
    assert float(terms.distill) < 1e-10  # one Euler step from t to t/2 is the velocity at t
    rt.feedback.scales.data.fill_(0.3)
    terms = flow_loss(model, cond, x0, noise, t, distill="multistep", teacher_steps=4, t_post="rescale")
    assert float(terms.distill) > 1e-4
    terms.total.backward()
    assert rt.feedback.scales.grad is not None and rt.feedback.scales.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("ilf_feedback."))
