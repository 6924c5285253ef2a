"""`ilf train`'s defaults work on any backbone (issue 19): the loop is the paper's 8-19 of 28 scaled to the model's
depth, and the objective and stored schedule are the measured recipe (trajectory, last step, t_post none), with the
paper's FAD one flag away and its own schedule (outer:2, rescale)."""

import json

from ilf.cli import build_parser
from ilf.config import paper_loop
from ilf.train.config import TrainConfig
from ilf.train.trainer import train


def test_the_paper_loop_scales_with_depth():
    assert paper_loop(28) == (8, 19)  # the paper's PixArt / DiT
    assert paper_loop(12) == (3, 8)  # the worlds: round(8 * 12 / 28) = 3, round(19 * 12 / 28) = 8
    assert paper_loop(24) == (7, 16)  # SD3-medium
    assert paper_loop(6) == (2, 4)


def test_train_defaults_are_the_measured_recipe_and_fad_keeps_the_papers(tmp_path):
    args = build_parser().parse_args(["train", "--world", "shapes", "--output-dir", str(tmp_path)])
    assert args.loop is None and args.distill == "trajectory"
    traj = TrainConfig(output_dir=tmp_path, world="shapes")
    assert traj.loop is None  # resolved against the backbone when it is loaded
    assert (traj.distill, traj.feedback_steps, traj.inference_t_post) == ("trajectory", "last:1", "none")
    assert (traj.lr, traj.batch_size, traj.max_steps) == (1e-3, 32, 1000)  # the shipped feedbacks' recipe
    fad = TrainConfig(output_dir=tmp_path, world="shapes", distill="fad")
    assert (fad.feedback_steps, fad.inference_t_post) == ("outer:2", "rescale")
    assert (fad.lr, fad.batch_size, fad.max_steps) == (1e-4, 32, 300)
    given = TrainConfig(output_dir=tmp_path, world="shapes", feedback_steps="last:2", inference_t_post="anneal")
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
