"""Every count and range is checked where it is parsed (issue 19): each bad value ends the real command with
exit status 2, a message naming the flag and the allowed range, no traceback, and nothing half-made on disk."""

import os
import subprocess
import sys

import pytest

from ilf.worlds import paths


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ilf", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


# (argv with OUT for the output path, the words the message must hold: the flag and the allowed range)
PARSE_CASES = {
    "generate --steps -5": (["generate", "--world", "digits", "--class-id", "3", "--steps", "-5", "--out", "OUT"],
                            ["--steps", ">= 1", "-5"]),
    "generate --steps 0": (["generate", "--world", "digits", "--class-id", "3", "--steps", "0", "--out", "OUT"],
                           ["--steps", ">= 1", "got 0"]),
    "generate --num-images -2": (["generate", "--world", "shapes", "--prompt", "a red circle", "--num-images", "-2",
                                  "--out", "OUT"], ["--num-images", ">= 1", "-2"]),
    "generate --seed -1": (["generate", "--world", "digits", "--class-id", "3", "--seed", "-1", "--out", "OUT"],
                           ["--seed", ">= 0"]),
    "generate --upscale 0": (["generate", "--world", "digits", "--class-id", "3", "--upscale", "0", "--out", "OUT"],
                             ["--upscale", "1..64"]),
    "generate --cache": (["generate", "--world", "digits", "--class-id", "3", "--cache", "inner:x:3", "--out", "OUT"],
                         ["--cache", "integers >= 1"]),
    "demo --train-steps -1": (["demo", "--quick", "--train-steps", "-1", "--out", "OUT"], ["--train-steps", ">= 1"]),
    "demo --student-steps 0": (["demo", "--student-steps", "0", "--out", "OUT"], ["--student-steps", ">= 1"]),
    "demo --num-images 0": (["demo", "--num-images", "0", "--out", "OUT"], ["--num-images", ">= 1"]),
    "demo --loop reversed": (["demo", "--mode", "ilf", "--quick", "--loop", "8", "3", "--out", "OUT"], ["--loop", "0 <= B <= E"]),
    "train --max-steps -1": (["train", "--world", "digits", "--max-steps", "-1", "--output-dir", "OUT"],
                             ["--max-steps", ">= 1"]),
    "train --batch-size 0": (["train", "--world", "digits", "--batch-size", "0", "--output-dir", "OUT"],
                             ["--batch-size", ">= 1"]),
    "train --rollout-size -4": (["train", "--world", "digits", "--rollout-size", "-4", "--output-dir", "OUT"],
                                ["--rollout-size", ">= 1"]),
    "train --lr 0": (["train", "--world", "digits", "--lr", "0", "--output-dir", "OUT"], ["--lr", "> 0"]),
    "precompute --batch-size 0": (["precompute", "--pipeline", "x", "--data", "x", "--out", "OUT",
                                   "--batch-size", "0"], ["--batch-size", ">= 1"]),
    "bench --num-images 0": (["bench", "--tiny", "pixart", "--num-images", "0", "--out", "OUT"],
                             ["--num-images", ">= 1"]),
    "bench --repeats -1": (["bench", "--tiny", "pixart", "--repeats", "-1", "--out", "OUT"], ["--repeats", ">= 0"]),
    "eval --batch-size 0": (["eval", "--tiny", "pixart", "--method", "plain:2", "--batch-size", "0", "--out", "OUT"],
                            ["--batch-size", ">= 1"]),
    "tune --steps 0": (["tune", "--tiny", "pixart", "--steps", "0", "--out", "OUT"], ["--steps", ">= 1"]),
    "bench plan past the steps": (["bench", "--tiny", "pixart", "--methods", "plain:10", "ilf:10,plan=last:50",
                                   "--out", "OUT"], ["ilf:10,plan=last:50", "0..10"]),
    "bench plan index past the steps": (["bench", "--tiny", "pixart", "--methods", "plain:4", "ilf:4,plan=[0,5]",
                                         "--out", "OUT"], ["step 5 does not exist", "0..3"]),
    "threads 0": (["generate", "--world", "digits", "--class-id", "3", "--threads", "0", "--out", "OUT"],
                  ["--threads", ">= 1"]),
    # issue 25: guidance was taken as any float, nan and negatives generated images
    "generate --guidance nan": (["generate", "--world", "shapes", "--prompt", "a red circle", "--guidance", "nan",
                                 "--out", "OUT"], ["--guidance", "finite number >= 0", "nan"]),
    "generate --guidance -3": (["generate", "--world", "shapes", "--prompt", "a red circle", "--guidance", "-3",
                                "--out", "OUT"], ["--guidance", "finite number >= 0", "-3"]),
    "generate --guidance inf": (["generate", "--world", "digits", "--class-id", "3", "--guidance", "inf",
                                 "--out", "OUT"], ["--guidance", "finite number >= 0"]),
    "train --guidance-scale nan": (["train", "--world", "digits", "--guidance-scale", "nan", "--output-dir", "OUT"],
                                   ["--guidance-scale", "finite number >= 0"]),
    "bench --guidance-scale -1": (["bench", "--tiny", "pixart", "--guidance-scale", "-1", "--out", "OUT"],
                                  ["--guidance-scale", "finite number >= 0"]),
    "train --lr nan": (["train", "--world", "digits", "--lr", "nan", "--output-dir", "OUT"], ["--lr", "> 0"]),
    # issue 25: the corrector is the default objective; an inner-loop flag given with it would do nothing
    "train --loop with the corrector": (["train", "--world", "digits", "--loop", "3", "8", "--output-dir", "OUT"],
                                        ["--loop is an inner-loop (ILF) flag", "add --distill trajectory"]),
    "train --feedback-steps with the corrector": (["train", "--world", "shapes", "--feedback-steps", "last:2",
                                                   "--output-dir", "OUT"],
                                                  ["--feedback-steps", "--distill trajectory"]),
    # issue 25: a missing --prompt exited 1 through SystemExit, unlike every other usage error
    "generate without --prompt": (["generate", "--world", "shapes", "--out", "OUT"], ["--prompt", "text-to-image"]),
    "generate without --class-id": (["generate", "--world", "digits", "--out", "OUT"], ["--class-id"]),
}

PAPER = str(paths.paper_feedback("digits"))  # the shipped paper-mode feedback (the shipped one is a corrector)

# Checked once the model or the feedback is known; each loads a world backbone (a few seconds).
RUNTIME_CASES = {
    "demo --loop past the model": (["demo", "--mode", "ilf", "--quick", "--loop", "3", "15", "--out", "OUT"],
                                   ["--loop 3 15", "12 blocks", "0 <= b <= e <= 11"]),
    "demo plan past the steps": (["demo", "--mode", "ilf", "--quick", "--feedback-steps", "last:50", "--out", "OUT"],
                                 ["--feedback-steps last:50", "0..10", "--student-steps 10"]),
    "generate plan past the steps": (["generate", "--world", "digits", "--feedback", PAPER, "--feedback-steps",
                                      "last:50", "--class-id", "3", "--out", "OUT"],
                                     ["--feedback-steps last:50", "0..10", "--steps 10"]),
    "generate plan index past the steps": (["generate", "--world", "digits", "--feedback", PAPER, "--steps", "4",
                                            "--feedback-steps", "0,6", "--class-id", "3", "--out", "OUT"],
                                           ["--feedback-steps 0,6", "0..3", "--steps 4"]),
    "train plan past the steps": (["train", "--world", "digits", "--distill", "trajectory", "--feedback-steps",
                                   "last:50", "--output-dir", "OUT"],
                                  ["--feedback-steps last:50", "0..10", "--student-steps 10"]),
    "train --loop past the model": (["train", "--world", "digits", "--distill", "trajectory", "--loop", "3", "15",
                                     "--max-steps", "1", "--output-dir", "OUT"], ["--loop 3 15", "12 blocks"]),
    "generate a missing feedback": (["generate", "--world", "digits", "--feedback", "no/such/feedback", "--class-id",
                                     "3", "--out", "OUT"], ["no/such/feedback does not exist"]),
    "generate a feedback's file": (["generate", "--world", "digits", "--feedback", PAPER + "/ilf_config.json",
                                    "--class-id", "3", "--out", "OUT"], ["is a file; pass its folder", PAPER]),
    "inspect a missing folder": (["inspect", "OUT"], ["does not exist"]),
}

# Errors about paths and usage must come before torch / diffusers are imported: seconds on a quiet machine, up to
# a minute under load (issue 25)
LIGHT_CASES = {
    "inspect /missing": ["inspect", "/no/such/feedback"],
    "inspect a file": ["inspect", PAPER + "/ilf_config.json"],
    "generate a missing feedback": ["generate", "--world", "shapes", "--prompt", "x", "--feedback", "no/such/fb"],
    "generate without --prompt": ["generate", "--world", "shapes"],
}


@pytest.mark.parametrize("case", sorted(LIGHT_CASES))
def test_path_and_usage_errors_come_before_the_heavy_imports(case):
    probe = ("import sys\nfrom ilf.cli import main\nrc = main(sys.argv[1:])\n"
             "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
             "print('RESULT', rc, heavy)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", probe, *LIGHT_CASES[case]], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "RESULT 2 []", (proc.stdout, proc.stderr[-2000:])
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def _check(argv, words, tmp_path):
    out = tmp_path / "out"
    proc = _run([str(out) if a == "OUT" else a for a in argv], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"ilf {argv[0]}: error:"), err[-2000:]
    for w in words:
        assert w in last, (w, last)
    assert not out.exists()  # no empty output folder, no adapter saved as if trained
    return err


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_a_bad_count_stops_at_parsing(case, tmp_path):
    _check(*PARSE_CASES[case], tmp_path)


@pytest.mark.parametrize("case", sorted(RUNTIME_CASES))
def test_a_plan_or_loop_the_run_lacks_stops_before_anything_is_written(case, tmp_path):
    err = _check(*RUNTIME_CASES[case], tmp_path)
    assert "torchvision" not in err  # transformers' advice to install it is filtered (ilf.quiet)
