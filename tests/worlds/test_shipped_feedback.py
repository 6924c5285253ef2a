"""The feedbacks shipped with each world — the corrector of TaylorSeer (the measured winner, `paths.feedback`) and
the paper-mode inner loop (`paths.paper_feedback`): each loads onto the world's pipeline, was trained for its
schedule, and `ilf generate --feedback shipped` runs the corrector."""

import pytest
import torch

from ilf import apply_ilf, count_block_forwards, remove_ilf
from ilf.cli import main
from ilf.feedback import read_feedback
from ilf.worlds import paths, registry


@pytest.mark.parametrize("world", paths.WORLDS)
def test_shipped_paper_feedback_is_trained_for_its_schedule_and_changes_its_samples(world):
    folder = paths.paper_feedback(world)
    meta, _ = read_feedback(folder)  # verifies the checksum
    loop = tuple(meta["loop"])  # chosen per world by bench/quality_per_block.py on its tune seeds
    assert loop == {"digits": (3, 8), "shapes": (1, 10), "shapes-flow": (3, 8)}[world]
    cfg = meta["config"]  # trained by trajectory distillation for the world's 10-step solver, feedback on the last step
    assert meta["extra"]["train"]["distill"] == "trajectory"
    solver = "FlowMatchEulerDiscreteScheduler" if world in paths.FLOW_WORLDS else "DPMSolverMultistepScheduler"
    assert (cfg["num_inference_steps"], cfg["feedback_steps"], cfg["scheduler"], cfg["guidance_scale"]) == (
        10, "last:1", solver, registry.CALL_KWARGS[world]["guidance_scale"])
    pipe = registry.load_pipeline(world)
    kw = {**registry.CALL_KWARGS[world], "num_inference_steps": 10, "output_type": "np"}
    prompt = ["a small green triangle on the left"]
    inputs = {"shapes": {"prompt": prompt}, "digits": {"class_labels": [7]},
              "shapes-flow": registry.prompt_kwargs("shapes-flow", prompt)}[world]
    plain = pipe(**inputs, generator=torch.Generator().manual_seed(0), **kw).images
    apply_ilf(pipe, folder)
    scales = pipe.transformer.ilf_feedback.scales
    assert scales.abs().min() > 0  # every loop block learned a non-zero feedback strength
    with count_block_forwards(pipe) as counter:
        ilf = pipe(**inputs, generator=torch.Generator().manual_seed(0), **kw).images
    assert counter.total == 10 * 12 + 1 * (loop[1] - loop[0] + 1 + 1)  # feedback on the last step: the loop + F
    assert abs(ilf - plain).max() > 1e-3
    remove_ilf(pipe)


@pytest.mark.parametrize("world", paths.WORLDS)
def test_shipped_corrector_is_trained_on_taylorseers_schedule_and_changes_its_forecasts(world):
    from ilf.corrector_config import CorrectorConfig, taylor_compute_steps

    folder = paths.feedback(world)
    meta, tensors = read_feedback(folder)
    assert meta["mode"] == "corrector" and meta["extra"]["train"]["distill"] == "corrector"
    cfg = CorrectorConfig.from_dict(meta["config"])
    solver = "FlowMatchEulerDiscreteScheduler" if world in paths.FLOW_WORLDS else "DPMSolverMultistepScheduler"
    assert (cfg.num_inference_steps, cfg.scheduler, cfg.guidance_scale) == (
        20, solver, registry.CALL_KWARGS[world]["guidance_scale"])
    # TaylorSeer's standard schedule (interval 2 after 3 warm-up steps); on shapes its tuned one at the same 11
    # full steps (warm-up 1, the last step computed: bench/budget_mask_probe.py, chosen on tune seeds)
    schedule = (2, 1, 18) if world == "shapes" else (2, 3, None)
    assert sorted(cfg.compute_steps(20)) == taylor_compute_steps(20, *schedule)
    assert tensors["mix"].abs().sum() > 0  # the learned forecast moved off TaylorSeer's own
    pipe = registry.load_pipeline(world)
    kw = {**registry.CALL_KWARGS[world], "output_type": "np"}
    prompt = ["a large red circle in the center"]
    inputs = {"shapes": {"prompt": prompt}, "digits": {"class_labels": [7]},
              "shapes-flow": registry.prompt_kwargs("shapes-flow", prompt)}[world]
    apply_ilf(pipe, cfg)  # the same corrector untrained: TaylorSeer itself
    taylorseer = pipe(**inputs, generator=torch.Generator().manual_seed(0), **kw).images
    remove_ilf(pipe)
    apply_ilf(pipe, folder)
    with count_block_forwards(pipe) as counter:
        corrected = pipe(**inputs, generator=torch.Generator().manual_seed(0), **kw).images
    remove_ilf(pipe)
    tail = 1 if world in paths.FLOW_WORLDS else 0  # SD3's text-less last block runs on every step
    assert counter.total == 11 * 12 + 9 * tail  # TaylorSeer's own count: the learned forecast costs no block
    assert abs(corrected - taylorseer).max() > 1e-3


def test_generate_with_the_shipped_feedback(tmp_path, capsys):
    assert main(["generate", "--world", "digits", "--feedback", "shipped", "--class-id", "3", "8",
                 "--out", str(tmp_path)]) == 0
    # the raw 32 px images and their 4x copies to look at (ilf generate's default upscale under 128 px)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["000-class3-x4.png", "000-class3.png",
                                                            "001-class8-x4.png", "001-class8.png"]
    assert "20 steps, 132 block forwards" in capsys.readouterr().out  # the corrector's schedule, from the adapter


def test_generate_with_the_shipped_flow_feedback(tmp_path, capsys):
    assert main(["generate", "--world", "shapes-flow", "--feedback", "shipped", "--prompt", "a small red circle",
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["000-a-small-red-circle-x4.png",
                                                            "000-a-small-red-circle.png"]
    assert "20 steps, 141 block forwards" in capsys.readouterr().out  # + SD3's text-less last block on 9 forecasts
