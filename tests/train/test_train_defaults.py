"""`ilf train`'s defaults work on any backbone (issues 19 and 25): the default objective is the measured winner, the
corrector (the study's recipe on a world: lr 3e-3, batch 32, 600 iterations, 128 prompts), refusing the inner loop's
flags it would ignore; the paper's inner loop is `--distill trajectory`, whose loop is the paper's 8-19 of 28 scaled to
the model's depth and whose stored schedule is the measured recipe (last step, t_post none), with the paper's FAD one
flag away and its own schedule (outer:2, rescale)."""

import json

import pytest

from ilf import ILFError
from ilf.cli import build_parser
from ilf.config import paper_loop
from ilf.train.config import TrainConfig
from ilf.train.trainer import train


def test_the_paper_loop_scales_with_depth():
    assert paper_loop(28) == (8, 19)  # the paper's PixArt / DiT
    assert paper_loop(12) == (3, 8)  # the worlds: round(8 * 12 / 28) = 3, round(19 * 12 / 28) = 8
    assert paper_loop(24) == (7, 16)  # SD3-medium
    assert paper_loop(6) == (2, 4)


def test_the_default_objective_is_the_corrector_with_the_study_recipe(tmp_path):
    args = build_parser().parse_args(["train", "--world", "shapes", "--output-dir", str(tmp_path)])
    assert args.distill == "corrector" and args.loop is None and args.feedback_steps is None
    cfg = TrainConfig(output_dir=tmp_path, world="shapes")
    assert cfg.distill == "corrector"
    assert (cfg.lr, cfg.batch_size, cfg.max_steps, cfg.rollout_size) == (3e-3, 32, 600, 128)  # the study's recipe
    assert cfg.student_steps == 20  # against plain 20 steps, TaylorSeer's own schedule
    assert (cfg.loop, cfg.feedback_steps, cfg.inference_t_post) == (None, None, None)  # no inner loop recorded
    # a pipeline's corrector, without a preset, takes the recipe ilf.train_corrector uses, not the paper's FAD one
    mine = TrainConfig(output_dir=tmp_path, pipeline="x", prompts=tmp_path / "p.txt")
    assert (mine.lr, mine.batch_size, mine.max_steps) == (3e-3, 32, 600)


@pytest.mark.parametrize("flag, kw", [("--loop", dict(loop=(3, 8))),
                                      ("--feedback-steps", dict(feedback_steps="last:2")),
                                      ("--inference-t-post", dict(inference_t_post="none")),
                                      ("--t-post", dict(t_post="rescale")), ("--init-block", dict(init_block=2)),
                                      ("--feedback-mode once", dict(rerun_loop=False)),
                                      ("--feed-text", dict(feed_text=True))])
def test_the_corrector_refuses_inner_loop_flags_with_the_fix(tmp_path, flag, kw):
    with pytest.raises(ILFError) as err:
        TrainConfig(output_dir=tmp_path, world="shapes", **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{flag} is an inner-loop (ILF) flag"), msg
    assert "--distill corrector" in msg and "add --distill trajectory" in msg
    TrainConfig(output_dir=tmp_path, world="shapes", distill="trajectory", **kw)  # accepted where it means something


def test_the_corrector_refuses_a_loop_on_the_command_line_before_any_output(tmp_path, capsys):
    from ilf.cli import main

    out = tmp_path / "out"
    assert main(["train", "--world", "digits", "--loop", "3", "8", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ilf train: error: --loop is an inner-loop (ILF) flag"), err
    assert not out.exists()


def test_trajectory_is_the_papers_mode_with_the_measured_schedule_and_fad_keeps_the_papers(tmp_path):
    traj = TrainConfig(output_dir=tmp_path, world="shapes", distill="trajectory")
    assert traj.loop is None  # resolved against the backbone when it is loaded
    assert (traj.feedback_steps, traj.inference_t_post, traj.student_steps) == ("last:1", "none", 10)
    assert (traj.lr, traj.batch_size, traj.max_steps) == (1e-3, 32, 1000)  # the paper-mode feedbacks' recipe
    fad = TrainConfig(output_dir=tmp_path, world="shapes", distill="fad")
    assert (fad.feedback_steps, fad.inference_t_post) == ("outer:2", "rescale")
    assert (fad.lr, fad.batch_size, fad.max_steps) == (1e-4, 32, 300)
    given = TrainConfig(output_dir=tmp_path, world="shapes", distill="trajectory", feedback_steps="last:2",
                        inference_t_post="anneal")
    assert (given.feedback_steps, given.inference_t_post) == ("last:2", "anneal")


def test_a_run_without_loop_takes_the_scaled_paper_loop(tiny_world, tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(output_dir=out, pipeline=str(tiny_world / "pixart-alpha"), data=tiny_world / "captions",
                               distill="fad", lr=1e-3, batch_size=4, max_steps=1, checkpoint_every=0, log_every=1,
                               max_sequence_length=16, progress=False))
    record = json.loads((out / "train_config.json").read_text())
    assert record["loop"] == [2, 4]  # 6 blocks: (2, 4)
    assert record["output_dir"] == "."  # the folder holding the record, not this machine's absolute path
    assert json.loads((result.feedback_dir / "ilf_config.json").read_text())["loop"] == [2, 4]
