"""The objective's pieces against hand computations."""

import torch
from diffusers import DDPMScheduler

from ilf import ILFConfig, apply_ilf
from ilf.tiny import tiny_pixart
from ilf.train.objective import ddim_step, ilf_loss, one_step_target, to_eps_x0


def _sched(ptype="epsilon"):
    return DDPMScheduler(prediction_type=ptype)


def test_one_step_target_lands_where_the_teacher_steps_went():
    s = _sched()
    acp = s.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x_t, x_s = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    t, u = torch.tensor([900, 500, 120]), torch.tensor([450, 250, 60])
    for ptype in ("epsilon", "v_prediction"):
        target = one_step_target(x_t, x_s, t, u, acp, ptype)
        landed = ddim_step(target, x_t, t, u, acp, ptype)
        torch.testing.assert_close(landed, x_s, rtol=1e-4, atol=1e-4)


def test_eps_and_v_conversions_recover_the_truth():
    s = _sched()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 2, 2, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    t = torch.tensor([700, 30])
    x_t = s.add_noise(x0, eps, t)
    v = s.get_velocity(x0, eps, t)
    for pred, ptype in ((eps, "epsilon"), (v, "v_prediction")):
        e, x = to_eps_x0(pred, x_t, t, s.alphas_cumprod, ptype)
        torch.testing.assert_close(e, eps, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x, x0, rtol=1e-3, atol=1e-3)


def test_fad_teacher_is_the_stock_backbone_at_half_the_timestep():
    model = tiny_pixart(num_layers=4)
    rt = apply_ilf(model, ILFConfig(loop=(1, 2)))
    rt.feedback.scales.data.fill_(0.5)
    calls = []
    orig = rt.plan_call

    def spy(call):
        t_post, feedback = call.controls.get("ilf_t_post"), call.controls.get("ilf_feedback")
        calls.append((call.kwargs["timestep"].tolist(), feedback, None if t_post is None else t_post.tolist()))
        return orig(call)

    rt.plan_call = spy
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    cond = dict(encoder_hidden_states=torch.randn(2, 3, 32, generator=g), encoder_attention_mask=torch.ones(2, 3),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    t = torch.tensor([801, 300])
    terms = ilf_loss(model, cond, x0, noise, t, _sched())
    assert calls == [([400, 150], False, None), ([801, 300], None, [801.0, 300.0])]
    # recompute both terms by hand
    with torch.no_grad():
        s = _sched()
        teacher = model(s.add_noise(x0, noise, t // 2), timestep=t // 2, ilf_feedback=False, **cond).sample[:, :4]
        student = model(s.add_noise(x0, noise, t), timestep=t, ilf_t_post=t.float(), **cond).sample[:, :4]
    torch.testing.assert_close(terms.diffusion, ((student - noise) ** 2).mean())
    torch.testing.assert_close(terms.distill, ((student - teacher) ** 2).mean())
    torch.testing.assert_close(terms.total, terms.diffusion + terms.distill)


def test_no_distill_has_only_the_diffusion_term_and_multistep_calls_the_teacher_k_times():
    model = tiny_pixart(num_layers=4)
    rt = apply_ilf(model, ILFConfig(loop=(1, 2)))
    n = {"teacher": 0}
    orig = rt.plan_call

    def spy(call):
        n["teacher"] += call.controls.get("ilf_feedback") is False
        return orig(call)

    rt.plan_call = spy
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    cond = dict(encoder_hidden_states=torch.randn(1, 3, 32, generator=g),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    terms = ilf_loss(model, cond, x0, noise, torch.tensor([600]), _sched(), distill="none")
    assert n["teacher"] == 0 and terms.distill == 0 and terms.total == terms.diffusion
    ilf_loss(model, cond, x0, noise, torch.tensor([600]), _sched(), distill="multistep", teacher_steps=8)
    assert n["teacher"] == 8
