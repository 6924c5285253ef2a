"""One story of the modes (issue 25): the command's help, the docs and the code agree on what `ilf train` trains by
default, the corrector is named where a newcomer starts, and the demo calls it what it is."""

import dataclasses
import re
from pathlib import Path

from ilf.cli import build_parser
from ilf.train.config import DISTILL_MODES, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"fad": ["--distill fad", "FAD", "Fast Approximate Distillation"], "trajectory": ["--distill trajectory",
         "trajectory distillation"], "corrector": ["--distill corrector", "corrector"], "multistep": ["multistep"],
         "none": ["--distill none"]}
NEWCOMER_PAGES = ("README.md", "docs/usage.md", "docs/corrector.md", "docs/worlds.md")  # issue 25's reading path


def _subparser(name):
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[name]


def _code_default():
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}["distill"]


def _claims_default(text, objective):
    """Where `text` calls `objective` the default (within one clause)."""
    found = []
    for name in NAMES[objective]:
        clause = r"(?:[^.;#)]|\.\d)"  # within one clause: no sentence end, comment or closing bracket ("§3.2" is fine)
        for pattern in (rf"{re.escape(name)}\b{clause}{{0,40}}\bthe default\b(?! for)",
                        rf"\bdefault objective\b{clause}{{0,30}}{re.escape(name)}\b"):
            found += re.findall(pattern, text)
    return found


def test_help_docs_and_code_agree_on_the_default_objective():
    default = _code_default()
    assert default in DISTILL_MODES
    train = _subparser("train")
    action = next(a for a in train._actions if "--distill" in a.option_strings)
    assert action.default == default  # the command line's default is the dataclass's
    assert f"(default: {default}" in " ".join(action.help.split())
    help_text = " ".join(train.format_help().split())
    docs = " ".join((ROOT / "docs" / "training.md").read_text().split())
    assert f"The default objective is `--distill {default}`" in docs
    top = " ".join(build_parser().format_help().split())
    assert f"`ilf train`'s default objective, `--distill {default}`" in top
    texts = [("ilf train --help", help_text), ("ilf --help", top), ("docs/training.md", docs)]
    texts += [(path, " ".join((ROOT / path).read_text().split())) for path in NEWCOMER_PAGES]
    for where, text in texts:
        for other in set(NAMES) - {default}:
            assert not _claims_default(text, other), (where, other, _claims_default(text, other))


def test_the_default_is_the_measured_winner_and_the_paper_mode_is_one_flag_away():
    assert _code_default() == "corrector"  # the README verdict and docs/corrector-study.md
    for path in NEWCOMER_PAGES + ("docs/training.md",):  # each page a newcomer reads says how to train ILF
        assert "--distill trajectory" in (ROOT / path).read_text(), path
    epilog = _subparser("train").epilog
    commands = [line.strip() for line in epilog.splitlines() if line.strip().startswith("ilf train")]
    assert "--distill" not in commands[0]  # the first example is the default, the corrector
    assert any("--distill trajectory" in c for c in commands)


def _documented_train_commands(text):
    """The `ilf train` command lines of a page: in its code blocks (continuation lines joined) and whole
    commands quoted inline (with their --output-dir)."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = [] if line.strip("`") in ("", "bash", "sh") else False  # False: a block of another language
            else:
                blocks += [] if current is False else ["\n".join(current)]
                current = None
        elif isinstance(current, list):
            current.append(line)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            if "ilf train " in line:
                yield line.split("ilf train ", 1)[1]
    for span in re.findall(r"`ilf train ([^`\n]*--output-dir[^`\n]*)`", text):
        yield span


def test_every_ilf_train_command_in_the_docs_parses_and_builds_its_config(tmp_path):
    """A documented `ilf train` line must not lean on an old default: an inner-loop flag without --distill
    trajectory (or fad) is refused by the corrector, so a stale command fails here."""
    import shlex

    from ilf import ILFError

    parser = build_parser()
    found = 0
    for path in ("README.md", "docs/training.md", "docs/usage.md", "docs/corrector.md", "docs/worlds.md",
                 "docs/models.md", "docs/train-your-corrector.md"):
        for command in _documented_train_commands((ROOT / path).read_text()):
            argv = shlex.split(command.replace("...", "").replace(" ID ", " x "))
            if argv[:1] == ["--resume"] or "--output-dir" not in argv:  # `ilf train ... --resume latest`
                continue
            args = parser.parse_args(["train", *argv])
            found += 1
            if args.distill != "corrector":
                continue
            try:  # what cmd_train builds: the corrector refuses a loop or a plan it would ignore
                TrainConfig(output_dir=tmp_path, world=args.world, pipeline=args.pipeline, prompts=args.prompts,
                            data=args.data, loop=args.loop, feedback_steps=args.feedback_steps,
                            inference_t_post=args.inference_t_post, feed_text=args.feed_text,
                            rerun_loop=args.feedback_mode == "loop", t_post=args.t_post, lr=args.lr,
                            batch_size=args.batch_size, max_steps=args.max_steps)
            except ILFError as err:
                raise AssertionError(f"{path}: `ilf train {command.strip()}`: {err}") from None
    assert found >= 10, found


def test_the_docs_command_check_catches_a_stale_command(tmp_path):
    stale = "```bash\nilf train --world digits --loop 3 8 --feedback-steps last:2 \\\n    --output-dir runs/x\n```\n"
    (command,) = _documented_train_commands(stale)
    args = build_parser().parse_args(["train", *command.split()])
    assert args.distill == "corrector" and args.loop == (3, 8)  # the old default would have trained ILF
    try:
        TrainConfig(output_dir=tmp_path, world=args.world, loop=args.loop, feedback_steps=args.feedback_steps)
    except Exception as err:
        assert "--loop" in str(err)
    else:
        raise AssertionError("a loop given with the corrector was accepted")
def test_the_default_check_catches_the_old_claim():
    old = "or the paper's Fast Approximate Distillation (§3.2, the default). Runs on one CPU/GPU"
    assert _claims_default(old, "fad")
    older = "by trajectory distillation for an inference schedule (--distill trajectory, the default objective) or"
    assert _claims_default(older, "trajectory")
    assert _claims_default("The default objective is `--distill trajectory` (the paper's inner loop)", "trajectory")


def test_the_corrector_is_named_where_a_newcomer_starts():
    top = " ".join(build_parser().format_help().split())
    assert "corrector" in top and "--distill corrector" in top
    train = " ".join(_subparser("train").format_help().split())
    assert "--distill corrector" in train and "the shipped, measured-best method" in train
    for cmd in ("train", "generate", "bench"):  # no stale list of families: other families join over time
        pipeline = next(a for a in _subparser(cmd)._actions if "--pipeline" in a.option_strings)
        assert "any supported family (see docs/models.md)" in " ".join(pipeline.help.split()), cmd


def test_the_demo_calls_the_corrector_a_corrector_and_docs_say_what_it_trains():
    from ilf.demo_corrector import CORRECTOR

    assert CORRECTOR == "corrector"
    worlds = " ".join((ROOT / "docs" / "worlds.md").read_text().split())
    assert "`ilf demo` trains the corrector" in worlds
    assert "`ilf demo` trains a feedback with trajectory distillation" not in worlds


def test_demo_times_say_they_assume_one_thread():
    # every quoted demo time sits beside the thread count it was measured with
    for path in ("README.md", "docs/worlds.md"):
        for line in (ROOT / path).read_text().splitlines():
            if line.startswith("ilf demo") and re.search(r"~\s?\d+\s?(s|min)\b", line):
                assert "--threads 1" in line or "one CPU thread" in line, (path, line)
    demo = " ".join(_subparser("demo").description.split())
    assert "About 90 s with --threads 1 (one CPU thread; 50 s with --pretrained-feedback)" in demo
