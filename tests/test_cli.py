"""The `ilf` command's small subcommands, in process."""

import re

from PIL import Image

from ilf import ILFConfig, apply_ilf, save_feedback
from ilf.cli import main


def _blocks(out: str) -> int:
    return int(re.search(r"(\d+) block forwards", out).group(1))


def test_generate_text_plain_cached_and_with_feedback(pipe_dirs, tmp_path, capsys):
    args = ["generate", "--pipeline", str(pipe_dirs / "pixart-alpha"), "--prompt", "a red cat", "a dog",
            "--steps", "4", "--seed", "1"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "plain").iterdir())
    # the raw 16 px images, and nearest-neighbour copies at the factor that reaches 128 px (8x) to look at
    assert files == ["000-a-red-cat-x8.png", "000-a-red-cat.png", "001-a-dog-x8.png", "001-a-dog.png"]
    raw, big = Image.open(tmp_path / "plain" / files[1]), Image.open(tmp_path / "plain" / files[0])
    assert raw.size == (16, 16) and big.size == (128, 128)
    assert big.resize((16, 16), Image.NEAREST).tobytes() == raw.tobytes()
    assert _blocks(plain) == 6 * 4
    assert main(args + ["--out", str(tmp_path / "cache"), "--cache", "inner:2:2"]) == 0
    assert _blocks(capsys.readouterr().out) == 6 * 4 - 2 * 2  # two cached steps skip two blocks each
    assert main(args + ["--out", str(tmp_path / "ilf"), "--loop", "2", "4", "--feedback-steps", "all"]) == 0
    assert _blocks(capsys.readouterr().out) == 4 * (6 + 3 + 1)


def test_generate_class_ids_and_inspect_a_feedback(pipe_dirs, tmp_path, capsys):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(pipe_dirs / "dit"))
    rt = apply_ilf(pipe, ILFConfig(loop=(1, 3), feedback_steps="first:1"))
    rt.feedback.scales.data.fill_(0.25)
    save_feedback(pipe, tmp_path / "fb")
    assert main(["generate", "--pipeline", str(pipe_dirs / "dit"), "--class-id", "3", "5", "--steps", "3",
                 "--feedback", str(tmp_path / "fb"), "--out", str(tmp_path / "img")]) == 0
    assert _blocks(capsys.readouterr().out) == 3 * 6 + (3 + 1)
    assert sorted(p.name for p in (tmp_path / "img").iterdir() if "-x" not in p.name) == ["000-class3.png",
                                                                                         "001-class5.png"]
    assert main(["inspect", str(tmp_path / "fb")]) == 0
    out = capsys.readouterr().out
    assert "DiTTransformer2DModel (6 blocks), loop (1, 3)" in out and "[0.25, 0.25, 0.25]" in out


def test_inspect_reports_a_corrupted_feedback_as_an_error(tmp_path, capsys):
    (tmp_path / "fb").mkdir()
    (tmp_path / "fb" / "ilf_config.json").write_text("{not json")
    assert main(["inspect", str(tmp_path / "fb")]) == 2
    assert "corrupted" in capsys.readouterr().err


def test_help_imports_no_torch_or_diffusers():
    # `ilf --help` and every `ilf COMMAND --help` must answer fast: building the parsers imports nothing heavy
    import subprocess
    import sys

    from ilf.cli import build_parser

    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"bench", "demo", "eval", "generate", "inspect", "precompute", "train", "tune"} <= set(commands)
    probe = ("import sys\nfrom ilf.cli import main\nfor argv in [[]] + [[c] for c in sys.argv[1:]]:\n"
             "    try:\n        main(argv + ['--help'])\n    except SystemExit:\n        pass\n"
             "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", probe, *commands], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []"


def test_generate_upscales_small_images_and_keeps_the_raw_ones(pipe_dirs, tmp_path, capsys):
    from ilf.generate import default_upscale

    # the smallest factor that brings the longer side to 128 px or more; none from 128 px on
    assert [default_upscale((s, s)) for s in (8, 16, 32, 100, 127, 128, 512)] == [16, 8, 4, 2, 2, 1, 1]
    assert default_upscale((32, 48)) == 3
    args = ["generate", "--pipeline", str(pipe_dirs / "pixart-alpha"), "--prompt", "a red cat", "--steps", "2"]
    assert main(args + ["--out", str(tmp_path / "k3"), "--upscale", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "k3").iterdir()) == ["000-a-red-cat-x3.png", "000-a-red-cat.png"]
    assert Image.open(tmp_path / "k3" / "000-a-red-cat-x3.png").size == (48, 48)
    assert main(args + ["--out", str(tmp_path / "k1"), "--upscale", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "k1").iterdir()) == ["000-a-red-cat.png"]


def test_every_computing_command_takes_threads():
    from ilf.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    for name in ("generate", "demo", "train", "precompute", "bench", "eval", "tune"):
        flags = {o for a in choices[name]._actions for o in a.option_strings}
        assert "--threads" in flags, name
