"""The no-loop control (`ILFConfig(rerun_loop=False)`): the same feedback block, its output added once after
block e, no re-run of the loop. Checked against forward hooks written here, independent of ilf's runtime."""

import copy

import pytest
import torch

from ilf import ILFConfig, apply_ilf, count_block_forwards, predicted_block_forwards, remove_ilf
from ilf.tiny import tiny_dit, tiny_pixart

LOOP = (2, 4)


def _inputs(kind):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.full((2,), 600, dtype=torch.long)
    if kind == "dit":
        return dict(hidden_states=x, timestep=t, class_labels=torch.tensor([3, 7]))
    return dict(hidden_states=x, timestep=t, encoder_hidden_states=torch.randn(2, 5, 32, generator=g),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})


@pytest.mark.parametrize("kind", ["dit", "pixart"])
def test_control_adds_the_feedback_once_after_block_e(kind):
    model = tiny_dit() if kind == "dit" else tiny_pixart()
    inputs = _inputs(kind)
    with torch.no_grad():
        stock = model(**inputs).sample
    rt = apply_ilf(model, ILFConfig(loop=LOOP, t_post="none", rerun_loop=False, init="fresh"))
    with torch.no_grad():
        rt.feedback.scales.copy_(torch.tensor([0.7, -0.3, 0.2]))
        with count_block_forwards(model) as counter:
            out = model(**inputs, ilf_t_post=inputs["timestep"]).sample
    feedback = copy.deepcopy(rt.feedback)
    remove_ilf(model)

    def add_once(module, args, kwargs, output):  # h_e = f_e + s_b · F(f_e; the block's own conditioning)
        cond = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        return output + 0.7 * feedback.block(output, **cond)

    handle = model.transformer_blocks[LOOP[1]].register_forward_hook(add_once, with_kwargs=True)
    with torch.no_grad():
        reference = model(**inputs).sample
    handle.remove()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, stock, atol=1e-4)  # the feedback did something
    assert counter.total == 6 + 1  # N blocks + F, no loop re-run


def test_control_costs_one_block_per_feedback_step_in_a_pipeline():
    from ilf.tiny import tiny_pipeline

    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=True)
    apply_ilf(pipe, ILFConfig(loop=LOOP, rerun_loop=False, feedback_steps="last:2", t_post="none"))
    with count_block_forwards(pipe) as counter:
        pipe(class_labels=[1], num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    assert counter.total == 5 * 6 + 2 * 1
    assert predicted_block_forwards(6, 5, loop=LOOP, feedback_plan="last:2", rerun_loop=False) == 32
    assert predicted_block_forwards(6, 5, loop=LOOP, feedback_plan="last:2") == 30 + 2 * 4


def test_update_changes_the_schedule_on_the_next_call_and_refuses_what_apply_ilf_refuses():
    from ilf import FeedbackMismatchError, LoopRangeError
    from ilf.tiny import tiny_pipeline

    pipe = tiny_pipeline("dit")
    pipe.set_progress_bar_config(disable=True)
    rt = apply_ilf(pipe, ILFConfig(loop=LOOP, feedback_steps="last:2", t_post="none"))

    def blocks():
        with count_block_forwards(pipe) as counter:
            pipe(class_labels=[1], num_inference_steps=5, generator=torch.Generator().manual_seed(0))
        return counter.total

    assert blocks() == 30 + 2 * 4
    assert rt.update(feedback_steps="all").feedback_steps == "all"
    assert blocks() == 30 + 5 * 4  # the next run follows the new plan
    for bad in ({"init": "fresh"}, {"rerun_loop": False}, {"num_inference_steps": 7}):
        with pytest.raises(FeedbackMismatchError, match="cannot change on an attached feedback"):
            rt.update(**bad)
    with pytest.raises(LoopRangeError, match="trained for loop"):
        rt.update(loop=(1, 3))
    assert rt.config.feedback_steps == "all" and rt.config.rerun_loop  # nothing half-applied
